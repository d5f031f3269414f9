"""The Typer application behind ``rayvault-learn`` and its single error boundary."""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

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

#: ``-h`` is ``--help`` everywhere (sub-commands inherit the root's context settings).
HELP_NAMES = ["-h", "--help"]
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": HELP_NAMES}
PROG = "rayvault-learn"

#: Argument names in help and errors as the docs write them (``gate VIDEO STAGE``); the others
#: are their parameter's name in capitals (``event_id`` → ``EVENT_ID``).
ARGUMENT_METAVARS = {"event_ids": "EVENT_ID", "agents": "AGENT"}

OUTPUT_EPILOG = (
    "Output: tables fit the terminal; when stdout is not a terminal (a pipe, a file) they are "
    "printed at full width, no cell cut or wrapped (COLUMNS=N sets a width). For scripts: "
    "--json. Exit codes: 0 success, 2 the gate blocked, 1 an error (one 'Error:' line on "
    "stderr)."
)


def reflow(text: str | None) -> str | None:
    """Help text with each paragraph on one line (Rich wraps it to the width; a docstring's
    own line breaks would cut an example in two). ``\\b`` paragraphs keep their lines."""
    if not text:
        return text
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs)


class _Argument(TyperArgument):
    """An argument as the docs write it in a usage line: ``EVENT_ID``, ``[AGENT]...`` (Typer
    0.29 writes a required one in braces, ``{EVENT_ID}``)."""

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")


def polish(command: Any) -> None:
    """The conventions of the whole tree, applied once: flags show no value type (``--json``,
    not ``--json <bool>``), arguments are named in capitals, help paragraphs reflow."""
    command.help = reflow(command.help)
    command.short_help = reflow(command.short_help)
    # The help option is made on first use and kept: make it now, with the tree's names.
    help_option = command.get_help_option(typer.Context(command, help_option_names=HELP_NAMES))
    for param in [*command.params, *([help_option] if help_option else [])]:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument) and param.name:
            if param.metavar is None:
                param.metavar = ARGUMENT_METAVARS.get(param.name, param.name.upper())
            if type(param) is TyperArgument:
                param.__class__ = _Argument
        if isinstance(param, TyperOption | TyperArgument):
            param.help = reflow(param.help)
    for sub in getattr(command, "commands", {}).values():
        polish(sub)


class RootGroup(TyperGroup):
    """The ``rayvault-learn`` group: polishes the command tree it is built with."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        polish(self)

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        polish(self)  # the completion options are added after __init__
        return super().make_context(*args, **kwargs)

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **kwargs: Any,
    ) -> Any:
        """As click's, but when this group runs stand-alone (Typer's ``CliRunner``, or the app
        called as a function) errors are reported as :func:`run` reports them (:func:`guarded`:
        one ``Error:`` line, exit 1)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **kwargs)
        sys.exit(
            guarded(
                lambda: super(RootGroup, self).main(args, prog_name, complete_var, False, **kwargs)
            )
        )


app = typer.Typer(
    cls=RootGroup,
    name=PROG,
    help=(
        "Closed-loop learning for LLM-agent pipelines: failures become rules, a gate holds "
        "regressions, a weekly review promotes and retires rules."
    ),
    epilog=OUTPUT_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings=CONTEXT_SETTINGS,
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


def _print_version(value: bool) -> None:
    if value:
        from rayvault import __version__

        sys.stdout.write(f"{PROG} {__version__}\n")
        raise typer.Exit(0)


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
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
            expose_value=True,
        ),
    ] = False,
) -> None:
    """Closed-loop learning for LLM-agent pipelines."""
    GLOBALS.root, GLOBALS.store, GLOBALS.json, GLOBALS.debug = root, store, as_json, debug


class _WarningHandler(logging.Handler):
    """Library warnings (e.g. an optional loop step that failed) go to stderr, one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        console(stderr=True).print(f"[yellow]warning:[/] {record.getMessage()}", soft_wrap=True)


def run(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the Typer CLI; returns the exit code. With ``prog`` (a ``tools/*.py`` script), the
    sub-command ``argv[0]`` runs as the program ``prog``."""
    args = list(sys.argv[1:] if argv is None else argv)

    def call() -> Any:
        command: Any = typer.main.get_command(tree_for(args, prog))
        rest = args
        if prog is not None and args and args[0] in command.commands:
            command, rest = command.commands[args[0]], args[1:]
        return command.main(
            args=rest,
            prog_name=prog or PROG,
            standalone_mode=False,
            help_option_names=HELP_NAMES,
        )

    return guarded(call)


#: The root's options that take a value (the name of a command comes after them).
_VALUED_ROOT_OPTIONS = ("--root", "--store")


def _command_name(args: Sequence[str]) -> str | None:
    """The top-level command ``args`` run (``events`` in ``--root R events list``), or None
    when they name none before an option the root does not know (``--help``, a typo)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _VALUED_ROOT_OPTIONS:
            i += 2
        elif arg in ("--json", "--debug") or arg.split("=", 1)[0] in _VALUED_ROOT_OPTIONS:
            i += 1
        else:
            return None if arg.startswith("-") else arg
    return None


def tree_for(args: Sequence[str], prog: str | None = None) -> typer.Typer:
    """The app with only the top-level command ``args`` run (``prog``: ``args[0]`` names it).

    Typer builds the click command of every command in the tree before it runs one: ~60 ms of
    type hints and signatures for the 40 commands, on every call. A command's own behaviour (its
    options, help, usage errors) depends only on the root and itself, so the app is copied with
    the other commands left out. The root's own forms (``--help``, completion, no command, an
    unknown one with its suggestions) get the whole tree."""
    name = args[0] if prog is not None and args else _command_name(args)
    commands = [c for c in app.registered_commands if c.name == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        return app
    pruned = copy.copy(app)
    pruned.registered_commands, pruned.registered_groups = commands, groups
    return pruned


def guarded(call: Callable[[], Any]) -> int:
    """The CLI's single error boundary around one run of the app: its exit code. A library
    error is one ``Error:`` line (and a hint), a usage error one line and where to find help,
    the unexpected one line too (a traceback only under ``--debug``)."""
    from rayvault.learning.exceptions import LearningError

    GLOBALS.__dict__.update(Globals().__dict__)
    reset_consoles()
    logger = logging.getLogger("rayvault")
    handler = _WarningHandler(logging.WARNING)
    logger.addHandler(handler)
    try:
        result = call()
        show_location()
    except LearningError as e:
        if GLOBALS.debug:
            raise
        report_error(e)
        show_location()
        return 1
    except typer.TyperException as e:  # usage errors: exit 1, not click's 2 (2 means blocked)
        report_usage_error(e)
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


def report_usage_error(error: Exception) -> None:
    """A usage error as one ``Error: …`` line and a hint naming the command's help, on stderr
    (click prints the usage, a blank line and the error; Typer's Rich a box). A group called
    without a command prints its help, as click does."""
    show = getattr(error, "show", None)
    if type(error).__name__ == "NoArgsIsHelpError" and callable(show):  # Typer's own test, too
        show()
        return
    format_message = getattr(error, "format_message", None)
    message = format_message() if callable(format_message) else str(error)
    lines = [f"Error: {message}"]
    ctx = getattr(error, "ctx", None)
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        lines.append(f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.")
    sys.stderr.write("".join(line + "\n" for line in lines))
    sys.stderr.flush()
