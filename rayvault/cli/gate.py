"""``rayvault-learn gate``: run the learning gate before a stage, or acknowledge a change."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from rayvault.cli._common import (
    JsonOption,
    RootOption,
    StoreOption,
    console,
    emit,
    open_cli_store,
    print_json,
    want_json,
)
from rayvault.cli._gate_fast import EXIT_BLOCKED, format_result


class DefaultGroup(TyperGroup):
    """A command group with a default sub-command, so ``gate VIDEO STAGE`` runs ``gate check``
    while ``gate ack VIDEO STAGE`` still reaches ``ack``."""

    default_command = "check"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=DefaultGroup,
    help=(
        "The learning gate: `rayvault-learn gate VIDEO STAGE` runs its four checks (exit 0 "
        "passed, 2 blocked, 1 error); `gate ack VIDEO STAGE` accepts a policies/SOUL change."
    ),
    no_args_is_help=True,
)
VideoArgument = Annotated[str, typer.Argument(help="Video id, e.g. v042.")]
StageArgument = Annotated[str, typer.Argument(help="Stage (or pipeline step name), e.g. assets.")]


@app.command("check")
def check_command(
    video: VideoArgument,
    stage: StageArgument,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the four checks before STAGE of VIDEO; exit 2 when blocked.

    Example: rayvault-learn gate v042 assets || exit 1
    """
    from rayvault.learning.gate import learning_gate

    result = learning_gate(video, stage, store=open_cli_store(root, store_url, read=True))
    if want_json(as_json):
        print_json(result.to_dict())
    else:
        sys.stdout.write(format_result(result))
    if result.blocked:
        raise typer.Exit(EXIT_BLOCKED)


@app.command("ack")
def ack_command(
    video: VideoArgument,
    stage: StageArgument,
    note: Annotated[
        str | None, typer.Option("--note", help="Why the change is accepted (recorded).")
    ] = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Accept the current policies and the stage agent's SOUL for VIDEO (recorded).

    Example: rayvault-learn gate ack v042 assets --note "reviewed the new SOUL rules"
    """
    from rayvault.learning.gate import acknowledge

    ack = acknowledge(video, stage, note=note, store=open_cli_store(root, store_url))

    def human() -> None:
        out = console()
        changes = [*ack.policies, *([ack.soul] if ack.soul else [])]
        if not changes:
            out.print(f"Nothing to acknowledge for {video}/{stage}: no policies or SOUL change.")
            return
        out.print(f"Acknowledged for {video}/{stage}:")
        for change in changes:
            out.print(f"  {escape(change)}", soft_wrap=True)

    emit(ack.to_dict(), as_json, human)
