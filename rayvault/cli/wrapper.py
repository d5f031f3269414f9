"""``rayvault-learn run``: any command as a stage of the closed loop (``run_command``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rayvault.cli._common import GLOBALS, RootOption, StoreOption, open_cli_store

if TYPE_CHECKING:
    from rayvault.learning.loop import LoopStep

PREFIX = "rayvault-learn run: "


def _say(text: str) -> None:
    sys.stderr.write(PREFIX + text + "\n")
    sys.stderr.flush()


def _pass_on(chunk: bytes) -> None:
    sys.stderr.buffer.write(chunk)
    sys.stderr.buffer.flush()


def _worth_saying(step: LoopStep) -> bool:
    """The loop's steps said on stderr: what went wrong and what the loop did about it; a run
    that passes the gate and succeeds at once says nothing."""
    if step.step == "gate":
        return False  # a block is said with the gate's checks when the run ends
    if step.step in ("execute", "succeed"):
        return (step.attempt or 1) > 1
    # A diagnoser's failure is already said as a warning (the library logs it).
    return not (step.step == "diagnose" and "diagnoser_error" in step.data)


def run_command(
    command: Annotated[
        list[str],
        typer.Argument(
            help="The command and its arguments (after `--`, or after the options).",
            metavar="COMMAND",
            show_default=False,
        ),
    ],
    video: Annotated[str, typer.Option("--video", help="Video id, e.g. v042.")],
    stage: Annotated[str, typer.Option("--stage", help="Stage (or pipeline step name).")],
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="Agent whose rules the command gets (default: the stage's)."),
    ] = None,
    retries: Annotated[
        int, typer.Option("--retries", min=0, help="Attempts after the first, once diagnosed.")
    ] = 1,
    diagnose: Annotated[
        str | None,
        typer.Option(
            "--diagnose",
            help="Diagnoser command (no shell): the failure as JSON on stdin, "
            '{"root_cause": …, "fix": …} on stdout to learn and retry.',
        ),
    ] = None,
    diagnose_timeout: Annotated[
        float,
        typer.Option(
            "--diagnose-timeout", min=0.001, help="Seconds before the diagnoser is killed."
        ),
    ] = 60.0,
    tail_kb: Annotated[
        int, typer.Option("--tail-kb", min=1, help="KiB of the command's stderr kept per attempt.")
    ] = 64,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write what the run did as JSON to this file."),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Say nothing on stderr but errors and blocks.")
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
) -> None:
    """Run COMMAND as STAGE of VIDEO through the loop: gate, rules, log, diagnose, learn, retry.

    Exit code: the command's own; 2 gate blocked; 127 not found; 128+K killed by signal K.

    Rules: in the file named by $RAYVAULT_RULES_FILE, and in $RAYVAULT_RULES up to 32 KiB.

    Example: rayvault-learn run --video v042 --stage assets -- ./make_assets.sh v042
    """
    import orjson

    from rayvault.cli._gate_fast import format_result
    from rayvault.learning.wrapper import run_command as run

    store = open_cli_store(root, store_url)
    if quiet:
        GLOBALS.location_shown = True

    def progress(step: LoopStep) -> None:
        if not quiet and _worth_saying(step):
            _say(f"{step.step}: {step.detail}")

    result = run(
        video,
        stage,
        command,
        retries=retries,
        diagnose=diagnose,
        diagnose_timeout=diagnose_timeout,
        agent=agent,
        tail_bytes=tail_kb * 1024,
        store=store,
        stderr_sink=_pass_on,
        progress=progress,
    )
    if result.outcome == "blocked" and result.gate is not None:
        _say(f"not run: the gate blocked {video}/{stage}")
        sys.stderr.write(format_result(result.gate))
    elif result.outcome == "interrupted" and not quiet:
        _say(
            f"interrupted by {result.interrupted_by}: not logged, not learned from "
            f"(exit {result.exit_code})"
        )
    if report is not None:
        report.write_bytes(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    if result.exit_code:
        raise typer.Exit(result.exit_code)
