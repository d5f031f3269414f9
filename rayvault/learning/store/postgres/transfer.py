"""Whole-store dump and load for the PostgreSQL store (the items of ``transfer``).

``dump`` reads everything in one repeatable-read, read-only transaction: an export is a
consistent snapshot even while workers write. ``load`` fills an empty schema in one transaction
with ``COPY`` (all or nothing), keeping the order of every event and error version, and counts
the failure aggregate once at the end.

Failure patterns: the merges are items (``pattern_merge``, one per merge in the order made, the
text the file store's merges log holds). The clusters and signatures are derived from the records
(each record of grouping version 2 holds its key, its stage and its text), so they are not items:
``load`` builds them again from the latest version of each record
(``_patterns.rebuild_clusters``) and marks those the merges merged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import groupby
from typing import TYPE_CHECKING, Any

import orjson
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from rayvault.learning._aliases import fold_name
from rayvault.learning._patternbook import GROUPING_VERSION
from rayvault.learning._time import as_utc, format_ts
from rayvault.learning.exceptions import StoreError
from rayvault.learning.models import PatternMerge, Tombstone, TombstoneFile
from rayvault.learning.store._fs import dump_json
from rayvault.learning.store._items import (
    ERROR,
    EVENT,
    GATE_STATE,
    MEMORY,
    PATTERN_MERGE,
    REPORT,
    REPORT_HTML,
    SNAPSHOT,
    SOUL,
    TOMBSTONE_ARCHIVE,
    TOMBSTONES,
    VIDEO_EVENT,
    Item,
    not_empty,
)
from rayvault.learning.store._names import (
    REPORT_NAME,
    TOMBSTONE_ARCHIVE_NAME,
    original_tombstone_archive_day,
    parse_dated,
    snapshot_time,
)
from rayvault.learning.store._patterns import rebuild_clusters
from rayvault.learning.store._records import validate_record, with_added
from rayvault.learning.store._sql import (
    ERROR_AGGREGATE_COLUMNS,
    ERROR_COLUMNS,
    RESOLVED_EVENT_COLUMNS,
    error_row,
    resolved_event_row,
)
from rayvault.learning.store.postgres.patterns import APPLY_MERGES
from rayvault.learning.store.postgres.schema import (
    BULK_LOAD_SETTING,
    DATA_TABLES,
    FAILURE_RECOUNT,
    recount_error_patterns,
    recount_event_patterns,
)

if TYPE_CHECKING:
    import psycopg

    from rayvault.learning.store.postgres.store import PostgresStore

    Conn = psycopg.Connection[Any]

#: (kind, query returning the key parts then the text), in ``transfer.KINDS`` order.
DUMPS = (
    (EVENT, "SELECT event_id, data::text FROM event_versions ORDER BY seq"),
    (ERROR, "SELECT id, data::text FROM error_versions ORDER BY seq"),
    (
        PATTERN_MERGE,
        "SELECT source, target, stage, at, version, reason FROM pattern_merges ORDER BY seq",
    ),
    (MEMORY, "SELECT agent, memory::text FROM agents WHERE memory IS NOT NULL ORDER BY agent"),
    (
        TOMBSTONES,
        "SELECT a.agent, a.tombstones::text, (SELECT json_agg(t.data ORDER BY t.seq)::text"
        " FROM agent_tombstones AS t WHERE t.agent = a.agent)"
        " FROM agents AS a WHERE a.tombstones IS NOT NULL ORDER BY a.agent",
    ),
    (SNAPSHOT, "SELECT agent, name, data::text FROM memory_snapshots ORDER BY agent, name"),
    (
        TOMBSTONE_ARCHIVE,
        "SELECT agent, name, data::text FROM tombstone_archives ORDER BY agent, day, n, name",
    ),
    (GATE_STATE, "SELECT video_id, data::text FROM gate_states ORDER BY video_id"),
    (SOUL, "SELECT sha256, text FROM soul_snapshots ORDER BY sha256"),
    (
        REPORT,
        "SELECT name, data::text FROM weekly_reports WHERE data IS NOT NULL ORDER BY day, n, name",
    ),
    (
        REPORT_HTML,
        "SELECT name, html FROM weekly_reports WHERE html IS NOT NULL ORDER BY day, n, name",
    ),
    (
        VIDEO_EVENT,
        "SELECT video_id, event_id, data::text FROM events WHERE video_id IS NOT NULL ORDER BY seq",
    ),
)


def dump(store: PostgresStore) -> Iterator[Item]:
    with store.pooled() as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for kind, query in DUMPS:
            with conn.cursor(name=f"rayvault_dump_{kind}") as cur:
                cur.itersize = 2000
                cur.execute(query)
                for row in cur:
                    if kind == PATTERN_MERGE:
                        yield Item(kind, (row[0],), _merge_text(row))
                    elif kind == TOMBSTONES:
                        yield Item(kind, (row[0],), _tombstones_text(store, *row))
                    else:
                        yield Item(kind, tuple(row[:-1]), row[-1])


def _tombstones_text(store: PostgresStore, agent: str, text: str, added: str | None) -> str:
    """An agent's whole tombstone list as one ``memory_tombstones.json``: the document as it is
    stored, or with the rows added since it was written folded in."""
    if added is None:
        return text
    where = store.location("agents", agent, "tombstones")
    base = validate_record(TombstoneFile, orjson.loads(text), where, "the tombstone list")
    rows = store.location("agent_tombstones", agent)
    new = [
        validate_record(Tombstone, item, rows, "an added tombstone") for item in orjson.loads(added)
    ]
    return dump_json(with_added(base, new).model_dump(mode="json")).decode()


def _merge_text(row: tuple[Any, ...]) -> str:
    """A merge (a ``pattern_merges`` row) as the file store's merges log writes it."""
    source, target, stage, at, version, reason = row
    merge = {"source": source, "target": target, "stage": stage, "at": format_ts(as_utc(at))}
    return orjson.dumps(merge | {"version": version, "reason": reason}).decode()


