"""``rayvault-learn revisit``: the weekly review (flags, promotion candidates, report, sweep)."""

from __future__ import annotations

from collections.abc import Sequence
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
    progress_bar,
    severity_text,
    short,
    when,
)

if TYPE_CHECKING:
    from rayvault.learning.models import RevisitReport


def revisit_command(
    scope: Annotated[
        str, typer.Option("--scope", help="'all', or one agent (e.g. dzine_producer).")
    ] = "all",
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            min=1,
            help="Look-back window in days (default: LEARNING_REVISIT_INTERVAL_DAYS).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be done; write nothing.")
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the weekly revisit: flags, promotion candidates, weekly report, tombstone sweep.

    Flags stale, conflicting and ineffective rules, lists SOUL promotion candidates, writes
    the weekly report (JSON and HTML) and archives tombstones past their grace period. Nothing
    is written under --dry-run.

    Example: rayvault-learn revisit --scope all --days 7
    """
    from rayvault.learning.revisit import revisit

    store = open_cli_store(root, store_url, read=dry_run)
    with progress_bar(as_json, min_items=0) as progress:
        result = revisit(scope, days, dry_run=dry_run, progress=progress, store=store)
    emit(result.to_dict(), as_json, lambda: show_revisit(result))


def show_revisit(result: RevisitReport, only: Sequence[str] | None = None) -> None:
    """The revisit for people; ``only``: show these agents' rows and findings (the demo's)."""

    out = console()
    report = result.report
    agents = [a for a in result.agents if only is None or a in only]
    who = escape(result.scope) if only is None else escape(", ".join(agents))
    out.print(
        f"[bold]Revisit of {who}[/] ({plural(len(agents), 'agent')}), "
        f"last {plural(result.days, 'day')}: {when(result.window_start)} → "
        f"{when(result.generated_at)} UTC",
        soft_wrap=True,
    )
    _print_counts(result)
    table = new_table("Agents")
    table.add_column("Agent", no_wrap=True)
    for title in ("Rules", "Stale", "Conflicts", "Ineffective", "Promotable", "Archived", "Pruned"):
        table.add_column(title, justify="right")
    sweeps = {s.agent: s for s in result.tombstone_sweep}
    for agent in agents:
        summary = report.agent_summaries.get(agent, {})
        sweep = sweeps[agent]
        table.add_row(
            escape(agent),
            str(summary.get("active_rules", 0)),
            str(summary.get("stale_rules", 0)),
            str(summary.get("conflicts", 0)),
            str(summary.get("ineffective_rules", 0)),
            str(summary.get("promotion_candidates", 0)),
            str(sweep.tombstones_archived),
            str(len(sweep.snapshots_pruned)),
        )
    out.print(table)
    out.print(
        "(Archived: tombstones moved to the tombstone archive; Pruned: old memory snapshots.)",
        style="dim",
    )

    stale = [r for r in result.revalidation.stale if r.agent in agents]
    conflicts = [c for c in result.revalidation.conflicts if c.agent in agents]
    ineffective = [f for f in result.revalidation.ineffective if f.agent in agents]
    promotions = [c for c in result.promotions if c.agent in agents]
    if stale:
        out.print(
            "[bold]Stale rules[/] (review; tombstone with `rayvault-learn memory tombstone`):"
        )
        for rule in stale:
            out.print(
                f"  {escape(rule.agent)} {rule.rule_id} {severity_text(rule.severity)} "
                f"{escape(short(rule.rule, 80))}\n    {escape(rule.reason)}",
                soft_wrap=True,
            )
    if conflicts:
        out.print("[bold]Conflicting rules[/]:")
        for conflict in conflicts:
            kind = escape(f"[{conflict.kind}]")
            out.print(
                f"  {escape(conflict.agent)} {kind} {escape(conflict.reason)}",
                soft_wrap=True,
            )
    if ineffective:
        out.print(
            "[bold]Ineffective rules[/] (their failure recurs while delivered; tombstone or "
            "rewrite):"
        )
        for found in ineffective:
            out.print(
                f"  {escape(found.agent)} {found.rule_id} {severity_text(found.severity)} "
                f"{escape(short(found.rule, 80))}\n    {escape(found.reason)}; evidence: "
                f"rayvault-learn rules history {escape(found.agent)} {found.rule_id}",
                soft_wrap=True,
            )
    pending = [c for c in promotions if not c.promoted]
    if promotions:
        out.print(
            f"[bold]SOUL promotion candidates[/]: {len(promotions)} "
            f"({len(promotions) - len(pending)} already promoted)"
        )
        for c in pending:
            out.print(
                f"  {escape(c.agent)} {c.rule_id} applied {c.applied_count}×: "
                f"{escape(short(c.rule, 80))}\n"
                f"    rayvault-learn soul promote {escape(c.agent)} {c.rule_id}",
                soft_wrap=True,
            )
    if result.dry_run:
        out.print("[yellow]Dry run:[/] nothing was written.")
    elif result.report_files:
        out.print(f"Report: {escape(result.report_files['json'])}", soft_wrap=True)
        out.print(f"        {escape(result.report_files['html'])}", soft_wrap=True)


def _print_counts(result: RevisitReport) -> None:
    """What the window holds, each number saying what it counts."""
    from rayvault.learning._report_html import duration_text

    out = console()
    report = result.report
    failures = report.failures
    resolution = report.resolution
    resolved = int(resolution.get("resolved") or 0)
    at_once = int(resolution.get("resolved_at_creation") or 0)
    out.print(
        f"Learning events: {report.events_recent:,} recorded in the window, "
        f"{report.events_total:,} in all; unresolved FAIL/BLOCKER events (any date): "
        f"{report.open_failures.get('total', 0):,}",
        soft_wrap=True,
    )
    out.print(
        f"Failure patterns of the window: {failures.get('new_patterns', 0):,} new (first seen "
        f"in it), {failures.get('recurring_patterns', 0):,} recurring (seen before it)",
        soft_wrap=True,
    )
    median = duration_text(resolution.get("median_seconds"))
    how = f"median time to resolution {median} over {plural(resolved, 'resolved event')}"
    if at_once:
        later = duration_text(resolution.get("median_seconds_after_creation"))
        how += f" ({at_once:,} resolved when recorded; {later} without them)"
    out.print(f"Resolution: {how}", soft_wrap=True)
