"""Every code block of README.md and docs/*.md runs as written (issue 16, item 3).

The collector reads each Markdown file, finds its fenced blocks (also indented ones, inside list
items) and runs every ``python``/``py`` block with this interpreter and every ``bash``/``sh``/
``shell`` block with ``bash -e -o pipefail`` (``console`` blocks: the lines after ``$ ``), each
in a process of its own, from an empty temporary directory (never the repository), with this
environment's ``rayvault-learn`` first on ``PATH`` and no ``RAYVAULT_*`` variable of the caller:
a block must make its own data root. A block passes when it exits 0.

Markers, an HTML comment on the line right before the fence (invisible on the site):

- ``<!-- not-run: REASON -->``: the block is not run (reported as skipped with REASON). Kept for
  blocks that install into the environment (run by ``.ci/run``) or run a benchmark for minutes.
- ``<!-- requires: postgres -->``: run with ``PG_URL`` set to a fresh
  schema of ``RAYVAULT_TEST_PG_DSN`` (dropped afterwards); skipped when there is no server.

Other languages (``text``, ``json``, no language) are shown, not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "shell": "bash", "sh": "sh"}
RUN_LANGUAGES["console"] = "console"
SHOWN_LANGUAGES = {"text", "json", "yaml", "toml", "ini", "html", "markdown", "diff", ""}
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->")
REQUIRES = re.compile(r"<!--\s*requires:\s*(?P<what>[\w-]+)\s*-->")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
#: Blocks marked not-run, at most: the marker is for what cannot run here, not for what fails.
MAX_NOT_RUN = 20


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    not_run: str | None
    requires: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO).as_posix()}:{self.line}"


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of one Markdown file, with their markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    row = 0
    while row < len(lines):
        opening = FENCE.match(lines[row])
        if not opening:
            row += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = opening["info"].strip().split(" ")[0].lower()
        body: list[str] = []
        end = row + 1
        while end < len(lines) and lines[end].strip() != fence:
            text = lines[end]
            body.append(text[len(indent) :] if text.startswith(indent) else text.lstrip())
            end += 1
        previous = next((lines[r] for r in range(row - 1, -1, -1) if lines[r].strip()), "")
        not_run = NOT_RUN.search(previous)
        requires = REQUIRES.search(previous)
        found.append(
            Block(
                path,
                row + 1,
                language,
                "\n".join(body) + "\n",
                not_run["reason"] if not_run else None,
                requires["what"] if requires else None,
            )
        )
        row = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for path in doc_files() for block in blocks_of(path)]


def runnable() -> list[Block]:
    return [b for b in all_blocks() if b.language in RUN_LANGUAGES]


def _params() -> list[object]:
    params: list[object] = []
    for block in runnable():
        marks: list[pytest.MarkDecorator] = [pytest.mark.slow]
        if block.not_run is not None:
            marks.append(pytest.mark.skip(reason=f"not-run: {block.not_run}"))
        if block.requires == "postgres":
            marks.append(pytest.mark.postgres)
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def console_commands(code: str) -> str:
    """The commands of a ``console`` block: the lines after ``$ `` and their continuations."""
    commands: list[str] = []
    continuing = False
    for line in code.splitlines():
        if line.startswith("$ ") or continuing:
            commands.append(line[2:] if line.startswith("$ ") and not continuing else line)
            continuing = line.endswith("\\")
    return "\n".join(commands) + "\n"


def _environment(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAYVAULT_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TMPDIR"] = str(work.parent)
    env.pop("PYTHONPATH", None)
    env["COLUMNS"] = "120"
    return env


@pytest.mark.parametrize("block", _params())
def test_code_block_runs(block: Block, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = _environment(work)
    schema = None
    if block.requires == "postgres":
        from tests.conftest import PG_DSN, pg_unavailable

        reason = pg_unavailable()
        if reason:
            pytest.skip(reason)
        from rayvault.learning.store.postgres import with_schema

        schema = f"rv_test_{uuid.uuid4().hex[:16]}"
        env["PG_URL"] = with_schema(PG_DSN, schema)
    elif block.requires is not None:
        pytest.fail(f"{block.id}: unknown requirement {block.requires!r}")
    kind = RUN_LANGUAGES[block.language]
    if kind == "python":
        script = work.parent / "block.py"
        script.write_text(block.code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        code = console_commands(block.code) if kind == "console" else block.code
        # ``sh``: as typed at a prompt, each line whatever the one before exited with (pages
        # that show exit codes, docs/shell.md); ``bash``: a script that stops at a failure.
        strict = ["-e", "-o", "pipefail"] if kind != "sh" else []
        command = ["bash" if kind != "sh" else "sh", *strict, "-c", code]
    try:
        done = subprocess.run(
            command, cwd=work, env=env, capture_output=True, text=True, timeout=600, check=False
        )
    finally:
        if schema is not None:
            _drop_schema(schema)
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode}\n--- code\n{block.code}"
        f"--- stdout\n{done.stdout[-4000:]}\n--- stderr\n{done.stderr[-4000:]}"
    )


def _drop_schema(name: str) -> None:
    import psycopg
    from psycopg import sql

    from tests.conftest import PG_DSN

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_the_collector_finds_the_blocks_and_every_language_is_known() -> None:
    """README and the docs have examples of each kind; no block's language is unknown (a typo
    such as ``pyhton`` would silently skip it), and the not-run marker stays rare."""
    blocks = all_blocks()
    languages = {b.language for b in blocks}
    assert languages <= set(RUN_LANGUAGES) | SHOWN_LANGUAGES, languages
    run = runnable()
    assert sum(b.language == "python" for b in run) >= 10
    assert sum(b.language == "bash" for b in run) >= 10
    assert any(b.path.name == "README.md" for b in run)
    not_run = [b for b in run if b.not_run is not None]
    assert all(b.not_run.strip() for b in not_run)
    assert len(not_run) <= MAX_NOT_RUN, [b.id for b in not_run]
    for block in blocks:
        assert block.requires in (None, "postgres"), block.id
        assert block.not_run is None or block.language in RUN_LANGUAGES, block.id


def test_the_collector_reads_markers_indented_blocks_and_console_prompts(tmp_path: Path) -> None:
    doc = tmp_path / "page.md"
    doc.write_text(
        "Text\n\n<!-- not-run: installs -->\n```bash\npip install x\n```\n\n"
        "- item\n\n  ```python\n  print(1)\n  ```\n\n<!-- requires: postgres -->\n"
        "```console\n$ echo a \\\n  b\na b\n$ true\n```\n"
    )
    first, second, third = blocks_of(doc)
    assert (first.line, first.language, first.not_run, first.code) == (
        4,
        "bash",
        "installs",
        "pip install x\n",
    )
    assert (second.language, second.code, second.not_run) == ("python", "print(1)\n", None)
    assert third.requires == "postgres"
    assert console_commands(third.code) == "echo a \\\n  b\ntrue\n"


def test_python_blocks_lead_with_rayvault_learning_imports() -> None:
    """The spec's ``tools.*`` paths appear only as a compatibility note, never as the way in."""
    for block in runnable():
        if block.language != "python" or block.not_run is not None:
            continue
        first_import = re.search(r"^(?:from|import) ([\w.]+)", block.code, re.MULTILINE)
        if first_import and first_import[1].startswith("tools"):
            pytest.fail(f"{block.id} leads with {first_import[1]}: import from rayvault.learning")


def test_readme_is_at_most_10_kb() -> None:
    assert len((REPO / "README.md").read_bytes()) <= 10 * 1024
