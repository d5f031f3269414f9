"""A derived SQLite index over the file store's append-only logs.

The JSON files stay the truth; this index only makes reads fast at any size. It remembers how far
into each log it has read (offset, inode, and the bytes just before the offset) and catches up by
reading only what was appended since, so no hot path parses the whole event log. If the log was
rewritten (compaction, an editor, a different inode) or the index is missing or damaged, it is
rebuilt from the log. Deleting ``state/cache/`` is always safe.

Three logs are followed: the events, the error log, and the merges of failure patterns
(``data/pattern_merges.json``). A record's ``fingerprint`` column holds its pattern key with the
merges followed (its own key is in ``record_fp``), so every query that groups or filters by
pattern sees a merged key as the pattern it was merged into; a merge read from its log updates
those columns (and the occurrence counts, through their triggers). The failure clusters of
grouping version 2 (``clusters``, ``signatures``) live here too; ``files._patterns`` writes and
rebuilds them.

Records stored without a fingerprint (the original system's) are fingerprinted here, with their
stage folded through the policies' step-name aliases; the index remembers which alias map it used
(a hash) and rebuilds itself when the map changes.

The log is judged by what is seen of it under its shared lock (no append under way) once the
index's write lock is held: a size taken before may be older than what another process has
meanwhile caught up to, and would look like a log that shrank. Every full rebuild is counted
(:attr:`SqliteIndex.rebuilds`) and logged with its reason.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayvault.learning.exceptions import CorruptFileError, StoreError
from rayvault.learning.store._fs import check_inside, os_error
from rayvault.learning.store._sql import (
    ERROR_AGGREGATE_COLUMNS,
    ERROR_COLUMNS,
    EVENT_AGGREGATE_COLUMNS,
    NO_ALIASES,
    OPEN_EVENT_COUNTS_COLUMNS,
    OPEN_EVENT_COUNTS_RECOUNT,
    RESOLVED_EVENT_COLUMNS,
    error_aggregate_recounts,
    error_row,
    event_aggregate_recounts,
    resolved_event_row,
)
from rayvault.learning.store.files._indexreads import (
    SCHEMA_VERSION,
    SIG_BYTES,
    alias_hash,
    resolve_key,
)
from rayvault.learning.store.files._indexreads import stat_key as _stat
from rayvault.learning.store.files._jsonlog import read_array, read_from, scan_after
from rayvault.learning.store.files._packed import pack, unpack
from rayvault.learning.store.files._packed import register as register_record_function

logger = logging.getLogger("rayvault.learning.index")

_SIG_BYTES = SIG_BYTES

_TRIGGERS = """
CREATE TRIGGER events_counted AFTER INSERT ON events WHEN NEW.fingerprint IS NOT NULL
BEGIN
    INSERT INTO fp_counts VALUES (NEW.component, NEW.fingerprint, 1, 1 - NEW.resolved)
    ON CONFLICT (component, fingerprint)
    DO UPDATE SET total = total + 1, open = open + 1 - NEW.resolved;
END;
CREATE TRIGGER events_uncounted AFTER DELETE ON events WHEN OLD.fingerprint IS NOT NULL
BEGIN
    UPDATE fp_counts SET total = total - 1, open = open - (1 - OLD.resolved)
     WHERE component = OLD.component AND fingerprint = OLD.fingerprint;
END;
CREATE TRIGGER events_recounted AFTER UPDATE ON events
BEGIN
    UPDATE fp_counts SET total = total - 1, open = open - (1 - OLD.resolved)
     WHERE OLD.fingerprint IS NOT NULL
       AND component = OLD.component AND fingerprint = OLD.fingerprint;
    INSERT INTO fp_counts
    SELECT NEW.component, NEW.fingerprint, 1, 1 - NEW.resolved WHERE NEW.fingerprint IS NOT NULL
    ON CONFLICT (component, fingerprint)
    DO UPDATE SET total = total + 1, open = open + 1 - NEW.resolved;
END;
CREATE TRIGGER errors_counted AFTER INSERT ON errors
WHEN NEW.fingerprint IS NOT NULL AND NEW.learning_event_id IS NULL
BEGIN
    INSERT INTO fp_counts VALUES (NEW.stage, NEW.fingerprint, 1, 1 - NEW.resolved)
    ON CONFLICT (component, fingerprint)
    DO UPDATE SET total = total + 1, open = open + 1 - NEW.resolved;
END;
CREATE TRIGGER errors_uncounted AFTER DELETE ON errors
WHEN OLD.fingerprint IS NOT NULL AND OLD.learning_event_id IS NULL
BEGIN
    UPDATE fp_counts SET total = total - 1, open = open - (1 - OLD.resolved)
     WHERE component = OLD.stage AND fingerprint = OLD.fingerprint;
END;
CREATE TRIGGER errors_recounted AFTER UPDATE ON errors
BEGIN
    UPDATE fp_counts SET total = total - 1, open = open - (1 - OLD.resolved)
     WHERE OLD.fingerprint IS NOT NULL AND OLD.learning_event_id IS NULL
       AND component = OLD.stage AND fingerprint = OLD.fingerprint;
    INSERT INTO fp_counts
    SELECT NEW.stage, NEW.fingerprint, 1, 1 - NEW.resolved
     WHERE NEW.fingerprint IS NOT NULL AND NEW.learning_event_id IS NULL
    ON CONFLICT (component, fingerprint)
    DO UPDATE SET total = total + 1, open = open + 1 - NEW.resolved;
