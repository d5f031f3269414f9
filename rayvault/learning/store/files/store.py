"""The embedded file store: the specification's data layout (``files.layout``) under one
project root.

All writes follow the storage rules of ``_fs`` and ``_jsonlog``: atomic, locked, never over a
file that does not parse.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from rayvault.learning._ids import is_safe_identifier, validate_identifier
from rayvault.learning._time import compact_ts, from_micros, to_micros, utcnow
from rayvault.learning.exceptions import (
    ErrorEntryNotFoundError,
    EventNotFoundError,
    InvalidIdentifierError,
    LearningError,
    StoreError,
)
from rayvault.learning.store._fs import (
    atomic_write,
    barrier,
    check_folder,
    check_inside,
    create_exclusive,
    dump_json,
    durable_group,
    flush_now,
    fsync_enabled,
    is_temp_file,
    locked,
    open_nofollow,
    os_error,
    parse_json,
    read_json,
    register_root,
    sync_file,
    temp_path_for,
)
from rayvault.learning.store._items import Portable
from rayvault.learning.store._names import (
    REPORT_NAME,
    dated_name,
    parse_dated,
    snapshot_time,
)
from rayvault.learning.store._records import (
    M,
    error_pattern_from_row,
    pattern_from_row,
    tombstone_archive_document,
    validate_json_record,
    validate_record,
)
from rayvault.learning.store._sql import (
    COUNT_ALL_EVENTS_SQL,
    ERROR_PATTERNS_SQL,
    FACETS,
    LATEST_RESOLUTION_SQL,
    OPEN_EVENT_COUNTS_AS_EVENTS,
    PATTERN_RECENT_VIDEOS_SQL,
    PATTERN_STAGES_SQL,
    PATTERN_VIDEOS_LISTED,
    aggregate_pattern_rows,
    answered_by_open_counts,
    answered_by_pattern_aggregates,
    error_where,
    event_where,
    pattern_sql,
    timeline_sql,
)
from rayvault.learning.store.base import (
    AgentState,
    ArchivedTombstones,
    ErrorQuery,
    EventQuery,
    ProgressCallback,
    SavedReport,
    build_records,
)
from rayvault.learning.store.documents import Documents
from rayvault.learning.store.files._base import FileStoreBase
from rayvault.learning.store.files._driver import sqlite3
from rayvault.learning.store.files._indexreads import select_events
from rayvault.learning.store.files._jsonlog import (
    JsonArrayLog,
    latest_versions,
    parse_array,
    versions_of,
)
from rayvault.learning.store.files._packed import unpack
from rayvault.learning.store.files._patterns import IndexBook, pattern_book
from rayvault.learning.store.files._sqlindex import (
    SqliteIndex,
    error_source,
    event_source,
    merge_source,
)
from rayvault.learning.store.files._textrank import rank_texts as fts_rank_texts
from rayvault.learning.store.files._tombstones import TombstoneList
from rayvault.learning.store.files.layout import (
    ARCHIVE_DIR,
    MEMORY_FILE,
    REPORT_PREFIX,
    TOMBSTONE_ARCHIVE_DIR,
    TOMBSTONE_ARCHIVE_PREFIX,
    TOMBSTONES_FILE,
    Layout,
)

if TYPE_CHECKING:  # the records load on first use: the gate's process does not build them
    from rayvault.learning.models import (
        AgentMemory,
        CompactResult,
        ErrorEntry,
        ErrorPattern,
        Finding,
        GateState,
        KnownFailure,
        LearningEvent,
        Pattern,
        PatternMerge,
        TombstoneFile,
        WeeklyReport,
    )

log = logging.getLogger("rayvault.learning")

Q = TypeVar("Q", EventQuery, ErrorQuery)

F = TypeVar("F", bound=Callable[..., Any])


def _grouped(method: F) -> F:
    """Flush the files a write method touches together when it returns (``durable_group``):
    its log and that log's second copy (the per-video files, the error log's journal), which
    need no order between them. One flush instead of one per file."""

    @functools.wraps(method)
    def wrapper(self: FileStore, *args: Any, **kwargs: Any) -> Any:
        with durable_group(self.root):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


#: Ids per ``IN (…)`` list: well under SQLite's smallest parameter limit (999).
_IN_CHUNK = 500


class FileStore(FileStoreBase):
    """The embedded default store (no server): JSON files under ``root``.

    ``read_only=True`` opens a view that never writes, not even the derived index (it is kept in
    memory instead): writes raise :class:`StoreError`. Dry runs use it.
    """

    index: SqliteIndex

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        self.root = Path(root).absolute()
        register_root(self.root)
        self.is_read_only = read_only
        self.layout = layout = Layout(self.root)
        self.data_dir = layout.data_dir
        self.archive_dir = layout.archive_dir
        self.events_path = layout.events_path
        self.errors_path = layout.errors_path
        self.errors_journal = layout.errors_journal
        self.reports_dir = layout.reports_dir
        self.agents_dir = layout.agents_dir
        self.gate_dir = layout.gate_dir
        self.cache_dir = layout.cache_dir
        self.doctor_archive_dir = layout.doctor_archive_dir
        self.locks_dir = layout.locks_dir
        self.videos_dir = layout.videos_dir
        self._events = JsonArrayLog(self.events_path)
        self._errors = JsonArrayLog(self.errors_path)
        self.merges_path = layout.merges_path
        self.merges_log = JsonArrayLog(self.merges_path)
        self.index = SqliteIndex(
            None if read_only else layout.index_path,
            [
                merge_source(self.merges_path),
                event_source(self.events_path),
                error_source(self.errors_path),
            ],
            self.stage_aliases,
            root=self.root,
        )
        self.docs = Documents(self.root, lambda: self.policies, read_only=read_only)
        self._layout_checked = False

    def full_store(self) -> FileStore:
        return self

    def __repr__(self) -> str:
        extra = ", read_only=True" if self.is_read_only else ""
        return f"FileStore({str(self.root)!r}{extra})"

    def read_only(self) -> FileStore:
        return self if self.is_read_only else FileStore(self.root, read_only=True)

    def describe(self) -> str:
        return f"file store at {self.root}" + (" (read-only)" if self.is_read_only else "")

    def close(self) -> None:
        self.index.close()

    # -- events -------------------------------------------------------------------------------
    def video_events_dir(self, video_id: str) -> Path:
        return self.layout.video_events_dir(video_id)

    @_grouped
    def append_events(self, events: Sequence[LearningEvent], *, video_files: bool = True) -> None:
        self._writable()
        lines = []
        for event in events:
            validate_identifier(event.event_id, "event id")
            if event.video_id:
                validate_identifier(event.video_id, "video id")
            lines.append(event.model_dump_json().encode())
            if event.video_id:  # its per-video copy: refused before anything is written
                check_inside(self.layout.video_event_path(event.video_id, event.event_id))
        with self._events_locked() as lock:
            pending = [e.event_id for e in events if e.video_id] if video_files else []
            _mark(lock, pending)
            self._events.append(lines)
            if pending:
                self._write_video_files(events)
                _mark(lock, [])
        self._index_caught_up("events")

    def _index_caught_up(self, name: str) -> None:
        """Catch the derived index up with log ``name`` just after this process appended to it,
        so the next process that only reads — the cold gate before the next stage, above all —
        finds the index current and reads it as it is (``_indexreads``) instead of loading the
        whole file store to catch up (0.3–0.4 ms here, ~30 ms of imports there). Outside the
        log's lock: another writer's appends meanwhile are caught up too. A failure is logged,
        not raised: the write is done, and the next reader catches up as always."""
        try:
            self.index.sync(name)
        except (LearningError, OSError, sqlite3.Error) as e:
            log.warning("the derived index did not catch up with the %s log: %s", name, e)

    @contextlib.contextmanager
    def pending_event(self, event: LearningEvent) -> Iterator[None]:
        """Keep a new event safe while ``create_event`` runs its loop, without a version in the
        log: the event is written to ``state/pending_events/<event_id>.json``, held under an
        ``flock`` for the whole block, and removed once the block (which appends the event's
        final version) ends. A writer killed inside the block releases the lock: the next
        writer of the event log appends the pending version (:meth:`_recover_pending`), and
        ``complete_event`` finishes its loop. A block that raises leaves the file for that
        recovery too: its final version may not have been written. With durable writes the
        file is flushed before the block runs (the rule that the loop writes next must never
        outlive its event)."""
        self._writable()
        validate_identifier(event.event_id, "event id")
        if event.video_id:
            validate_identifier(event.video_id, "video id")
        path = self.layout.pending_event_path(event.event_id)
        fd = _hold_new_file(path, event.model_dump_json().encode(), self.root)
        try:
            # The loop's writes and the final version are flushed together, before the pending
            # file goes: a power cut leaves the pending version or the final one, never neither.
            with durable_group(self.root):
                yield
        except BaseException:
            os.close(fd)  # the lock goes: the next writer of the log appends this version
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)

    def event_pending(self, event_id: str) -> bool:
        return is_safe_identifier(event_id) and os.path.exists(
            self.layout.pending_event_path(event_id)
        )

    def _recover_pending(self) -> None:
        """Append the pending version of each new event whose writer stopped (its file is not
        locked) and whose log holds no version of it; remove its file. Caller holds the log's
        lock. Costs one ``scandir`` of an empty or missing folder when no writer stopped."""
        try:
            entries = [e.path for e in os.scandir(self.layout.pending_dir)]
        except FileNotFoundError:
            return
        except OSError as e:
            raise os_error(self.layout.pending_dir, e, "read") from e
        for entry in entries:
            if entry.endswith(".json") and not is_temp_file(Path(entry)):
                self._recover_pending_file(Path(entry))

    def _recover_pending_file(self, path: Path) -> None:
        from rayvault.learning.models import LearningEvent

        try:
            fd = open_nofollow(path, os.O_RDONLY)
        except FileNotFoundError:
            return  # its writer finished meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its writer is at work
            if not os.path.exists(path):
                return  # removed by its writer just before we locked it
            event = validate_json_record(
                LearningEvent, os.pread(fd, os.fstat(fd).st_size, 0), path, "a pending event"
            )
            if self.get_event(event.event_id) is None:
                self._events.append([event.model_dump_json().encode()])
                self._write_video_files([event])
                log.warning(
                    "event %s: its writer stopped before its final version; the version it "
                    "left pending is appended (its loop completes on its next touch)",
                    event.event_id,
                )
            os.unlink(path)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _events_locked(self) -> Iterator[int]:
        """The event log's lock. A writer notes in the lock file the events whose per-video
        files it is about to write, and clears the note once they are written: the next holder
        finding a note finishes the work of a writer that was killed in between (a kill -9 leaves
        no per-video file missing or stale for longer than the next write)."""
        with locked(self.events_path) as lock:
            if os.fstat(lock).st_size:
                self._finish_video_files(lock)
            self._recover_pending()
            yield lock

    def _finish_video_files(self, lock: int) -> None:
        note = os.pread(lock, 1 << 20, 0)
        ids = [i for i in note.decode("ascii", "replace").split() if is_safe_identifier(i)]
        for event_id in ids:
            event = self.get_event(event_id)
            if event is not None and event.video_id:
                self._write_video_files([event])
        _mark(lock, [])

    def _write_video_files(self, events: Sequence[LearningEvent]) -> None:
        for event in events:
            if event.video_id:
                path = self.layout.video_event_path(event.video_id, event.event_id)
                atomic_write(path, dump_json(event.to_dict()))

    @_grouped
    def update_event(
        self, event_id: str, change: Callable[[LearningEvent], LearningEvent]
    ) -> LearningEvent:
        self._writable()
        if not self.events_path.exists():  # no lock file for a call that must fail
            raise EventNotFoundError(event_id)
        with self._events_locked() as lock:
            current = self.get_event(event_id)
            if current is None:
                raise EventNotFoundError(event_id)
            new = change(current)
            _mark(lock, [new.event_id] if new.video_id else [])
            self._events.append([new.model_dump_json().encode()])
            self._write_video_files([new])
            _mark(lock, [])
        self._index_caught_up("events")
        return new

    @_grouped
    def update_events(
        self,
        event_ids: Sequence[str],
        change: Callable[[LearningEvent], LearningEvent | None],
    ) -> list[LearningEvent]:
        self._writable()
        ids = list(dict.fromkeys(event_ids))
        with locked(self.events_path):
            current = _rows_by_key(self.index.sync("events"), "events", "event_id", ids)
            missing = next((i for i in ids if i not in current), None)
            if missing is not None:
                raise EventNotFoundError(missing)
            new = [e for e in (change(self._event(current[i])) for i in ids) if e is not None]
            for event in new:
                validate_identifier(event.event_id, "event id")
            if new:
                self._events.append([e.model_dump_json().encode() for e in new])
                self._write_video_files(new)
        if new:
            self._index_caught_up("events")
        return new

    def _event(self, data: bytes) -> LearningEvent:
        from rayvault.learning.models import LearningEvent

        return validate_json_record(LearningEvent, unpack(data), self.events_path, "an event")

    def get_event(self, event_id: str) -> LearningEvent | None:
        conn = self.index.sync("events")
        row = conn.execute("SELECT data FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return self._event(row[0]) if row else None

    def event_versions(self, event_id: str) -> list[LearningEvent]:
        """Every version of the event the log holds, oldest first ([] for an unknown id).

        A scan of ``data/learning_events.json`` (the derived index keeps only the latest
        version): it parses only the lines that hold the id. ``events compact`` keeps only the
        latest version of each event, so after it an event has one version here.
        """
        from rayvault.learning.models import LearningEvent

        validate_identifier(event_id, "event id")
        path = self.events_path
        return [
            validate_record(LearningEvent, item, path, "an event")
            for item in versions_of(path, "event_id", event_id)
        ]

    def query_events(self, query: EventQuery) -> list[LearningEvent]:
        return build_records(self.event_rows(query), self._event)

    def event_rows(self, query: EventQuery) -> Iterable[tuple[Any, ...]]:
        """The rows of the events ``query`` selects, in its order: each starts with the stored
        record (packed bytes)."""
        query = self._follow(query)
        conn = self.index.sync("events")
        where, params = event_where(query)
        return select_events(
            conn, where, params, newest_first=query.newest_first, limit=query.limit
        )

    def count_events(self, query: EventQuery) -> int:
        query = self._follow(query)
        conn = self.index.sync("events")
        if answered_by_pattern_aggregates(query):
            # Every event: the patterns' totals and the few events without a pattern, so the
            # count does not walk the history.
            (count,) = conn.execute(COUNT_ALL_EVENTS_SQL).fetchone()
            return int(count) if query.limit is None else min(int(count), query.limit)
        where, params = event_where(query)
        if query.limit is not None:
            sql = f"SELECT count(*) FROM (SELECT 1 FROM events{where} LIMIT ?)"
            (count,) = conn.execute(sql, [*params, query.limit]).fetchone()
            return int(count)
        (count,) = conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()
        return int(count)

    def event_facets(self, query: EventQuery) -> dict[str, dict[str, int]]:
        query = self._follow(query)
        conn = self.index.sync("events")
        where, params = event_where(query)
        # One scan grouped by every facet at once (a few hundred groups), folded here: four
        # GROUP BY queries cost four scans of the table. Unresolved events are counted from
        # their open counts (a state kept on write), whatever the history behind them.
        columns = ", ".join(FACETS)
        if answered_by_open_counts(query):
            source, count = OPEN_EVENT_COUNTS_AS_EVENTS, "sum(n)"
        else:
            source, count = "events", "count(*)"
        rows = conn.execute(
            f"SELECT {columns}, {count} FROM {source}{where} GROUP BY {columns}", params
        ).fetchall()
        facets: dict[str, dict[str, int]] = {}
        for i, facet in enumerate(FACETS):
            counts: dict[str, int] = {}
            for row in rows:
                if row[i] is not None:
                    counts[str(row[i])] = counts.get(str(row[i]), 0) + int(row[-1])
            facets[facet] = dict(sorted(counts.items(), key=lambda item: -item[1]))
        return facets

    def event_patterns(
        self,
        query: EventQuery,
        *,
        min_count: int = 1,
        active_since: datetime | None = None,
        videos_limit: int | None = None,
    ) -> list[Pattern]:
        query = self._follow(query)
        conn = self.index.sync("events")
        if answered_by_pattern_aggregates(query):
            rows = aggregate_pattern_rows(
                lambda sql, params: conn.execute(sql, params).fetchall(),
                min_count=min_count,
                active_since=active_since,
                videos_limit=videos_limit,
            )
        else:
            sql, params = pattern_sql(query, min_count=min_count, active_since=active_since)
            rows = conn.execute(sql, params).fetchall()
        return self._patterns(conn, rows, videos_limit)

    def grouped_event_patterns(
        self, query: EventQuery, *, min_count: int = 1, active_since: datetime | None = None
    ) -> list[Pattern]:
        """:meth:`event_patterns` by one GROUP BY over the events, never from the aggregates
        (the oracle the aggregates are tested against)."""
        query = self._follow(query)
        conn = self.index.sync("events")
        sql, params = pattern_sql(query, min_count=min_count, active_since=active_since)
        return self._patterns(conn, conn.execute(sql, params).fetchall(), None)

    def _patterns(self, conn: Any, rows: list[Any], videos_limit: int | None) -> list[Pattern]:
        """Patterns from rows of ``pattern_sql``'s columns, with their samples' templates and at
        most ``videos_limit`` videos each (the first by id)."""
        samples = self._raw_events(conn, [row[6] for row in rows])
        patterns = []
        for row in rows:
            raw = samples.get(row[6]) or {}
            pattern = pattern_from_row(row, str(raw.get("pattern") or raw.get("symptom") or ""))
            if videos_limit is not None and len(pattern.videos) > videos_limit:
                pattern = pattern.model_copy(update={"videos": pattern.videos[:videos_limit]})
            patterns.append(pattern)
        return patterns

    def _raw_events(self, conn: Any, event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored JSON of these events, decoded without validation (for a few fields)."""
        found: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(event_ids))
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            for event_id, data in conn.execute(
                f"SELECT event_id, data FROM events WHERE event_id IN ({marks})", chunk
            ):
                found[event_id] = orjson.loads(unpack(data))
        return found

    def event_timeline(self, query: EventQuery) -> dict[date, dict[str, int]]:
        query = self._follow(query)
        conn = self.index.sync("events")
        sql, params = timeline_sql(query)
        epoch = date(1970, 1, 1)
        timeline: dict[date, dict[str, int]] = {}
        for day, severity, count in conn.execute(sql, params):
            timeline.setdefault(epoch + timedelta(days=day), {})[str(severity)] = int(count)
        return dict(sorted(timeline.items()))

    def regression_events(self, query: EventQuery) -> list[LearningEvent]:
        query = self._follow(query)
        conn = self.index.sync("events")
        where, params = event_where(query)
        has = "regression_of IS NOT NULL"  # a column of its own (records are packed)
        where = f"{where} AND {has}" if where else f" WHERE {has}"
        rows = conn.execute(f"SELECT data FROM events{where} ORDER BY ts, seq", params)
        return build_records(rows, self._event)

    def resolution_times(
        self, query: EventQuery, *, resolved_since: datetime | None = None
    ) -> list[tuple[datetime, datetime]]:
        query = self._follow(query)
        conn = self.index.sync("events")
        where, params = event_where(replace(query, unresolved=False))
        # ``resolved_ts`` is the event's resolved_at, parsed when it was indexed (NULL when it
        # has none or it does not parse): a window's resolutions are an index range.
        where += " AND resolved_ts IS NOT NULL"
        if resolved_since is not None:
            where += " AND resolved_ts >= ?"
            params.append(to_micros(resolved_since))
        # In the order events were first written, as a scan of the table gives them (and as
        # PostgreSQL does): only the window's rows are sorted.
        rows = conn.execute(f"SELECT ts, resolved_ts FROM events{where} ORDER BY seq", params)
        return [(from_micros(ts), from_micros(resolved)) for ts, resolved in rows]

    def event_statuses(self, event_ids: Sequence[str]) -> dict[str, str]:
        conn = self.index.sync("events")
        ids = list(dict.fromkeys(event_ids))
        statuses: dict[str, str] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT event_id, status FROM events WHERE event_id IN ({marks})", chunk
            )
            statuses.update((event_id, str(status)) for event_id, status in rows)
        return statuses

    # -- agent memory -------------------------------------------------------------------------
    def _load(self, model: type[M], path: Path, what: str) -> M | None:
        raw = read_json(path)
        return None if raw is None else validate_record(model, raw, path, what)

    def memory_location(self, agent: str) -> str:
        return self.relative(self.agent_dir(agent) / MEMORY_FILE)

    def load_memory(self, agent: str) -> AgentMemory:
        from rayvault.learning.models import AgentMemory

        path = self.agent_dir(agent) / MEMORY_FILE
        return self._load(AgentMemory, path, "agent memory") or AgentMemory()

    def load_tombstones(self, agent: str) -> TombstoneFile:
        return TombstoneList(self.agent_dir(agent)).read()

    @contextlib.contextmanager
    def agent_state(self, agent: str) -> Iterator[AgentState]:
        from rayvault.learning.models import AgentMemory

        self._writable()
        folder = self.agent_dir(agent)
        memory_path = folder / MEMORY_FILE
        tombstones = TombstoneList(folder)
        # A call that fails for an agent without state leaves nothing behind: no lock file, no
        # empty folder (both are removed again when nothing was written).
        new_agent = not folder.is_dir()
        # The memory file and the tombstone list are flushed together (``_grouped``).
        with (
            durable_group(self.root),
            _drop_if_empty(folder, new_agent),
            locked(memory_path, remove=new_agent),
        ):
            try:
                old_bytes: bytes | None = memory_path.read_bytes()
            except FileNotFoundError:
                old_bytes = None
            except OSError as e:
                raise os_error(memory_path, e, "read") from e
            memory = (
                validate_record(
                    AgentMemory, parse_json(old_bytes, memory_path), memory_path, "agent memory"
                )
                if old_bytes is not None
                else AgentMemory()
            )
            state = AgentState(agent, memory, tombstones.read, existed=old_bytes is not None)
            yield state
            now = utcnow()
            # The tombstones first: a crash before the memory is written leaves an evicted rule
            # in both, never in neither (evicted again later, its first tombstone stands:
            # ``_records.with_added``).
            tombstones.append(state.new_tombstones, now)
            if state.new_tombstones and state.memory_changed:
                barrier(self.root)  # durable before the memory that drops their rules
            if state.memory_changed:
                if old_bytes is not None and state.archive:
                    self._snapshot(folder, memory_path, now, state.memory)
                state.memory.updated = now
                atomic_write(memory_path, dump_json(state.memory.model_dump(mode="json")))

    def _snapshot(
        self, folder: Path, memory_path: Path, now: datetime, memory: AgentMemory
    ) -> None:
        """Archive the current memory file before it is replaced.

        A hard link to the current file: the replace that follows gives ``memory_active.json`` a
        new inode, so the snapshot keeps the old bytes without copying them. ``link`` also never
        overwrites: several changes in one second each keep their own snapshot. The name carries
        a sequence number (kept in the memory file, ``snapshot_seq``) that orders snapshots taken
        within one second (see ``files.snapshots.ordered_snapshots``).
        """
        from rayvault.learning.store.files.snapshots import next_snapshot_name

        archive = folder / ARCHIVE_DIR
        check_folder(archive)
        archive.mkdir(exist_ok=True)
        extra = memory.__pydantic_extra__
        assert extra is not None  # records keep unknown fields
        while True:
            name, seq = next_snapshot_name(archive, now, extra.get("snapshot_seq"))
            try:
                os.link(memory_path, archive / name)
            except FileExistsError:
                extra["snapshot_seq"] = seq
                continue
            extra["snapshot_seq"] = seq
            return

    def list_agents(self) -> list[str]:
        if not self.agents_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.agents_dir.iterdir() if p.is_dir() and is_safe_identifier(p.name)
        )

    def init_agent(self, agent: str) -> bool:
        from rayvault.learning.models import AgentMemory, TombstoneFile

        self._writable()
        folder = self.agent_dir(agent)
        memory_path = folder / MEMORY_FILE
        tombstones_path = folder / TOMBSTONES_FILE
        created = False
        with locked(memory_path):
            (folder / ARCHIVE_DIR).mkdir(parents=True, exist_ok=True)
            if not memory_path.exists():
                memory = AgentMemory(updated=utcnow())
                atomic_write(memory_path, dump_json(memory.model_dump(mode="json")))
                created = True
            if not tombstones_path.exists():
                tombstones = TombstoneFile(updated=utcnow())
                atomic_write(tombstones_path, dump_json(tombstones.model_dump(mode="json")))
                created = True
        return created

    def list_memory_snapshots(self, agent: str) -> list[tuple[datetime, str]]:
        archive = self.agent_dir(agent) / ARCHIVE_DIR
        if not archive.is_dir():
            return []
        found = []
        for entry in archive.iterdir():
            taken = snapshot_time(entry.name)
            if taken is not None:
                found.append((taken, entry.name))
        return sorted(found)

    def prune_memory_snapshots(self, agent: str, older_than: datetime) -> list[str]:
        self._writable()
        archive = self.agent_dir(agent) / ARCHIVE_DIR
        removed = []
        for stamp, name in self.list_memory_snapshots(agent):
            if stamp < older_than:
                check_folder(archive)  # never removes files through a link out of the root
                with contextlib.suppress(FileNotFoundError):
                    (archive / name).unlink()
                removed.append(name)
        return removed

    # -- error log ----------------------------------------------------------------------------
    @_grouped
    def append_errors(self, entries: Sequence[ErrorEntry]) -> None:
        self._writable()
        lines = []
        for entry in entries:
            validate_identifier(entry.id, "error id")
            lines.append(entry.model_dump_json().encode())
        with locked(self.errors_path):
            self._errors.append(lines)
            append_journal(self.errors_journal, lines)
        self._index_caught_up("errors")

    @_grouped
    def update_error(self, error_id: str, change: Callable[[ErrorEntry], ErrorEntry]) -> ErrorEntry:
        self._writable()
        if not self.errors_path.exists():  # no lock file for a call that must fail
            raise ErrorEntryNotFoundError(error_id)
        with locked(self.errors_path):
            current = self.get_error(error_id)
            if current is None:
                raise ErrorEntryNotFoundError(error_id)
            new = change(current)
            line = new.model_dump_json().encode()
            self._errors.append([line])
            append_journal(self.errors_journal, [line])
        self._index_caught_up("errors")
        return new

    @_grouped
    def update_errors(
        self, error_ids: Sequence[str], change: Callable[[ErrorEntry], ErrorEntry | None]
    ) -> list[ErrorEntry]:
        self._writable()
        ids = list(dict.fromkeys(error_ids))
        with locked(self.errors_path):
            current = _rows_by_key(self.index.sync("errors"), "errors", "id", ids)
            missing = next((i for i in ids if i not in current), None)
            if missing is not None:
                raise ErrorEntryNotFoundError(missing)
            new = [e for e in (change(self._error(current[i])) for i in ids) if e is not None]
            for entry in new:
                validate_identifier(entry.id, "error id")
            if new:
                self._errors.append([e.model_dump_json().encode() for e in new])
        if new:
            self._index_caught_up("errors")
        return new

    def _error(self, data: bytes) -> ErrorEntry:
        from rayvault.learning.models import ErrorEntry

        return validate_record(
            ErrorEntry, orjson.loads(data), self.errors_path, "an error-log entry"
        )

    def get_error(self, error_id: str) -> ErrorEntry | None:
        conn = self.index.sync("errors")
        row = conn.execute("SELECT data FROM errors WHERE id = ?", (error_id,)).fetchone()
        return self._error(row[0]) if row else None

    def query_errors(self, query: ErrorQuery) -> list[ErrorEntry]:
        query = self._follow(query)
        conn = self.index.sync("errors")
        clause, params = error_where(query)
        return build_records(conn.execute(f"SELECT data FROM errors{clause}", params), self._error)

    def error_patterns(self, min_count: int) -> list[ErrorPattern]:
        # Read from the aggregates the index keeps on write: a few rows per pattern (its most
        # recent videos, its stages) and one batched read of the examples, whatever the number
        # of entries behind them.
        conn = self.index.sync("errors")
        groups = conn.execute(ERROR_PATTERNS_SQL.format(ph="?"), (min_count,)).fetchall()
        examples = _rows_by_key(conn, "errors", "id", [group[5] for group in groups])
        recent = PATTERN_RECENT_VIDEOS_SQL.format(ph="?")
        stages = PATTERN_STAGES_SQL.format(ph="?")
        patterns = []
        for group in groups:
            fp = group[0]
            videos = [v for (v,) in conn.execute(recent, (fp, PATTERN_VIDEOS_LISTED))]
            patterns.append(
                error_pattern_from_row(
                    group,
                    self._error(examples[group[5]]),
                    videos,
                    [stage for (stage,) in conn.execute(stages, (fp,))],
                )
            )
        return patterns

    def latest_resolutions(self) -> list[ErrorEntry]:
        conn = self.index.sync("errors")
        rows = conn.execute(
            """
            SELECT data FROM errors AS e
             WHERE resolved = 1 AND fingerprint IS NOT NULL
               AND resolved_ts = (SELECT max(resolved_ts) FROM errors
                                   WHERE fingerprint = e.fingerprint AND resolved = 1)
             GROUP BY fingerprint
             ORDER BY resolved_ts DESC
            """
        )
        return [self._error(data) for (data,) in rows]

    def latest_resolution(self, fingerprint: str) -> ErrorEntry | None:
        fingerprint = self.resolve_pattern(fingerprint)
        conn = self.index.sync("errors")
        row = conn.execute(LATEST_RESOLUTION_SQL.format(ph="?"), (fingerprint,)).fetchone()
        return self._error(row[0]) if row else None

    # -- failure patterns ---------------------------------------------------------------------
    def pattern_book(self, stage: str) -> contextlib.AbstractContextManager[IndexBook]:
        """See :meth:`Store.pattern_book`. The index's write transaction (``BEGIN IMMEDIATE``)
        serialises every stage's assignments at once: they take well under a millisecond, and
        a text seen before needs no lock at all (``files._patterns``)."""
        self._writable()
        # The clusters live in the index, which lives under the root: a root not created yet
        # would give the book a throwaway index (its caller is about to write there anyway).
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(self.root, e, "create the data root") from e
        return pattern_book(self)

    def _follow(self, query: Q) -> Q:
        """``query`` with its fingerprint resolved through the merges: a query by a merged key
        finds the occurrences of the pattern it was merged into, and the reverse."""
        if query.fingerprint is None:
            return query
        return replace(query, fingerprint=self.resolve_pattern(query.fingerprint))

    def rank_texts(self, query: str, texts: Sequence[str]) -> list[float]:
        return fts_rank_texts(query, texts)

    def pattern_merges(self, stage: str | None = None) -> list[PatternMerge]:
        from rayvault.learning.models import PatternMerge

        conn = self.index.sync("merges")
        if stage is None:
            rows = conn.execute("SELECT data FROM merges ORDER BY seq")
        else:
            rows = conn.execute("SELECT data FROM merges WHERE stage = ? ORDER BY seq", (stage,))
        return [
            validate_json_record(PatternMerge, data, self.merges_path, "a pattern merge")
            for (data,) in rows
        ]

    # -- the gate -----------------------------------------------------------------------------
    def known_failures(self, components: tuple[str, ...], threshold: int) -> list[KnownFailure]:
        from rayvault.learning.models import KnownFailure

        return [
            KnownFailure(fingerprint=fp, pattern=pattern, occurrences=n, unresolved=open_n)
            for fp, pattern, n, open_n in self.known_failure_rows(components, threshold)
        ]

    def load_gate_state(self, video_id: str) -> GateState | None:
        from rayvault.learning.models import GateState

        self._gate_folder_usable()
        return self._load(GateState, self.gate_state_path(video_id), "the gate state")

    def list_gate_videos(self) -> list[str]:
        self._gate_folder_usable()
        if not self.gate_dir.is_dir():
            return []
        found = (p for p in self.gate_dir.glob("*.json") if p.is_file())
        return sorted(p.stem for p in found if is_safe_identifier(p.stem))

    @contextlib.contextmanager
    def gate_state(self, video_id: str) -> Iterator[GateState]:
        from rayvault.learning.models import GateState

        self._writable()
        self._gate_folder_usable()
        path = self.gate_state_path(video_id)
        with durable_group(self.root), locked(path):
            state = self._load(GateState, path, "the gate state") or GateState(video_id=video_id)
            yield state
            state.updated = utcnow()
            atomic_write(path, dump_json(state.model_dump(mode="json")))

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        self._writable()
        # Named locks are one-off (one per promoted error id, …): the lock file is removed on
        # release, so they do not pile up in state/locks/.
        with locked(self.locks_dir / validate_identifier(name, "lock name"), remove=True):
            yield

    def archive_tombstones(self, agent: str, older_than: datetime) -> ArchivedTombstones:
        """See :meth:`Store.archive_tombstones`; it also folds the log of added tombstones
        into ``memory_tombstones.json`` (``files._tombstones``), even when nothing is due."""
        self._writable()
        folder = self.agent_dir(agent)
        tombstones = TombstoneList(folder)
        if not tombstones.exists():
            return ArchivedTombstones(agent)  # no lock file for an agent without state
        with locked(folder / MEMORY_FILE):
            whole = tombstones.read()
            due = [t for t in whole.tombstones if t.tombstoned_at < older_than]
            if not due:
                if tombstones.log.path.exists():
                    tombstones.rewrite(whole)
                return ArchivedTombstones(agent)
            now = utcnow()
            content = dump_json(tombstone_archive_document(agent, now, older_than, due))
            # The archive is written first: a crash before the tombstone list is rewritten
            # leaves them in both places (archived again next time), never in neither.
            [path] = _create_dated(
                folder / TOMBSTONE_ARCHIVE_DIR,
                TOMBSTONE_ARCHIVE_PREFIX,
                now.date(),
                {".json": content},
            )
            kept = [t for t in whole.tombstones if not t.tombstoned_at < older_than]
            tombstones.rewrite(whole.model_copy(update={"tombstones": kept, "updated": now}))
        return ArchivedTombstones(agent, due, str(path))

    # -- maintenance --------------------------------------------------------------------------
    def compact_events(self) -> CompactResult:
        """Rewrite the event index with only the latest version of each event, under its lock.

        The old file is kept in ``data/archive/learning_events-<timestamp>.json`` (a hard link
        when the filesystem allows: no copy). The new file has a new inode, so every process's
        derived index notices the rewrite and rebuilds itself. The older versions leave the
        log: :meth:`event_versions` returns only the latest one of a compacted event.
        """
        from rayvault.learning.models import CompactResult

        self._writable()
        path = self.events_path
        relative = self.relative(path)
        with self._events_locked():
            try:
                data = path.read_bytes()
            except OSError as e:
                if not isinstance(e, FileNotFoundError):
                    raise os_error(path, e, "read") from e
                return CompactResult(
                    path=relative,
                    compacted=False,
                    versions_before=0,
                    events_after=0,
                    bytes_before=0,
                    bytes_after=0,
                )
            parsed = parse_array(data, path)
            latest = latest_versions(parsed.items, "event_id", path)
            result = CompactResult(
                path=relative,
                compacted=False,
                versions_before=len(parsed.items),
                events_after=len(latest),
                bytes_before=len(data),
                bytes_after=len(data),
                torn_tail_dropped=parsed.torn_at is not None,
            )
            if len(latest) == len(parsed.items) and parsed.torn_at is None:
                return result
            archive = self._archive_copy(path, data)
            body = b",\n".join(orjson.dumps(item) for item in latest.values())
            new = b"[\n" + body + b"\n]\n" if latest else b"[\n]\n"
            atomic_write(path, new)
        self.index.forget()
        return result.model_copy(
            update={
                "compacted": True,
                "archive": self.relative(archive),
                "bytes_after": len(new),
            }
        )

    def _archive_copy(self, path: Path, data: bytes) -> Path:
        """Keep ``path`` (whose bytes are ``data``) as ``data/archive/<stem>-<timestamp>.json``;
        never over an existing archive."""
        stamp = compact_ts(utcnow())
        name = f"{path.stem}-{stamp}{path.suffix}"
        while True:
            target = self.archive_dir / name
            check_inside(target)
            self.archive_dir.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
                return target
            except FileExistsError:
                pass
            except OSError:  # no hard links here: write a copy
                if create_exclusive(target, data):
                    return target
            name = f"{path.stem}-{stamp}-{_token()}{path.suffix}"

    def check(
        self, repair: bool = False, *, progress: ProgressCallback | None = None
    ) -> list[Finding]:
        """Check every file of the data root (see ``_doctor``); with ``repair``, fix what can be
        fixed without losing anything."""
        if repair:
            self._writable()
        from rayvault.learning.store.files.doctor import FileStoreDoctor

        return FileStoreDoctor(self, repair=repair, progress=progress).run()

    # -- capabilities (``store.capabilities``) -----------------------------------------------
    def has_schema(self) -> bool:
        return False  # its files are created as it writes

    def is_initialised(self) -> bool:
        return True  # a missing root is the caller's to refuse (``roots.root_for_reading``)

    def init_schema(self) -> list[str]:
        return []

    def upgrade_schema(self) -> list[str]:
        return []

    def schema_status(self) -> dict[str, Any]:
        return {
            "backend": "file",
            "description": self.describe(),
            "root": str(self.root),
            "initialised": True,
            "migrations": [],
            "pending": [],
            "unknown": [],
            "counts": {
                "events": self.count_events(EventQuery()),
                "errors": len(self.query_errors(ErrorQuery())),
                "agents": len(self.list_agents()),
                "gate_states": len(self.layout.gate_state_files()),
            },
        }

    def portable(self) -> Portable:
        """Its data root, read and written as items (``files.transfer``)."""
        from rayvault.learning.store.files.transfer import FileLayout

        return FileLayout(self.root)

    # -- weekly reports -----------------------------------------------------------------------
    def save_weekly_report(self, day: date, report: Mapping[str, Any], html: str) -> SavedReport:
        self._writable()
        json_path, html_path = _create_dated(
            self.reports_dir,
            REPORT_PREFIX,
            day,
            {".json": dump_json(dict(report)), ".html": html.encode()},
        )
        return SavedReport(json_path.stem, str(json_path), str(html_path))

    def list_weekly_reports(self) -> list[str]:
        if not self.reports_dir.is_dir():
            return []
        found = []
        for entry in self.reports_dir.iterdir():
            if entry.suffix == ".json" and (dated := parse_dated(REPORT_NAME, entry.stem)):
                found.append((*dated, entry))
        return [entry.stem for _, _, entry in sorted(found)]

    def load_weekly_report(self, name: str | None = None) -> WeeklyReport | None:
        from rayvault.learning.models import WeeklyReport

        if name is None:
            names = self.list_weekly_reports()
            if not names:
                return None
            name = names[-1]
        elif not REPORT_NAME.fullmatch(name):
            raise InvalidIdentifierError(
                f"invalid weekly report name {name!r}: expected weekly-YYYY-MM-DD or "
                "weekly-YYYY-MM-DD-N"
            )
        path = self.layout.report_path(name)
        return self._load(WeeklyReport, path, "the weekly report")


