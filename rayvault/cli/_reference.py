"""Reference pages generated from the code, for the documentation site (``docs/hooks.py``).

The CLI reference walks the Typer tree (``typer.main.get_command(app)``), so a command added to
the app appears in the docs without editing them; the policy table reads the constants of
:mod:`rayvault.policies` and their ``#:`` comments. Both return Markdown.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Iterator, Mapping
from typing import Any

#: The program name the reference writes commands with.
PROG = "rayvault-learn"


def command_tree() -> Any:
    """The click command behind ``rayvault-learn`` (a group of groups and commands)."""
    import typer

    from rayvault.cli.app import app

    return typer.main.get_command(app)


def walk_commands(command: Any = None, path: str = PROG) -> Iterator[tuple[str, Any]]:
    """Every command and group as ``(path, command)``, depth first, sub-commands sorted."""
    command = command_tree() if command is None else command
    yield path, command
    for name in sorted(getattr(command, "commands", None) or {}):
        sub = command.commands[name]
        if not getattr(sub, "hidden", False):
            yield from walk_commands(sub, f"{path} {name}")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _help_blocks(text: str) -> list[str]:
    """The help text as Markdown: prose paragraphs as they are, ``Example:`` lines as code."""
    out: list[str] = []
    for paragraph in text.replace("\b\n", "").strip().split("\n\n"):
        lines = paragraph.strip()
        if lines.startswith("Example:"):
            example = " ".join(lines.removeprefix("Example:").split())
            out.append(f"Example:\n\n```text\n{example}\n```")
        elif lines:
            out.append(" ".join(lines.split()))
    return out


def _usage(command: Any, ctx: Any, path: str) -> str:
    pieces = command.collect_usage_pieces(ctx)
    if getattr(command, "commands", None) and "COMMAND [ARGS]..." not in pieces:
        pieces = [*pieces, "COMMAND [ARGS]..."]
    return " ".join([path, *pieces])


def _params(command: Any, ctx: Any) -> list[str]:
    rows: list[str] = []
    for param in command.params:
        if getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        kind = getattr(param, "param_type_name", "")
        if kind == "argument":
            name = " ".join(param.get_usage_pieces(ctx)) or param.name
            text = getattr(param, "help", None) or ""
        elif record is None:
            continue
        else:
            name, text = record
        notes = []
        if param.required:
            notes.append("required")
        default = param.default
        if (
            kind == "option"
            and default not in (None, False, (), [])
            and not callable(default)
            and not getattr(param, "is_flag", False)
        ):
            notes.append(f"default: `{default}`")
        if notes and "default:" not in text and "required" not in text:
            text = f"{text} ({', '.join(notes)})" if text else ", ".join(notes)
        rows.append(f"| `{_cell(name)}` | {_cell(text)} |")
    if not rows:
        return []
    return ["| argument or option | meaning |", "| --- | --- |", *rows]


def cli_reference(heading_level: int = 2) -> str:
    """The whole command tree as Markdown: one section per command, its usage, help and options."""
    from typer._click.core import Context

    sections: list[str] = []
    contexts: dict[str, Any] = {}
    for path, command in walk_commands():
        parent = contexts.get(path.rsplit(" ", 1)[0]) if " " in path else None
        ctx = Context(command, info_name=path.rsplit(" ", 1)[-1], parent=parent)
        contexts[path] = ctx
        level = heading_level + min(path.count(" "), 2)
        parts = [f"{'#' * level} `{path}`"]
        parts.append(f"```text\nUsage: {_usage(command, ctx, path)}\n```")
        parts.extend(_help_blocks(command.help or ""))
        subcommands = sorted(getattr(command, "commands", None) or {})
        if subcommands:
            parts.append(
                "Commands: "
                + ", ".join(f"[`{name}`](#{_anchor(f'{path} {name}')})" for name in subcommands)
                + "."
            )
        table = _params(command, ctx)
        if table:
            parts.append("\n".join(table))
        sections.append("\n\n".join(parts))
    return "\n\n".join(sections) + "\n"


def _anchor(path: str) -> str:
    """The id MkDocs' ``toc`` extension gives a heading ``# `path` ``."""
    return "-".join(path.split())


def _comments(module: Any) -> dict[str, str]:
    """The ``#:`` comment above each assignment of a module, by name."""
    source = inspect.getsource(module)
    lines = source.splitlines()
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if not names:
            continue
        comment: list[str] = []
        row = node.lineno - 2
        while row >= 0 and lines[row].lstrip().startswith("#:"):
            comment.insert(0, lines[row].lstrip()[2:].strip())
            row -= 1
        for name in names:
            found[name] = " ".join(comment)
    return found


def _value(value: Any) -> str:
    if isinstance(value, Mapping):
        value = {k: dict(v) if isinstance(v, Mapping) else v for k, v in value.items()}
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, ensure_ascii=False)


def policy_defaults() -> dict[str, Any]:
    """The default of every policy constant, as :mod:`rayvault.policies` holds it now."""
    from rayvault import policies

    return {name: getattr(policies, name) for name in policies.POLICY_NAMES}


def policies_reference() -> str:
    """The policy constants as a Markdown table: name, default (as JSON), what it does."""
    from rayvault import policies

    comments = _comments(policies)
    minimums: Mapping[str, int] = getattr(policies, "_MINIMUMS", {})
    rows = ["| constant | default (JSON) | what it does |", "| --- | --- | --- |"]
    for name, value in policy_defaults().items():
        text = comments.get(name, "")
        if name in minimums:
            text = f"{text} At least {minimums[name]}."
        rows.append(f"| `{name}` | `{_cell(_value(value))}` | {_cell(text)} |")
    return "\n".join(rows) + "\n"


def api_groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """The names of ``rayvault.learning.__all__`` grouped as its lazy export table groups them
    (by the comment above each group), each with the module that defines it."""
    import rayvault.learning as api

    source = inspect.getsource(api)
    table = source[source.index("_EXPORTS: dict[str, str] = {") : source.index("\n}\n")]
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    in_comment = False
    for line in table.splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            if not in_comment:
                title = text.lstrip("# ").split(" (")[0]
                groups.append((title[:1].upper() + title[1:], []))
            in_comment = True
            continue
        in_comment = False
        if text.startswith('"'):
            name, module = (part.strip().strip('",') for part in text.split(":", 1))
            if not groups:
                groups.append(("Other", []))
            groups[-1][1].append((name, module))
    listed = {name for _, names in groups for name, _ in names}
    missing = sorted(set(api.__all__) - listed)
    if missing:
        groups.append(("Other", [(name, api._EXPORTS[name]) for name in missing]))
    return groups


def api_reference(heading_level: int = 3) -> str:
    """mkdocstrings directives for every name of ``rayvault.learning.__all__``, by group."""
    parts: list[str] = []
    for title, names in api_groups():
        parts.append(f"{'#' * heading_level} {title}")
        parts.append(", ".join(f"`{name}`" for name, _ in names))
        for name, module in names:
            parts.append(
                f"::: rayvault.learning.{module}.{name}\n"
                f"    options:\n      heading_level: {heading_level + 1}"
            )
    return "\n\n".join(parts) + "\n"
