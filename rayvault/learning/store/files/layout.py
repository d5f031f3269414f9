"""The file store's layout: every folder, file name and name pattern under a data root. The
store, its doctor, ``store export/import``, ``store status``, the demo, the benchmarks and the
tests ask it; nothing else spells a path.

::

    data/learning_events.json            append-only event index (every version; last wins)
    data/error_log.json                  append-only raw error log
    data/error_log.journal               the same records as JSON lines (repair's second copy)
    data/pattern_merges.json             append-only record of failure patterns merged into others
    data/archive/                        event indexes as they were before each compaction
    data/learning_reports/               weekly-YYYY-MM-DD[-N].json and .html (N: 2nd… of a day)
    state/agents/<agent>/memory_active.json, memory_tombstones.json, memory_archive/,
        memory_tombstones_log.json           tombstones added since the list was last written
        tombstone_archive/tombstones-YYYY-MM-DD[-N].json   tombstones past their grace period
    state/learning_gate/<video_id>.json  the gate's last-seen hashes and acknowledgements
    state/learning_gate/souls/<sha256>.md  SOUL texts the gate saw, by hash
    state/cache/index.sqlite3            derived index over the three logs (safe to delete)
    state/pending_events/<event_id>.json  a new event while ``create_event`` runs its loop
    state/doctor-archive/<timestamp>/    what ``doctor --repair`` moved aside or replaced
    state/locks/<name>.lock              named inter-process locks (removed on release)
    artifacts/videos/<vid>/learning/events/<event_id>.json

The names of dated records and memory snapshots are shared with PostgreSQL (``store._names``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from rayvault.learning._ids import validate_identifier
from rayvault.learning.exceptions import StoreError
from rayvault.learning.store._items import (
    GATE_STATE,
    MEMORY,
    REPORT,
    REPORT_HTML,
    SNAPSHOT,
    SOUL,
    TOMBSTONE_ARCHIVE,
    TOMBSTONES,
    VIDEO_EVENT,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

DATA_DIR = "data"
STATE_DIR = "state"
ARTIFACTS_DIR = "artifacts"
EVENTS_FILE = "learning_events.json"
ERRORS_FILE = "error_log.json"
ERRORS_JOURNAL = "error_log.journal"
MERGES_FILE = "pattern_merges.json"
#: An agent's memory, its tombstones, and the folders of its snapshots and archived tombstones.
MEMORY_FILE = "memory_active.json"
TOMBSTONES_FILE = "memory_tombstones.json"
#: Tombstones added since ``memory_tombstones.json`` was last written (``files._tombstones``).
TOMBSTONES_LOG_FILE = "memory_tombstones_log.json"
ARCHIVE_DIR = "memory_archive"
TOMBSTONE_ARCHIVE_DIR = "tombstone_archive"
#: The prefixes of dated names (``<prefix>-YYYY-MM-DD[-N]``, see ``store._names``).
REPORT_PREFIX = "weekly"
TOMBSTONE_ARCHIVE_PREFIX = "tombstones"
SOULS_DIR = "souls"
INDEX_FILE = "index.sqlite3"
#: New events whose ``create_event`` is under way (``FileStore.pending_event``).
PENDING_DIR = "pending_events"
#: Name patterns of the files in a folder: gate states, event copies, memory snapshots and
#: reports (``*.json``), SOUL snapshots (``*.md``).
JSON_FILES = "*.json"
SOUL_FILES = "*.md"
#: A video's event copies: ``artifacts/videos/<vid>/learning/events/``.
_VIDEO_EVENTS = ("learning", "events")
#: What ``rayvault-learn demo`` writes at the top of a data root it made.
DEMO_MARKER = ".rayvault-demo.json"


class Layout:
    """The paths of the data root ``root`` (nothing is read or written by building one)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / DATA_DIR
        self.state_dir = root / STATE_DIR
        self.artifacts_dir = root / ARTIFACTS_DIR
        self.archive_dir = self.data_dir / "archive"
        self.events_path = self.data_dir / EVENTS_FILE
        self.errors_path = self.data_dir / ERRORS_FILE
        self.errors_journal = self.data_dir / ERRORS_JOURNAL
        self.merges_path = self.data_dir / MERGES_FILE
        self.reports_dir = self.data_dir / "learning_reports"
        self.agents_dir = self.state_dir / "agents"
        self.gate_dir = self.state_dir / "learning_gate"
        self.souls_dir = self.gate_dir / SOULS_DIR
        self.cache_dir = self.state_dir / "cache"
        self.index_path = self.cache_dir / INDEX_FILE
        self.doctor_archive_dir = self.state_dir / "doctor-archive"
        self.locks_dir = self.state_dir / "locks"
        self.pending_dir = self.state_dir / PENDING_DIR
        self.videos_dir = self.artifacts_dir / "videos"
        self.demo_marker = root / DEMO_MARKER

    def folders(self) -> tuple[Path, ...]:
        """Every folder of the layout, parents first (checked before the first write)."""
        return (
            self.data_dir, self.archive_dir, self.reports_dir, self.state_dir,
            self.agents_dir, self.gate_dir, self.cache_dir, self.locks_dir, self.pending_dir,
            self.artifacts_dir, self.videos_dir,
        )  # fmt: skip

    def top_folders(self) -> tuple[Path, ...]:
        """The folders at the top of the root that the store creates."""
        return (self.data_dir, self.state_dir, self.artifacts_dir)

    # -- per record -------------------------------------------------------------------------------
    def agent_dir(self, agent: str) -> Path:
        return self.agents_dir / validate_identifier(agent, "agent")

    def memory_path(self, agent: str) -> Path:
        return self.agent_dir(agent) / MEMORY_FILE

    def tombstones_path(self, agent: str) -> Path:
        return self.agent_dir(agent) / TOMBSTONES_FILE

    def snapshot_dir(self, agent: str) -> Path:
        return self.agent_dir(agent) / ARCHIVE_DIR

    def tombstone_archive_dir(self, agent: str) -> Path:
        return self.agent_dir(agent) / TOMBSTONE_ARCHIVE_DIR

    def gate_state_path(self, video_id: str) -> Path:
        return self.gate_dir / f"{validate_identifier(video_id, 'video id')}.json"

    def gate_state_files(self) -> list[Path]:
        """The gate state files present (one per video)."""
        if not self.gate_dir.is_dir():
            return []
        return [p for p in self.gate_dir.glob(JSON_FILES) if p.is_file()]

    def soul_path(self, sha256: str) -> Path:
        return self.souls_dir / f"{validate_identifier(sha256, 'SOUL hash')}.md"

    def video_events_dir(self, video_id: str) -> Path:
        return (
            self.videos_dir
            / validate_identifier(video_id, "video id")
            / _VIDEO_EVENTS[0]
            / _VIDEO_EVENTS[1]
        )

    def video_event_folders(self) -> Iterator[Path]:
        """The per-video event folder of every video folder present (whatever its name)."""
        if self.videos_dir.is_dir():
            for video in self.videos_dir.iterdir():
                yield video / _VIDEO_EVENTS[0] / _VIDEO_EVENTS[1]

    def video_event_path(self, video_id: str, event_id: str) -> Path:
        return self.video_events_dir(video_id) / f"{event_id}.json"

    def pending_event_path(self, event_id: str) -> Path:
        return self.pending_dir / f"{validate_identifier(event_id, 'event id')}.json"

    def report_path(self, name: str, suffix: str = ".json") -> Path:
        return self.reports_dir / f"{name}{suffix}"

    def item_path(self, kind: str, key: tuple[str, ...]) -> Path:
        """Where the document of an export item (``store._items``: kind and key) lives."""
        # Here, not at the top: the names' patterns are compiled on import, which a cold gate
        # (that reads this layout, never an export) does not need.
        from rayvault.learning.store._names import (
            REPORT_NAME,
            TOMBSTONE_ARCHIVE_NAME,
            original_tombstone_archive_day,
            parse_dated,
        )

        if kind == MEMORY:
            return self.memory_path(key[0])
        if kind == TOMBSTONES:
            return self.tombstones_path(key[0])
        if kind == SNAPSHOT:
            return self.snapshot_dir(key[0]) / key[1]
        if kind == TOMBSTONE_ARCHIVE:
            if original_tombstone_archive_day(key[1]) is not None:
                return self.snapshot_dir(key[0]) / key[1]
            if parse_dated(TOMBSTONE_ARCHIVE_NAME, key[1]) is None:
                raise StoreError(f"{key[1]!r} is not a tombstone archive name; nothing written")
            return self.tombstone_archive_dir(key[0]) / key[1]
        if kind in (REPORT, REPORT_HTML):
            if parse_dated(REPORT_NAME, key[0]) is None:
                raise StoreError(f"{key[0]!r} is not a weekly report name; nothing written")
            return self.report_path(key[0], ".json" if kind == REPORT else ".html")
        if kind == GATE_STATE:
            return self.gate_state_path(key[0])
        if kind == SOUL:
            return self.souls_dir / f"{key[0]}.md"
        if kind == VIDEO_EVENT:
            return self.video_event_path(key[0], key[1])
        raise StoreError(f"unknown kind of record {kind!r}: this version cannot write it")

    # -- the demo's root -----------------------------------------------------------------------
    @classmethod
    def temporary(cls, prefix: str) -> Layout:
        """A new, empty temporary data root."""
        import tempfile  # the demo's: not imported by every process that opens a store

        return cls(Path(tempfile.mkdtemp(prefix=prefix)).absolute())

    def create_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def root_is_a_file(self) -> bool:
        return self.root.exists() and not self.root.is_dir()

    def root_holds_anything(self) -> bool:
        return self.root.is_dir() and any(self.root.iterdir())

    # -- the demo's marker --------------------------------------------------------------------
    def read_demo_marker(self) -> dict[str, Any] | None:
        """The demo's marker: None when there is none, ``{}`` when it cannot be read."""
        import orjson  # here: the gate's process reads no marker

        try:
            data = orjson.loads(self.demo_marker.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_demo_marker(self, data: dict[str, Any]) -> None:
        import orjson

        tmp = self.root / f"{DEMO_MARKER}.tmp"
        tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        os.replace(tmp, self.demo_marker)

    def entries(self) -> list[str]:
        """The names at the top of the root, but the demo's marker."""
        return sorted(p.name for p in self.root.iterdir() if p.name != DEMO_MARKER)

    def remove_entries(self, names: Iterable[str]) -> None:
        """Remove these entries at the top of the root (folders with what they hold)."""
        import shutil  # here: 2 ms of a cold gate's start-up otherwise

        for name in sorted(names):
            entry = self.root / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
