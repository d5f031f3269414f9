"""``rayvault-learn``: the command line. A thin layer over the library: it parses, calls the
domain, and formats; it decides nothing.

Exit codes: 0 success; 2 the learning gate blocked; 1 a usage or data error, printed as one
``Error: …`` line on stderr (a traceback only for the unexpected, or under ``--debug``).

``rayvault-learn gate VIDEO STAGE`` runs before every pipeline stage, so its plain form is served
without loading Typer and Rich (see ``_gate_fast``), and so is the top-level ``--help`` printed to
a pipe (see ``_help_fast``), and ``--version``; everything else goes through the Typer app.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to ``sys.exit``).
    ``prog``: the program name of a ``tools/*.py`` script, which runs the sub-command group
    ``argv[0]`` as a program of its own (its usage line and help name the script).

    The last-resort error boundary of every entry point (``rayvault-learn``, ``python -m
    rayvault.cli``, the ``tools/*.py`` scripts): whatever escapes is one ``Error:`` line and exit
    1; the traceback only with ``--debug``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        problem = _not_utf8(args)
        if problem is not None:
            sys.stderr.write(f"Error: {problem}\n")
            return 1
        if args == ["--version"]:  # no Typer needed (the app's --version prints the same)
            from rayvault import __version__

            sys.stdout.write(f"rayvault-learn {__version__}\n")
            sys.stdout.flush()
            return 0
        from rayvault.cli._help_fast import run_help_fast

        code = run_help_fast(args)
        if code is not None:
            return code
        _skip_pydantic_plugins()
        from rayvault.cli._gate_fast import run_gate_fast

        code = run_gate_fast(args)
        if code is not None:
            return code
        from rayvault.cli.app import run

        return run(args, prog=prog)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if "--debug" in args:
            raise
        sys.stderr.write(
            f"Error: unexpected {type(e).__name__}: {e} (run with --debug for details)\n"
        )
        sys.stderr.flush()
        return 1


def script() -> int:
    """The ``rayvault-learn`` console script and ``python -m rayvault.cli``: :func:`main` as a
    process of its own. A gate on a file store (the command a pipeline runs before every stage)
    then ends the process as soon as its output is flushed (``_gate_fast.leave``), without the
    interpreter's tear-down of every loaded module (4 ms of a 30 ms gate); a program calling
    :func:`main` keeps running."""
    from rayvault.cli import _gate_fast

    _gate_fast.leave_when_done = True
    return main()


def _skip_pydantic_plugins() -> None:
    """Spare this process pydantic's plugin discovery (a scan of every installed distribution's
    entry points, ~15 ms of a cold gate): the CLI uses no pydantic plugin. Only when the caller
    did not choose (``PYDANTIC_DISABLE_PLUGINS`` is pydantic's documented switch); the library
    never sets it, so a program importing it keeps its plugins."""
    import os

    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _not_utf8(args: list[str]) -> str | None:
    """What is not valid UTF-8 among the arguments and ``RAYVAULT_*`` variables (Python keeps
    undecodable bytes as surrogates, which no JSON file or table can hold), or None."""
    import os

    named = [(f"argument {i} ", arg) for i, arg in enumerate(args, 1)]
    named += [(f"{k}=", v) for k, v in os.environ.items() if k.startswith("RAYVAULT_")]
    for label, value in named:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            shown = value.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            return f"{label}'{shown}' is not valid UTF-8"
    return None


def run_group(group: str, argv: Sequence[str] | None = None) -> int:
    """Run one sub-command group as if it were the whole CLI (the ``tools/*.py`` scripts): its
    usage line and help name the script (``learning_event.py list``)."""
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else None
    return main([group, *args], prog=prog or None)