#: Keys per ``IN (…)`` lookup (well under SQLite's limit on bound parameters).
_KEYS_PER_QUERY = 500


def _rows_by_key(conn: Any, table: str, key: str, keys: Sequence[str]) -> dict[str, bytes]:
    """The stored record of each of ``keys`` that exists, by key, in a few indexed lookups."""
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), _KEYS_PER_QUERY):
        chunk = keys[start : start + _KEYS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(f"SELECT {key}, data FROM {table} WHERE {key} IN ({marks})", chunk)
        found.update(rows)
    return found


def _token() -> str:
    return os.urandom(4).hex()  # ``secrets.token_hex(4)``, without importing secrets


@contextlib.contextmanager
def _drop_if_empty(folder: Path, new: bool) -> Iterator[None]:
    """Remove ``folder`` on the way out when it was created for this call and is still empty
    (the lock file is removed first, see ``locked(remove=True)``)."""
    try:
        yield
    finally:
        if new:
            with contextlib.suppress(OSError):
                (folder / ARCHIVE_DIR).rmdir()
            with contextlib.suppress(OSError):
                folder.rmdir()


def _hold_new_file(path: Path, data: bytes, anchor: Path) -> int:
    """Write ``path`` (a new file) whole and return a descriptor holding its ``flock``: written
    as a temp file, locked, then linked into place, so no reader ever sees it empty or unlocked
    while its writer lives. Flushed (with its folder entry) when writes are durable."""
    check_inside(path)
    tmp = temp_path_for(path)
    try:
        fd = open_nofollow(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = open_nofollow(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    except OSError as e:
        raise os_error(path, e) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, data)
        os.link(tmp, path)
        if fsync_enabled():  # a barrier: before anything the loop writes
            flush_now(anchor, [str(path)], [str(path.parent)])
    except BaseException:
        os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return fd


def _mark(lock: int, event_ids: Sequence[str]) -> None:
    """Note (or, empty, clear) in the event log's lock file the per-video files being written."""
    if event_ids:
        os.pwrite(lock, " ".join(event_ids).encode() + b"\n", 0)
    os.ftruncate(lock, len(" ".join(event_ids)) + 1 if event_ids else 0)


def append_journal(path: Path, lines: Sequence[bytes]) -> None:
    """Append records to a JSON-lines journal (one ``write`` with ``O_APPEND``): a second copy
    of a log that ``doctor --repair`` restores it from when the log itself is lost."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"\n".join(lines) + b"\n")
        if fsync_enabled():
            sync_file(fd, path)
    finally:
        os.close(fd)


def _create_dated(
    folder: Path, prefix: str, day: date, contents: Mapping[str, bytes]
) -> list[Path]:
    """Write ``<prefix>-YYYY-MM-DD<suffix>`` for each suffix of ``contents``, as new files: the
    first free name of ``<prefix>-YYYY-MM-DD``, ``…-2``, ``…-3`` (no file of that name with any
    of the suffixes may exist). Dated files never overwrite one another, even between processes:
    the first file is claimed with an exclusive create."""
    suffixes = list(contents)
    for n in itertools.count(1):
        stem = dated_name(prefix, day, n)
        paths = [folder / f"{stem}{suffix}" for suffix in suffixes]
        if any(p.exists() for p in paths[1:]):
            continue  # left by an interrupted write: never replace it
        if not create_exclusive(paths[0], contents[suffixes[0]]):
            continue
        for path, suffix in zip(paths[1:], suffixes[1:], strict=True):
            if not create_exclusive(path, contents[suffix]):
                raise StoreError(f"{path} appeared while it was being written; nothing replaced")
        return paths
    raise AssertionError("unreachable")
