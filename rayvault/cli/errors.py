"""``rayvault-learn errors``: the raw error log and its bridge to learning events."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from rayvault.cli._common import (
    STDIN,
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
    read_stdin_text,
    record_table,
    short,
    when,
)
from rayvault.cli.registry import (
    PATTERN_LIMIT,
    PATTERN_MIN_COUNT,
    MinCountOption,
    PatternLimitOption,
)

app = typer.Typer(
    help="The raw error log: log, list, resolve, group and promote stage failures.",
    no_args_is_help=True,
)
ErrorIdArgument = Annotated[str, typer.Argument(help="The error id (e-…).")]
RootCauseOption = Annotated[str, typer.Option("--root-cause", help="Why it failed.")]
FixOption = Annotated[str, typer.Option("--fix", help="What fixed it.")]


@app.command("log")
def log_command(
    stage: Annotated[str, typer.Argument(help="Stage or pipeline step that failed.")],
    error: Annotated[str, typer.Argument(help="The error text; '-' reads it from stdin.")],
    video: Annotated[str | None, typer.Option("--video", help="Video id.")] = None,
    exit_code: Annotated[int, typer.Option("--exit-code", help="The step's exit code.")] = 1,
    context: Annotated[
        str | None,
        typer.Option(
            "--context-json",
            "--context",
            metavar="JSON",
            help="Extra JSON object (the text, not a file; - reads it from stdin), e.g. "
            '\'{"run_id": "r1"}\'.',
        ),
    ] = None,
    idempotency_key: IdempotencyKeyOption = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record a stage failure in the error log.

    ERROR '-' reads the text from stdin (UTF-8); a text over the cap is cut with a marker.

    Example: ./step.sh 2> err.txt || rayvault-learn errors log tts - --exit-code $? < err.txt
    """
    import orjson

    from rayvault.learning.errors import log_error
    from rayvault.learning.exceptions import InvalidInputError

    context = from_stdin(context, "--context-json", (error, "ERROR"))
    text = read_stdin_text() if error == STDIN else error
    extra = None
    if context:
        try:
            extra = orjson.loads(context)
        except orjson.JSONDecodeError as e:
            raise InvalidInputError(f"--context-json (--context) is not valid JSON: {e}") from None
        if not isinstance(extra, dict):
            raise InvalidInputError(
                f"--context-json (--context) must be a JSON object, got {type(extra).__name__}: "
                f"{short(context, 60)}",
                hint='e.g. --context-json \'{"run_id": "r1"}\'',
            )
    entry = log_error(
        video,
        stage,
        text,
        exit_code=exit_code,
        context=extra,
        store=open_cli_store(root, store_url),
        idempotency_key=idempotency_key,
    )
    emit(
        entry.to_dict(),
        as_json,
        lambda: console().print(f"Logged {entry.id} ({escape(entry.pattern or '')})"),
        record=True,
    )


@app.command("list")
def list_command(
    stage: Annotated[
        str | None, typer.Option("--stage", help="Only this stage (and its step names).")
    ] = None,
    video: Annotated[str | None, typer.Option("--video", help="Only this video id.")] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include resolved errors.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=0, help="Show the newest N (0: all).")] = 50,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List unresolved errors (all errors with --all), newest first.

    Example: rayvault-learn errors list --stage research
    """
    from rayvault.learning.errors import list_errors

    entries = list_errors(
        stage=stage,
        video_id=video,
        unresolved=None if show_all else True,
        limit=limit or None,
        newest_first=True,
        store=open_cli_store(root, store_url, read=True),
    )

    def human() -> None:
        if not entries:
            console().print("No errors match." if show_all else "No unresolved errors.")
            return
        wide = is_wide()
        table = new_table(f"Errors ({len(entries):,} shown, newest first)")
        table.add_column("Error", no_wrap=True)
        if wide:
            table.add_column("When", no_wrap=True)
            table.add_column("Video", no_wrap=True)
        table.add_column("Stage", no_wrap=True)
        table.add_column("Resolved", no_wrap=True)
        table.add_column("Error text", ratio=1)
        for e in entries:
            cells = [e.id]
            if wide:
                cells += [when(e.timestamp), e.video_id or "-"]
            cells += [escape(e.stage), "yes" if e.resolved else "no", escape(short(e.error, 120))]
            table.add_row(*cells)
        console().print(table)

    emit([e.to_dict() for e in entries], as_json, human)


@app.command("get")
def get_command(
    error_id: ErrorIdArgument,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one error-log entry with every field.

    Example: rayvault-learn errors get e-20260219T120000-3f9a1c2b7d4e
    """
    from rayvault.learning.errors import get_error

    entry = get_error(error_id, store=open_cli_store(root, store_url, read=True))

    def human() -> None:
        console().print(record_table(f"Error {entry.id}", entry.to_dict()))

    emit(entry.to_dict(), as_json, human, record=True)


