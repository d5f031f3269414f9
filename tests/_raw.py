"""What a store holds, below the ``Store`` API, for tests that run on both stores: set up what an
older writer left (or a damaged record), and look at what was written — files for the file
store, table rows for PostgreSQL. Documents are named by the kinds of ``store export``
(``transfer.MEMORY``, ``transfer.REPORT``, …) and their keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayvault.learning.store import FileStore, Store
from rayvault.learning.store._names import (
    REPORT_NAME,
    TOMBSTONE_ARCHIVE_NAME,
    parse_dated,
    snapshot_time,
)
from rayvault.learning.store.files.layout import Layout
from rayvault.learning.store.transfer import (
    GATE_STATE,
    MEMORY,
    REPORT,
    REPORT_HTML,
    SNAPSHOT,
    TOMBSTONE_ARCHIVE,
    TOMBSTONES,
)

#: (insert or replace, select) per kind on PostgreSQL; parameters: the key, then the text.
_SQL = {
    MEMORY: (
        "INSERT INTO agents (agent, memory) VALUES (%s, %s) "
        "ON CONFLICT (agent) DO UPDATE SET memory = excluded.memory",
        "SELECT memory::text FROM agents WHERE agent = %s",
    ),
    TOMBSTONES: (
        "INSERT INTO agents (agent, tombstones) VALUES (%s, %s) "
        "ON CONFLICT (agent) DO UPDATE SET tombstones = excluded.tombstones",
        "SELECT tombstones::text FROM agents WHERE agent = %s",
    ),
    SNAPSHOT: (
        "INSERT INTO memory_snapshots (agent, name, taken_at, data) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (agent, name) DO UPDATE SET data = excluded.data",
        "SELECT data::text FROM memory_snapshots WHERE agent = %s AND name = %s",
    ),
    TOMBSTONE_ARCHIVE: (
        "INSERT INTO tombstone_archives (agent, name, day, n, data) VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (agent, name) DO UPDATE SET data = excluded.data",
        "SELECT data::text FROM tombstone_archives WHERE agent = %s AND name = %s",
    ),
    GATE_STATE: (
        "INSERT INTO gate_states (video_id, data) VALUES (%s, %s) "
        "ON CONFLICT (video_id) DO UPDATE SET data = excluded.data",
        "SELECT data::text FROM gate_states WHERE video_id = %s",
    ),
    REPORT: (
        "INSERT INTO weekly_reports (name, day, n, data) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
        "SELECT data::text FROM weekly_reports WHERE name = %s",
    ),
    REPORT_HTML: (
        "INSERT INTO weekly_reports (name, day, n, html) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (name) DO UPDATE SET html = excluded.html",
        "SELECT html FROM weekly_reports WHERE name = %s",
    ),
}
#: Every table of the PostgreSQL store, for :func:`everything`.
_TABLES = (
    "event_versions",
    "events",
    "error_versions",
    "errors",
    "fp_counts",
    "agents",
    "memory_snapshots",
    "tombstone_archives",
    "gate_states",
    "soul_snapshots",
    "weekly_reports",
    "event_version_archive",
    "schema_migrations",
)


def is_pg(store: Store) -> bool:
    return not isinstance(store, FileStore)


def _pg(store: Store) -> Any:
    from rayvault.learning.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return store


def _extra(kind: str, key: tuple[str, ...]) -> tuple[Any, ...]:
    """The columns a table keeps besides the key: the time or day and number in the name."""
    if kind == SNAPSHOT:
        taken = snapshot_time(key[1])
        assert taken, key
        return (taken,)
    if kind == TOMBSTONE_ARCHIVE:
        dated = parse_dated(TOMBSTONE_ARCHIVE_NAME, key[1])
        assert dated, key
        return dated
    if kind in (REPORT, REPORT_HTML):
        dated = parse_dated(REPORT_NAME, key[0])
        assert dated, key
        return dated
    return ()


def where(store: Store, kind: str, *key: str) -> str:
    """How the store names the document in its messages: a path, or a table row."""
    if not is_pg(store):
        return str(Layout(store.root).item_path(kind, key))
    schema = _pg(store).schema
    first, rest = key[0], "/".join(key[1:])
    return {
        MEMORY: f"{schema}.agents[{first}].memory",
        TOMBSTONES: f"{schema}.agents[{first}].tombstones",
        GATE_STATE: f"{schema}.gate_states[{first}]",
        REPORT: f"{schema}.weekly_reports[{first}].data",
        REPORT_HTML: f"{schema}.weekly_reports[{first}].html",
        TOMBSTONE_ARCHIVE: f"{schema}.tombstone_archives[{first}/{rest}]",
        SNAPSHOT: f"{schema}.memory_snapshots[{first}]/{rest}",
    }[kind]


def put(store: Store, kind: str, key: tuple[str, ...], text: str) -> None:
    """Store ``text`` as the document ``kind``/``key``, replacing it, as an older writer or a
    person editing it would have (no validation, no snapshot)."""
    if not is_pg(store):
        path = Layout(store.root).item_path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    pg = _pg(store)
    pg.init_schema()
    insert, _ = _SQL[kind]
    params = (*key, *_extra(kind, key), text)
    with pg.connect() as conn:
        conn.execute(insert, params)


def get(store: Store, kind: str, *key: str) -> str | None:
    """The stored text of a document (None when there is none)."""
    if not is_pg(store):
        path = Layout(store.root).item_path(kind, key)
        return path.read_text() if path.exists() else None
    pg = _pg(store)
    _, select = _SQL[kind]
    pg.init_schema()
    with pg.connect() as conn:
        row = conn.execute(select, key).fetchone()
    return None if row is None else row[0]


def names(store: Store, kind: str, agent: str | None = None) -> list[str]:
    """The names of the documents of a kind (an agent's, for snapshots and archives)."""
    if not is_pg(store):
        files = store
        assert isinstance(files, FileStore)
        if kind == REPORT:
            folder = files.reports_dir
            return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
        sub = {SNAPSHOT: "memory_archive", TOMBSTONE_ARCHIVE: "tombstone_archive"}[kind]
        folder = files.agents_dir / str(agent) / sub
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    pg = _pg(store)
    pg.init_schema()
    query = {
        REPORT: ("SELECT name FROM weekly_reports WHERE data IS NOT NULL ORDER BY name", ()),
        SNAPSHOT: ("SELECT name FROM memory_snapshots WHERE agent = %s ORDER BY name", (agent,)),
        TOMBSTONE_ARCHIVE: (
            "SELECT name FROM tombstone_archives WHERE agent = %s ORDER BY name",
            (agent,),
        ),
    }[kind]
    with pg.connect() as conn:
        return [name for (name,) in conn.execute(*query)]


def everything(store: Store, root: Path | None = None) -> dict[str, str]:
    """Every file under the data root (the derived index and lock files aside) and, on
    PostgreSQL, every row of every table of the schema (or that it does not exist): to show
    that something wrote nothing."""
    root = root or store.root
    found = {
        str(p.relative_to(root)): p.read_bytes().decode(errors="replace")
        for p in sorted(root.rglob("*"))
        if p.is_file() and "state/cache" not in p.as_posix() and not p.name.endswith(".lock")
    }
    if is_pg(store):
        pg = _pg(store)
        with pg.connect() as conn:
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    (pg.schema,),
                )
            }
            found["<tables>"] = ", ".join(sorted(tables))
            for table in _TABLES:
                if table in tables:
                    rows = conn.execute(f"SELECT t::text FROM {table} AS t ORDER BY 1")
                    found[f"<{table}>"] = "\n".join(r[0] for r in rows)
    return found


def append_events_before_m012(store: Any, events: list[Any]) -> None:
    """Write events into a PostgreSQL schema not yet at ``m012_event_patterns`` as the store
    wrote them then (the ``events`` table had no ``resolved_ts`` column)."""
    import orjson

    from rayvault.learning.store._sql import EVENT_COLUMNS, event_row
    from rayvault.learning.store.postgres.queries import _upsert_sql

    types = {"ts": "bigint", "resolved": "smallint"}
    upsert = _upsert_sql("event_versions", "events", "event_id", EVENT_COLUMNS, types)
    with store.connect() as conn:
        for event in events:
            data = event.model_dump_json()
            conn.execute(upsert, (event.event_id, data, *event_row(orjson.loads(data))))
