"""The documented API and the package agree (issue 16, item 4): every name of
``rayvault.learning.__all__`` is on the API reference page (generated from the export table, in
its groups), and every ``rayvault.learning.X`` that README.md or a docs page names exists."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import rayvault.learning as api
from rayvault.cli import _reference

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_every_exported_name_is_on_the_api_page_under_its_module() -> None:
    page = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    assert "<!-- generated: api -->" in page
    generated = _reference.api_reference()
    documented = re.findall(r"^::: rayvault\.learning\.(\w+(?:\.\w+)*)\.(\w+)$", generated, re.M)
    assert sorted(name for _, name in documented) == sorted(api.__all__)
    for module, name in documented:
        assert api._EXPORTS[name] == module, name
        assert getattr(importlib.import_module(f"rayvault.learning.{module}"), name) is getattr(
            api, name
        )


def test_the_api_groups_follow_the_export_table() -> None:
    groups = dict(_reference.api_groups())
    assert "Other" not in groups  # every name sits under a comment of the table
    assert [name for name, _ in groups["The error log"]] == [
        "log_error",
        "resolve_error",
        "get_unresolved",
        "get_lessons",
        "promote_to_learning",
    ]
    assert [name for name, _ in groups["The gate"]] == ["learning_gate", "acknowledge"]


def _resolve(dotted: str) -> object:
    """``rayvault.learning.a.b.c``: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 1, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return target
    raise ModuleNotFoundError(dotted)


def test_every_rayvault_learning_name_the_docs_mention_exists() -> None:
    seen = 0
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for match in re.finditer(r"\brayvault\.learning(?:\.[A-Za-z_]\w*)+", text):
            dotted = match.group(0)
            if "logger" in text[match.end() : match.end() + 10]:
                continue  # a logger's name (``rayvault.learning.index`` logger), not a module
            try:
                _resolve(dotted)
            except (ModuleNotFoundError, AttributeError) as e:
                raise AssertionError(f"{doc.name}: {dotted} does not exist ({e})") from e
            seen += 1
        for block in re.findall(r"```python\n(.*?)```", text, re.S):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "rayvault.learning"
                ):
                    module = importlib.import_module(node.module or "")
                    for alias in node.names:
                        assert hasattr(module, alias.name), (
                            f"{doc.name}: {node.module}.{alias.name}"
                        )
                        seen += 1
    assert seen >= 30


def test_the_readme_promise_holds_for_the_error_log_and_the_gate() -> None:
    """The functions the issue found missing are importable from rayvault.learning."""
    for name in (
        "log_error",
        "resolve_error",
        "get_unresolved",
        "get_lessons",
        "promote_to_learning",
        "learning_gate",
        "acknowledge",
    ):
        assert name in api.__all__ and callable(getattr(api, name)), name


def test_every_weekly_report_field_is_on_the_report_fields_page() -> None:
    page = (REPO / "docs" / "report-fields.md").read_text(encoding="utf-8")
    missing = [name for name in api.WeeklyReport.model_fields if f"`{name}`" not in page]
    assert not missing, f"docs/report-fields.md does not describe {missing}"


def test_every_doctor_code_the_code_reports_is_in_the_doctor_tables() -> None:
    """The codes written out in the doctors' source (``_add("code", …)``, ``code="…"``) each
    have a row in docs/doctor.md (files) or docs/postgresql.md (PostgreSQL)."""
    sources = [
        REPO / "rayvault/learning/doctor.py",
        REPO / "rayvault/learning/store/files/doctor.py",
        REPO / "rayvault/learning/store/postgres/doctor.py",
    ]
    codes: set[str] = set()
    for source in sources:
        text = source.read_text(encoding="utf-8")
        codes |= set(re.findall(r'_add\(\s*"([a-z]+(?:-[a-z]+)+)"', text))
        codes |= set(re.findall(r'code="([a-z]+(?:-[a-z]+)+)"', text))
    assert len(codes) >= 30
    tables = (REPO / "docs/doctor.md").read_text(encoding="utf-8") + (
        REPO / "docs/postgresql.md"
    ).read_text(encoding="utf-8")
    missing = sorted(code for code in codes if f"`{code}`" not in tables)
    assert not missing, f"doctor codes without a row in the docs: {missing}"


def test_the_cli_reference_has_a_section_for_every_command() -> None:
    """docs/cli.md's reference is generated from the Typer tree: each command, group and
    sub-command has its heading, its usage line and its options."""
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert "<!-- generated: cli -->" in page
    generated = _reference.cli_reference()
    paths = [path for path, _ in _reference.walk_commands()]
    assert len(paths) >= 30 and "rayvault-learn events resolve" in paths
    for path in paths:
        assert re.search(rf"^#+ `{re.escape(path)}`$", generated, re.M), path
        assert f"Usage: {path} " in generated, path
    assert "| `--verification <str>` | How the fixes were verified" in generated


def test_the_policies_reference_lists_every_constant_with_its_default() -> None:
    from rayvault import policies

    page = (REPO / "docs" / "policies.md").read_text(encoding="utf-8")
    assert "<!-- generated: policies -->" in page
    table = _reference.policies_reference()
    for name in policies.POLICY_NAMES:
        [row] = [line for line in table.splitlines() if line.startswith(f"| `{name}` |")]
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[2], f"{name} has no description (a #: comment in rayvault/policies.py)"
    assert "| `LEARNING_MAX_ACTIVE_RULES_PER_AGENT` | `50` |" in table
    assert "At least 200." in table  # LEARNING_MAX_TEXT_CHARS's minimum
