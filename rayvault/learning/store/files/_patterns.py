"""The file store's failure clusters: a :class:`PatternBook` over the derived SQLite index.

The clusters and signatures of grouping version 2 live in the index (``clusters``,
``signatures``), written in the index's write transaction (``BEGIN IMMEDIATE``): that
transaction is what serialises assignments across threads and processes. The common case, a
failure text whose exact masked form was seen before, is one indexed lookup made without the
write lock (a signature, once recorded, only ever resolves further through merges).

Like the rest of the index they are derived: when the index is new, they are rebuilt from the
records of version 2 (each text masked again: its signature belongs to the key the record
carries; a cluster's template is its members' tokens generalised). Merges are the one thing the
records cannot tell: they are appended to ``data/pattern_merges.json`` (fsynced) before the
index applies them, and replayed from there on a rebuild.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from rayvault.learning._aliases import fold_name
from rayvault.learning._patternbook import GROUPING_VERSION, Cluster
from rayvault.learning._time import format_ts, utcnow
from rayvault.learning.store._fs import locked, os_error
from rayvault.learning.store.files._indexreads import resolve_key

if TYPE_CHECKING:
    from rayvault.learning.store.files.store import FileStore

#: ``pattern_state`` row noting that the clusters were built from the records.
_BUILT = "clusters"


class IndexBook:
    """One :meth:`FileStore.pattern_book` block: reads freely, takes the index's write
    transaction at the first need to write (or to decide about a text not seen before)."""

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.conn = store.index.connection()
        self.in_transaction = False

    # -- the transaction --------------------------------------------------------------------
    def _begin(self) -> None:
        if self.in_transaction:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self.in_transaction = True
        # Merges another process recorded but no index applied yet (it crashed in between).
        self.store.index.catch_up_within(self.conn, "merges")
        if (
            self.conn.execute("SELECT 1 FROM pattern_state WHERE name = ?", (_BUILT,)).fetchone()
            is None
        ):
            build_clusters(self.store, self.conn)

    def commit(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            self.conn.execute("ROLLBACK")

    # -- PatternBook --------------------------------------------------------------------------
    def find(self, stage: str, sig: str) -> Cluster | None:
        found = self._find(stage, sig)
        if found is None and not self.in_transaction:
            self._begin()  # decided under the lock: another process may have just added it
            found = self._find(stage, sig)
        return found

    def _find(self, stage: str, sig: str) -> Cluster | None:
        # One indexed lookup in the common case (the signature's cluster is live).
        row = self.conn.execute(
            "SELECT c.key, c.stage, c.tokens, c.data, c.merged_into FROM signatures AS s "
            "JOIN clusters AS c ON c.key = s.key WHERE s.stage = ? AND s.sig = ?",
            (stage, sig),
        ).fetchone()
        if row is None:
            return None
        return _cluster(row) if row[4] is None else self._live(row[4])

    def _live(self, key: str) -> Cluster | None:
        seen = set()
        while key not in seen:
            seen.add(key)
            row = self.conn.execute(
                "SELECT key, stage, tokens, data, merged_into FROM clusters WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            if row[4] is None:
                return _cluster(row)
            key = row[4]
        return None

    def clusters(self, stage: str, length: int) -> list[Cluster]:
        self._begin()
        rows = self.conn.execute(
            "SELECT key, stage, tokens, data FROM clusters "
            "WHERE stage = ? AND length = ? AND merged_into IS NULL ORDER BY seq",
            (stage, length),
        )
        return [_cluster(row) for row in rows]

    def save(self, cluster: Cluster, sig: str) -> None:
        self._begin()
        _save(self.conn, cluster, sig)

    def merge(self, source: Cluster, target: Cluster) -> None:
        self._begin()
        self._record(source.key, target.key, source.stage, "clusters")

    # -- StorePatternBook ---------------------------------------------------------------------
    def link(self, source: str, target: str, reason: str) -> bool:
        self._begin()
        if source == target:
            return False
        if self.conn.execute("SELECT 1 FROM merges WHERE source = ?", (source,)).fetchone():
            return False
        if resolve_key(self.conn, target) == source:
            return False
        stage = source.split(":", 1)[0]
        self._record(source, target, stage, reason)
        return True

    def in_history(self, key: str) -> bool:
        self._begin()
        index = self.store.index
        index.catch_up_within(self.conn, "events")
        index.catch_up_within(self.conn, "errors")
        if self.conn.execute("SELECT 1 FROM clusters WHERE key = ?", (key,)).fetchone():
            return False
        return any(
            self.conn.execute(
                f"SELECT 1 FROM {table} WHERE record_fp = ? LIMIT 1", (key,)
            ).fetchone()
            for table in ("events", "errors")
        )

    def _record(self, source: str, target: str, stage: str, reason: str) -> None:
        """Append the merge to the merges log (fsynced), then apply it by catching up."""
        record = {
            "source": source,
            "target": target,
            "stage": stage,
            "at": format_ts(utcnow()),
            "version": GROUPING_VERSION,
            "reason": reason,
        }
        append_merges(self.store, [orjson.dumps(record)])
        self.store.index.catch_up_within(self.conn, "merges")


def append_merges(store: FileStore, lines: list[bytes]) -> None:
    """Append merge records to ``data/pattern_merges.json`` under its lock, and fsync them
    whatever ``RAYVAULT_FSYNC`` says: they are few, and the only copy of what they record."""
    path = store.layout.merges_path
    with locked(path):
        store.merges_log.append(lines)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise os_error(path, e, "sync") from e
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _cluster(row: tuple[Any, ...]) -> Cluster:
    data = {} if row[3] == "{}" else orjson.loads(row[3])  # the algorithm keeps none today
    return Cluster(row[0], row[1], tuple(orjson.loads(row[2])), data)


def _save(conn: sqlite3.Connection, cluster: Cluster, sig: str) -> None:
    conn.execute(
        "INSERT INTO clusters (key, stage, length, tokens, data) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, data = excluded.data",
        (
            cluster.key,
            cluster.stage,
            cluster.length,
            orjson.dumps(list(cluster.tokens)).decode(),
            orjson.dumps(cluster.data).decode(),
        ),
    )
    conn.execute(
        "INSERT OR REPLACE INTO signatures (stage, sig, key) VALUES (?, ?, ?)",
        (cluster.stage, sig, cluster.key),
    )


def build_clusters(store: FileStore, conn: sqlite3.Connection) -> int:
    """Rebuild the clusters and signatures from the records of grouping version 2, in arrival
    order, inside the caller's write transaction; returns how many records were read."""
    index = store.index
    index.catch_up_within(conn, "events")
    index.catch_up_within(conn, "errors")
    conn.execute("DELETE FROM clusters")
    conn.execute("DELETE FROM signatures")
    aliases = store.stage_aliases()
    rows = conn.execute(
        f"""
        SELECT ts, seq, 0, component, record_fp, json_extract(record(data), '$.symptom')
          FROM events WHERE {_VERSION_2}
        UNION ALL
        SELECT ts, seq, 1, stage, record_fp, json_extract(record(data), '$.error')
          FROM errors WHERE {_VERSION_2}
        ORDER BY 1, 3, 2
        """,
        (GROUPING_VERSION, GROUPING_VERSION),
    ).fetchall()
    members = [
        (fold_name(name, aliases), text, key)
        for _ts, _seq, _kind, name, key, text in rows
        if isinstance(name, str) and isinstance(text, str) and key
    ]
    # Masking again is the algorithm's work: imported here, not on every store's start-up path.
    from rayvault.learning.store._patterns import rebuild_clusters

    targets = dict(conn.execute("SELECT source, canonical FROM merges"))
    clusters, signatures = rebuild_clusters(members, targets)
    for cluster in clusters:
        conn.execute(
            "INSERT INTO clusters (key, stage, length, tokens, data, merged_into) "
            "VALUES (?, ?, ?, ?, ?, (SELECT target FROM merges WHERE source = ?))",
            (
                cluster.key,
                cluster.stage,
                cluster.length,
                orjson.dumps(list(cluster.tokens)).decode(),
                "{}",
                cluster.key,
            ),
        )
    conn.executemany("INSERT INTO signatures (stage, sig, key) VALUES (?, ?, ?)", signatures)
    conn.execute("INSERT OR REPLACE INTO pattern_state (name, value) VALUES (?, '1')", (_BUILT,))
    return len(rows)


_VERSION_2 = "json_extract(record(data), '$.fingerprint_version') = ?"


@contextlib.contextmanager
def pattern_book(store: FileStore) -> Iterator[IndexBook]:
    book = IndexBook(store)
    try:
        yield book
    except BaseException:
        book.rollback()
        raise
    book.commit()


__all__ = ["IndexBook", "append_merges", "build_clusters", "pattern_book"]
