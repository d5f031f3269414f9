"""``rayvault-learn events``: list, inspect, count, record and resolve learning events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from rayvault.cli._common import (
    IdempotencyKeyOption,
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
    print_json,
    record_table,
    severity_text,
    short,
    want_json,
    warn,
    when,
)

if TYPE_CHECKING:
    from rich.table import Table

    from rayvault.learning.store import Store

app = typer.Typer(
    help="Learning events: list, inspect, count, record, resolve and compact them.",
    no_args_is_help=True,
)

VideoOption = Annotated[str | None, typer.Option("--video", help="Only this video id.")]
ComponentOption = Annotated[
    str | None,
    typer.Option("--component", help="Only this component or stage (its step-name aliases too)."),
]
SeverityOption = Annotated[
    str | None, typer.Option("--severity", help="Only INFO, WARN, FAIL or BLOCKER.")
]
StatusOption = Annotated[
    str | None, typer.Option("--status", help="Only open, applied, verified or archived.")
]
AgentOption = Annotated[str | None, typer.Option("--agent", help="Only events of this agent.")]


@app.command("list")
def list_command(
    video: VideoOption = None,
    component: ComponentOption = None,
    severity: SeverityOption = None,
    status: StatusOption = None,
    agent: AgentOption = None,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Show the newest N (0: all).")] = 50,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List learning events, newest first.

    Example: rayvault-learn events list --component assets --severity FAIL
    """
    from rayvault.learning.events import list_events

    store = open_cli_store(root, store_url, read=True)
    events = list_events(
        video_id=video,
        component=component,
        severity=severity,
        status=status,
        agent=agent,
        limit=limit or None,
        newest_first=True,
        store=store,
    )

    def human() -> None:
        if not events:
            console().print("No learning events match.")
            return
        wide = is_wide()
        table = new_table(f"Learning events ({len(events):,} shown, newest first)")
        table.add_column("Event", no_wrap=True)
        if wide:
            table.add_column("When", no_wrap=True)
        table.add_column("Sev", no_wrap=True)
        table.add_column("Component", no_wrap=True)
        if wide:
            table.add_column("Video", no_wrap=True)
            table.add_column("Agent", no_wrap=True)
        table.add_column("Status", no_wrap=True)
        table.add_column("Symptom", ratio=1)
        for e in events:
            cells = [e.event_id]
            if wide:
                cells.append(when(e.timestamp))
            cells += [severity_text(e.severity), escape(e.component)]
            if wide:
                cells += [e.video_id or "-", e.agent or "-"]
            cells += [e.status, escape(short(e.symptom, 120))]
            table.add_row(*cells)
        console().print(table)

    emit([e.to_dict() for e in events], as_json, human)


@app.command("get")
def get_command(
    event_id: Annotated[str, typer.Argument(help="The event id (le-…).")],
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
    versions: Annotated[
        bool,
        typer.Option(
            "--versions",
            help="Every version the store still holds, oldest first: a table of when, status "
            "and the fields each changed (--json: the list of records). `events compact` "
            "keeps only the latest.",
        ),
    ] = False,
) -> None:
    """Show one event with every field.

    Example: rayvault-learn events get le-20260219T120000Z-3f9a1c2b7d4e
    """
    from rayvault.learning.efficacy import attempt_deliveries
    from rayvault.learning.events import get_event

    store = open_cli_store(root, store_url, read=True)
    if versions:
        _print_versions(event_id, store, as_json)
        return
    event = get_event(event_id, store=store)
    # Events of the closed loop: which rules each attempt delivered (the block's sha256 too).
    deliveries = attempt_deliveries(event.loop_steps)

    def human() -> None:
        data = event.to_dict()
        console().print(
            record_table(f"Learning event {event.event_id}", data, skip=("loop_steps",))
        )
        if event.loop_steps:
            console().print(loop_steps_table(event.loop_steps, event.run_id))
        if deliveries:
            console().print(deliveries_table(deliveries))

    data = event.to_dict()
    if deliveries:
        data["deliveries"] = deliveries
    emit(data, as_json, human, record=True)


