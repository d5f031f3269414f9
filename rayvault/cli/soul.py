"""``rayvault-learn soul``: SOUL promotion candidates, and promoting a rule into a SOUL file."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from rayvault.cli._common import (
    JsonOption,
    RootOption,
    StoreOption,
    console,
    emit,
    is_wide,
    new_table,
    open_cli_store,
    severity_text,
    short,
    when,
)

app = typer.Typer(
    help="SOUL governance: promotion candidates, and promoting a rule into a SOUL file.",
    no_args_is_help=True,
)


@app.command("candidates")
def candidates_command(
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    threshold: Annotated[
        int | None,
        typer.Option(
            "--threshold",
            min=1,
            help="Minimum applications (default: the promotion threshold of the policies).",
            show_default=False,
        ),
    ] = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List active rules applied often enough to be promoted into their agent's SOUL file.

    Example: rayvault-learn soul candidates --agent dzine_producer --threshold 3
    """
    from rayvault.learning.registry import get_promotion_candidates

    found = get_promotion_candidates(
        threshold, agent=agent, store=open_cli_store(root, store_url, read=True)
    )

    def human() -> None:
        if not found:
            console().print("No rule has reached the promotion threshold.")
            return
        out = console()
        if not is_wide():  # a table of long rule ids leaves no room for the text: a list
            out.print(f"[bold]SOUL promotion candidates ({len(found)})[/]")
            for c in found:
                mark = " (in SOUL)" if c.promoted else ""
                out.print(
                    f"  {escape(c.agent)} {c.rule_id} {severity_text(c.severity)} "
                    f"applied {c.applied_count}×{mark}\n    {escape(short(c.rule, 200))}",
                    soft_wrap=True,
                )
        else:
            table = new_table(f"SOUL promotion candidates ({len(found)})")
            table.add_column("Agent", no_wrap=True)
            table.add_column("Rule", no_wrap=True)
            table.add_column("Sev", no_wrap=True)
            table.add_column("Applied", justify="right")
            table.add_column("Last applied", no_wrap=True)
            table.add_column("In SOUL", no_wrap=True)
            table.add_column("Rule text", ratio=1)
            for c in found:
                table.add_row(
                    escape(c.agent),
                    c.rule_id,
                    severity_text(c.severity),
                    str(c.applied_count),
                    when(c.last_applied),
                    "yes" if c.promoted else "no",
                    escape(short(c.rule, 160)),
                )
            out.print(table)
        out.print("Promote one with: rayvault-learn soul promote AGENT RULE_ID")

    emit([c.to_dict() for c in found], as_json, human)


@app.command("promote")
def promote_command(
    agent: Annotated[str, typer.Argument(help="Agent name, e.g. dzine_producer.")],
    rule_id: Annotated[str, typer.Argument(help="The active rule to promote (rule-…).")],
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write an active rule into the agent's SOUL file, under its "Learned rules" section.

    Idempotent: promoting the same rule again leaves one section (its evidence refreshed).

    Example: rayvault-learn soul promote dzine_producer rule-20260219T120000Z-3f9a1c2b7d4e
    """
    from rayvault.learning.soul import promote_rule

    result = promote_rule(agent, rule_id, store=open_cli_store(root, store_url))

    def human() -> None:
        out = console()
        verb = {
            "added": "Promoted",
            "updated": "Updated the promoted section of",
            "unchanged": "Already promoted:",
        }[result.action]
        out.print(f"{verb} {result.rule_id} in {escape(result.soul_file)}", soft_wrap=True)
        if not result.earned:
            out.print(
                f"[yellow]note:[/] not earned yet: {escape(result.not_earned_reason)} "
                "(LEARNING_PROMOTION_THRESHOLD_OCCURRENCES)"
            )
        if result.action != "unchanged":
            out.print(escape(result.section), end="")

    emit(result.to_dict(), as_json, human)
