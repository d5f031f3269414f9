"""``rayvault-learn store``: the store's schema (PostgreSQL), its status, and moving a whole data
root between the file layout and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    print_json,
    progress_bar,
    want_json,
    warn,
)

app = typer.Typer(
    help="The store: create or upgrade its schema, show its status, export or import a data root.",
    no_args_is_help=True,
)


def _migrations_done(applied: list[str], store: Any, verb: str, as_json: bool) -> None:
    from rayvault.learning.store.admin import has_schema

    data = {"store": store.describe(), "applied": applied}

    def human() -> None:
        out = console()
        if not has_schema(store):
            out.print(
                f"{escape(store.describe())}: no schema to {verb} "
                "(the file store creates its files as it writes).",
                soft_wrap=True,
            )
        elif applied:
            out.print(f"{escape(store.describe())}: applied {', '.join(applied)}", soft_wrap=True)
        else:
            out.print(
                f"{escape(store.describe())}: schema up to date, nothing to apply.",
                soft_wrap=True,
            )

    emit(data, as_json, human)


@app.command("init")
def init_command(
    root: RootOption = None, store_url: StoreOption = None, as_json: JsonOption = False
) -> None:
    """Create the store's schema and apply every migration; safe to run again.

    Example: rayvault-learn --store postgresql://db.internal/pipeline store init
    """
    from rayvault.learning.store.admin import init_schema

    store = open_cli_store(root, store_url)
    _migrations_done(init_schema(store), store, "initialise", as_json)


@app.command("upgrade")
def upgrade_command(
    root: RootOption = None, store_url: StoreOption = None, as_json: JsonOption = False
) -> None:
    """Apply the migrations a newer version brings to an initialised schema, then regroup the
    records an older grouping version wrote (as `rayvault-learn patterns regroup`).

    Example: rayvault-learn --store postgresql://db.internal/pipeline store upgrade
    """
    from rayvault.cli.registry import print_regroup
    from rayvault.learning.regroup import regroup
    from rayvault.learning.store.admin import upgrade_schema

    store = open_cli_store(root, store_url)
    applied = upgrade_schema(store)
    with progress_bar(as_json) as progress:
        result = regroup(progress=progress, store=store)
    if want_json(as_json):
        print_json({"store": store.describe(), "applied": applied, "regroup": result.to_dict()})
        return
    _migrations_done(applied, store, "upgrade", as_json)
    print_regroup(result)


@app.command("status")
def status_command(
    root: RootOption = None, store_url: StoreOption = None, as_json: JsonOption = False
) -> None:
    """Show which store is used, its schema's migrations, and how much it holds.

    Example: rayvault-learn store status --json
    """
    from rayvault.learning.store.admin import store_status

    status = store_status(
        open_cli_store(root, store_url, read=True, uninitialised_ok=True)
    )  # looks; never creates or upgrades

    def human() -> None:
        out = console()
        out.print(escape(status["description"]))
        if status["backend"] != "file":
            if not status["initialised"]:
                out.print(
                    f"schema {status['schema']} is not initialised: run `rayvault-learn store init`"
                )
            else:
                names = [m["name"] for m in status["migrations"]]
                out.print(f"migrations applied: {', '.join(names) or 'none'}")
                if status["pending"]:
                    out.print(
                        f"[yellow]pending:[/] {', '.join(status['pending'])} "
                        "(`rayvault-learn store upgrade`, or the next write applies them)"
                    )
                if status["unknown"]:
                    out.print(
                        f"[yellow]applied by a newer version:[/] {', '.join(status['unknown'])}"
                    )
        if status["counts"]:
            table = new_table()
            table.add_column("Holds")
            table.add_column("Count", justify="right")
            for name, count in status["counts"].items():
                table.add_row(name.replace("_", " "), f"{count:,}")
            out.print(table)

    emit(status, as_json, human)


def _summary(summary: Any, as_json: bool) -> None:
    from rayvault.learning.store.transfer import KIND_LABELS

    data = summary.to_dict()
    if not want_json(as_json):
        for path in data["skipped"]:
            warn(f"not transferred (not a record this version moves): {escape(path)}")

    def human() -> None:
        out = console()
        out.print(f"{escape(data['source'])} → {escape(data['destination'])}", soft_wrap=True)
        table = new_table()
        table.add_column("Records")
        table.add_column("Count", justify="right")
        for kind, count in data["counts"].items():
            table.add_row(KIND_LABELS.get(kind, kind), f"{count:,}")
        out.print(table)

    emit(data, as_json, human)


@app.command("export")
def export_command(
    to: Annotated[
        Path, typer.Option("--to", help="Folder to write the data root into (no store data yet).")
    ],
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write everything the store holds into DIR in the file layout (every version kept).

    Example: rayvault-learn --store postgresql://db.internal/pipeline store export --to ./backup
    """
    from rayvault.learning.store.transfer import export_store

    _summary(export_store(open_cli_store(root, store_url, read=True), to), as_json)


@app.command("import")
def import_command(
    source: Annotated[Path, typer.Option("--from", help="A data root in the file layout to load.")],
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a file-layout data root into the store, which must hold no data yet.

    Example: rayvault-learn --store postgresql://db.internal/pipeline store import --from .
    """
    from rayvault.learning.store.transfer import import_root

    _summary(import_root(open_cli_store(root, store_url), source), as_json)