def _print_versions(event_id: str, store: Store, as_json: bool) -> None:
    from rayvault.learning.events import changed_fields, event_versions
    from rayvault.learning.exceptions import EventNotFoundError

    found = event_versions(event_id, store=store)
    if not found:
        raise EventNotFoundError(event_id)

    def human() -> None:
        table = new_table(f"Versions of learning event {event_id}, oldest first")
        table.add_column("#", justify="right", no_wrap=True)
        table.add_column("When (UTC)", no_wrap=True)
        table.add_column("Status", no_wrap=True)
        table.add_column("Changed", ratio=1, overflow="fold")
        for number, (version, changed) in enumerate(
            zip(found, changed_fields(found), strict=True), 1
        ):
            table.add_row(
                str(number),
                when(version.updated or version.timestamp),
                escape(version.status),
                "first recorded" if number == 1 else escape(", ".join(changed) or "-"),
            )
        console().print(table)

    emit([v.to_dict() for v in found], as_json, human, record=True)


def deliveries_table(deliveries: list[dict[str, Any]]) -> Table:
    """Per attempt of a closed-loop run: the rules its prompt carried and how it ended."""
    table = new_table("Rules delivered, per attempt")
    table.add_column("Try", justify="right", no_wrap=True)
    table.add_column("Outcome", no_wrap=True)
    table.add_column("Block sha256", no_wrap=True)
    table.add_column("Rules", ratio=1, overflow="fold")
    for d in deliveries:
        outcome = d.get("outcome") or "?"
        if d.get("error_id"):
            outcome += f" ({d['error_id']})"
        recurred = set(d.get("recurred_rule_ids") or ())
        rules = ", ".join(r + (" (recurred)" if r in recurred else "") for r in d["rule_ids"])
        table.add_row(
            str(d["attempt"]),
            escape(outcome),
            escape((d.get("rules_sha256") or "-")[:16]),
            escape(rules or "none"),
        )
    return table


def loop_steps_table(steps: list[dict[str, Any]], run_id: str = "") -> Table:
    """The closed loop's steps, as recorded on an event: what happened, in order."""
    table = new_table(f"Closed loop, run {escape(run_id)}" if run_id else "Closed loop")
    table.add_column("When", no_wrap=True)
    table.add_column("Try", justify="right", no_wrap=True)
    table.add_column("Step", no_wrap=True, style="bold")
    table.add_column("What happened", ratio=1, overflow="fold")
    for step in steps:
        at = str(step.get("at") or "")
        table.add_row(
            escape(at[11:19] if len(at) >= 19 else at),
            str(step.get("attempt") or ""),
            escape(str(step.get("step") or "?")),
            escape(str(step.get("detail") or "")),
        )
    return table


