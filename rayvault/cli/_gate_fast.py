"""The fast path of ``rayvault-learn gate VIDEO STAGE`` (DESIGN.md §7: a cold gate process in
≤ 400 ms). Pipelines run it before every stage; Typer and Rich alone cost ~150 ms to import, so
the plain form — two arguments, optionally ``--json``, ``--root DIR``, ``--store URL`` — is
parsed here and printed without them; the gate runs on plain data (``learning_gate_plain``), so
with a file store whose files are well-formed the process imports no pydantic either. Any other
form (``--help``, ``ack``, a typo) returns None and goes through the Typer app, which prints the
same output for the same input.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any


#: Set by the console script (``cli.script``): end the process once a file-store gate's output is
#: flushed (:func:`leave`). Never set for a program that calls ``cli.main``.
leave_when_done = False

_VALUE_OPTIONS = ("--root", "--store")
_SUBCOMMANDS = ("check", "ack")
EXIT_BLOCKED = 2


def _parse(args: list[str]) -> dict[str, Any] | None:
    """Options may come before or after ``gate`` (as with the Typer app)."""
    options: dict[str, Any] = {"--json": False, "--root": None, "--store": None}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            options["--json"] = True
        elif arg in _VALUE_OPTIONS:
            if i + 1 >= len(args) or options[arg] is not None:
                return None
            options[arg] = args[i + 1]
            i += 1
        elif "=" in arg and arg.split("=", 1)[0] in _VALUE_OPTIONS:
            name, value = arg.split("=", 1)
            options[name] = value
        elif arg.startswith("-"):
            return None
        else:
            positional.append(arg)
        i += 1
    if positional[:2] == ["gate", "check"]:
        positional = positional[1:]
    if len(positional) != 3 or positional[0] != "gate" or positional[1] in _SUBCOMMANDS:
        return None
    options["video"], options["stage"] = positional[1:]
    return options


_TAGS = {"pass": "PASS", "warn": "WARN", "deny": "FAIL"}


def format_result(result: Any) -> str:
    """``BLOCKED: …`` or ``PASSED: …``, then one ``[PASS]``/``[WARN]``/``[FAIL]`` line per
    check; under a denying check, the commands that clear it."""
    lines = [f"{'BLOCKED' if result.blocked else 'PASSED'}: {result.reason}"]
    for c in result.checks:
        lines.append(f"  [{_TAGS.get(c.outcome, 'FAIL')}] {c.name}: {c.reason}")
        lines += [f"      to clear: {command}" for command in c.clear]
    return "\n".join(lines) + "\n"


def _open(root: Any, url: str | None) -> Any:
    """A server store (PostgreSQL), opened as every command opens one: its gate keeps the path
    it had (the records; the server's driver dominates its start-up anyway)."""
    from rayvault.learning.store import open_store
    from rayvault.learning.store.capabilities import require_initialised

    store = open_store(root, url)
    require_initialised(store)
    return store


def run_gate_fast(args: list[str]) -> int | None:
    """Run the plain gate form and return its exit code; None for anything else."""
    options = _parse(args)
    if options is None:
        return None
    from rayvault.cli._location import store_location, with_location, write_location
    from rayvault.learning import gate
    from rayvault.learning.exceptions import LearningError
    from rayvault.learning.store.roots import root_for_reading, uses_server_store

    location = None
    try:
        root = root_for_reading(options["--root"], options["--store"], given_as="--root")
        store = _open(root, options["--store"]) if uses_server_store(options["--store"]) else None
        on_files = store is None
        if store is None:
            # The file store as the gate needs it (``_gatestore``): none of the FileStore's
            # imports unless the index is behind or a file needs its record.
            from rayvault.learning.store.files._gatestore import GateFileStore

            store = GateFileStore(root)
        location = store_location(store)
        # Plain data: with a file store whose files are well-formed, no pydantic is imported.
        # The arguments are checked already (text from argv, UTF-8: ``cli.main``): the gate runs
        # without ``@checked``'s first-call set-up (``inspect``, type hints: ~10 ms).
        run = gate.learning_gate_plain
        result = getattr(run, "__wrapped__", run)(options["video"], options["stage"], store=store)
    except LearningError as e:
        hint = f"  hint: {e.hint}\n" if e.hint else ""
        sys.stderr.write(f"Error: {e}\n{hint}")
        if location is not None:
            write_location(location)
        return 1
    except OSError as e:
        # A data root that cannot be used as one (a file where a folder must be, no permission):
        # one line naming the path, never a traceback.
        where = f": {e.filename}" if e.filename else ""
        sys.stderr.write(f"Error: {e.strerror or e}{where}\n")
        return 1
    if options["--json"]:
        import orjson

        data, _ = with_location(result.to_dict(), location)
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(format_result(result))
        write_location(location)
    sys.stdout.flush()
    code = EXIT_BLOCKED if result.blocked else 0
    if leave_when_done and on_files:
        leave(code)
    return code


def leave(code: int) -> None:
    """End the process now with ``code``: stdout and stderr flushed, nothing else run.

    For a gate on a file store only, whose process holds nothing the interpreter's tear-down
    would finish: its files are written and closed (atomically, and flushed to disk when durable
    writes are on), its locks are released by the system with the process, its SQLite reads need
    no closing, and it starts no thread and registers no ``atexit`` handler (the OpenTelemetry
    exporters that would are the loop's, never imported here). A server store's connection is
    closed by the normal exit instead."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what the normal exit would hit too
            code = code or 1
    os._exit(code)