END;
"""
# The error-log pattern aggregates (``error_patterns`` and its per-video and per-stage rows). An
# entry joining a pattern adds to them in O(1); a resolution (an update that changes nothing
# else) moves the open count; an entry leaving a pattern (a merge moves a whole group, a rewritten
# log deletes rows) only marks it stale: its minimum, maximum and videos cannot be taken back
# row by row, so ``refresh_stale`` recounts each stale pattern once, from its rows, at the end
# of the catch-up that changed it (a merge empties its source: nothing left to recount).
_JOINS = """
    UPDATE error_patterns SET videos = videos + 1
     WHERE fingerprint = NEW.fingerprint AND NEW.video_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM error_pattern_videos
                        WHERE fingerprint = NEW.fingerprint AND video_id = NEW.video_id);
    INSERT INTO error_patterns
           (fingerprint, total, open, first_ts, last_ts, example_id, videos, stale)
    SELECT NEW.fingerprint, 1, 1 - NEW.resolved, NEW.ts, NEW.ts, NEW.id,
           NEW.video_id IS NOT NULL, 0
     WHERE NEW.fingerprint IS NOT NULL
    ON CONFLICT (fingerprint) DO UPDATE SET
        total = total + 1, open = open + excluded.open,
        first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
        example_id = max(example_id, excluded.example_id);
    INSERT INTO error_pattern_videos (fingerprint, video_id, n, last_ts)
    SELECT NEW.fingerprint, NEW.video_id, 1, NEW.ts
     WHERE NEW.fingerprint IS NOT NULL AND NEW.video_id IS NOT NULL
    ON CONFLICT (fingerprint, video_id) DO UPDATE SET
        n = n + 1, last_ts = max(last_ts, excluded.last_ts);
    INSERT INTO error_pattern_stages (fingerprint, stage, n)
    SELECT NEW.fingerprint, NEW.stage, 1
     WHERE NEW.fingerprint IS NOT NULL AND NEW.stage IS NOT NULL
    ON CONFLICT (fingerprint, stage) DO UPDATE SET n = n + 1;
"""
_LEAVES = """
    UPDATE error_patterns SET total = total - 1, open = open - (1 - OLD.resolved), stale = 1
     WHERE fingerprint = OLD.fingerprint;
"""
#: An update that keeps the entry where it was counted (pattern, time, video, stage).
_SAME_PLACE = (
    "OLD.fingerprint IS NEW.fingerprint AND OLD.ts = NEW.ts AND OLD.video_id IS NEW.video_id "
    "AND OLD.stage IS NEW.stage"
)
_TRIGGERS += f"""
CREATE TRIGGER errors_grouped AFTER INSERT ON errors WHEN NEW.fingerprint IS NOT NULL
BEGIN{_JOINS}END;
CREATE TRIGGER errors_ungrouped AFTER DELETE ON errors WHEN OLD.fingerprint IS NOT NULL
BEGIN{_LEAVES}END;
CREATE TRIGGER errors_reopened AFTER UPDATE ON errors
WHEN {_SAME_PLACE} AND OLD.resolved <> NEW.resolved
BEGIN
    UPDATE error_patterns SET open = open + OLD.resolved - NEW.resolved
     WHERE fingerprint = NEW.fingerprint;
END;
CREATE TRIGGER errors_regrouped AFTER UPDATE ON errors WHEN NOT ({_SAME_PLACE})
BEGIN{_LEAVES}{_JOINS}END;
"""
# The event pattern aggregates (``event_patterns`` and its per-video, per-component and per-agent
# rows), kept as the error-log ones are: an event joining a pattern adds to them in O(1); a status
# change that keeps it where it was counted moves the open count; an event leaving a pattern (a
# merge, a rewritten record) marks it stale, recounted from its rows by ``refresh_stale`` before
# the catch-up commits. ``open_event_counts``: the unresolved events per (severity, status,
# component, agent), moved by every change (a state, kept as one).
_EVENT_JOINS = """
    UPDATE event_patterns SET videos = videos + 1
     WHERE fingerprint = NEW.fingerprint AND NEW.video_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM event_pattern_videos
                        WHERE fingerprint = NEW.fingerprint AND video_id = NEW.video_id);
    INSERT INTO event_patterns
           (fingerprint, total, open, first_ts, last_ts, sample_id, videos,
            n_info, n_warn, n_fail, n_blocker, stale)
    SELECT NEW.fingerprint, 1, 1 - NEW.resolved, NEW.ts, NEW.ts, NEW.event_id,
           NEW.video_id IS NOT NULL, NEW.severity = 'INFO', NEW.severity = 'WARN',
           NEW.severity = 'FAIL', NEW.severity = 'BLOCKER', 0
     WHERE NEW.fingerprint IS NOT NULL
    ON CONFLICT (fingerprint) DO UPDATE SET
        total = total + 1, open = open + excluded.open,
        first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
        sample_id = max(sample_id, excluded.sample_id), n_info = n_info + excluded.n_info,
        n_warn = n_warn + excluded.n_warn, n_fail = n_fail + excluded.n_fail,
        n_blocker = n_blocker + excluded.n_blocker;
    INSERT INTO event_pattern_videos (fingerprint, video_id, n)
    SELECT NEW.fingerprint, NEW.video_id, 1
     WHERE NEW.fingerprint IS NOT NULL AND NEW.video_id IS NOT NULL
    ON CONFLICT (fingerprint, video_id) DO UPDATE SET n = n + 1;
    INSERT INTO event_pattern_components (fingerprint, component, n)
    SELECT NEW.fingerprint, NEW.component, 1
     WHERE NEW.fingerprint IS NOT NULL AND NEW.component IS NOT NULL
    ON CONFLICT (fingerprint, component) DO UPDATE SET n = n + 1;
    INSERT INTO event_pattern_agents (fingerprint, agent, n)
    SELECT NEW.fingerprint, NEW.agent, 1
     WHERE NEW.fingerprint IS NOT NULL AND NEW.agent IS NOT NULL
    ON CONFLICT (fingerprint, agent) DO UPDATE SET n = n + 1;
