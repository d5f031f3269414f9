"""The embedded file store: the specification's data layout under one project root.

::

    data/learning_events.json            append-only event index (every version; last wins)
    data/error_log.json                  append-only raw error log
    data/archive/                        event indexes as they were before each compaction
    data/learning_reports/               weekly reports
    state/agents/<agent>/memory_active.json, memory_tombstones.json, memory_archive/
    state/learning_gate/<video_id>.json  the gate's last-seen hashes and acknowledgements
    state/cache/index.sqlite3            derived index over the two logs (safe to delete)
    state/doctor-archive/<timestamp>/    what ``doctor --repair`` moved aside or replaced
    state/locks/<name>.lock              named inter-process locks (removed on release)
    artifacts/videos/<vid>/learning/events/<event_id>.json

All writes follow the storage rules of ``_fs`` and ``_jsonlog``: atomic, locked, never over a
file that does not parse.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from rayvault.learning._ids import is_safe_identifier, validate_identifier
from rayvault.learning._time import compact_ts, parse_ts, utcnow
from rayvault.learning.exceptions import (
    ConfigError,
    CorruptFileError,
    ErrorEntryNotFoundError,
    EventNotFoundError,
    StoreError,
)
from rayvault.learning.models import (
    AgentMemory,
    CompactResult,
    ErrorEntry,
    ErrorPattern,
    Finding,
    GateState,
    KnownFailure,
    LearningEvent,
    TombstoneFile,
)
from rayvault.learning.store._fs import (
    atomic_write,
    create_exclusive,
    dump_json,
    locked,
    parse_json,
    read_json,
)
from rayvault.learning.store._jsonlog import JsonArrayLog, latest_versions, parse_array
from rayvault.learning.store._sql import (
    ERROR_PATTERNS_SQL,
    FACETS,
    error_where,
    event_order,
    event_where,
    known_failures_sql,
)
from rayvault.learning.store._sqlindex import SqliteIndex, error_source, event_source
from rayvault.learning.store.base import AgentState, ErrorQuery, EventQuery, ProgressCallback
from rayvault.learning.store.documents import Documents
from rayvault.policies import Policies, PolicyError, load_policies

M = TypeVar("M", bound=BaseModel)

MEMORY_FILE = "memory_active.json"
TOMBSTONES_FILE = "memory_tombstones.json"
ARCHIVE_DIR = "memory_archive"
_SNAPSHOT = re.compile(r"memory_active-(\d{8}T\d{6}Z)(?:-[0-9a-f]+)?\.json")


def validate_record(model: type[M], raw: Any, path: Path, what: str) -> M:
    """Validate data read from ``path``; a shape error is a :class:`CorruptFileError`."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CorruptFileError(
            path, f"{what} does not match the expected shape: {where}: {first['msg']}"
        ) from e


