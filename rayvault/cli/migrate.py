"""``rayvault-learn migrate``: bring existing learnings (resolved error-log entries, skill-graph
notes) in as learning events. A dry run unless ``--apply``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from rayvault.cli._common import (
    JsonOption,
    RootOption,
    StoreOption,
    console,
    new_table,
    open_cli_store,
    plural,
    print_json,
    progress_bar,
    severity_text,
    short,
    want_json,
)

if TYPE_CHECKING:
    from rayvault.learning.migrate import MigrationItem, MigrationReport


class Only(StrEnum):
    errors = "errors"
    notes = "notes"


SOURCE_NAMES = {"note": "skill-graph notes", "error_log": "error log"}


def migrate_command(
    apply: Annotated[
        bool,
        typer.Option(
            "--apply/--dry-run",
            help="Write the events. The default, --dry-run, reports what would be migrated "
            "and writes nothing.",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="One line per note and error-log entry.")
    ] = False,
    notes: Annotated[
        Path | None,
        typer.Option(
            "--notes",
            help="Folder of skill-graph notes to read (default: LEARNING_SKILL_GRAPH_DIR).",
            show_default=False,
        ),
    ] = None,
    only: Annotated[
        Only | None, typer.Option("--only", help="Migrate only one source.", show_default=False)
    ] = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Turn resolved error-log entries and skill-graph notes into learning events (idempotent).

    Example: rayvault-learn migrate --dry-run --verbose
    """
    from rayvault.learning.migrate import migrate_learnings

    # A dry run reads a schema that does not exist yet as an empty store (the usual first step).
    store = open_cli_store(root, store_url, read=not apply, uninitialised_ok=True)
    with progress_bar(as_json) as progress:
        report = migrate_learnings(
            apply=apply,
            notes_folder=notes.expanduser().absolute() if notes is not None else None,
            errors=only in (None, Only.errors),
            notes=only in (None, Only.notes),
            progress=progress,
            store=store,
        )
    if want_json(as_json):
        print_json(report.to_dict())
        return
    if verbose:
        for item in report.items:
            console().print(item_line(item, report.applied), soft_wrap=True)
    print_summary(report)


def item_line(item: MigrationItem, applied: bool) -> str:
    """One line per item for ``--verbose``."""
    ref = escape(item.ref)
    if item.outcome == "skipped":
        detail = f" ({escape(item.detail)})" if item.detail else ""
        return f"  skip      {ref}: {escape(item.reason or '')}{detail}"
    what = (
        f"[{severity_text(item.severity or '')}] {escape(item.component or '')}: "
        f"{escape(short(item.symptom, 80))}"
    )
    if item.outcome == "present":
        return f"  present   {ref}: {escape(item.reason or '')} ({item.event_id})"
    verb = "migrated " if applied else "migrate  "
    target = f" → {item.event_id}" if item.event_id else ""
    return f"  {verb} {ref}: {what}{target}"


def print_summary(report: MigrationReport) -> None:
    out = console()
    if report.applied:
        out.print(
            f"Migrated {plural(report.migrated, 'learning')} into learning events.", soft_wrap=True
        )
    else:
        out.print(
            f"Dry run: {plural(report.migrated, 'learning')} would be migrated; nothing was "
            "written "
            "(run with --apply to migrate).",
            soft_wrap=True,
        )
    table = new_table()
    table.add_column("Source")
    table.add_column("Found", justify="right")
    table.add_column("Migrated" if report.applied else "Would migrate", justify="right")
    table.add_column("Already present", justify="right")
    table.add_column("Skipped", justify="right")
    for source, counts in report.by_source.items():
        table.add_row(
            SOURCE_NAMES.get(source, source),
            *(str(counts[k]) for k in ("found", "migrated", "present", "skipped")),
        )
    table.add_row(
        "[bold]total[/]",
        *(str(n) for n in (report.found, report.migrated, report.present, report.skipped)),
    )
    out.print(table)
    if report.notes_folder:
        out.print(f"Notes read from {escape(report.notes_folder)}", soft_wrap=True)
    if report.skipped_by_reason:
        reasons = new_table("Skipped, by reason")
        reasons.add_column("Reason")
        reasons.add_column("Items", justify="right")
        for reason, count in report.skipped_by_reason.items():
            reasons.add_row(escape(reason), str(count))
        out.print(reasons)
    if report.unresolved_errors:
        out.print(
            f"{report.unresolved_errors} unresolved error-log entries were left as they are "
            "(resolve them first: `rayvault-learn errors resolve`)."
        )