"""
_EVENT_LEAVES = """
    UPDATE event_patterns SET total = total - 1, open = open - (1 - OLD.resolved), stale = 1
     WHERE fingerprint = OLD.fingerprint;
"""
#: An update that keeps the event where it was counted (everything but its status).
_EVENT_SAME_PLACE = (
    "OLD.fingerprint IS NEW.fingerprint AND OLD.ts = NEW.ts AND OLD.video_id IS NEW.video_id "
    "AND OLD.component IS NEW.component AND OLD.agent IS NEW.agent "
    "AND OLD.severity IS NEW.severity AND OLD.event_id = NEW.event_id"
)
_OPEN_IN = """
    INSERT INTO open_event_counts (severity, status, component, agent, n)
    SELECT NEW.severity, NEW.status, coalesce(NEW.component, ''), coalesce(NEW.agent, ''), 1
     WHERE NEW.resolved = 0
    ON CONFLICT (severity, status, component, agent) DO UPDATE SET n = n + 1;
"""
_OPEN_OUT = """
    UPDATE open_event_counts SET n = n - 1
     WHERE OLD.resolved = 0 AND severity = OLD.severity AND status = OLD.status
       AND component = coalesce(OLD.component, '') AND agent = coalesce(OLD.agent, '');
"""
_TRIGGERS += f"""
CREATE TRIGGER events_grouped AFTER INSERT ON events WHEN NEW.fingerprint IS NOT NULL
BEGIN{_EVENT_JOINS}END;
CREATE TRIGGER events_ungrouped AFTER DELETE ON events WHEN OLD.fingerprint IS NOT NULL
BEGIN{_EVENT_LEAVES}END;
CREATE TRIGGER events_reopened AFTER UPDATE ON events
WHEN {_EVENT_SAME_PLACE} AND OLD.resolved <> NEW.resolved
BEGIN
    UPDATE event_patterns SET open = open + OLD.resolved - NEW.resolved
     WHERE fingerprint = NEW.fingerprint;
END;
CREATE TRIGGER events_regrouped AFTER UPDATE ON events WHEN NOT ({_EVENT_SAME_PLACE})
BEGIN
    UPDATE event_patterns SET total = total - 1, open = open - (1 - OLD.resolved), stale = 1
     WHERE OLD.fingerprint IS NOT NULL AND fingerprint = OLD.fingerprint;
{_EVENT_JOINS}END;
CREATE TRIGGER events_opened AFTER INSERT ON events WHEN NEW.resolved = 0
BEGIN{_OPEN_IN}END;
CREATE TRIGGER events_closed AFTER DELETE ON events WHEN OLD.resolved = 0
BEGIN{_OPEN_OUT}END;
CREATE TRIGGER events_restated AFTER UPDATE ON events
WHEN (OLD.resolved = 0 OR NEW.resolved = 0) AND NOT (
    OLD.resolved = NEW.resolved AND OLD.severity IS NEW.severity AND OLD.status IS NEW.status
    AND OLD.component IS NEW.component AND OLD.agent IS NEW.agent)
BEGIN{_OPEN_OUT}{_OPEN_IN}END;
"""
_TRIGGER_NAMES = (
    "events_counted",
    "events_uncounted",
    "events_recounted",
    "errors_counted",
    "errors_uncounted",
    "errors_recounted",
    "errors_grouped",
    "errors_ungrouped",
    "errors_reopened",
    "errors_regrouped",
    "events_grouped",
    "events_ungrouped",
    "events_reopened",
    "events_regrouped",
    "events_opened",
    "events_closed",
    "events_restated",
)
_AGGREGATES = tuple(ERROR_AGGREGATE_COLUMNS)
_OCCURRENCES = """
    SELECT component, fingerprint, count(*), sum(open) FROM (
        SELECT component, fingerprint, 1 - resolved AS open FROM events
         WHERE fingerprint IS NOT NULL
        UNION ALL
        SELECT stage, fingerprint, 1 - resolved FROM errors
         WHERE fingerprint IS NOT NULL AND learning_event_id IS NULL
    ) AS occurrence
    GROUP BY component, fingerprint
