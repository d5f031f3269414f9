"""The PostgreSQL store's failure patterns: the :class:`~rayvault.learning._grouping.PatternBook`
over the ``pattern_*`` tables (migration ``m010_patterns``), and the merges.

A book is used inside ``PostgresStore.pattern_book(stage)``: one transaction holding the stage's
transaction-level advisory lock, so one stage's assignments are made one at a time by every
thread and process, and what a block saved is committed with it (or rolled back with it).

Merges are followed by the ``fingerprint`` column of ``events`` and ``errors``, which holds the
record's canonical pattern key (a trigger resolves it on every write, a merge rewrites the
source's rows): the queries shared with the file store's index follow merges unchanged, and the
gate's failure counts (``fp_counts``, kept by triggers) move with the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from rayvault.learning._patternbook import GROUPING_VERSION, Cluster
from rayvault.learning._time import as_utc, utcnow
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.models import PatternMerge
from rayvault.learning.store._patterns import MERGE_REASONS

if TYPE_CHECKING:
    import psycopg

    from rayvault.learning.store.postgres.connection import Connections

    Conn = psycopg.Connection[Any]

RESOLVE = "SELECT pattern_resolve(%s)"
RESOLVE_MANY = "SELECT k, pattern_resolve(k) FROM unnest(%s::text[]) AS k"
#: The signature's cluster: a merge moves signatures to its target, so this is the live one
#: (``merged_into`` is checked all the same: a merge recorded otherwise is still followed).
FIND = """
    SELECT c.key, c.tokens, c.data, c.merged_into FROM pattern_signatures AS s
      JOIN pattern_clusters AS c ON c.key = s.key
     WHERE s.stage = %s AND s.sig = %s
"""
CLUSTER = "SELECT key, tokens, data FROM pattern_clusters WHERE key = pattern_resolve(%s)"
LIVE = """
    SELECT key, tokens, data FROM pattern_clusters
     WHERE stage = %s AND length = %s AND merged_into IS NULL ORDER BY seq
"""
SAVE_CLUSTER = """
    INSERT INTO pattern_clusters (key, stage, length, tokens, data) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, data = excluded.data
"""
SAVE_SIGNATURE = """
    INSERT INTO pattern_signatures (stage, sig, key) VALUES (%s, %s, %s)
    ON CONFLICT (stage, sig) DO UPDATE SET key = excluded.key
"""
MERGE_STEPS = (
    "UPDATE pattern_clusters SET merged_into = %(target)s WHERE key = %(source)s",
    "UPDATE pattern_signatures SET key = %(target)s WHERE key = %(source)s",
    """INSERT INTO pattern_merges (source, target, stage, at, version, reason)
       VALUES (%(source)s, %(target)s, %(stage)s, %(at)s, %(version)s, %(reason)s)""",
    # The rows of the source (and of every key merged into it before: they hold the source's
    # key) take the target's; the failure counts' triggers move their counts along.
    "UPDATE events SET fingerprint = %(target)s WHERE fingerprint = %(source)s",
    "UPDATE errors SET fingerprint = %(target)s WHERE fingerprint = %(source)s",
    "DELETE FROM fp_counts WHERE fingerprint = %(source)s AND total = 0 AND open = 0",
)
MERGES = "SELECT source, target, stage, at, version, reason FROM pattern_merges"
#: A key stored records carry that is not a cluster: handed out by an older grouping version.
#: Rows hold the key with merges followed; the record's own key is in its text.
IN_HISTORY = """
    SELECT NOT EXISTS (SELECT 1 FROM pattern_clusters WHERE key = %(k)s)
       AND (EXISTS (SELECT 1 FROM events WHERE fingerprint = pattern_resolve(%(k)s)
                       AND (fingerprint = %(k)s OR data->>'fingerprint' = %(k)s))
            OR EXISTS (SELECT 1 FROM errors WHERE fingerprint = pattern_resolve(%(k)s)
                          AND (fingerprint = %(k)s OR data->>'fingerprint' = %(k)s)))
