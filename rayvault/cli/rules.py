"""``rayvault-learn rules``: one rule's evidence — its counters and the attempts that carried it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from rayvault.cli._common import (
    JsonOption,
    RootOption,
    StoreOption,
    console,
    emit,
    new_table,
    open_cli_store,
    plural,
    record_table,
    when,
)

if TYPE_CHECKING:
    from rich.table import Table

    from rayvault.learning.models import RuleHistory

app = typer.Typer(help="Rules: their counters and the evidence behind them.", no_args_is_help=True)
AgentArgument = Annotated[str, typer.Argument(help="Agent name, e.g. dzine_producer.")]
RuleArgument = Annotated[str, typer.Argument(help="The rule id (rule-…).")]


@app.command("history")
def history_command(
    agent: AgentArgument,
    rule_id: RuleArgument,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a rule's counters and the stage attempts that carried it, newest first.

    occurrences: times its failure was learned; deliveries: attempts whose prompt carried it;
    recurrences: of those, attempts that still failed with its pattern; successes: attempts
    that succeeded; fix tries: retries right after its own failure that carried it (its fix put
    to the test), and how many failed again; applied: the seed counter (learned again +
    delivered once per run). verified: how the current text was verified (person / retry /
    later_runs, or overturned: verified by a retry, then its failure came back while it was
    delivered). Text history: every
    text the rule has had, oldest first, with why it changed and its own counters.

    Example: rayvault-learn rules history dzine_producer rule-20260219T120000Z-3f9a1c
    """
    from rayvault.learning.efficacy import rule_history

    history = rule_history(agent, rule_id, store=open_cli_store(root, store_url, read=True))

    def human() -> None:
        out = console()
        summary = {
            "rule": history.rule,
            "state": history.state,
            "severity": history.severity,
            "component": history.component,
            "occurrences": history.occurrences,
            "deliveries": history.deliveries,
            "recurrences": history.recurrences,
            "successes": history.successes,
            "fix_tries": f"{history.fix_tries} ({history.fix_failures} failed again)",
            "applied_count": history.applied_count,
            "verified_by": history.verified_by or "-",
            **({"overturned_at": when(history.overturned_at)} if history.overturned_at else {}),
            "fingerprint": history.fingerprint,
            "source_event_id": history.source_event_id,
            "last_event_id": history.last_event_id,
        }
        out.print(record_table(f"{escape(agent)}: rule {escape(history.rule_id)}", summary))
        out.print(revisions_table(history))
        if history.alternatives:
            out.print("Alternatives verified by a retry, not adopted:")
            for alt in history.alternatives:
                out.print(
                    f"  {escape(str(alt.get('source_event_id')))}: {escape(str(alt.get('rule')))}"
                )
        if not history.attempts:
            out.print("No stage attempt has carried this rule yet.")
            return
        table = new_table(f"Attempts that carried it ({len(history.attempts)}, newest first)")
        table.add_column("When", no_wrap=True)
        table.add_column("Video", no_wrap=True)
        table.add_column("Stage", no_wrap=True)
        table.add_column("Try", justify="right", no_wrap=True)
        table.add_column("Outcome", no_wrap=True)
        table.add_column("Block sha256", no_wrap=True)
        table.add_column("Error", overflow="fold")
        for a in history.attempts:
            outcome = (
                "[green]succeeded[/]"
                if a.outcome == "succeeded"
                else "[red]recurred[/]"
                if a.recurred
                else "[yellow]failed[/] (other pattern)"
            ) + (" (fix try)" if a.answered else "")
            table.add_row(
                when(a.at),
                escape(a.video_id),
                escape(a.stage),
                str(a.attempt),
                outcome,
                (a.rules_sha256 or "-")[:16],
                escape(a.error_id or ""),
            )
        out.print(table)
        if history.attempts_dropped:
            out.print(
                f"({plural(history.attempts_dropped, 'older delivery', 'older deliveries')} "
                f"{'is' if history.attempts_dropped == 1 else 'are'} counted but no longer kept.)"
            )

    emit(history.to_dict(), as_json, human, record=True)


def revisions_table(history: RuleHistory) -> Table:
    """The rule's texts, oldest first: when and why each became current, how it was verified,
    and its own deliveries / recurrences / successes, and its fix tries (worked / tried)."""
    table = new_table(f"Text history ({len(history.revisions)}, oldest first)")
    table.add_column("Since", no_wrap=True)
    table.add_column("From", no_wrap=True)
    table.add_column("Verified", no_wrap=True)
    table.add_column("Del", justify="right", no_wrap=True)
    table.add_column("Rec", justify="right", no_wrap=True)
    table.add_column("Succ", justify="right", no_wrap=True)
    table.add_column("Fix", justify="right", no_wrap=True)
    table.add_column("Text, and why", ratio=1, overflow="fold")
    for r in history.revisions:
        verified = r.verified_by or "-"
        if r.overturned_at is not None:
            verified = f"[red]overturned[/] {when(r.overturned_at)}"
        text = ("[bold]current[/] " if r.current else "") + escape(r.rule)
        table.add_row(
            when(r.at),
            escape(r.source_event_id or "-"),
            verified,
            str(r.deliveries),
            str(r.recurrences),
            str(r.successes),
            f"{r.fix_tries - r.fix_failures}/{r.fix_tries}",
            f"{text}\n[dim]{escape(r.reason)}[/]",
        )
    return table


@app.command("resolve-conflict")
def resolve_conflict_command(
    agent: AgentArgument,
    rule_id: RuleArgument,
    keep: Annotated[
        str | None,
        typer.Option(
            "--keep",
            help="The rule that stays: RULE_ID (its one partner is tombstoned) or the rule it "
            "conflicts with (RULE_ID is tombstoned).",
        ),
    ] = None,
    keep_both: Annotated[
        bool,
        typer.Option(
            "--keep-both",
            help="Keep both and clear the mark (with --keep: only the pair with that rule).",
        ),
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve a pair of conflicting rules (marked when the later one was learned; until then
    only one of them is delivered, per LEARNING_CONFLICT_PREFERENCE).

    Example: rayvault-learn rules resolve-conflict scriptwriter rule-…-old --keep rule-…-new
    """
    from rayvault.learning.memory import resolve_conflict

    result = resolve_conflict(
        agent, rule_id, keep=keep, keep_both=keep_both, store=open_cli_store(root, store_url)
    )

    def human() -> None:
        out = console()
        if result.tombstoned:
            out.print(
                f"{escape(agent)}: kept {escape(', '.join(result.kept))}, tombstoned "
                f"{escape(result.tombstoned)} ({escape(result.reason)})"
            )
        else:
            out.print(
                f"{escape(agent)}: kept {escape(', '.join(result.kept))}; conflict mark cleared, "
                "all are delivered again"
            )

    emit(result.to_dict(), as_json, human, record=True)