"""
_NO_ALIAS_MAP: tuple[Mapping[str, str], str] = (NO_ALIASES, "")
#: A record's pattern key with recorded merges followed (parameters: its key twice).
_CANONICAL = "coalesce((SELECT canonical FROM merges WHERE source = ?), ?)"
_RECOUNT = "INSERT INTO fp_counts (component, fingerprint, total, open)" + _OCCURRENCES

_SCHEMA = """
CREATE TABLE sources (
    name TEXT PRIMARY KEY, inode INTEGER, offset INTEGER, sig BLOB, next_seq INTEGER,
    size INTEGER, mtime INTEGER, aliases TEXT
);
-- ``fingerprint`` is the record's pattern key with recorded merges followed (what every query
-- groups and filters on); ``record_fp`` is the key the record itself carries.
CREATE TABLE events (
    event_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL, severity TEXT,
    component TEXT, status TEXT, video_id TEXT, agent TEXT, fingerprint TEXT,
    source_error_id TEXT, source_note TEXT, resolved INTEGER NOT NULL, idempotency_key TEXT,
    record_fp TEXT, data BLOB NOT NULL, resolved_ts INTEGER, regression_of TEXT
);
CREATE INDEX events_video ON events (video_id, component);
-- Time order: a window of days (the weekly report's facets, timeline and regressions) or the
-- newest few events read that window, not the history before it.
CREATE INDEX events_time ON events (ts, seq);
-- When each event was resolved (its ``resolved_at``): the events resolved within a window.
CREATE INDEX events_resolved ON events (resolved_ts) WHERE resolved_ts IS NOT NULL;
CREATE INDEX events_component ON events (component, fingerprint, resolved);
CREATE INDEX events_fingerprint ON events (fingerprint);
CREATE INDEX events_record_fp ON events (record_fp);
CREATE INDEX events_source_error ON events (source_error_id) WHERE source_error_id IS NOT NULL;
CREATE INDEX events_source_note ON events (source_note) WHERE source_note IS NOT NULL;
CREATE INDEX events_idempotency ON events (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_regression ON events (ts, seq) WHERE regression_of IS NOT NULL;
CREATE TABLE errors (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ts INTEGER NOT NULL, stage TEXT,
    video_id TEXT, fingerprint TEXT, resolved INTEGER NOT NULL, resolved_ts INTEGER,
    learning_event_id TEXT, idempotency_key TEXT, record_fp TEXT, data BLOB NOT NULL
);
CREATE INDEX errors_stage ON errors (stage, fingerprint, resolved, learning_event_id);
CREATE INDEX errors_fingerprint ON errors (fingerprint, resolved_ts);
CREATE INDEX errors_record_fp ON errors (record_fp);
CREATE INDEX errors_video ON errors (video_id, stage);
CREATE INDEX errors_idempotency ON errors (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- Occurrences per (component or stage, fingerprint), kept current by triggers, so the gate's
-- known-failures check reads a few aggregate rows instead of scanning a stage's history.
-- Error-log entries promoted to an event count through that event, not twice.
CREATE TABLE fp_counts (
    component TEXT NOT NULL, fingerprint TEXT NOT NULL,
    total INTEGER NOT NULL, open INTEGER NOT NULL,
    PRIMARY KEY (component, fingerprint)
) WITHOUT ROWID;

-- Merges of failure patterns, replayed from data/pattern_merges.json (the first merge of a key
-- wins); ``canonical`` is where ``source`` ends up with every later merge followed.
CREATE TABLE merges (
    source TEXT PRIMARY KEY, target TEXT NOT NULL, canonical TEXT NOT NULL, stage TEXT,
    seq INTEGER NOT NULL, data BLOB NOT NULL
);
CREATE INDEX merges_canonical ON merges (canonical);

-- The failure clusters of grouping version 2 (``_grouping``), in creation order, and the
-- signatures (exact masked texts) that belong to each. Rebuilt from the records when missing.
CREATE TABLE clusters (
    seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, stage TEXT NOT NULL,
    length INTEGER NOT NULL, tokens TEXT NOT NULL, data TEXT NOT NULL, merged_into TEXT
);
CREATE INDEX clusters_live ON clusters (stage, length, seq) WHERE merged_into IS NULL;
CREATE TABLE signatures (
    stage TEXT NOT NULL, sig TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (stage, sig)
) WITHOUT ROWID;
CREATE TABLE pattern_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);

-- The error-log patterns (``get_patterns``), kept current by triggers on ``errors`` (see
-- ``_JOINS``): per pattern, its entries, open ones, first and last time, example (the greatest
-- id) and distinct videos; ``stale`` while an entry has left it (recounted before the catch-up
-- that did it commits). Per (pattern, video) and (pattern, stage), the entries and, for videos,
-- the last time: so a pattern lists its most recent videos without reading its history.
CREATE TABLE error_patterns (
    fingerprint TEXT PRIMARY KEY, total INTEGER NOT NULL, open INTEGER NOT NULL,
    first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL, example_id TEXT NOT NULL,
    videos INTEGER NOT NULL, stale INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX error_patterns_order ON error_patterns (total, last_ts, fingerprint);
CREATE INDEX error_patterns_stale ON error_patterns (fingerprint) WHERE stale = 1;
CREATE TABLE error_pattern_videos (
    fingerprint TEXT NOT NULL, video_id TEXT NOT NULL, n INTEGER NOT NULL,
    last_ts INTEGER NOT NULL, PRIMARY KEY (fingerprint, video_id)
) WITHOUT ROWID;
CREATE INDEX error_pattern_videos_recent ON error_pattern_videos (fingerprint, last_ts, video_id);
CREATE TABLE error_pattern_stages (
    fingerprint TEXT NOT NULL, stage TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, stage)
) WITHOUT ROWID;

-- The event patterns (``event_patterns``, the weekly revisit's and ``get_patterns``' counts over
-- every event), kept current by triggers on ``events`` (see ``_EVENT_JOINS``): per pattern, its
-- events, open ones, first and last time, sample (the greatest id), distinct videos and events
-- per severity; per (pattern, video), (pattern, component) and (pattern, agent), the events. A
-- window's patterns are found in the time index and their totals read here.
CREATE TABLE event_patterns (
    fingerprint TEXT PRIMARY KEY, total INTEGER NOT NULL, open INTEGER NOT NULL,
    first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL, sample_id TEXT NOT NULL,
    videos INTEGER NOT NULL, n_info INTEGER NOT NULL, n_warn INTEGER NOT NULL,
    n_fail INTEGER NOT NULL, n_blocker INTEGER NOT NULL, stale INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX event_patterns_stale ON event_patterns (fingerprint) WHERE stale = 1;
CREATE TABLE event_pattern_videos (
    fingerprint TEXT NOT NULL, video_id TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, video_id)
) WITHOUT ROWID;
CREATE TABLE event_pattern_components (
    fingerprint TEXT NOT NULL, component TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, component)
) WITHOUT ROWID;
CREATE TABLE event_pattern_agents (
    fingerprint TEXT NOT NULL, agent TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, agent)
) WITHOUT ROWID;
-- The unresolved events per (severity, status, component, agent; '' for a missing one): the
-- open failures of the weekly report, at any date, without reading the history.
CREATE TABLE open_event_counts (
    severity TEXT NOT NULL, status TEXT NOT NULL, component TEXT NOT NULL, agent TEXT NOT NULL,
    n INTEGER NOT NULL, PRIMARY KEY (severity, status, component, agent)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Source:
    """A log the index follows: its file, table, key field and indexed columns."""

    name: str
    path: Path
    table: str
    key: str
    columns: tuple[str, ...]
    row: Callable[[dict[str, Any], Mapping[str, str]], tuple[Any, ...]]
    #: Logs this one's rows depend on, caught up first (events and errors: the merges).
    depends: tuple[str, ...] = ()
    #: For a log that is not a table of records (the merges): applies new items in place of
    #: the generic insert, and ``reset`` clears what they did before a rebuild.
    apply: Callable[[sqlite3.Connection, list[dict[str, Any]], int], None] | None = None
    reset: Callable[[sqlite3.Connection], None] | None = None
    #: Whether its rows depend on the step-name aliases (records stored without a fingerprint).
    uses_aliases: bool = True
    #: Whether its records are kept packed (``_packed``): the events, most of the index's bytes.
    packed: bool = False


#: What a process saw of a log when it last caught up: (inode, size, mtime) or None when it did
#: not exist, and the hash of the alias map the index was built with.
_Seen = tuple[tuple[int, int, int] | None, str]


class SqliteIndex:
    """The derived index of one data root. Safe to share between threads and processes.

    With ``path=None`` the index lives in memory (one per thread), rebuilt from the logs on first
    use: for read-only stores, which must not write even their cache. While the folder ``root``
    does not exist, reads use a throwaway in-memory index too: a read never creates a data root.
    """

    def __init__(
        self,
        path: Path | None,
        sources: list[Source],
        aliases: Callable[[], Mapping[str, str]] | None = None,
        *,
        root: Path | None = None,
    ) -> None:
        self.path = path
        self.root = root
        self.sources = {s.name: s for s in sources}
        self._local = threading.local()
        # What this process saw of each log when it last caught up with it.
        self._seen_on_disk: dict[str, _Seen] = {}
        self._pid = os.getpid()
        self._aliases = aliases or (lambda: NO_ALIASES)
        self._alias_memo: tuple[Mapping[str, str], str] | None = None
        #: Full rebuilds of a table already indexed, from its log, done by this process (each
        #: logged with its reason; the first build of a table is logged but not counted).
        self.rebuilds = 0

    def _alias_map(self) -> tuple[Mapping[str, str], str]:
        """The step-name aliases in effect and their hash (memoised on the map's identity: the
        policies are cached, so an unchanged map is the same object)."""
        aliases = self._aliases()
        memo = self._alias_memo
        if memo is None or memo[0] is not aliases:
            memo = self._alias_memo = (aliases, alias_hash(aliases))
        return memo

    def _aliases_for(self, source: Source) -> tuple[Mapping[str, str], str]:
        """The alias map a log's rows are computed with (none for the merges: loading the
        policies for them would cost every query a second load)."""
        return self._alias_map() if source.uses_aliases else _NO_ALIAS_MAP

    @property
    def _seen(self) -> dict[str, _Seen]:
        if self.path is not None:
            return self._seen_on_disk
        # An in-memory index belongs to one thread's connection: so does what it has seen.
        seen: dict[str, _Seen] | None = getattr(self._local, "seen", None)
        if seen is None:
            seen = self._local.seen = {}
        return seen

    # -- connection ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked: never share a connection with the parent
            self._local = threading.local()
            self._seen_on_disk = {}
            self._pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self.path is None:
            conn = self._open()
            self._local.conn = conn
            return conn
        if self.root is not None and not self.root.exists():
            return self._open(in_memory=True)  # nothing to index, nowhere to keep it
        for source in self.sources.values():  # a log that cannot be read leaves no index behind
            try:
                if source.path.is_dir():
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), source.path)
            except OSError as e:
                raise os_error(source.path, e, "read") from e
        check_inside(self.path)  # SQLite follows links: the cache must not lead out of the root
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(self.path.parent, e, "create the index folder") from e
        try:
            conn = self._open()
        except sqlite3.OperationalError as e:
            raise StoreError(f"cannot open the derived index {self.path}: {e}") from e
        except sqlite3.DatabaseError:
            # The index is derived data: a damaged one is dropped and rebuilt from the logs.
            self._remove_files()
            conn = self._open()
        self._local.conn = conn
        return conn

    def _open(self, *, in_memory: bool = False) -> sqlite3.Connection:
        on_disk = self.path is not None and not in_memory
        target = self.path if on_disk and self.path is not None else ":memory:"
        conn = sqlite3.connect(target, timeout=60, isolation_level=None)
        register_record_function(conn)
        try:
            if on_disk:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                with _write(conn):
                    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        for (name,) in conn.execute(
                            "SELECT name FROM sqlite_master WHERE type='table'"
                        ).fetchall():
                            conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                        for kind, name in conn.execute(
                            "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view')"
                        ).fetchall():
                            conn.execute(f'DROP {kind.upper()} IF EXISTS "{name}"')
                        for statement in _statements(_SCHEMA + _TRIGGERS):
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _remove_files(self) -> None:
        if self.path is None:
            return
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def forget(self) -> None:
        """Drop this process's memory of the logs (after a rewrite by this process)."""
        self._seen.clear()

    def rebuild(self) -> None:
        """Rebuild every table from the logs, in place (other processes may have it open)."""
        conn = self._connect()
        with _write(conn):
            for source in self.sources.values():
                aliases = self._aliases_for(source)
                if source.path.exists():
                    self._rebuild(conn, source, aliases, "requested")
                else:
                    self._catch_up(conn, source, None, aliases)
            # The failure clusters are rebuilt from the records by the next pattern book.
            conn.execute("DELETE FROM clusters")
            conn.execute("DELETE FROM signatures")
            conn.execute("DELETE FROM pattern_state")
        self.forget()

    def verify(self, expected: dict[str, dict[str, Any]]) -> list[str]:
        """What differs between the index and ``expected`` (source name → {key: the latest raw
        record in the log}), after catching up with the logs; empty when they agree."""
        import orjson

        problems: list[str] = []
        try:
            conn = self._connect()
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                return [f"the database is damaged ({check})"]
            for name, items in expected.items():
                source = self.sources[name]
                self.sync(name)
                rows = dict(conn.execute(f"SELECT {source.key}, data FROM {source.table}"))
                missing = items.keys() - rows.keys()
                extra = rows.keys() - items.keys()
                differ = [
                    k
                    for k in items.keys() & rows.keys()
                    if orjson.loads(unpack(rows[k])) != items[k]
                ]
                for label, keys in (
                    ("missing", missing),
                    ("not in the log", extra),
                    ("out of date", differ),
                ):
                    if keys:
                        sample = ", ".join(sorted(keys)[:3])
                        problems.append(f"{len(keys)} {source.table} {label} ({sample}…)")
            counts = {tuple(r[:2]): tuple(r[2:]) for r in conn.execute(_OCCURRENCES)}
            kept = {
                tuple(r[:2]): tuple(r[2:])
                for r in conn.execute(
                    "SELECT component, fingerprint, total, open FROM fp_counts WHERE total <> 0"
                )
            }
            if counts != kept:
                problems.append("the occurrence counts of the known-failures check are wrong")
            problems += error_pattern_problems(conn)
            problems += event_pattern_problems(conn)
        except sqlite3.DatabaseError as e:
            problems.append(f"the database cannot be read ({e})")
        return problems

    # -- catching up --------------------------------------------------------------------------
    def sync(self, name: str) -> sqlite3.Connection:
        """Bring the index up to date with log ``name``; return the connection to query."""
        source = self.sources[name]
        for dependency in source.depends:
            self.sync(dependency)
        seen = _stat(source.path)  # before connecting: a log that cannot be read leaves no index
        conn = self._connect()
        aliases = self._aliases_for(source)
        if self._seen.get(name) == (seen, aliases[1]):
            return conn
        with _write(conn):
            # Again under the lock: another process may have caught up past the size seen above.
            seen = _stat(source.path)
            self._catch_up(conn, source, seen, aliases)
        self._seen[name] = (seen, aliases[1])
        return conn

    def absent(self, name: str) -> bool:
        """Whether log ``name`` did not exist when this process last caught up with it (no
        merges at all, say: resolving a key is then the identity, no query needed)."""
        seen = self._seen.get(name)
        return seen is not None and seen[0] is None

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (the schema created), to run a transaction of one's own."""
        return self._connect()

    def catch_up_within(self, conn: sqlite3.Connection, name: str) -> None:
        """Catch up with log ``name`` inside the caller's write transaction (what this process
        saw is not noted: the transaction may still roll back)."""
        source = self.sources[name]
        for dependency in source.depends:
            self.catch_up_within(conn, dependency)
        self._catch_up(conn, source, _stat(source.path), self._aliases_for(source))
        self._seen.pop(name, None)

    def _catch_up(
        self,
        conn: sqlite3.Connection,
        source: Source,
        seen: tuple[int, int, int] | None,
        aliases: tuple[Mapping[str, str], str],
    ) -> None:
        """Catch up with ``source``, then recount the error-log patterns it left stale (in the
        same transaction: no reader ever sees a stale aggregate)."""
        self._catch_up_log(conn, source, seen, aliases)
        refresh_stale(conn)

    def _catch_up_log(
        self,
        conn: sqlite3.Connection,
        source: Source,
        seen: tuple[int, int, int] | None,
        aliases: tuple[Mapping[str, str], str],
    ) -> None:
        row = conn.execute(
            "SELECT inode, offset, sig, next_seq, size, mtime, aliases FROM sources WHERE name = ?",
            (source.name,),
        ).fetchone()
        if seen is None:
            if row is not None:
                if source.reset is not None:
                    source.reset(conn)
                else:
                    conn.execute(f"DELETE FROM {source.table}")
                conn.execute("DELETE FROM sources WHERE name = ?", (source.name,))
            return
        if row is None:
            self._rebuild(conn, source, aliases, "not indexed yet", initial=True)
            return
        if row[6] != aliases[1]:
            # Fingerprints computed for records stored without one depend on the alias map.
            self._rebuild(conn, source, aliases, "the step-name aliases changed")
            return
        offset, sig, next_seq = row[1], row[2], row[3]
        start = max(0, offset - _SIG_BYTES)
        # Judge the log by the stat taken with its bytes, under its shared lock: a stat taken
        # while an append is under way can show the new change time with the old size.
        try:
            read = read_from(source.path, start)
        except OSError as e:
            raise os_error(source.path, e, "read") from e
        if read is None:
            self._rebuild(conn, source, aliases, "removed while being read")
            return
        data, st = read
        if row[0] != st.st_ino:
            self._rebuild(conn, source, aliases, "replaced by a new file")
            return
        if offset > st.st_size:
            self._rebuild(conn, source, aliases, "shorter than the part already indexed")
            return
        if row[4] == st.st_size and row[5] != st.st_mtime_ns:
            # Same size but touched since: rewritten in place (appends always grow the file).
            self._rebuild(conn, source, aliases, "changed in place without growing")
            return
        if data[: offset - start] != sig:
            why = "rewritten: the bytes before the indexed offset changed"
            self._rebuild(conn, source, aliases, why)
            return
        scan = scan_after(data[offset - start :], offset)
        if scan is None:
            self._rebuild(conn, source, aliases, "appended to in another layout")
            return
        new_sig = data[max(0, scan.end - _SIG_BYTES - start) : scan.end - start]
        if scan.items:
            self._store(conn, source, [item for item, _ in scan.items], next_seq, aliases[0])
        conn.execute(
            "UPDATE sources SET offset = ?, sig = ?, next_seq = ?, size = ?, mtime = ? "
            "WHERE name = ?",
            (
                scan.end,
                new_sig,
                next_seq + len(scan.items),
                st.st_size,
                st.st_mtime_ns,
                source.name,
            ),
        )

    def _rebuild(
        self,
        conn: sqlite3.Connection,
        source: Source,
        aliases: tuple[Mapping[str, str], str],
        why: str,
        *,
        initial: bool = False,
    ) -> None:
        try:
            whole = read_array(source.path)
        except OSError as e:
            raise os_error(source.path, e, "read") from e
        if whole is None:
            self._catch_up(conn, source, None, aliases)
            return
        data, st, parsed = whole.data, whole.stat, whole.parsed
        if not initial:
            self.rebuilds += 1
        logger.info(
            "%s the index of %s: %s", "building" if initial else "rebuilding", source.path, why
        )
        # Row-by-row triggers would make a rebuild of 100k events several times slower: drop
        # them, reload, recount the aggregate in one statement, and put them back.
        if source.reset is not None:
            source.reset(conn)
            self._store(conn, source, parsed.items, 0, aliases[0])
        else:
            for name in _TRIGGER_NAMES:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            conn.execute(f"DELETE FROM {source.table}")
            self._store(conn, source, parsed.items, 0, aliases[0])
            conn.execute("DELETE FROM fp_counts")
            conn.execute(_RECOUNT)
            if source.table == "errors":
                recount_error_patterns(conn)
            if source.table == "events":
                recount_event_patterns(conn)
            for statement in _statements(_TRIGGERS):
                conn.execute(statement)
        refresh_stale(conn)  # the merges, read again, may have moved error-log entries
        conn.execute(
            "INSERT OR REPLACE INTO sources "
            "(name, inode, offset, sig, next_seq, size, mtime, aliases) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                source.name,
                st.st_ino,
                parsed.end,
                data[max(0, parsed.end - _SIG_BYTES) : parsed.end],
                len(parsed.items),
                st.st_size,
                st.st_mtime_ns,
                aliases[1],
            ),
        )

    def _store(
        self,
        conn: sqlite3.Connection,
        source: Source,
        items: list[Any],
        first_seq: int,
        aliases: Mapping[str, str],
    ) -> None:
        import orjson

        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get(source.key), str):
                raise CorruptFileError(
                    source.path, f"element {first_seq + i} is not a record with a {source.key!r}"
                )
        if source.apply is not None:
            source.apply(conn, items, first_seq)
            return
        columns = source.columns
        # The pattern key with merges followed goes in ``fingerprint``; the record's own key in
        # ``record_fp`` (a merge recorded later updates the first, never the second).
        fp = columns.index("fingerprint")
        marks = ["?"] * len(columns)
        marks[fp] = _CANONICAL
        updates = ", ".join(f"{c} = excluded.{c}" for c in (*columns[1:], "record_fp", "data"))
        sql = (
            f"INSERT INTO {source.table} ({', '.join(columns)}, record_fp, seq, data) "
            f"VALUES ({', '.join(marks)}, ?, ?, ?) "
            f"ON CONFLICT ({source.key}) DO UPDATE SET {updates}"
        )
        rows = []
        dump: Callable[[Any], bytes] = _packed_dump if source.packed else orjson.dumps
        for i, item in enumerate(items):
            row = source.row(item, aliases)
            key = row[fp]
            values = (*row[:fp], key, key, *row[fp + 1 :])
            rows.append((*values, key, first_seq + i, dump(item)))
        conn.executemany(sql, rows)