"""
#: What the recorded merges mean for the cluster tables: each merged cluster names its target,
#: each signature its live cluster (after an import, or as the doctor's repair).
APPLY_MERGES = (
    """UPDATE pattern_clusters AS c SET merged_into = m.target
         FROM (SELECT c2.key, m2.target FROM pattern_clusters AS c2
                 LEFT JOIN pattern_merges AS m2 ON m2.source = c2.key
                WHERE m2.target IS NULL
                   OR EXISTS (SELECT 1 FROM pattern_clusters WHERE key = m2.target)) AS m
        WHERE m.key = c.key AND c.merged_into IS DISTINCT FROM m.target""",
    """UPDATE pattern_signatures AS s SET key = pattern_resolve(s.key)
        WHERE EXISTS (SELECT 1 FROM pattern_clusters AS c
                       WHERE c.key = s.key AND c.merged_into IS NOT NULL)
          AND EXISTS (SELECT 1 FROM pattern_clusters AS c WHERE c.key = pattern_resolve(s.key))""",
)


class PostgresPatternBook:
    """A :class:`~rayvault.learning._grouping.PatternBook` on one connection, in the
    transaction of a ``pattern_book`` block (the caller holds the stage's lock)."""

    def __init__(self, store: Connections, conn: Conn) -> None:
        self._store = store
        self._conn = conn

    def find(self, stage: str, sig: str) -> Cluster | None:
        row = self._conn.execute(FIND, (stage, sig)).fetchone()
        if row is None:
            return None
        key, tokens, data, merged_into = row
        if merged_into is not None:
            found = self._conn.execute(CLUSTER, (key,)).fetchone()
            if found is None:
                return None
            key, tokens, data = found
        return Cluster(key, stage, tuple(tokens), dict(data))

    def clusters(self, stage: str, length: int) -> list[Cluster]:
        rows = self._conn.execute(LIVE, (stage, length))
        return [Cluster(key, stage, tuple(tokens), dict(data)) for key, tokens, data in rows]

    def save(self, cluster: Cluster, sig: str) -> None:
        params = (
            cluster.key,
            cluster.stage,
            cluster.length,
            Jsonb(list(cluster.tokens)),
            Jsonb(cluster.data),
        )
        self._conn.execute(SAVE_CLUSTER, params)
        self._conn.execute(SAVE_SIGNATURE, (cluster.stage, sig, cluster.key))

    def merge(self, source: Cluster, target: Cluster) -> None:
        if source.key == target.key:
            raise InvalidInputError(f"cannot merge pattern {source.key!r} into itself")
        self._record(source.key, target.key, source.stage, "clusters")

    def link(self, source: str, target: str, reason: str) -> bool:
        if reason not in MERGE_REASONS:
            raise InvalidInputError(f"unknown merge reason {reason!r}: one of {MERGE_REASONS}")
        if source == target:
            return False
        merged = self._conn.execute("SELECT 1 FROM pattern_merges WHERE source = %s", (source,))
        if merged.fetchone() or resolve(self._conn, target) == source:
            return False  # merged already, or it would make a cycle
        self._record(source, target, source.split(":", 1)[0], reason)
        return True

    def in_history(self, key: str) -> bool:
        row = self._conn.execute(IN_HISTORY, {"k": key}).fetchone()
        return bool(row and row[0])

    def _record(self, source: str, target: str, stage: str, reason: str) -> None:
        params = {
            "source": source,
            "target": target,
            "stage": stage,
            "at": utcnow(),
            "version": GROUPING_VERSION,
            "reason": reason,
        }
        # Writers of events and errors are held off until the block commits: one that resolved
        # the source's key just before could otherwise commit a row this update did not see.
        self._store.lock_tables(self._conn, "events, errors", "SHARE ROW EXCLUSIVE")
        for statement in MERGE_STEPS:
            self._conn.execute(statement, params)


def resolve(conn: Conn, key: str) -> str:
    """``key`` with the recorded merges followed (one primary-key probe per merge)."""
    row = conn.execute(RESOLVE, (key,)).fetchone()
    return str(row[0]) if row and row[0] is not None else key


def resolve_many(conn: Conn, keys: Iterable[str]) -> dict[str, str]:
    """Each of ``keys`` with the recorded merges followed, in one statement."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    return {k: str(r) for k, r in conn.execute(RESOLVE_MANY, (wanted,))}


def merges(conn: Conn, stage: str | None) -> list[PatternMerge]:
    """The recorded merges (of one stage), oldest first."""
    where, params = (" WHERE stage = %s", (stage,)) if stage is not None else ("", ())
    rows = conn.execute(f"{MERGES}{where} ORDER BY seq", params)
    return [
        PatternMerge(
            source=source, target=target, stage=s, at=as_utc(at), version=version, reason=reason
        )
        for source, target, s, at, version, reason in rows
    ]
