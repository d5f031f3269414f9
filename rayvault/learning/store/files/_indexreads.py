"""The gate's reads of the derived SQLite index, and the check that the index is current.

A cold ``rayvault-learn gate`` reads the index a few times and writes nothing to it when it is
current with the logs, which is the usual case (every writer catches it up). Its queries live
here, used by :class:`~rayvault.learning.store.files.store.FileStore` as well (one
implementation), with what they need and nothing more: no ``orjson``, ``logging``,
``dataclasses`` or ``hashlib``. :class:`IndexReader` answers ``sync``/``absent`` like
:class:`~rayvault.learning.store.files._sqlindex.SqliteIndex`: when every log it is asked about
is exactly where the index last caught up with it (same file, size, time and the bytes before
the indexed offset, same step-name aliases, same schema version), it queries the index as it is;
otherwise it hands over, for good, to a ``SqliteIndex`` of the same root, which catches up as
always (and is imported only then).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from rayvault.learning._hash import sha256_hex
from rayvault.learning._template import template_of
from rayvault.learning.store._fs import check_inside, os_error
from rayvault.learning.store._leanjson import loads_value
from rayvault.learning.store._sql import (
    failing_fingerprints_sql,
    known_failures_sql,
    open_occurrences_sql,
    shown_pattern,
)
from rayvault.learning.store.files._driver import sqlite3
from rayvault.learning.store.files._packed import register as register_record_function
from rayvault.learning.store.files._packed import unpack

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any, Protocol

    from rayvault.learning.store.files._sqlindex import SqliteIndex

#: 11: event records packed (``_packed``; issue 15, item 5). 12: the event pattern aggregates
#: and open counts (issue 15, item 2). 13: the regression events indexed apart (the web app's
#: pattern states ask for them on every page; issue 18).
SCHEMA_VERSION = 13
#: How many bytes before the indexed offset of a log the index keeps, to tell a rewrite.
SIG_BYTES = 32
#: The logs the index follows, each with the logs caught up before it (``_sqlindex.Source``),
#: and whether its rows depend on the step-name aliases.
LOGS: dict[str, tuple[tuple[str, ...], bool]] = {
    "merges": ((), False),
    "events": (("merges",), True),
    "errors": (("merges",), True),
}


def alias_hash(aliases: Mapping[str, str]) -> str:
    """The hash of a step-name alias map the index records it was built with."""
    text = "\n".join(f"{k}\t{v}" for k, v in sorted(aliases.items()))
    return sha256_hex(text.encode())[:16]


def stat_key(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of a log; None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise os_error(path, e, "read") from e
    return st.st_ino, st.st_size, st.st_mtime_ns


if TYPE_CHECKING:

    class Synced(Protocol):
        """What the queries below ask of an index (``SqliteIndex`` and :class:`IndexReader`)."""

        def sync(self, name: str) -> sqlite3.Connection: ...
        def absent(self, name: str) -> bool: ...


class IndexReader:
    """The derived index of one root, read as it is while it is current (see the module doc)."""

    def __init__(
        self,
        path: Path,
        logs: Mapping[str, Path],
        aliases: Callable[[], Mapping[str, str]],
        full: Callable[[], SqliteIndex],
        *,
        root: Path,
    ) -> None:
        self.path = path
        self.root = root
        self.logs = logs
        self._aliases = aliases
        self._make_full = full
        self._full: SqliteIndex | None = None
        self._conn: sqlite3.Connection | None = None
        self._seen: dict[str, tuple[int, int, int] | None] = {}
        self._alias_hash: str | None = None

    def sync(self, name: str) -> sqlite3.Connection:
        if self._full is None:
            conn = self._current(name)
            if conn is not None:
                return conn
            self._hand_over()
        assert self._full is not None
        return self._full.sync(name)

    def absent(self, name: str) -> bool:
        if self._full is not None:
            return self._full.absent(name)
        return name in self._seen and self._seen[name] is None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._full is not None:
            self._full.close()

    @property
    def full(self) -> SqliteIndex:
        """The ``SqliteIndex`` this reader hands over to (made now if it has not yet)."""
        if self._full is None:
            self._hand_over()
        assert self._full is not None
        return self._full

    def _hand_over(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._full = self._make_full()

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is not None:
            return self._conn
        if not self.path.is_file() or not self.root.is_dir():
            return None  # nothing indexed yet, or no root: the full index knows what to do
        check_inside(self.path)  # SQLite follows links: the cache must not lead out of the root
        try:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            register_record_function(conn)
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                conn.close()
                return None
        except sqlite3.Error:
            conn.close()
            return None
        self._conn = conn
        return conn

    def _current(self, name: str) -> sqlite3.Connection | None:
        """The connection when log ``name`` (and those it depends on) is indexed up to where it
        is now; None otherwise."""
        depends, uses_aliases = LOGS[name]
        for dependency in depends:
            if self._current(dependency) is None:
                return None
        if name in self._seen:
            return self._conn
        seen = stat_key(self.logs[name])
        conn = self._connect()
        if conn is None:
            return None
        try:
            row = conn.execute(
                "SELECT inode, offset, sig, size, mtime, aliases FROM sources WHERE name = ?",
                (name,),
            ).fetchone()
        except sqlite3.Error:
            return None
        if seen is None:
            if row is not None:
                return None
        elif (
            row is None
            or (row[0], row[3], row[4]) != seen
            or row[5] != (self._hash() if uses_aliases else "")
            or not self._same_bytes(self.logs[name], row[1], row[2])
        ):
            return None
        self._seen[name] = seen
        return conn

    def _hash(self) -> str:
        if self._alias_hash is None:
            self._alias_hash = alias_hash(self._aliases())
        return self._alias_hash

    @staticmethod
    def _same_bytes(path: Path, offset: int, sig: bytes) -> bool:
        start = max(0, offset - SIG_BYTES)
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                return fh.read(offset - start) == sig
        except OSError:
            return False


# -- the gate's queries (the file store's too) -----------------------------------------------
def resolve_key(conn: sqlite3.Connection, key: str) -> str:
    """``key`` with the merges indexed so far followed (one indexed lookup)."""
    row = conn.execute("SELECT canonical FROM merges WHERE source = ?", (key,)).fetchone()
    return str(row[0]) if row else key


def resolve_keys(conn: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
    """Each of ``keys`` with the merges indexed so far followed, in a few indexed lookups."""
    resolved = {key: key for key in keys}
    unique = list(resolved)
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        resolved.update(
            conn.execute(f"SELECT source, canonical FROM merges WHERE source IN ({marks})", chunk)
        )
    return resolved


def resolve_pattern(index: Synced, key: str) -> str:
    """``Store.resolve_pattern``."""
    conn = index.sync("merges")
    return key if index.absent("merges") else resolve_key(conn, key)


def select_events(
    conn: sqlite3.Connection,
    where: str,
    params: list[Any],
    *,
    newest_first: bool = False,
    limit: int | None = None,
) -> Iterable[tuple[Any, ...]]:
    """The rows of the events ``where`` selects, in time order (newest first if asked): each
    starts with the stored record (packed bytes)."""
    if limit is not None:
        order = " ORDER BY ts DESC, seq DESC" if newest_first else " ORDER BY ts, seq"
        rows: Iterable[tuple[Any, ...]]
        rows = conn.execute(f"SELECT data FROM events{where}{order} LIMIT ?", [*params, limit])
        return rows
    # Rows come out of the table almost in time order (they are appended as they happen):
    # sorting them here costs a fraction of an SQL ORDER BY, which copies every blob into a
    # temporary B-tree (150 ms of 260 at 100k events).
    found = conn.execute(f"SELECT data, ts, seq FROM events{where}", params).fetchall()
    found.sort(key=lambda row: (row[1], row[2]), reverse=newest_first)
    return found


#: Keys per ``IN (…)`` list: well under SQLite's limit on bound parameters.
_IN_CHUNK = 500


def _templates_sql(count: int) -> str:
    """Per pattern key: its cluster's tokens, and (when it has no cluster) one of its records,
    an event's or else an error-log entry's."""
    keys = ", ".join(["(?)"] * count)
    return f"""
        WITH k(fp) AS (VALUES {keys})
        SELECT k.fp, c.tokens, CASE WHEN c.tokens IS NULL THEN coalesce(
                   (SELECT data FROM events WHERE fingerprint = k.fp LIMIT 1),
                   (SELECT data FROM errors WHERE fingerprint = k.fp LIMIT 1)) END
          FROM k LEFT JOIN clusters AS c ON c.key = k.fp
    """


def known_failure_rows(
    index: Synced, components: tuple[str, ...], threshold: int
) -> list[tuple[str, str, int, int]]:
    """``FileStore.known_failure_rows``: (fingerprint, pattern, occurrences, unresolved)."""
    index.sync("errors")
    conn = index.sync("events")
    rows = conn.execute(known_failures_sql(len(components)), [*components, threshold]).fetchall()
    # Each pattern's template as its cluster has it now (wider than an early record's, after a
    # merge); for a pattern of an older grouping version, a record's own: one query per chunk
    # of patterns, the look-ups inside SQLite.
    shown: dict[str, tuple[str | None, bytes | None]] = {}
    keys = [row[0] for row in rows]
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        shown.update(
            (fp, (tokens, sample))
            for fp, tokens, sample in conn.execute(_templates_sql(len(chunk)), chunk)
        )
    found = []
    for fp, occurrences, unresolved in rows:
        tokens, sample = shown.get(fp, (None, None))
        if tokens is not None:
            found.append((fp, template_of(loads_value(tokens)), occurrences, unresolved))
            continue
        raw = loads_value(unpack(sample)) if sample is not None else {}
        text = raw.get("symptom") or raw.get("error")
        found.append((fp, raw.get("pattern") or shown_pattern(text) or fp, occurrences, unresolved))
    return found


def failing_fingerprints(
    index: Synced, fingerprints: list[str], components: tuple[str, ...]
) -> set[str]:
    """``Store.failing_fingerprints``."""
    if not fingerprints or not components:
        return set()
    index.sync("errors")
    conn = index.sync("events")
    if index.absent("merges"):  # no merges: every key is its own pattern
        resolved = {fp: fp for fp in fingerprints}
    else:
        resolved = resolve_keys(conn, fingerprints)
    keys = list(dict.fromkeys(resolved.values()))
    sql = failing_fingerprints_sql(len(keys), len(components))
    failing = {fp for (fp,) in conn.execute(sql, [*keys, *components, *components])}
    return {fp for fp, key in resolved.items() if key in failing}


def open_occurrences(
    index: Synced, fingerprint: str, components: tuple[str, ...], limit: int
) -> tuple[list[str], list[str]]:
    """``Store.open_occurrences``."""
    if not components:
        return [], []
    index.sync("errors")
    conn = index.sync("events")
    params = [resolve_pattern(index, fingerprint), *components, limit]
    rows = conn.execute(open_occurrences_sql(len(components)), params * 2).fetchall()
    return [i for k, i in rows if k == "event"], [i for k, i in rows if k == "error"]