class _Log:
    """Versions of one log, copied as they come; the latest of each record copied at the end."""

    def __init__(
        self,
        versions: str,
        table: str,
        key: str,
        columns: tuple[str, ...],
        row: Callable[[dict[str, Any]], tuple[Any, ...]],
    ) -> None:
        self.versions, self.table, self.key, self.columns, self.row = (
            versions,
            table,
            key,
            columns,
            row,
        )
        self.seq = 0
        #: key → [first seq, last seq, indexed columns, text]
        self.latest: dict[str, list[Any]] = {}

    def copy_versions(self, conn: Conn, items: Iterable[Item]) -> None:
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {self.versions} (seq, {self.key}, data) FROM STDIN") as copy,
        ):
            for item in items:
                self.seq += 1
                key = item.key[0]
                copy.write_row((self.seq, key, item.text))
                columns = self.row(orjson.loads(item.text))
                known = self.latest.get(key)
                if known is None:
                    self.latest[key] = [self.seq, self.seq, columns, item.text]
                else:
                    known[1:] = [self.seq, columns, item.text]

    def copy_latest(self, conn: Conn) -> None:
        rows = sorted(self.latest.values(), key=lambda v: v[0])
        _copy(
            conn,
            f"COPY {self.table} ({', '.join(self.columns)}, seq, last_seq, data) FROM STDIN",
            ((*columns, first, last, text) for first, last, columns, text in rows),
        )
        if self.seq:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'seq'), %s)", (self.versions, self.seq)
            )