@app.command("stats")
def stats_command(
    video: VideoOption = None,
    component: ComponentOption = None,
    agent: AgentOption = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Count events by severity, status, component and agent.

    Example: rayvault-learn events stats --json
    """
    from rayvault.learning.events import event_stats

    stats = event_stats(
        store=open_cli_store(root, store_url, read=True),
        video_id=video,
        component=component,
        agent=agent,
    )

    def human() -> None:
        out = console()
        out.print(
            f"[bold]{plural(stats['total'], 'event')}[/], "
            f"[bold]{stats['unresolved']:,}[/] unresolved"
        )
        for title, key in (
            ("Severity", "by_severity"),
            ("Status", "by_status"),
            ("Component", "by_component"),
            ("Agent", "by_agent"),
        ):
            table = new_table(title=f"By {title.lower()}")
            table.add_column(title)
            table.add_column("Events", justify="right")
            for name, count in stats[key].items():
                table.add_row(escape(name), str(count))
            out.print(table)

    emit(stats, as_json, human)


@app.command("create")
def create_command(
    severity: Annotated[str, typer.Option("--severity", help="INFO, WARN, FAIL or BLOCKER.")],
    component: Annotated[str, typer.Option("--component", help="Stage or component that failed.")],
    symptom: Annotated[
        str,
        typer.Option("--symptom", help="What went wrong, as observed; - reads it from stdin."),
    ],
    root_cause: Annotated[str, typer.Option("--root-cause", help="Why it went wrong.")] = "",
    fix: Annotated[str, typer.Option("--fix", help="What was done about it.")] = "",
    verification: Annotated[
        str, typer.Option("--verification", help="How the fix was verified (marks it verified).")
    ] = "",
    video: Annotated[str | None, typer.Option("--video", help="Video id.")] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Agent whose memory gets the rule now.")
    ] = None,
    run_id: Annotated[str, typer.Option("--run-id", help="Pipeline run id.")] = "",
    idempotency_key: IdempotencyKeyOption = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record a failure as a learning event and learn from it at once.

    Example: rayvault-learn events create --severity FAIL --component assets
    --symptom "Image hallucination" --fix "Reverted angle" --video v042 --agent dzine_producer
    """
    from rayvault.learning.events import create_event

    symptom = from_stdin(symptom, "--symptom") or ""
    event = create_event(
        run_id=run_id,
        severity=severity,
        component=component,
        symptom=symptom,
        root_cause=root_cause,
        fix_applied=fix,
        verification=verification,
        video_id=video,
        agent=agent,
        store=open_cli_store(root, store_url),
        idempotency_key=idempotency_key,
    )
    if want_json(as_json):
        print_json(event.to_dict(), record=True)
    else:
        out = console()
        out.print(f"Recorded {event.event_id} ({severity_text(event.severity)}, {event.status})")
        if event.rule_id:
            out.print(f"  rule {event.rule_id} is active for {event.agent}")
        if event.rule_conflicts_with:
            out.print(
                f"  [bold yellow]conflicts with active "
                f"{'rules' if len(event.rule_conflicts_with) > 1 else 'rule'} "
                f"{escape(', '.join(event.rule_conflicts_with))}[/]: only one of each pair is "
                f"delivered until resolved (rayvault-learn rules resolve-conflict {event.agent} "
                f"{event.rule_id} --keep …)"
            )
        if event.skill_node:
            out.print(f"  skill-graph node {escape(event.skill_node)}")
        if event.soul_update:
            out.print("  suggested SOUL addition stored on the event (events get shows it)")
        if event.regression_of:
            from rayvault.learning.regressions import regression_text

            out.print(f"  [bold red]{escape(regression_text(event))}[/]")
        for problem in event.loop_errors:
            warn(f"{problem['step']} step failed: {problem['message']}")
    if event.loop_errors:
        raise typer.Exit(1)


@app.command("resolve")
def resolve_command(
    event_ids: Annotated[
        list[str] | None, typer.Argument(help="Event ids (or select them with the filters).")
    ] = None,
    verification: Annotated[
        str | None,
        typer.Option("--verification", help="How the fixes were verified (needed to write)."),
    ] = None,
    pattern: Annotated[
        str | None, typer.Option("--pattern", help="Only events with this fingerprint.")
    ] = None,
    component: ComponentOption = None,
    video: VideoOption = None,
    severity: SeverityOption = None,
    before: Annotated[
        str | None,
        typer.Option("--before", help="Only events older than this date or timestamp (UTC)."),
    ] = None,
    migrated: Annotated[
        bool, typer.Option("--migrated", help="Only events brought in by `migrate`.")
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", help="Write: resolve the events the filters select.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only show what would be resolved.")
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark events' fixes as verified, so they no longer hold the gate; their error-log entries
    are resolved with them. Events given by id are resolved at once; events selected by filters
    are only listed (a dry run) until you add --yes.

    Example: rayvault-learn events resolve le-… --verification "re-ran, 5/5 images correct"

    Example: rayvault-learn events resolve --migrated --before 2026-01-01 --yes
    --verification "old notes, fixed long ago"
    """
    from rayvault.learning.resolution import resolve_events

    filtered = any(v is not None for v in (pattern, component, video, severity, before))
    apply = not dry_run and (yes or not (filtered or migrated))
    result = resolve_events(
        event_ids or [],
        verification=verification,
        pattern=pattern,
        component=component,
        video_id=video,
        severity=severity,
        before=before,
        migrated=True if migrated else None,
        apply=apply,
        store=open_cli_store(root, store_url, read=not apply),
    )
    emit(result.to_dict(), as_json, lambda: _print_resolution(result))


#: Events listed by a human-readable `events resolve`; --json lists them all.
_RESOLVE_SHOWN = 20


def _print_resolution(result: Any) -> None:
    out = console()
    n, m = len(result.events), len(result.errors)
    for event_id in result.already_resolved:
        out.print(f"{event_id} was resolved already: left as it is")
    if not n:
        if not result.already_resolved:
            out.print("No unresolved learning events match: nothing to resolve.")
        return
    if result.applied and n == 1 and "event_ids" in result.selection:
        event = result.events[0]
        how = f" (verified by {event.verified_by})" if event.verified_by else ""
        out.print(f"{event.event_id} is now {event.status}{how}")
    else:
        verb = "Resolved" if result.applied else "Would resolve"
        out.print(
            f"{verb} [bold]{plural(n, 'learning event')}[/] "
            f"and {plural(m, 'linked error-log entry', 'linked error-log entries')}"
            + (f", verification: {escape(result.verification)}" if result.verification else "")
        )
        wide = is_wide()
        table = new_table()
        table.add_column("Event", no_wrap=True)
        if wide:
            table.add_column("When", no_wrap=True)
        table.add_column("Sev", no_wrap=True)
        table.add_column("Component", no_wrap=True)
        if wide:
            table.add_column("Video", no_wrap=True)
        table.add_column("Symptom", ratio=1)
        for e in result.events[:_RESOLVE_SHOWN]:
            cells = [e.event_id]
            if wide:
                cells.append(when(e.timestamp))
            cells += [severity_text(e.severity), escape(e.component)]
            if wide:
                cells.append(e.video_id or "-")
            cells.append(escape(short(e.symptom, 80)))
            table.add_row(*cells)
        out.print(table)
        if n > _RESOLVE_SHOWN:
            out.print(f"… and {n - _RESOLVE_SHOWN:,} more (--json lists them all)")
    if m and (result.applied and n == 1 and "event_ids" in result.selection):
        entries = plural(m, "linked error-log entry", "linked error-log entries")
        out.print(f"  {entries} resolved with it")
    if not result.applied:
        need = "" if result.verification else ' --verification "how the fixes were checked"'
        out.print(f"Dry run: nothing written. Run again with --yes{need} to resolve them.")


@app.command("update")
def update_command(
    event_id: Annotated[str, typer.Argument(help="The event id (le-…).")],
    status: Annotated[
        str | None,
        typer.Option("--status", help="The new status: open, applied, verified or archived."),
    ] = None,
    verification: Annotated[
        str | None, typer.Option("--verification", help="How the fix was verified.")
    ] = None,
    root_cause: Annotated[
        str | None, typer.Option("--root-cause", help="Why it went wrong (replaces the old text).")
    ] = None,
    fix: Annotated[
        str | None, typer.Option("--fix", help="What was done about it (replaces the old text).")
    ] = None,
    component: Annotated[
        str | None,
        typer.Option(
            "--component",
            help="The stage or component that failed, e.g. to correct an event `migrate` filed "
            "under unknown (its failure is grouped again among that stage's patterns, and the "
            "rule learned from it moves with it).",
        ),
    ] = None,
    verified_by: Annotated[
        str | None,
        typer.Option(
            "--verified-by",
            help="How the fix was verified, with --status verified: person (the default), "
            "retry or later_runs.",
        ),
    ] = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change an event's status or texts (appended as a new version). An event that becomes
    verified records how (verified_by), and its rule learns of it: its text is verified, or a
    differing diagnosis verified by a person revises the rule.

    Example: rayvault-learn events update le-… --status archived

    Example: rayvault-learn events update le-… --component assets
    """
    from rayvault.learning.events import update_event

    event = update_event(
        event_id,
        component=component,
        status=status,
        verification=verification,
        root_cause=root_cause,
        fix_applied=fix,
        verified_by=verified_by,
        store=open_cli_store(root, store_url),
    )

    def human() -> None:
        how = f", verified by {event.verified_by}" if event.verified_by else ""
        console().print(
            f"{event.event_id} updated (status {event.status}{how}, component "
            f"{escape(event.component)})",
            soft_wrap=True,
        )

    emit(event.to_dict(), as_json, human, record=True)


@app.command("compact")
def compact_command(
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Keep one version per event in the event log; the old versions are kept in an archive.

    Example: rayvault-learn events compact
    """
    store = open_cli_store(root, store_url)
    result = store.compact_events()

    def human() -> None:
        if not result.compacted:
            console().print(
                f"{escape(result.path)} is already compact: "
                f"{plural(result.events_after, 'event')}, one version each.",
                soft_wrap=True,
            )
            return
        console().print(
            f"Compacted {escape(result.path)}: {plural(result.versions_before, 'version')} → "
            f"{plural(result.events_after, 'event')} ({_size(result.bytes_before)} → "
            f"{_size(result.bytes_after)}); the old versions are kept in "
            f"{escape(result.archive or '')}.",
            soft_wrap=True,
        )
        if result.torn_tail_dropped:
            console().print("  a torn tail (a half-written append) was left out.")

    emit(result.to_dict(), as_json, human)


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n / 1000:.1f} kB"
