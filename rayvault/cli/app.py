"""The Typer application behind ``rayvault-learn`` and its single error boundary."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from rayvault.cli import (
    demo,
    doctor,
    errors,
    events,
    gate,
    mcp,
    memory,
    migrate,
    registry,
    revisit,
    rules,
    serve,
    soul,
    store,
    wrapper,
)
from rayvault.cli._common import (
    GLOBALS,
    Globals,
    console,
    report_error,
    reset_consoles,
    show_location,
)

app = typer.Typer(
    name="rayvault-learn",
    help=(
        "Closed-loop learning for LLM-agent pipelines: failures become rules, a gate holds "
        "regressions, a weekly review promotes and retires rules."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(events.app, name="events")
app.add_typer(memory.app, name="memory")
app.add_typer(rules.app, name="rules")
app.add_typer(errors.app, name="errors")
app.add_typer(gate.app, name="gate")
app.add_typer(soul.app, name="soul")
app.command("revisit")(revisit.revisit_command)
app.add_typer(registry.patterns_app, name="patterns")
app.command("report")(registry.report_command)
app.command(
    "demo", short_help="The closed loop on a simulated pipeline, leaving its data to explore."
)(demo.demo_command)
app.command("migrate")(migrate.migrate_command)
app.command(
    "run",
    context_settings={"allow_interspersed_args": False},
    short_help="Run any command as a stage of the loop: gate, rules, log, diagnose, retry.",
)(wrapper.run_command)
app.command("doctor")(doctor.doctor_command)
app.add_typer(store.app, name="store")
app.command("mcp")(mcp.mcp_command)
app.command("serve")(serve.serve_command)


@app.callback()
def _global_options(
    root: Annotated[
        Path | None,
        typer.Option(
            "--root", help="Data root (default: $RAYVAULT_ROOT, else the current directory)."
        ),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Store URL (default: $RAYVAULT_STORE, else the file store)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """Closed-loop learning for LLM-agent pipelines."""
    GLOBALS.root, GLOBALS.store, GLOBALS.json, GLOBALS.debug = root, store, as_json, debug


class _WarningHandler(logging.Handler):
    """Library warnings (e.g. an optional loop step that failed) go to stderr, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        console(stderr=True).print(f"[yellow]warning:[/] {record.getMessage()}", soft_wrap=True)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the Typer CLI; returns the exit code."""
    from rayvault.learning.exceptions import LearningError

    GLOBALS.__dict__.update(Globals().__dict__)
    reset_consoles()
    logger = logging.getLogger("rayvault")
    handler = _WarningHandler(logging.WARNING)
    logger.addHandler(handler)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name="rayvault-learn", standalone_mode=False)
        show_location()
    except LearningError as e:
        if GLOBALS.debug:
            raise
        report_error(e)
        show_location()
        return 1
    except typer.TyperException as e:  # usage errors: exit 1, not click's 2 (2 means blocked)
        show = getattr(e, "show", None)
        if callable(show):
            show()
        else:
            console(stderr=True).print(f"Error: {e}", markup=False)
        return 1
    except typer.Abort:
        console(stderr=True).print("Aborted.")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if GLOBALS.debug:
            raise
        console(stderr=True).print(
            f"[red]Error:[/] unexpected {type(e).__name__}: {e} (run with --debug for details)",
            soft_wrap=True,
            markup=True,
        )
        show_location()
        return 1
    finally:
        logger.removeHandler(handler)
    return result if isinstance(result, int) else 0
