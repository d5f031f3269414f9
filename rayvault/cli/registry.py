"""``rayvault-learn patterns`` and ``rayvault-learn report``: registry reads (recurring failure
patterns across videos, and the latest weekly report)."""

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
    short,
    when,
)


def patterns_command(
    min_count: Annotated[
        int, typer.Option("--min-count", min=1, help="Minimum occurrences of a pattern.")
    ] = 3,
    component: Annotated[
        str | None,
        typer.Option("--component", help="Only this component or stage (its aliases too)."),
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="Only the agent's learnings (its events and stages)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only events at or after this date/time.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Show the top N (0: all).")] = 30,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List recurring failure patterns (events grouped by fingerprint), most frequent first.

    Example: rayvault-learn patterns --min-count 3 --component research
    """
    from rayvault.learning.registry import get_patterns

    patterns = get_patterns(
        min_count,
        component=component,
        agent=agent,
        date_from=since,
        store=open_cli_store(root, store_url, read=True),
    )
    shown = patterns[:limit] if limit else patterns

    def human() -> None:
        if not patterns:
            console().print(f"No failure pattern occurred {min_count} times or more.")
            return
        wide = is_wide()
        table = new_table(f"Recurring failure patterns ({len(shown)} of {len(patterns)})")
        table.add_column("Count", justify="right")
        table.add_column("Open", justify="right")
        table.add_column("Videos", justify="right")
        table.add_column("Stage", no_wrap=True)
        if wide:
            table.add_column("Severities", no_wrap=True)
            table.add_column("Last seen", no_wrap=True)
        table.add_column("Pattern", ratio=1)
        for p in shown:
            cells = [str(p.count), str(p.open_count), str(p.video_count), escape(p.stage)]
            if wide:
                cells.append(" ".join(f"{s}:{n}" for s, n in p.severities.items()))
                cells.append(when(p.last_seen))
            cells.append(escape(short(p.pattern, 160)))
            table.add_row(*cells)
        console().print(table)

    emit([p.to_dict() for p in shown], as_json, human)


def report_command(
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the latest weekly report written by `rayvault-learn revisit`.

    Example: rayvault-learn report --json
    """
    from rayvault.learning.registry import get_weekly_summary

    report = get_weekly_summary(store=open_cli_store(root, store_url, read=True))
    if report is None:
        emit(None, as_json, lambda: console().print("No weekly report yet: run the revisit."))
        return

    def human() -> None:
        out = console()
        out.print(
            f"[bold]Weekly report[/] of {escape(report.scope)}, generated "
            f"{when(report.generated_at)} UTC, window {report.period_days} days"
        )
        out.print(f"Events: {report.events_recent} in the window, {report.events_total} in all")
        table = new_table("By severity (window)")
        table.add_column("Severity")
        table.add_column("Events", justify="right")
        for name, count in report.by_severity.items():
            table.add_row(escape(name), str(count))
        out.print(table)
        if report.agent_summaries:
            agents = new_table("Agents")
            agents.add_column("Agent")
            agents.add_column("Active rules", justify="right")
            agents.add_column("Tombstones", justify="right")
            for name, summary in report.agent_summaries.items():
                agents.add_row(
                    escape(name),
                    str(summary.get("active_rules", 0)),
                    str(summary.get("tombstones", 0)),
                )
            out.print(agents)
        if report.top_patterns:
            out.print("[bold]Top recurring patterns[/]:")
            for p in report.top_patterns:
                out.print(
                    f"  {p.recent_count or 0} this window, {p.count} in all: "
                    f"{escape(short(p.pattern, 120))}",
                    soft_wrap=True,
                )

    emit(report.to_dict(), as_json, human, record=True)
