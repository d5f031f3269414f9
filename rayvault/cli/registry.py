"""``rayvault-learn patterns`` and ``rayvault-learn report``: registry reads (recurring failure
patterns across videos, and the latest weekly report), and ``patterns regroup`` (re-fingerprint
what an older grouping version wrote)."""

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
    from_stdin,
    is_wide,
    new_table,
    open_cli_store,
    plural,
    progress_bar,
    short,
    warn,
    when,
)

if TYPE_CHECKING:
    from rayvault.learning.models import WeeklyReport
    from rayvault.learning.regroup import RegroupResult
    from rayvault.learning.store import Store

_STATE_STYLE = {
    "regressed": "[bold red]regressed[/]",
    "new": "[yellow]new[/]",
    "ongoing": "ongoing",
    "resolved": "[green]resolved[/]",
}

#: The defaults `patterns` and `errors patterns` share: a pattern recurs from its second
#: occurrence; the 30 most frequent are shown (--limit 0: all).
PATTERN_MIN_COUNT = 2
PATTERN_LIMIT = 30
MinCountOption = Annotated[
    int,
    typer.Option("--min-count", min=1, help="Only patterns that occurred this often or more."),
]
PatternLimitOption = Annotated[
    int, typer.Option("--limit", min=0, help="Show the N most frequent (0: all).")
]

patterns_app = typer.Typer(
    help=(
        "Recurring failure patterns of the learning events (the error log's: `errors "
        "patterns`); `patterns explain` shows how a text is grouped, `patterns regroup` "
        "re-fingerprints older records."
    ),
    invoke_without_command=True,
)