def _packed_dump(item: Any) -> bytes:
    import orjson

    return pack(orjson.dumps(item))


_RECOUNTS = error_aggregate_recounts()
_PATTERN_RECOUNTS = error_aggregate_recounts(" AND fingerprint = ?")
_EVENT_RECOUNTS = event_aggregate_recounts()
_EVENT_PATTERN_RECOUNTS = event_aggregate_recounts(" AND fingerprint = ?")


def recount_error_patterns(conn: sqlite3.Connection) -> None:
    """Fill the error-log pattern aggregates from scratch: one grouped scan per table (a
    rebuild, with the row triggers set aside)."""
    for table in _AGGREGATES:
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"INSERT INTO {table} ({ERROR_AGGREGATE_COLUMNS[table]}) {_RECOUNTS[table]}")


def recount_event_patterns(conn: sqlite3.Connection) -> None:
    """Fill the event pattern aggregates and the open counts from scratch: one grouped scan per
    table (a rebuild, with the row triggers set aside)."""
    for table, statement in _EVENT_RECOUNTS.items():
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"INSERT INTO {table} ({EVENT_AGGREGATE_COLUMNS[table]}) {statement}")
    conn.execute("DELETE FROM open_event_counts")
    conn.execute(
        f"INSERT INTO open_event_counts ({OPEN_EVENT_COUNTS_COLUMNS}) {OPEN_EVENT_COUNTS_RECOUNT}"
    )