class FileStore:
    """The embedded default store (no server): JSON files under ``root``.

    ``read_only=True`` opens a view that never writes, not even the derived index (it is kept in
    memory instead): writes raise :class:`StoreError`. Dry runs use it.
    """

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        self.root = Path(root).absolute()
        self.is_read_only = read_only
        self.data_dir = self.root / "data"
        self.archive_dir = self.data_dir / "archive"
        self.events_path = self.data_dir / "learning_events.json"
        self.errors_path = self.data_dir / "error_log.json"
        self.reports_dir = self.data_dir / "learning_reports"
        self.agents_dir = self.root / "state" / "agents"
        self.gate_dir = self.root / "state" / "learning_gate"
        self.cache_dir = self.root / "state" / "cache"
        self.doctor_archive_dir = self.root / "state" / "doctor-archive"
        self.locks_dir = self.root / "state" / "locks"
        self.videos_dir = self.root / "artifacts" / "videos"
        self._events = JsonArrayLog(self.events_path)
        self._errors = JsonArrayLog(self.errors_path)
        self.index = SqliteIndex(
            None if read_only else self.cache_dir / "index.sqlite3",
            [event_source(self.events_path), error_source(self.errors_path)],
        )
        self.docs = Documents(self.root, lambda: self.policies, read_only=read_only)

    def __repr__(self) -> str:
        extra = ", read_only=True" if self.is_read_only else ""
        return f"FileStore({str(self.root)!r}{extra})"

    def read_only(self) -> FileStore:
        return self if self.is_read_only else FileStore(self.root, read_only=True)

    def _writable(self) -> None:
        if self.is_read_only:
            raise StoreError(f"the file store at {self.root} was opened read-only")

    @property
    def policies(self) -> Policies:
        try:
            return load_policies(self.root)
        except PolicyError as e:
            raise ConfigError(str(e), hint="fix the value in policies.py or the environment") from e

    def describe(self) -> str:
        return f"file store at {self.root}" + (" (read-only)" if self.is_read_only else "")

    def close(self) -> None:
        self.index.close()

    # -- events -------------------------------------------------------------------------------
    def video_events_dir(self, video_id: str) -> Path:
        return self.videos_dir / validate_identifier(video_id, "video id") / "learning" / "events"

    def append_events(self, events: Sequence[LearningEvent], *, video_files: bool = True) -> None:
        self._writable()
        lines = []
        for event in events:
            validate_identifier(event.event_id, "event id")
            if event.video_id:
                validate_identifier(event.video_id, "video id")
            lines.append(event.model_dump_json().encode())
        with locked(self.events_path):
            self._events.append(lines)
            if video_files:
                self._write_video_files(events)

    def _write_video_files(self, events: Sequence[LearningEvent]) -> None:
        for event in events:
            if event.video_id:
                path = self.video_events_dir(event.video_id) / f"{event.event_id}.json"
                atomic_write(path, dump_json(event.to_dict()))

    def update_event(
        self, event_id: str, change: Callable[[LearningEvent], LearningEvent]
    ) -> LearningEvent:
        self._writable()
        with locked(self.events_path):
            current = self.get_event(event_id)
            if current is None:
                raise EventNotFoundError(event_id)
            new = change(current)
            self._events.append([new.model_dump_json().encode()])
            self._write_video_files([new])
            return new

    def _event(self, data: bytes) -> LearningEvent:
        return validate_record(LearningEvent, orjson.loads(data), self.events_path, "an event")

    def get_event(self, event_id: str) -> LearningEvent | None:
        conn = self.index.sync("events")
        row = conn.execute("SELECT data FROM events WHERE event_id = ?", (event_id,)).fetchone()
        return self._event(row[0]) if row else None

    def query_events(self, query: EventQuery) -> list[LearningEvent]:
        conn = self.index.sync("events")
        where, params = event_where(query)
        order, more = event_order(query)
        rows = conn.execute(f"SELECT data FROM events{where}{order}", [*params, *more])
        return [self._event(data) for (data,) in rows]

    def count_events(self, query: EventQuery) -> int:
        conn = self.index.sync("events")
        where, params = event_where(query)
        (count,) = conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()
        return int(count)

    def event_facets(self, query: EventQuery) -> dict[str, dict[str, int]]:
        conn = self.index.sync("events")
        where, params = event_where(query)
        facets: dict[str, dict[str, int]] = {}
        for facet in FACETS:
            rows = conn.execute(
                f"SELECT {facet}, count(*) FROM events{where} GROUP BY {facet} ORDER BY 2 DESC",
                params,
            )
            facets[facet] = {str(value): int(n) for value, n in rows if value is not None}
        return facets

    # -- agent memory -------------------------------------------------------------------------
    def agent_dir(self, agent: str) -> Path:
        return self.agents_dir / validate_identifier(agent, "agent")

    def _load(self, model: type[M], path: Path, what: str) -> M | None:
        raw = read_json(path)
        return None if raw is None else validate_record(model, raw, path, what)

    def relative(self, path: Path) -> str:
        """``path`` relative to the data root (as given, unresolved), else as it is."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def memory_location(self, agent: str) -> str:
        return self.relative(self.agent_dir(agent) / MEMORY_FILE)

    def load_memory(self, agent: str) -> AgentMemory:
        path = self.agent_dir(agent) / MEMORY_FILE
        return self._load(AgentMemory, path, "agent memory") or AgentMemory()

    def load_tombstones(self, agent: str) -> TombstoneFile:
        path = self.agent_dir(agent) / TOMBSTONES_FILE
        return self._load(TombstoneFile, path, "the tombstone list") or TombstoneFile()

    @contextlib.contextmanager
    def agent_state(self, agent: str) -> Iterator[AgentState]:
        self._writable()
        folder = self.agent_dir(agent)
        memory_path = folder / MEMORY_FILE
        tombstones_path = folder / TOMBSTONES_FILE
        with locked(memory_path):
            try:
                old_bytes: bytes | None = memory_path.read_bytes()
            except FileNotFoundError:
                old_bytes = None
            memory = (
                validate_record(
                    AgentMemory, parse_json(old_bytes, memory_path), memory_path, "agent memory"
                )
                if old_bytes is not None
                else AgentMemory()
            )
            tombstones = (
                self._load(TombstoneFile, tombstones_path, "the tombstone list") or TombstoneFile()
            )
            state = AgentState(agent, memory, tombstones, existed=old_bytes is not None)
            yield state
            now = utcnow()
            if state.memory_changed:
                if old_bytes is not None:
                    self._snapshot(folder, memory_path, now)
                state.memory.updated = now
                atomic_write(memory_path, dump_json(state.memory.model_dump(mode="json")))
            if state.tombstones_changed:
                state.tombstones.updated = now
                atomic_write(tombstones_path, dump_json(state.tombstones.model_dump(mode="json")))

    def _snapshot(self, folder: Path, memory_path: Path, now: datetime) -> None:
        """Archive the current memory file before it is replaced.

        A hard link to the current file: the replace that follows gives ``memory_active.json`` a
        new inode, so the snapshot keeps the old bytes without copying them. ``link`` also never
        overwrites: several changes in one second each keep their own snapshot.
        """
        archive = folder / ARCHIVE_DIR
        archive.mkdir(exist_ok=True)
        stamp = compact_ts(now)
        while True:
            try:
                os.link(memory_path, archive / f"memory_active-{stamp}-{_token()}.json")
                return
            except FileExistsError:
                continue

    def list_agents(self) -> list[str]:
        if not self.agents_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.agents_dir.iterdir() if p.is_dir() and is_safe_identifier(p.name)
        )

    def init_agent(self, agent: str) -> bool:
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
            match = _SNAPSHOT.fullmatch(entry.name)
            if match:
                found.append((parse_ts(match.group(1)), entry.name))
        return sorted(found)

    def prune_memory_snapshots(self, agent: str, older_than: datetime) -> list[str]:
        self._writable()
        archive = self.agent_dir(agent) / ARCHIVE_DIR
        removed = []
        for stamp, name in self.list_memory_snapshots(agent):
            if stamp < older_than:
                with contextlib.suppress(FileNotFoundError):
                    (archive / name).unlink()
                removed.append(name)
        return removed

    # -- error log ----------------------------------------------------------------------------
    def append_errors(self, entries: Sequence[ErrorEntry]) -> None:
        self._writable()
        lines = []
        for entry in entries:
            validate_identifier(entry.id, "error id")
            lines.append(entry.model_dump_json().encode())
        with locked(self.errors_path):
            self._errors.append(lines)

    def update_error(self, error_id: str, change: Callable[[ErrorEntry], ErrorEntry]) -> ErrorEntry:
        self._writable()
        with locked(self.errors_path):
            current = self.get_error(error_id)
            if current is None:
                raise ErrorEntryNotFoundError(error_id)
            new = change(current)
            self._errors.append([new.model_dump_json().encode()])
            return new

    def _error(self, data: bytes) -> ErrorEntry:
        return validate_record(
            ErrorEntry, orjson.loads(data), self.errors_path, "an error-log entry"
        )

    def get_error(self, error_id: str) -> ErrorEntry | None:
        conn = self.index.sync("errors")
        row = conn.execute("SELECT data FROM errors WHERE id = ?", (error_id,)).fetchone()
        return self._error(row[0]) if row else None

    def query_errors(self, query: ErrorQuery) -> list[ErrorEntry]:
        conn = self.index.sync("errors")
        clause, params = error_where(query)
        return [
            self._error(data)
            for (data,) in conn.execute(f"SELECT data FROM errors{clause}", params)
        ]

    def error_patterns(self, min_count: int) -> list[ErrorPattern]:
        conn = self.index.sync("errors")
        patterns = []
        for fp, count, unresolved, first, last, example in conn.execute(
            ERROR_PATTERNS_SQL.format(ph="?"), (min_count,)
        ).fetchall():
            rows = conn.execute(
                "SELECT DISTINCT video_id, stage FROM errors WHERE fingerprint = ?", (fp,)
            ).fetchall()
            sample = self._error(
                conn.execute("SELECT data FROM errors WHERE id = ?", (example,)).fetchone()[0]
            )
            patterns.append(
                ErrorPattern(
                    fingerprint=fp,
                    pattern=sample.pattern or sample.error[:200],
                    stage=fp.split(":", 1)[0],
                    count=count,
                    unresolved=unresolved,
                    videos=sorted({v for v, _ in rows if v}),
                    stages=sorted({s for _, s in rows if s}),
                    first_seen=_from_micros(first),
                    last_seen=_from_micros(last),
                    example_id=example,
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

    # -- the gate -----------------------------------------------------------------------------
    def known_failures(self, components: tuple[str, ...], threshold: int) -> list[KnownFailure]:
        self.index.sync("errors")
        conn = self.index.sync("events")
        found = []
        rows = conn.execute(known_failures_sql(len(components)), [*components, threshold])
        for fp, occurrences, unresolved in rows.fetchall():
            sample = (
                conn.execute(
                    "SELECT data FROM events WHERE fingerprint = ? LIMIT 1", (fp,)
                ).fetchone()
                or conn.execute(
                    "SELECT data FROM errors WHERE fingerprint = ? LIMIT 1", (fp,)
                ).fetchone()
            )
            template = orjson.loads(sample[0]).get("pattern") if sample else None
            found.append(
                KnownFailure(
                    fingerprint=fp,
                    pattern=template or fp,
                    occurrences=occurrences,
                    unresolved=unresolved,
                )
            )
        return found

    def gate_state_path(self, video_id: str) -> Path:
        return self.gate_dir / f"{validate_identifier(video_id, 'video id')}.json"

    def load_gate_state(self, video_id: str) -> GateState | None:
        return self._load(GateState, self.gate_state_path(video_id), "the gate state")

    @contextlib.contextmanager
    def gate_state(self, video_id: str) -> Iterator[GateState]:
        self._writable()
        path = self.gate_state_path(video_id)
        with locked(path):
            state = self._load(GateState, path, "the gate state") or GateState(video_id=video_id)
            yield state
            state.updated = utcnow()
            atomic_write(path, dump_json(state.model_dump(mode="json")))

    def _soul_snapshot_path(self, sha256: str) -> Path:
        return self.gate_dir / "souls" / f"{validate_identifier(sha256, 'SOUL hash')}.md"

    def save_soul_snapshot(self, sha256: str, text: str) -> None:
        self._writable()
        path = self._soul_snapshot_path(sha256)
        if not path.exists():
            create_exclusive(path, text.encode())

    def load_soul_snapshot(self, sha256: str) -> str | None:
        try:
            return self._soul_snapshot_path(sha256).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        self._writable()
        # Named locks are one-off (one per promoted error id, …): the lock file is removed on
        # release, so they do not pile up in state/locks/.
        with locked(self.locks_dir / validate_identifier(name, "lock name"), remove=True):
            yield

    # -- maintenance --------------------------------------------------------------------------
    def compact_events(self) -> CompactResult:
        """Rewrite the event index with only the latest version of each event, under its lock.

        The old file is kept in ``data/archive/learning_events-<timestamp>.json`` (a hard link
        when the filesystem allows: no copy). The new file has a new inode, so every process's
        derived index notices the rewrite and rebuilds itself.
        """
        self._writable()
        path = self.events_path
        relative = self.relative(path)
        with locked(path):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
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
        from rayvault.learning.store._doctor import FileStoreDoctor

        return FileStoreDoctor(self, repair=repair, progress=progress).run()


def _from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def _token() -> str:
    return secrets.token_hex(4)