@patterns_app.callback(invoke_without_command=True)
def patterns_command(
    ctx: typer.Context,
    min_count: MinCountOption = PATTERN_MIN_COUNT,
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
    limit: PatternLimitOption = PATTERN_LIMIT,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the recurring failure patterns of the learning events (events grouped by
    fingerprint), most frequent first; `errors patterns` lists the error log's, with the same
    defaults.

    State: new (unresolved, first seen in the last 7 days or since --since), ongoing (unresolved,
    first seen before), resolved (no unresolved occurrence), regressed (back after its fix was
    verified, not fixed again).

    Example: rayvault-learn patterns --min-count 3 --component research
    """
    if ctx.invoked_subcommand is not None:
        return
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
            console().print(
                f"No learning-event pattern occurred {plural(min_count, 'time')} or more."
            )
            return
        wide = is_wide()
        table = new_table(
            f"Learning-event patterns that occurred {min_count}+ times "
            f"({len(shown):,} of {len(patterns):,})"
        )
        table.add_column("Count", justify="right")
        table.add_column("Open", justify="right")
        table.add_column("Videos", justify="right")
        table.add_column("Stage", no_wrap=True)
        table.add_column("State", no_wrap=True)
        if wide:
            table.add_column("Severities", no_wrap=True)
            table.add_column("Last seen", no_wrap=True)
        table.add_column("Pattern", ratio=1)
        for p in shown:
            cells = [str(p.count), str(p.open_count), str(p.video_count), escape(p.stage)]
            cells.append(_STATE_STYLE.get(p.state or "", p.state or ""))
            if wide:
                cells.append(" ".join(f"{s}:{n}" for s, n in p.severities.items()))
                cells.append(when(p.last_seen))
            cells.append(escape(short(p.pattern, 160)))
            table.add_row(*cells)
        console().print(table)

    emit([p.to_dict() for p in shown], as_json, human)


@patterns_app.command("regroup")
def regroup_command(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would change; write nothing.")
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Re-fingerprint every event and error-log entry written by an older grouping version.

    Reports which old patterns merge (several old keys become one) and split (one old key
    becomes several), then applies it: records get their new key, old keys that became one
    pattern are recorded as merged into it (rules and gate follow), rules of a split key follow
    their event. A second run finds nothing to do.

    Example: rayvault-learn patterns regroup --dry-run
    """
    from rayvault.learning.regroup import regroup

    store = open_cli_store(root, store_url, read=dry_run)
    with progress_bar(as_json) as progress:
        result = regroup(dry_run=dry_run, progress=progress, store=store)
    emit(result.to_dict(), as_json, lambda: print_regroup(result), record=True)


@patterns_app.command("explain")
def explain_command(
    stage: Annotated[str, typer.Argument(help="The stage (or step name) the failure is of.")],
    text: Annotated[str, typer.Argument(help="The failure text; - reads it from stdin.")],
    empty: Annotated[
        bool,
        typer.Option("--empty", help="Explain against no history (an empty book), not the store."),
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show how a failure text is grouped: the part of it that counts, each mask applied, the
    template, and the pattern it would join in the store (nothing is written).

    Example: rayvault-learn patterns explain assets "Timeout after 31.7s on B0ABC12345"
    """
    import dataclasses

    from rayvault.learning.grouping import explain_grouping
    from rayvault.learning.stages import fold_stage

    text = from_stdin(text, "TEXT") or ""
    if empty:
        result = explain_grouping(stage, text)
    else:
        # A read: a root that does not exist is refused, not created.
        store = open_cli_store(root, store_url, read=True)
        folded = fold_stage(stage, store.policies)
        with store.pattern_book(folded) as book:
            result = explain_grouping(folded, text, book=book)
    emit(
        dataclasses.asdict(result),
        as_json,
        lambda: console().print(escape(result.summary()), soft_wrap=True),
    )


def print_regroup(result: RegroupResult) -> None:
    out = console()
    if result.nothing_to_do:
        out.print(f"Nothing to do: every record is of grouping version {result.version}.")
        return
    verb = "Would regroup" if result.dry_run else "Regrouped"
    out.print(
        f"{verb} {plural(result.events, 'event')} and "
        f"{plural(result.errors, 'error-log entry', 'error-log entries')} of an older grouping "
        f"version; {result.rekeyed:,} {'gets' if result.rekeyed == 1 else 'get'} another key.",
        soft_wrap=True,
    )
    for change in result.merges:
        olds = ", ".join(f"{escape(k)} ({n})" for k, n in change.old.items())
        [(new, count)] = change.new.items()
        out.print(
            f"  merge  {olds} → {escape(new)} ({count}): {escape(short(change.pattern, 100))}",
            soft_wrap=True,
        )
    for change in result.splits:
        [(old, count)] = change.old.items()
        news = ", ".join(f"{escape(k)} ({n})" for k, n in change.new.items())
        out.print(f"  split  {escape(old)} ({count}) → {news}", soft_wrap=True)
    if not result.merges and not result.splits:
        out.print("  No pattern merges or splits.")
    links = len(result.links)
    if result.dry_run:
        out.print(
            f"{plural(links, 'old key')} would be recorded as merged. Nothing written (dry run)."
        )
    else:
        out.print(
            f"{plural(links, 'old key')} recorded as merged; {plural(result.rules_moved, 'rule')} "
            "moved to their event's new key.",
            soft_wrap=True,
        )


def report_command(
    open_html: Annotated[
        bool,
        typer.Option("--open", help="Open the report's HTML page in the web browser."),
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the latest weekly report written by `rayvault-learn revisit`, and where its HTML
    page is (the last line: HTML: PATH).

    Example: rayvault-learn report --open

    Example: rayvault-learn report --json
    """
    from rayvault.learning.registry import get_weekly_summary

    store = open_cli_store(root, store_url, read=True)
    names = store.list_weekly_reports()
    report = get_weekly_summary(store=store)
    if report is None:
        emit(None, as_json, lambda: console().print("No weekly report yet: run the revisit."))
        return
    html = report_html_location(store, names[-1]) if names else None
    if open_html:
        _open_report(html, report)

    def human() -> None:
        out = console()
        out.print(
            f"[bold]Weekly report[/] of {escape(report.scope)}, generated "
            f"{when(report.generated_at)} UTC, window {plural(report.period_days, 'day')}"
        )
        out.print(f"Events: {report.events_recent:,} in the window, {report.events_total:,} in all")
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
        if report.regressions:
            out.print("[bold]Regressions[/] (back after their fix was verified):")
            for r in report.regressions:
                last = r["events"][-1]  # the section names the latest regression
                more = f" ({len(r['events'])} in the window)" if len(r["events"]) > 1 else ""
                out.print(
                    f"  {escape(short(r['pattern'], 100))}: fixed "
                    f"{str(r['verified_at'])[:10]} by {r['regression_of']}, back in "
                    f"{escape(last.get('video_id') or last['event_id'])}{more}",
                    soft_wrap=True,
                )
        if html is not None:
            out.print(f"HTML: {escape(html)}", soft_wrap=True)

    emit(report.to_dict(), as_json, human, record=True)


def report_html_location(store: Store, name: str) -> str | None:
    """Where the weekly report ``name``'s HTML page is: its file (file store), or the table
    cell that holds it (a server store); None when the report has none."""
    layout = getattr(store, "layout", None)
    if layout is not None:
        path = layout.report_path(name, ".html")
        return str(path) if path.is_file() else None
    location = getattr(store, "location", None)
    return str(location("weekly_reports", name, "html")) if callable(location) else None


def _open_report(html: str | None, report: WeeklyReport) -> None:
    """Open the report's page in the browser: its file, or (a server store keeps the page in a
    table) the report rendered into a temporary file, named on stderr."""
    import webbrowser
    from pathlib import Path

    path = Path(html) if html is not None else None
    if path is None or not path.is_file():
        import tempfile

        from rayvault.learning._report_html import render_html

        with tempfile.NamedTemporaryFile(
            "w", suffix=".html", prefix="rayvault-report-", delete=False, encoding="utf-8"
        ) as f:
            f.write(render_html(report))
        path = Path(f.name)
        console(stderr=True).print(f"rendered to {escape(str(path))}", soft_wrap=True)
    if not webbrowser.open(path.resolve().as_uri()):
        warn(f"no web browser could be started: open {path} yourself")