def refresh_stale(conn: sqlite3.Connection) -> None:
    """Recount each error-log or event pattern a record has left since (``stale``), from its own
    rows (the ``(fingerprint, …)`` indexes): a pattern merged away entirely has none left, and
    its aggregate rows go."""
    for patterns, columns, recounts in (
        ("error_patterns", ERROR_AGGREGATE_COLUMNS, _PATTERN_RECOUNTS),
        ("event_patterns", EVENT_AGGREGATE_COLUMNS, _EVENT_PATTERN_RECOUNTS),
    ):
        stale = [
            fp for (fp,) in conn.execute(f"SELECT fingerprint FROM {patterns} WHERE stale = 1")
        ]
        for fp in stale:
            for table in columns:
                conn.execute(f"DELETE FROM {table} WHERE fingerprint = ?", (fp,))
            for table in columns:
                conn.execute(f"INSERT INTO {table} ({columns[table]}) {recounts[table]}", (fp,))


def event_pattern_problems(conn: sqlite3.Connection) -> list[str]:
    """How the event pattern aggregates and open counts differ from a recount (empty when they
    agree)."""
    problems = []
    checks = [
        (table, statement, f"SELECT {EVENT_AGGREGATE_COLUMNS[table]} FROM {table}")
        for table, statement in _EVENT_RECOUNTS.items()
    ]
    # An open count that fell to zero stays as a row (the next open event reuses it).
    kept_open = f"SELECT {OPEN_EVENT_COUNTS_COLUMNS} FROM open_event_counts WHERE n <> 0"
    checks.append(("open_event_counts", OPEN_EVENT_COUNTS_RECOUNT, kept_open))
    for table, statement, kept_sql in checks:
        counted = set(conn.execute(statement))
        kept = set(conn.execute(kept_sql))
        if counted != kept:
            differ = sorted({str(row[0]) for row in counted ^ kept})
            problems.append(
                f"the event pattern aggregates ({table}) differ from a recount for "
                f"{len(differ)} keys ({', '.join(differ[:3])}…)"
            )
    return problems