def _copy(conn: Conn, statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def _snapshot_row(item: Item) -> tuple[Any, ...]:
    agent, name = item.key
    taken = snapshot_time(name)
    if taken is None:
        raise StoreError(f"{name!r} is not a memory snapshot name; nothing was imported")
    return (agent, name, taken, item.text)


def _tombstone_archive_row(item: Item) -> tuple[Any, ...]:
    agent, name = item.key
    original = original_tombstone_archive_day(name)
    # The original system's archive of a day sorts before ours of that day (number 0).
    dated = (original, 0) if original is not None else parse_dated(TOMBSTONE_ARCHIVE_NAME, name)
    if dated is None:
        raise StoreError(f"{name!r} is not a tombstone archive name; nothing was imported")
    return (agent, name, *dated, item.text)


def _report_rows(reports: dict[str, list[str | None]]) -> Iterator[tuple[Any, ...]]:
    for name, (data, html) in reports.items():
        dated = parse_dated(REPORT_NAME, name)
        if dated is None:
            raise StoreError(f"{name!r} is not a weekly report name; nothing was imported")
        yield (name, *dated, data, html)


COPY_SNAPSHOTS = "COPY memory_snapshots (agent, name, taken_at, data) FROM STDIN"
COPY_TOMBSTONE_ARCHIVES = "COPY tombstone_archives (agent, name, day, n, data) FROM STDIN"
COPY_REPORTS = "COPY weekly_reports (name, day, n, data, html) FROM STDIN"
COPY_GATE_STATES = "COPY gate_states (video_id, data) FROM STDIN"
COPY_SOULS = "COPY soul_snapshots (sha256, text) FROM STDIN"
COPY_AGENTS = "COPY agents (agent, memory, tombstones) FROM STDIN"
COPY_MERGES = "COPY pattern_merges (source, target, stage, at, version, reason) FROM STDIN"


def _merge_row(item: Item) -> tuple[Any, ...]:
    try:
        merge = PatternMerge.model_validate_json(item.text)
    except ValidationError as e:
        raise StoreError(f"{item.text[:200]!r} is not a pattern merge; nothing was imported") from e
    return (merge.source, merge.target, merge.stage, merge.at, merge.version, merge.reason)


def load(store: PostgresStore, items: Iterable[Item]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    with store.transaction() as conn:
        tables = sql.SQL(", ").join(
            sql.Identifier(t)
            for t in (*DATA_TABLES, "events", "errors", "fp_counts", *ERROR_AGGREGATE_COLUMNS)
        )
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(tables))
        if store.has_data():
            raise not_empty(store.describe())
        # Row by row, the aggregate's triggers would cost more than the load: they stand aside
        # for this transaction, and the aggregate is counted once at the end.
        conn.execute("SELECT set_config(%s, 'on', true)", (BULK_LOAD_SETTING,))
        # Records of the original system carry no fingerprint: keyed with this root's aliases.
        aliases = store.policies.LEARNING_STAGE_ALIASES
        logs = {
            EVENT: _Log(
                "event_versions",
                "events",
                "event_id",
                RESOLVED_EVENT_COLUMNS,
                partial(resolved_event_row, aliases=aliases),
            ),
            ERROR: _Log(
                "error_versions", "errors", "id", ERROR_COLUMNS, partial(error_row, aliases=aliases)
            ),
        }
        agents: dict[str, list[str | None]] = {}
        reports: dict[str, list[str | None]] = {}
        for kind, group in groupby(items, key=lambda item: item.kind):
            if kind in logs:
                logs[kind].copy_versions(conn, _counting(group, counts))
                continue
            batch = list(group)
            counts[kind] += len(batch)
            if kind in (MEMORY, TOMBSTONES):
                for item in batch:
                    agents.setdefault(item.key[0], [None, None])[kind == TOMBSTONES] = item.text
            elif kind in (REPORT, REPORT_HTML):
                for item in batch:
                    reports.setdefault(item.key[0], [None, None])[kind == REPORT_HTML] = item.text
            elif kind == SNAPSHOT:
                _copy(conn, COPY_SNAPSHOTS, (_snapshot_row(item) for item in batch))
            elif kind == TOMBSTONE_ARCHIVE:
                rows = (_tombstone_archive_row(item) for item in batch)
                _copy(conn, COPY_TOMBSTONE_ARCHIVES, rows)
            elif kind == GATE_STATE:
                _copy(conn, COPY_GATE_STATES, ((*item.key, item.text) for item in batch))
            elif kind == PATTERN_MERGE:
                _copy(conn, COPY_MERGES, (_merge_row(item) for item in batch))
            elif kind == SOUL:
                _copy(conn, COPY_SOULS, ((*item.key, item.text) for item in batch))
            elif kind != VIDEO_EVENT:  # per-video copies: the events' latest versions, loaded
                raise StoreError(f"unknown kind of record {kind!r}: this version cannot load it")
        _copy(conn, COPY_AGENTS, ((a, *docs) for a, docs in sorted(agents.items())))
        _copy(conn, COPY_REPORTS, _report_rows(reports))
        for log in logs.values():
            log.copy_latest(conn)
        _rebuild_patterns(conn, logs[EVENT], logs[ERROR], aliases)
        conn.execute("DELETE FROM fp_counts")
        conn.execute(
            "INSERT INTO fp_counts (component, fingerprint, total, open) " + FAILURE_RECOUNT
        )
        recount_error_patterns(conn)
        recount_event_patterns(conn)
        conn.execute("SELECT set_config(%s, 'off', true)", (BULK_LOAD_SETTING,))
    return dict(counts)


#: Where a record keeps its stage and its failure text: (stage field, text field).
_GROUPED = {"events": ("component", "symptom"), "errors": ("stage", "error")}


def _rebuild_patterns(conn: Conn, events: _Log, errors: _Log, aliases: Any) -> None:
    """The pattern tables the loaded records of grouping version 2 imply, oldest record first."""
    members = []
    for log in (events, errors):
        stage_field, text_field = _GROUPED[log.table]
        for first, _, columns, text in log.latest.values():
            data = orjson.loads(text)
            key, stage, failure = (
                data.get("fingerprint"),
                data.get(stage_field),
                data.get(text_field),
            )
            if data.get("fingerprint_version") != GROUPING_VERSION or not (
                isinstance(key, str) and isinstance(stage, str) and isinstance(failure, str)
            ):
                continue
            members.append(
                (columns[1], log.table == "errors", first, fold_name(stage, aliases), failure, key)
            )
    members.sort()
    # The merges are loaded already: a merged cluster widens the template of the one it ends in.
    ends = dict(conn.execute("SELECT source, pattern_resolve(source) FROM pattern_merges"))
    clusters, signatures = rebuild_clusters((m[3:] for m in members), ends)
    _copy(
        conn,
        "COPY pattern_clusters (key, stage, length, tokens, data) FROM STDIN",
        ((c.key, c.stage, c.length, Jsonb(list(c.tokens)), Jsonb(c.data)) for c in clusters),
    )
    _copy(conn, "COPY pattern_signatures (stage, sig, key) FROM STDIN", signatures)
    for statement in APPLY_MERGES:
        conn.execute(statement)


def _counting(items: Iterable[Item], counts: Counter[str]) -> Iterator[Item]:
    for item in items:
        counts[item.kind] += 1
        yield item