@app.command("resolve")
def resolve_command(
    error_id: ErrorIdArgument,
    root_cause: RootCauseOption,
    fix: FixOption,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark an error resolved with its root cause and fix.

    Example: rayvault-learn errors resolve e-… --root-cause "No price check" --fix "Added one"
    """
    from rayvault.learning.errors import resolve_error

    store = open_cli_store(root, store_url)
    entry = resolve_error(error_id, root_cause, fix, store=store)
    event_id = entry.learning_event_id

    def human() -> None:
        console().print(f"{entry.id} resolved")
        if event_id and store.event_statuses([event_id]).get(event_id) in ("verified", "archived"):
            console().print(f"  its learning event {event_id} is resolved too")

    emit(entry.to_dict(), as_json, human, record=True)


@app.command("patterns")
def patterns_command(
    min_count: MinCountOption = PATTERN_MIN_COUNT,
    limit: PatternLimitOption = PATTERN_LIMIT,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the recurring failure patterns of the error log (entries grouped by fingerprint),
    most frequent first; `rayvault-learn patterns` lists the learning events', with the same
    defaults.

    Videos counts every video a pattern affected; --json lists the 50 most recent ("videos")
    next to that count ("video_count").

    Example: rayvault-learn errors patterns --min-count 3
    """
    from rayvault.learning.errors import get_patterns

    patterns = get_patterns(min_count, store=open_cli_store(root, store_url, read=True))
    shown = patterns[:limit] if limit else patterns

    def human() -> None:
        if not patterns:
            console().print(f"No error-log pattern occurred {plural(min_count, 'time')} or more.")
            return
        table = new_table(
            f"Error-log patterns that occurred {min_count}+ times "
            f"({len(shown):,} of {len(patterns):,})"
        )
        table.add_column("Count", justify="right", no_wrap=True)
        table.add_column("Open", justify="right", no_wrap=True)
        table.add_column("Stage", no_wrap=True)
        table.add_column("Videos", justify="right", no_wrap=True)
        table.add_column("Last seen", no_wrap=True)
        table.add_column("Pattern", ratio=1)
        for p in shown:
            table.add_row(
                str(p.count),
                str(p.unresolved),
                escape(p.stage),
                str(p.video_count),
                when(p.last_seen),
                escape(short(p.pattern, 120)),
            )
        console().print(table)

    emit([p.to_dict() for p in shown], as_json, human)


@app.command("lessons")
def lessons_command(
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """The latest resolution of every failure pattern: what was learned.

    Example: rayvault-learn errors lessons --json
    """
    from rayvault.learning.errors import get_lessons

    lessons = get_lessons(store=open_cli_store(root, store_url, read=True))

    def human() -> None:
        if not lessons:
            console().print("No resolved errors yet.")
            return
        table = new_table("Lessons (latest resolution per pattern)")
        table.add_column("Stage", no_wrap=True)
        table.add_column("Seen", justify="right", no_wrap=True)
        table.add_column("Pattern", ratio=1)
        table.add_column("Root cause → fix", ratio=1)
        for lesson in lessons:
            table.add_row(
                escape(lesson.stage),
                str(lesson.occurrences),
                escape(short(lesson.pattern, 80)),
                escape(short(f"{lesson.root_cause} → {lesson.fix}", 100)),
            )
        console().print(table)

    emit([lesson.to_dict() for lesson in lessons], as_json, human)


@app.command("promote")
def promote_command(
    error_id: ErrorIdArgument,
    root_cause: RootCauseOption,
    fix: FixOption,
    severity: Annotated[str, typer.Option("--severity", help="Event severity.")] = "FAIL",
    component: Annotated[
        str | None, typer.Option("--component", help="Component (default: the error's stage).")
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="Agent whose memory gets the rule.")
    ] = None,
    verification: Annotated[
        str, typer.Option("--verification", help="How the fix was verified (if it was).")
    ] = "",
    idempotency_key: IdempotencyKeyOption = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve an error and create its learning event in one step (idempotent).

    Example: rayvault-learn errors promote e-… --root-cause "No price validation"
    --fix "Added price anomaly check" --component research --agent researcher
    """
    from rayvault.learning.errors import promote_to_learning

    result = promote_to_learning(
        error_id,
        root_cause=root_cause,
        fix=fix,
        severity=severity,
        component=component,
        agent=agent,
        verification=verification,
        store=open_cli_store(root, store_url),
        idempotency_key=idempotency_key,
    )

    def human() -> None:
        verb = "Promoted" if result.created else "Already promoted:"
        console().print(f"{verb} {result.error.id} → learning event {result.event.event_id}")

    emit(result.to_dict(), as_json, human)