def error_pattern_problems(conn: sqlite3.Connection) -> list[str]:
    """How the error-log pattern aggregates differ from a recount (empty when they agree)."""
    problems = []
    for table in _AGGREGATES:
        counted = set(conn.execute(_RECOUNTS[table]))
        kept = set(conn.execute(f"SELECT {ERROR_AGGREGATE_COLUMNS[table]} FROM {table}"))
        if counted != kept:
            differ = sorted({str(row[0]) for row in counted ^ kept})
            problems.append(
                f"the error-log pattern aggregates ({table}) differ from a recount for "
                f"{len(differ)} patterns ({', '.join(differ[:3])}…)"
            )
    return problems


@contextlib.contextmanager
def _write(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a schema script into statements (``sqlite3.complete_statement`` knows about the
    semicolons inside trigger bodies)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return [s for s in statements if s.rstrip(";").strip()]


#: The events' columns in this index: the shared ones, when each was resolved, and the event
#: it is a regression of (a column: the packed record cannot be searched for it).
INDEX_EVENT_COLUMNS = (*RESOLVED_EVENT_COLUMNS, "regression_of")


def _index_event_row(item: dict[str, Any], aliases: Mapping[str, str]) -> tuple[Any, ...]:
    """:func:`resolved_event_row` (when the event was resolved, None when it was not or that
    does not parse: such an event has no resolution time to report) and its
    ``regression_of``."""
    regression = item.get("regression_of")
    return (
        *resolved_event_row(item, aliases),
        None if regression is None else str(regression),
    )


def event_source(path: Path) -> Source:
    return Source(
        "events", path, "events", "event_id", INDEX_EVENT_COLUMNS, _index_event_row,
        depends=("merges",), packed=True,
    )  # fmt: skip


def error_source(path: Path) -> Source:
    return Source("errors", path, "errors", "id", ERROR_COLUMNS, error_row, depends=("merges",))


def merge_source(path: Path) -> Source:
    """The merges of failure patterns (``data/pattern_merges.json``), applied to the index as
    they are read: see :func:`apply_merges`."""
    return Source(
        "merges", path, "merges", "source", (), lambda item, _: (), apply=apply_merges,
        reset=reset_merges, uses_aliases=False,
    )  # fmt: skip


def apply_merges(conn: sqlite3.Connection, items: list[dict[str, Any]], first_seq: int) -> None:
    """Apply merges read from the log, in order: the first merge of a key wins, a merge that
    would make a cycle is left out (``doctor`` reports both); rows of the merged key, and keys
    merged into it before, now resolve to where its target resolves."""
    import orjson

    for i, item in enumerate(items):
        source, target = item["source"], item.get("target")
        if not isinstance(target, str) or not target or target == source:
            continue
        if conn.execute("SELECT 1 FROM merges WHERE source = ?", (source,)).fetchone():
            continue
        canonical = resolve_key(conn, target)
        if canonical == source:
            continue
        conn.execute(
            "INSERT INTO merges (source, target, canonical, stage, seq, data) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (source, target, canonical, item.get("stage"), first_seq + i, orjson.dumps(item)),
        )
        conn.execute("UPDATE merges SET canonical = ? WHERE canonical = ?", (canonical, source))
        conn.execute("UPDATE events SET fingerprint = ? WHERE fingerprint = ?", (canonical, source))
        conn.execute("UPDATE errors SET fingerprint = ? WHERE fingerprint = ?", (canonical, source))
        conn.execute("UPDATE clusters SET merged_into = ? WHERE key = ?", (target, source))


def reset_merges(conn: sqlite3.Connection) -> None:
    """Forget every merge applied (before the log is read again from its start)."""
    if conn.execute("SELECT 1 FROM merges LIMIT 1").fetchone() is None:
        return
    conn.execute("DELETE FROM merges")
    conn.execute("UPDATE clusters SET merged_into = NULL WHERE merged_into IS NOT NULL")
    for table in ("events", "errors"):
        conn.execute(
            f"UPDATE {table} SET fingerprint = record_fp WHERE fingerprint IS NOT record_fp"
        )
