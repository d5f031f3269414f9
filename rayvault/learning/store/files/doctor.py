"""The file store's self-check: every file of a data root read and compared, and what is safe to
repair repaired (``rayvault-learn doctor [--repair]``).

What is checked, and what a repair does:

- the event index and the error log parse (a *torn tail* is cut off and the array closed again;
  the bytes cut are kept), and every element has the record's shape (reported only);
- a log that does not parse is rebuilt: every readable record salvaged into a new file, the
  damaged file kept in the archive; records missing from a log (cut off, or lost in the damage)
  are restored from their surviving copies: events from the per-video files and the derived
  index, error-log entries from the journal (``error_log.journal``) and the index. What no copy
  holds but something refers to (rules' source events, events' source errors) is reported lost;
- every per-video event file exists and equals the latest version in the index (a missing one is
  written from the index; a stale or unreadable one is moved to the archive and re-written);
  per-video files of events the index does not have are reported only;
- memory, tombstone, memory snapshot, gate state and report files parse and have their shape
  (the log of tombstones added since the sweep too: a torn tail is cut off as the logs' are),
  SOUL snapshots match their hash (reported only: these are the only copy of their data); a
  corrupt memory is restored from its newest valid snapshot (``check_root`` then replays the rules
  of the agent's later events);
- temp files of writes that never finished (moved to the archive when older than
  ``TEMP_STALE_SECONDS``) and lock files left behind (not held and guarding nothing: removed);
- the derived SQLite index agrees with the logs (rebuilt in place);
- new events left pending by a ``create_event`` that stopped in its loop
  (``state/pending_events/``): appended to the event log by a repair.

Findings that a writer at work could cause (a per-video file or index row not yet caught up) are
checked again holding the logs' locks, so a doctor run beside active writers reports what is
really there.

Repairs never delete data that cannot be restored: whatever is replaced or moved aside goes to
``state/doctor-archive/<timestamp>/`` under its path relative to the data root.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from rayvault.learning._ids import is_safe_identifier
from rayvault.learning._time import compact_ts, utcnow
from rayvault.learning.exceptions import CorruptFileError
from rayvault.learning.models import (
    AgentMemory,
    ErrorEntry,
    Finding,
    FindingLevel,
    GateState,
    LearningEvent,
    Tombstone,
    TombstoneFile,
)
from rayvault.learning.store._fs import (
    LOCK_SUFFIX,
    TEMP_MARKER,
    atomic_write,
    dump_json,
    lock_file_held,
    locked,
    parse_json,
    remove_lock_file,
)
from rayvault.learning.store._names import original_tombstone_archive_day
from rayvault.learning.store._original import OriginalTombstoneArchive
from rayvault.learning.store.files._jsonlog import ArrayFile, JsonArrayLog, parse_array, read_array
from rayvault.learning.store.files._salvage import (
    latest_by_key,
    read_index_rows,
    salvage_records,
    version_time,
)
from rayvault.learning.store.files.layout import (
    ARCHIVE_DIR,
    JSON_FILES,
    MEMORY_FILE,
    SOUL_FILES,
    TOMBSTONES_FILE,
    TOMBSTONES_LOG_FILE,
)
from rayvault.learning.store.files.snapshots import max_seq, ordered_snapshots

if TYPE_CHECKING:
    from rayvault.learning.store.base import ProgressCallback
    from rayvault.learning.store.files.store import FileStore

#: A temp file older than this is left over from a write that never finished (writes take
#: milliseconds; even compacting a large index takes seconds).
TEMP_STALE_SECONDS = 600
#: Shape errors reported per file before summing up the rest in one finding.
MAX_ELEMENT_FINDINGS = 20
#: Ids named in one finding before the rest are counted.
MAX_IDS_SHOWN = 10
#: Findings a writer at work can cause for a moment: checked again under the logs' locks.
_RACY = frozenset(
    {
        "index-inconsistent",
        "video-file-orphan",
        "video-file-stale",
        "video-file-missing",
        "video-file-unreadable",
        "video-file-misplaced",
        "log-torn-tail",
        "log-records-missing",
    }
)


class FileStoreDoctor:
    """One check (and optional repair) run over a file store."""

    def __init__(
        self, store: FileStore, *, repair: bool, progress: ProgressCallback | None = None
    ) -> None:
        self.store = store
        self.repair = repair
        self.progress = progress
        self.findings: list[Finding] = []
        self._archive: Path | None = None
        #: True while this run holds the logs' locks (its repairs then take them no more).
        self._held = False
        self._recoverable: set[str] = set()
        #: Per-video files read this pass for their copies, reused by their own check.
        self._video_bytes: dict[Path, bytes] = {}
        self._video_paths: list[Path] | None = None
        self._index_rows: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] | None = None

    def run(self) -> list[Finding]:
        store = self.store
        if self.repair:
            events_lock = (
                store._events_locked()
                if store.events_path.exists()
                else _log_lock(store.events_path)
            )
            with events_lock, _log_lock(store.errors_path):
                self._held = True
                self._check_logs()
                self._held = False
        else:
            self._check_logs()
            if any(f.code in _RACY for f in self.findings):
                # Perhaps a writer at work: look again with the writers held off.
                self.findings.clear()
                self._recoverable.clear()
                with _log_lock(store.events_path), _log_lock(store.errors_path):
                    self._held = True
                    self._check_logs()
                    self._held = False
        self._check_pending()
        self._check_merges()
        self._check_agents()
        self._check_gate_states()
        self._check_reports()
        self._check_leftovers()
        return self.findings

    def _check_pending(self) -> None:
        """New events waiting in ``state/pending_events/`` (``FileStore.pending_event``): held
        by a writer at work (info), or left by one that stopped (a repair, like the next write
        to the event log, appends them)."""
        folder = self.store.layout.pending_dir
        if not folder.is_dir():
            return
        for path in sorted(folder.glob("*.json")):
            if TEMP_MARKER in path.name:
                continue
            if lock_file_held(path):
                self._add(
                    "event-pending",
                    path,
                    "a new event whose create_event is running its loop",
                    level="info",
                )
                continue
            finding = self._add(
                "event-pending-stopped",
                path,
                "a new event whose writer stopped before writing it to the event log; the next "
                "write to the log (or doctor --repair) appends it",
                level="info",  # what a kill leaves, healed by the next write without a command
                repairable=True,
            )
            if self.repair:
                with self.store._events_locked():  # appends what stopped writers left
                    pass
                if not path.exists():
                    self._repaired(finding, "appended to the event log")

    def _merges_read(self) -> bool:
        """Whether the merges log can be read (the index is built from it too; a corrupt one
        is reported by :meth:`_check_merges`, and the index left as it is)."""
        try:
            read_array(self.store.merges_path)
        except (CorruptFileError, OSError):
            return False
        return True

    def _read_appended(self, path: Path, corrupt_code: str, consequence: str) -> list[Any]:
        """The elements of an append-only log that is the only copy of what it records: a
        corrupt file is reported (``corrupt_code``, with ``consequence``) and left as it is, an
        unreadable one reported; a torn tail (an append that never finished) is a warning, cut
        off with ``--repair``. Empty when there is nothing to check."""
        try:
            whole = read_array(path)
        except CorruptFileError as e:
            self._add(corrupt_code, path, f"is corrupt: {e.detail}; {consequence}")
            return []
        except OSError as e:
            self._add("file-unreadable", path, f"cannot be read: {e.strerror or e}")
            return []
        if whole is None:
            return []
        if whole.parsed.torn_at is not None:
            finding = self._add(
                "log-torn-tail",
                path,
                f"has a torn tail ({len(whole.data) - whole.parsed.torn_at} bytes of an append "
                "that never finished); readers ignore it and the next write cuts it off",
                level="warning",
                repairable=True,
            )
            if self.repair:
                self._repair_torn_tail(path, finding)
        return list(whole.parsed.items)

    def _check_merges(self) -> None:
        """The merges of failure patterns (``data/pattern_merges.json``): the only copy of what
        they record, so a corrupt file is reported by name and left as it is, never rebuilt
        from what can be salvaged (the index keeps applying the merges it has)."""
        from rayvault.learning.models import PatternMerge

        path = self.store.merges_path
        items = self._read_appended(
            path,
            "log-corrupt",
            "the pattern merges it records cannot be read (queries keep the merges already "
            "indexed); fix or restore the file by hand",
        )
        for i, item in enumerate(items):
            problem = self._validate(PatternMerge, item)
            if problem is not None:
                self._add("log-element-invalid", path, f"element {i} is not a merge: {problem}")

    def _check_logs(self) -> None:
        """The two logs, their copies and the derived index (a consistent view when the logs'
        locks are held)."""
        store = self.store
        self._video_bytes.clear()
        self._video_paths = None
        # Read before anything brings the index up to date: after a log lost records, the index
        # may be the last place that still has them (read once: a second pass sees the same).
        if self._index_rows is None:
            self._index_rows = (
                read_index_rows(store.index.path, "events", "event_id"),
                read_index_rows(store.index.path, "errors", "id"),
            )
        index_events, index_errors = self._index_rows
        event_copies = self._event_copies(index_events)
        events = self._check_log(
            store.events_path,
            "event_id",
            LearningEvent,
            "an event",
            event_copies,
            self._events_referenced,
            newer=True,
        )
        error_copies = self._error_copies(index_errors)

        def errors_referenced() -> set[str]:
            return {
                str(raw["source_error_id"])
                for raw in (events or {}).values()
                if isinstance(raw.get("source_error_id"), str)
            }

        errors = self._check_log(
            store.errors_path,
            "id",
            ErrorEntry,
            "an error-log entry",
            error_copies,
            errors_referenced,
            newer=False,
        )
        if events is not None:
            self._check_video_files(events)
        unrestored = any(
            f.open and f.code in ("log-records-missing", "log-corrupt") for f in self.findings
        )
        # Bringing the index up to date with a log that lost records would drop the index's copy
        # of them: left for ``--repair``, which restores them first.
        if events is not None and errors is not None and not unrestored and self._merges_read():
            self._check_index(events, errors)

    def _lock(self, path: Path) -> contextlib.AbstractContextManager[Any]:
        if self._held:
            return contextlib.nullcontext()
        if path == self.store.events_path:
            return self.store._events_locked()
        if path.name == TOMBSTONES_LOG_FILE:  # appended to under the agent's (memory's) lock
            return _log_lock(path.parent / MEMORY_FILE)
        return _log_lock(path)

    # -- helpers ------------------------------------------------------------------------------
    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.store.root).as_posix()
        except ValueError:
            return str(path)

    def _add(
        self,
        code: str,
        path: Path,
        message: str,
        *,
        level: FindingLevel = "error",
        repairable: bool = False,
    ) -> Finding:
        finding = Finding(
            code=code, path=self._rel(path), message=message, level=level, repairable=repairable
        )
        self.findings.append(finding)
        return finding

    @staticmethod
    def _repaired(finding: Finding, action: str) -> None:
        finding.repaired = True
        finding.action = action

    @property
    def archive(self) -> Path:
        """This run's folder under ``state/doctor-archive/`` (created on first use)."""
        if self._archive is None:
            base = self.store.doctor_archive_dir
            stamp = compact_ts(utcnow())
            n = 1
            while True:
                folder = base / (stamp if n == 1 else f"{stamp}-{n}")
                try:
                    folder.mkdir(parents=True)
                    break
                except FileExistsError:
                    n += 1
            self._archive = folder
        return self._archive

    def _archive_target(self, path: Path, suffix: str = "") -> Path:
        relative = self._rel(path)
        if Path(relative).is_absolute():  # outside the data root (a configured folder)
            relative = f"outside/{path.name}"
        target = self.archive / (relative + suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def _move_aside(self, path: Path) -> Path:
        """Move ``path`` into the archive (same filesystem: a rename, nothing copied)."""
        target = self._archive_target(path)
        os.replace(path, target)
        return target

    def _keep_copy(self, path: Path) -> Path:
        """Keep the current bytes of ``path`` in the archive before it is replaced."""
        target = self._archive_target(path)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        return target

    def _tick(self, what: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(what, done, total)

    def _validate(self, model: type[BaseModel], raw: Any) -> str | None:
        """None when ``raw`` has the shape of ``model``, else what is wrong."""
        try:
            model.model_validate(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            return f"{where}: {first['msg']}"
        return None

    # -- the two logs ---------------------------------------------------------------------------
    def _check_log(  # noqa: PLR0917
        self,
        path: Path,
        key: str,
        model: type[BaseModel],
        what: str,
        copies: dict[str, dict[str, Any]],
        referenced: Callable[[], set[str]],
        *,
        newer: bool,
    ) -> dict[str, dict[str, Any]] | None:
        """Check one append-only log; the latest raw version of each record, or None when the
        log cannot be used (corrupt, or elements without a key).

        ``copies``: the latest version of records found elsewhere (restored into the log when it
        lacks them, or, with ``newer``, holds an older version); ``referenced``: keys other data
        refers to, reported lost when a damaged log and every copy lack them."""
        try:
            items, corrupt, damaged = self._read_log(path, key)
        except OSError as e:
            self._add("file-unreadable", path, f"cannot be read: {e.strerror or e}")
            return None
        latest: dict[str, dict[str, Any]] = {}
        bad = 0
        keyless = False
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                keyless = True
                problem: str | None = f"is not a record with a {key!r}"
            else:
                latest[item[key]] = item  # as the index holds it, valid or not
                problem = self._validate(model, item)
            if problem is not None:
                bad += 1
                if bad <= MAX_ELEMENT_FINDINGS:
                    self._add(
                        "log-element-invalid",
                        path,
                        f"element {i} is not {what}: {problem}",
                    )
        if bad > MAX_ELEMENT_FINDINGS:
            self._add(
                "log-element-invalid",
                path,
                f"{bad - MAX_ELEMENT_FINDINGS} more elements are not {what}",
            )
        recover = _missing(latest, copies, model, newer=newer)
        missing: Finding | None = None
        if recover:
            damaged = True
            self._recoverable |= recover.keys()
            missing = self._add(
                "log-records-missing",
                path,
                f"{len(recover)} records are missing from it (or older there) but survive "
                f"elsewhere ({_sources(recover)}): {_ids(recover)}",
                repairable=True,
            )
        if damaged:
            gone = referenced() - latest.keys() - recover.keys()
            if gone:
                self._add(
                    "log-records-lost",
                    path,
                    f"{len(gone)} records that other data refers to are in no copy any more "
                    f"(lost): {_ids(gone)}",
                )
        if self.repair and (corrupt is not None or missing is not None):
            restored = self._restore_log(path, key, model, copies, newer=newer)
            if restored is None:
                return None
            latest, action = restored
            for done in (corrupt, missing):
                if done is not None:
                    self._repaired(done, action)
            return latest
        if corrupt is not None:
            return None
        # The index cannot hold a log with keyless elements: skip the checks that need it.
        return None if keyless else latest

    def _read_log(self, path: Path, key: str) -> tuple[list[Any], Finding | None, bool]:
        """The elements of a log (salvaged when it does not parse), the ``log-corrupt`` finding,
        and whether it is damaged (corrupt or torn)."""
        whole: ArrayFile | None = None
        error: CorruptFileError | None = None
        try:
            whole = read_array(path)  # as it is between appends, never in the middle of one
            data = None if whole is None else whole.data
        except CorruptFileError as exc:
            error = exc
            data = path.read_bytes()
        corrupt: Finding | None = None
        damaged = False
        items: list[Any] = []
        if data is not None:
            if error is not None:
                salvage = salvage_records(data, key)
                items = salvage.items
                damaged = True
                lost = (
                    f"{salvage.damaged_chars} bytes in {salvage.damaged_regions} damaged "
                    "stretch(es) cannot be read"
                )
                if salvage.damaged_keys:
                    lost += f" (they held {_ids(salvage.damaged_keys)})"
                corrupt = self._add(
                    "log-corrupt",
                    path,
                    f"is corrupt: {error.detail}; {len(items)} readable records can be salvaged, "
                    f"{lost}; until repaired, every call that reads it fails",
                    repairable=True,
                )
            elif whole is not None:
                parsed = whole.parsed
                items = parsed.items
                if parsed.torn_at is not None:
                    damaged = True
                    cut = len(data) - parsed.torn_at
                    finding = self._add(
                        "log-torn-tail",
                        path,
                        f"has a torn tail ({cut} bytes of an append that never finished); "
                        "readers ignore it and the next write cuts it off",
                        level="warning",
                        repairable=True,
                    )
                    if self.repair:
                        self._repair_torn_tail(path, finding)
        return items, corrupt, damaged

    def _restore_log(
        self,
        path: Path,
        key: str,
        model: type[BaseModel],
        copies: dict[str, dict[str, Any]],
        *,
        newer: bool,
    ) -> tuple[dict[str, dict[str, Any]], str] | None:
        """Rebuild a corrupt log from what it still holds, and add the records only copies
        hold; the latest version of each record afterwards and what was done."""
        with self._lock(path):
            try:
                data: bytes | None = path.read_bytes()
            except FileNotFoundError:
                data = None
            corrupt = False
            items: list[Any] = []
            if data is not None:
                try:
                    items = parse_array(data, path).items
                except CorruptFileError:
                    corrupt = True
                    items = salvage_records(data, key).items
            latest = latest_by_key((i for i in items if isinstance(i, dict)), key)
            recover = _missing(latest, copies, model, newer=newer)
            ordered = sorted(recover.values(), key=version_time)
            for record in ordered:
                record.pop("__source__", None)
            lines = [orjson.dumps(record) for record in ordered]
            parts = []
            if corrupt:
                assert data is not None
                kept = self._keep_copy(path)
                body = [orjson.dumps(item) for item in items] + lines
                atomic_write(path, b"[\n" + b",\n".join(body) + b"\n]\n" if body else b"[\n]\n")
                parts.append(
                    f"{len(items)} readable records salvaged into a new file; the damaged "
                    f"file is in {self._rel(kept)}"
                )
            elif lines:
                JsonArrayLog(path).append(lines)
            if lines:
                parts.append(f"{len(lines)} records restored from their copies ({_ids(recover)})")
            latest.update((record[key], record) for record in ordered)
        self.store.index.forget()
        return latest, "; ".join(parts) or "nothing left to restore"

    def _event_copies(self, index_rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Events as their per-video files and the derived index hold them (newest of the two),
        each marked with where it was found."""
        copies: dict[str, dict[str, Any]] = {}
        for event_id, raw in index_rows.items():  # validated when restored (see _missing)
            if raw.get("event_id") == event_id:
                copies[event_id] = {**raw, "__source__": "the derived index"}
        self._video_paths = list(self._video_files())
        for path in self._video_paths:
            try:
                data = self._video_bytes[path] = path.read_bytes()  # read once a pass
                raw = orjson.loads(data)
            except (OSError, orjson.JSONDecodeError):
                continue
            if not isinstance(raw, dict) or raw.get("event_id") != path.stem:
                continue
            have = copies.get(path.stem)
            if have is None or version_time(raw) >= version_time(have):
                copies[path.stem] = {**raw, "__source__": "per-video files"}
        return copies

    def _error_copies(self, index_rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Error-log entries as the journal (latest version) and the derived index hold them."""
        copies: dict[str, dict[str, Any]] = {}
        for error_id, raw in index_rows.items():
            if raw.get("id") == error_id:
                copies[error_id] = {**raw, "__source__": "the derived index"}
        try:
            journal = self.store.errors_journal.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # none, or data/ is not a folder
            return copies
        except OSError as e:
            path = self.store.errors_journal
            self._add("file-unreadable", path, f"cannot be read: {e.strerror or e}")
            return copies
        for error_id, raw in latest_by_key(salvage_records(journal, "id").items, "id").items():
            copies[error_id] = {**raw, "__source__": "the journal"}
        return copies

    def _events_referenced(self) -> set[str]:
        """Events that agents' rules and tombstones name as their source."""

        found: set[str] = set()
        agents = self.store.agents_dir
        if not agents.is_dir():
            return found
        for folder in agents.iterdir():
            for name, field in ((MEMORY_FILE, "rules"), (TOMBSTONES_FILE, "tombstones")):
                try:
                    raw = orjson.loads((folder / name).read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue
                rules = raw.get(field) if isinstance(raw, dict) else None
                if name == TOMBSTONES_FILE and isinstance(rules, list):
                    rules = [*rules, *_tombstone_log_items(folder)]
                for rule in rules if isinstance(rules, list) else []:
                    if isinstance(rule, dict) and isinstance(rule.get("source_event_id"), str):
                        found.add(rule["source_event_id"])
        return found

    def _repair_torn_tail(self, path: Path, finding: Finding) -> None:
        with self._lock(path):
            try:
                cut = JsonArrayLog(path).cut_torn_tail()
            except CorruptFileError as e:
                finding.action = f"not repaired: {e.detail}"
                return
        if cut is None:
            self._repaired(finding, "already repaired by another writer")
            return
        target = self._archive_target(path, ".torn-tail")
        atomic_write(target, cut)
        self._repaired(
            finding, f"tail cut off and the array closed; the bytes cut are in {self._rel(target)}"
        )

    # -- per-video files ------------------------------------------------------------------------
    def _check_video_files(self, events: dict[str, dict[str, Any]]) -> None:
        store = self.store
        expected: dict[Path, str] = {}
        for event_id, raw in events.items():
            video = raw.get("video_id")
            if video and is_safe_identifier(video) and is_safe_identifier(event_id):
                expected[store.layout.video_event_path(video, event_id)] = event_id
        on_disk = set(self._video_paths if self._video_paths is not None else self._video_files())
        total = len(expected) + len(on_disk - expected.keys())
        to_write: list[tuple[Path, str, Finding]] = []
        for done, (path, event_id) in enumerate(sorted(expected.items()), 1):
            if done % 500 == 0:
                self._tick("per-video files", done, total)
            raw = events[event_id]
            try:
                data = self._video_bytes.pop(path, None) or path.read_bytes()
            except FileNotFoundError:
                if self._validate(LearningEvent, raw) is not None:
                    continue  # an invalid event (reported with the index) cannot be written
                finding = self._add(
                    "video-file-missing",
                    path,
                    f"is missing: event {event_id} has video id {raw['video_id']}",
                    level="warning",
                    repairable=True,
                )
                to_write.append((path, event_id, finding))
                continue
            try:
                parsed = parse_json(data, path)
                if parsed == raw:
                    continue  # the usual case: the very record the index holds
                have = LearningEvent.model_validate(parsed).to_dict()
            except (CorruptFileError, ValidationError) as e:
                detail = e.detail if isinstance(e, CorruptFileError) else "not an event"
                finding = self._add(
                    "video-file-corrupt",
                    path,
                    f"cannot be read ({detail}); the index has event {event_id}",
                    level="warning",
                    repairable=True,
                )
                to_write.append((path, event_id, finding))
                continue
            try:  # compared as records: older writers formatted the same values differently
                want = LearningEvent.model_validate(raw).to_dict()
            except ValidationError:
                continue  # an invalid event: reported with the index
            if have != want:
                changed = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
                finding = self._add(
                    "video-file-stale",
                    path,
                    f"differs from the latest version in the index ({', '.join(changed[:5])})",
                    level="warning",
                    repairable=True,
                )
                to_write.append((path, event_id, finding))
        for path in sorted(on_disk - expected.keys()):
            event_id = path.stem
            if event_id in events:
                self._add(
                    "video-file-misplaced",
                    path,
                    f"event {event_id} belongs to video {events[event_id].get('video_id')!r}",
                    level="warning",
                )
            elif event_id not in self._recoverable:  # else: reported as missing from the log
                self._add(
                    "video-file-orphan",
                    path,
                    f"event {event_id} is not in the event index",
                    level="warning",
                )
        self._tick("per-video files", total, total)
        if self.repair and to_write:
            self._rewrite_video_files(to_write)

    def _video_files(self) -> Iterator[Path]:
        for folder in self.store.layout.video_event_folders():
            if folder.is_dir():
                for path in folder.glob(JSON_FILES):
                    if TEMP_MARKER not in path.name and path.is_file():
                        yield path

    def _rewrite_video_files(self, to_write: list[tuple[Path, str, Finding]]) -> None:
        store = self.store
        # Under the index lock, like every writer of these files, and from the latest version
        # at that moment: an event may have changed since it was read above.
        with self._lock(store.events_path):
            for path, event_id, finding in to_write:
                try:
                    event = store.get_event(event_id)
                except CorruptFileError as e:
                    finding.action = f"not repaired: {e.detail}"
                    continue
                if event is None:
                    finding.action = "not repaired: the event is no longer in the index"
                    continue
                kept = self._keep_copy(path) if path.exists() else None
                atomic_write(path, dump_json(event.to_dict()))
                action = "re-written from the index"
                if kept is not None:
                    action += f"; the old file is in {self._rel(kept)}"
                self._repaired(finding, action)

    # -- state files ----------------------------------------------------------------------------
    def _check_json(
        self,
        path: Path,
        model: type[BaseModel],
        code: str,
        what: str,
        level: FindingLevel = "error",
    ) -> Finding | None:
        try:
            raw = parse_json(path.read_bytes(), path)
        except FileNotFoundError:
            return None
        except OSError as e:
            self._add("file-unreadable", path, f"cannot be read: {e.strerror or e}")
            return None
        except CorruptFileError as e:
            return self._add(
                code, path, f"{what} is corrupt: {e.detail}; left unchanged", level=level
            )
        problem = self._validate(model, raw)
        if problem is None:
            return None
        return self._add(
            code, path, f"{what} does not have the expected shape: {problem}", level=level
        )

    def _check_agents(self) -> None:

        agents = self.store.agents_dir
        if not agents.is_dir():
            return
        for folder in sorted(p for p in agents.iterdir() if p.is_dir()):
            memory = folder / MEMORY_FILE
            finding = self._check_json(memory, AgentMemory, "memory-corrupt", "the agent's memory")
            if finding is not None:
                self._restore_memory(memory, folder / ARCHIVE_DIR, finding)
            self._check_json(
                folder / TOMBSTONES_FILE,
                TombstoneFile,
                "tombstones-corrupt",
                "the tombstone list",
            )
            self._check_tombstone_log(folder / TOMBSTONES_LOG_FILE)
            archive = folder / ARCHIVE_DIR
            if archive.is_dir():
                for snapshot in sorted(archive.glob(JSON_FILES)):
                    if original_tombstone_archive_day(snapshot.name) is not None:
                        self._check_json(
                            snapshot,
                            OriginalTombstoneArchive,
                            "tombstone-archive-corrupt",
                            "the tombstone archive",
                            level="warning",
                        )
                    elif TEMP_MARKER not in snapshot.name:
                        self._check_json(
                            snapshot,
                            AgentMemory,
                            "snapshot-corrupt",
                            "the memory snapshot",
                            level="warning",
                        )

    def _check_tombstone_log(self, path: Path) -> None:
        """The tombstones appended since the list was last written (``files._tombstones``): a
        torn tail is cut off (a warning: readers ignore it), a corrupt log or an element that is
        not a tombstone reported and left as it is (it is the only copy of those tombstones)."""
        items = self._read_appended(path, "tombstones-corrupt", "left unchanged")
        for i, item in enumerate(items):
            problem = self._validate(Tombstone, item)
            if problem is not None:
                self._add("tombstones-corrupt", path, f"element {i} is not a tombstone: {problem}")

    def _newest_valid_snapshot(self, archive: Path) -> tuple[Path, dict[str, Any]] | None:
        for snapshot in reversed(ordered_snapshots(archive)):
            try:
                raw = parse_json(snapshot.read_bytes(), snapshot)
            except (OSError, CorruptFileError):
                continue
            if isinstance(raw, dict) and self._validate(AgentMemory, raw) is None:
                return snapshot, raw
        return None

    def _restore_memory(self, memory: Path, archive: Path, finding: Finding) -> None:
        """Offer (and with ``repair``, do) the restore of a corrupt memory from its newest valid
        snapshot; rules tombstoned since are left out, and ``check_root`` replays the rules of
        the agent's events created after it."""

        found = self._newest_valid_snapshot(archive)
        if found is None:
            finding.message += "; there is no valid snapshot in memory_archive/"
            return
        snapshot, raw = found
        finding.message += f"; the newest valid snapshot is {self._rel(snapshot)}"
        finding.repairable = True
        if not self.repair:
            return
        with locked(memory):
            try:
                parse_json(memory.read_bytes(), memory)
            except CorruptFileError:
                pass
            except FileNotFoundError:
                pass
            else:
                self._repaired(finding, "already repaired by another process")
                return
            try:
                tombstones = orjson.loads((memory.parent / TOMBSTONES_FILE).read_bytes())
                buried = {t["rule_id"] for t in tombstones["tombstones"]}
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
                buried = set()
            buried |= {
                t["rule_id"]
                for t in _tombstone_log_items(memory.parent)
                if isinstance(t, dict) and isinstance(t.get("rule_id"), str)
            }
            rules = [r for r in raw.get("rules", []) if r.get("rule_id") not in buried]
            dropped = len(raw.get("rules", [])) - len(rules)
            restored = {**raw, "rules": rules, "snapshot_seq": max_seq(archive)}
            restored["restored_from"] = snapshot.name
            kept = self._keep_copy(memory) if memory.exists() else None
            atomic_write(memory, dump_json(restored))
        action = f"restored from {self._rel(snapshot)} ({len(rules)} rules"
        if dropped:
            action += f", {dropped} tombstoned since left out"
        action += ")"
        if kept is not None:
            action += f"; the corrupt file is in {self._rel(kept)}"
        self._repaired(finding, action)

    def _check_gate_states(self) -> None:
        gate = self.store.gate_dir
        if not gate.is_dir():
            return
        for path in sorted(gate.glob(JSON_FILES)):
            if TEMP_MARKER not in path.name:
                self._check_json(path, GateState, "gate-state-corrupt", "the gate state")
        souls = self.store.layout.souls_dir
        if souls.is_dir():
            for path in sorted(souls.glob(SOUL_FILES)):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != path.stem:
                    self._add(
                        "soul-snapshot-mismatch",
                        path,
                        f"its text has SHA-256 {digest[:12]}…, not the one it is named after; "
                        "the gate's SOUL diffs against it will be wrong",
                        level="warning",
                    )

    def _check_reports(self) -> None:
        reports = self.store.reports_dir
        if not reports.is_dir():
            return
        for path in sorted(reports.glob(JSON_FILES)):
            if TEMP_MARKER in path.name:
                continue
            try:
                raw = parse_json(path.read_bytes(), path)
            except CorruptFileError as e:
                self._add("report-corrupt", path, f"the report is corrupt: {e.detail}")
                continue
            if not isinstance(raw, dict):
                self._add("report-corrupt", path, "the report is not a JSON object")

    # -- the derived index ------------------------------------------------------------------
    def _check_index(
        self, events: dict[str, dict[str, Any]], errors: dict[str, dict[str, Any]]
    ) -> None:
        index = self.store.index
        if index.path is None:
            return
        try:
            problems = index.verify({"events": events, "errors": errors})
        except CorruptFileError as e:  # a log changed under us; the next run will tell
            problems = [f"cannot be compared with the logs ({e})"]
        if not problems:
            return
        finding = self._add(
            "index-inconsistent",
            index.path,
            "the derived index disagrees with the logs: " + "; ".join(problems),
            level="warning",
            repairable=True,
        )
        if self.repair:
            index.rebuild()
            self._repaired(finding, "rebuilt from the logs")

    # -- temp files and lock files ----------------------------------------------------------
    def _leftover_folders(self) -> list[Path]:
        store = self.store
        folders = list(store.layout.top_folders())
        with contextlib.suppress(Exception):  # a bad policy value is the gate's to report
            folders.append(store.docs.skill_graph_dir)
        with contextlib.suppress(Exception):
            for template in store.policies.LEARNING_SOUL_PATHS:
                first = Path(template).parts[0] if Path(template).parts else ""
                if first and "{" not in first and first not in ("..", "."):
                    folders.append(store.root / first)
        unique: list[Path] = []
        for folder in folders:
            if folder.is_dir() and not any(folder.is_relative_to(u) for u in unique):
                unique = [u for u in unique if not u.is_relative_to(folder)] + [folder]
        return sorted(unique)

    def _check_leftovers(self) -> None:
        skip = self.store.doctor_archive_dir
        now = time.time()
        for folder in self._leftover_folders():
            for dirpath, dirnames, filenames in os.walk(folder):
                here = Path(dirpath)
                if here == skip or here.is_relative_to(skip):
                    dirnames[:] = []
                    continue
                dirnames.sort()
                for name in sorted(filenames):
                    path = here / name
                    if TEMP_MARKER in name:
                        self._check_temp_file(path, now)
                    elif name.endswith(LOCK_SUFFIX):
                        self._check_lock_file(path)

    def _check_temp_file(self, path: Path, now: float) -> None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return  # the write it belonged to just finished
        age = now - st.st_mtime
        if age < TEMP_STALE_SECONDS:
            self._add(
                "temp-file-recent",
                path,
                f"temp file of a write in progress (or just interrupted), {age:.0f}s old",
                level="info",
            )
            return
        finding = self._add(
            "temp-file-stale",
            path,
            f"temp file of a write that never finished ({st.st_size} bytes, "
            f"{age / 3600:.1f} h old)",
            level="warning",
            repairable=True,
        )
        if self.repair:
            try:
                target = self._move_aside(path)
            except FileNotFoundError:
                self._repaired(finding, "already gone")
            else:
                self._repaired(finding, f"moved to {self._rel(target)}")

    def _check_lock_file(self, path: Path) -> None:
        guarded = path.with_name(path.name[: -len(LOCK_SUFFIX)])
        if lock_file_held(path):
            self._add(
                "lock-held",
                path,
                "held by a running process (normal while a pipeline runs; if nothing is "
                "running, that process is hung)",
                level="info",
            )
            return
        if guarded.exists():
            return  # the lock of a live file: part of the layout, reused by every writer
        finding = self._add(
            "lock-stale",
            path,
            f"lock file left behind: nobody holds it and {guarded.name} does not exist",
            level="warning",
            repairable=True,
        )
        if not self.repair:
            return
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            self._repaired(finding, "already gone")
            return
        if size:  # not one of ours (they are empty): keep what it says
            target = self._move_aside(path)
            self._repaired(finding, f"moved to {self._rel(target)}")
        elif remove_lock_file(path):
            self._repaired(finding, "removed")
        else:
            finding.action = "not repaired: a process took the lock meanwhile"


def _ids(keys: Iterable[str]) -> str:
    """Up to ``MAX_IDS_SHOWN`` ids, then how many more."""
    ordered = sorted(keys)
    shown = ", ".join(ordered[:MAX_IDS_SHOWN])
    more = len(ordered) - MAX_IDS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _missing(
    latest: dict[str, dict[str, Any]],
    copies: dict[str, dict[str, Any]],
    model: type[BaseModel],
    *,
    newer: bool,
) -> dict[str, dict[str, Any]]:
    """The copies of records the log lacks (with ``newer``: or holds in an older version) that
    have the record's shape (only those are validated: a doctor run reads every copy)."""
    found = {}
    for k, v in copies.items():
        if k in latest and not (newer and version_time(v) > version_time(latest[k])):
            continue
        try:
            model.model_validate({f: x for f, x in v.items() if f != "__source__"})
        except ValidationError:
            continue
        found[k] = dict(v)
    return found


def _sources(records: dict[str, dict[str, Any]]) -> str:
    return ", ".join(sorted({str(r.get("__source__")) for r in records.values()}))


def _tombstone_log_items(folder: Path) -> list[Any]:
    """The raw elements of an agent's log of added tombstones (empty when it is absent or
    cannot be read: ``_check_tombstone_log`` reports that)."""
    try:
        whole = read_array(folder / TOMBSTONES_LOG_FILE)
    except (OSError, CorruptFileError):
        return []
    return [] if whole is None else whole.parsed.items


def _log_lock(path: Path) -> contextlib.AbstractContextManager[int]:
    """A log's lock, taken by the doctor: its lock file is removed again when the log does not
    exist (a check leaves no lock file behind)."""
    return locked(path, remove=not path.exists())
