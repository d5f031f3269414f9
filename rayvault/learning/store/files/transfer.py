"""A data root in the file store's layout, read and written as the items of ``store export`` /
``store import`` (``store._items``): what the file store dumps and loads. Paths come from the
layout (``files.layout``).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from rayvault.learning._ids import is_safe_identifier
from rayvault.learning.exceptions import CorruptFileError, StoreError
from rayvault.learning.models import (
    AgentMemory,
    GateState,
    LearningEvent,
    PatternMerge,
    TombstoneFile,
)
from rayvault.learning.models import ErrorEntry as ErrorRecord
from rayvault.learning.store._fs import (
    LOCK_SUFFIX,
    atomic_write,
    dump_json,
    is_temp_file,
    parse_json,
    temp_path_for,
)
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
from rayvault.learning.store._records import validate_record
from rayvault.learning.store.files._jsonlog import read_array, scan_after
from rayvault.learning.store.files._tombstones import TombstoneList
from rayvault.learning.store.files.layout import (
    ARCHIVE_DIR,
    JSON_FILES,
    MEMORY_FILE,
    SOUL_FILES,
    TOMBSTONE_ARCHIVE_DIR,
    TOMBSTONES_FILE,
    TOMBSTONES_LOG_FILE,
)
from rayvault.learning.store.files.store import FileStore


# -- the layout as items -----------------------------------------------------------------------
class FileLayout:
    """A data root in the file store's layout, read and written as items."""

    def __init__(self, root: Path | str) -> None:
        self.files = FileStore(root)
        self.root = self.files.root
        self.layout = self.files.layout

    def describe(self) -> str:
        return f"file layout at {self.root}"

    def data_files(self) -> list[Path]:
        """The store files present (documents, caches and locks are not store files)."""
        logs = (self.files.events_path, self.files.errors_path, self.files.merges_path)
        found = [p for p in logs if p.exists()]
        folders = (
            self.files.agents_dir,
            self.files.gate_dir,
            self.files.reports_dir,
            self.files.videos_dir,
        )
        for folder in folders:
            if folder.is_dir():
                found += [p for p in sorted(folder.rglob("*")) if _is_data_file(p)]
        return found

    def is_data_root(self, path: Path) -> bool:
        return self.root.resolve() == path.resolve()

    def has_data(self) -> bool:
        return bool(self.data_files())

    # -- reading --------------------------------------------------------------------------------
    def dump_items(self) -> Iterator[Item]:
        latest: dict[str, str] = {}
        for item in self._log_items(EVENT, self.files.events_path, "event_id", LearningEvent):
            latest[item.key[0]] = item.text
            yield item
        yield from self._log_items(ERROR, self.files.errors_path, "id", ErrorRecord)
        yield from self._log_items(PATTERN_MERGE, self.files.merges_path, "source", PatternMerge)
        agent_dirs = self._agent_dirs()
        for kind in (MEMORY, TOMBSTONES, SNAPSHOT):  # grouped by kind, as KINDS orders them
            for agent_dir in agent_dirs:
                yield from self._agent_items(kind, agent_dir)
        for agent_dir in agent_dirs:
            for path in self._tombstone_archives(agent_dir):
                yield Item(TOMBSTONE_ARCHIVE, (agent_dir.name, path.name), self._json_text(path))
        gate_dir = self.files.gate_dir
        if gate_dir.is_dir():
            for path in sorted(gate_dir.glob(JSON_FILES)):
                if _is_data_file(path) and is_safe_identifier(path.stem):
                    text = self._document(path, GateState, "the gate state")
                    yield Item(GATE_STATE, (path.stem,), text)
            souls = self.layout.souls_dir
            if souls.is_dir():
                for path in sorted(souls.glob(SOUL_FILES)):
                    if _is_data_file(path) and is_safe_identifier(path.stem):
                        yield Item(SOUL, (path.stem,), _read_text(path))
        reports = self._reports()
        for name, suffixes in reports:
            if ".json" in suffixes:
                yield Item(REPORT, (name,), self._json_text(suffixes[".json"]))
        for name, suffixes in reports:
            if ".html" in suffixes:
                yield Item(REPORT_HTML, (name,), _read_text(suffixes[".html"]))
        # The per-video copies are the latest version of each event with a video id.
        for event_id, text in latest.items():
            video_id = orjson.loads(text).get("video_id")
            if video_id and is_safe_identifier(video_id):
                yield Item(VIDEO_EVENT, (video_id, event_id), text)

    def _agent_items(self, kind: str, agent_dir: Path) -> Iterator[Item]:
        agent = agent_dir.name
        if kind == MEMORY:
            memory = agent_dir / MEMORY_FILE
            if memory.exists():
                yield Item(MEMORY, (agent,), self._document(memory, AgentMemory, "agent memory"))
        elif kind == TOMBSTONES:
            tombstones = agent_dir / TOMBSTONES_FILE
            if (agent_dir / TOMBSTONES_LOG_FILE).exists():
                # One ``memory_tombstones.json`` with the tombstones appended since it was
                # written folded in (``files._tombstones``).
                whole = TombstoneList(agent_dir).read()
                yield Item(TOMBSTONES, (agent,), dump_json(whole.model_dump(mode="json")).decode())
            elif tombstones.exists():
                text = self._document(tombstones, TombstoneFile, "the tombstone list")
                yield Item(TOMBSTONES, (agent,), text)
        else:
            archive = agent_dir / ARCHIVE_DIR
            if archive.is_dir():
                for path in sorted(archive.iterdir()):
                    if snapshot_time(path.name) is not None and path.is_file():
                        yield Item(SNAPSHOT, (agent, path.name), self._json_text(path))

    @staticmethod
    def _tombstone_archives(agent_dir: Path) -> list[Path]:
        """The agent's ``tombstones-YYYY-MM-DD[-N].json`` files and the original system's
        ``memory_archive/tombstones_archive_YYYYMMDD.json``, oldest first."""
        found = []
        folder = agent_dir / TOMBSTONE_ARCHIVE_DIR
        if folder.is_dir():
            for path in folder.iterdir():
                dated = parse_dated(TOMBSTONE_ARCHIVE_NAME, path.name)
                if dated is not None and _is_data_file(path):
                    found.append((*dated, path.name, path))
        original = agent_dir / ARCHIVE_DIR
        if original.is_dir():
            for path in original.iterdir():
                day = original_tombstone_archive_day(path.name)
                if day is not None and _is_data_file(path):
                    found.append((day, 0, path.name, path))
        return [path for *_, path in sorted(found)]

    def _reports(self) -> list[tuple[str, dict[str, Path]]]:
        """The weekly reports (name → their ``.json``/``.html`` files), oldest first."""
        folder = self.files.reports_dir
        if not folder.is_dir():
            return []
        found: dict[str, dict[str, Path]] = {}
        for path in folder.iterdir():
            dated = parse_dated(REPORT_NAME, path.stem)
            if path.suffix in (".json", ".html") and dated is not None and _is_data_file(path):
                found.setdefault(path.stem, {})[path.suffix] = path
        return sorted(found.items(), key=lambda item: (parse_dated(REPORT_NAME, item[0]), item[0]))

    def _agent_dirs(self) -> list[Path]:
        folder = self.files.agents_dir
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.is_dir() and is_safe_identifier(p.name))

    def _log_items(self, kind: str, path: Path, key: str, model: type[Any]) -> Iterator[Item]:
        """Every element of an append-only log, in order, each checked to be a valid record.

        Elements in our single-line layout keep their exact bytes; elements of older,
        pretty-printed files are re-serialised compactly (the same JSON)."""
        whole = read_array(path)  # never an append in progress; refuses a corrupt log, by name
        if whole is None:
            return
        data, parsed = whole.data, whole.parsed
        start = data.find(b"[") + 1
        scan = scan_after(data[start : parsed.end], start)
        lines = (
            [line for _, line in scan.items]
            if scan is not None and len(scan.items) == len(parsed.items)
            else [orjson.dumps(item) for item in parsed.items]
        )
        for i, (item, line) in enumerate(zip(parsed.items, lines, strict=True)):
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                raise CorruptFileError(path, f"element {i} is not a record with a {key!r}")
            validate_record(model, item, path, f"element {i}")
            yield Item(kind, (item[key],), line.decode())

    def _json_text(self, path: Path) -> str:
        data = path.read_bytes()
        parse_json(data, path)
        return _decode(data, path)

    def _document(self, path: Path, model: type[Any], what: str) -> str:
        data = path.read_bytes()
        validate_record(model, parse_json(data, path), path, what)
        return _decode(data, path)

    def skipped_files(self) -> list[str]:
        """Files under the store's folders that no kind covers (relative to the root)."""
        covered = {
            self.files.events_path,
            self.files.errors_path,
            self.files.errors_journal,
            self.files.merges_path,
        }
        for agent_dir in self._agent_dirs():
            covered |= {
                agent_dir / MEMORY_FILE,
                agent_dir / TOMBSTONES_FILE,
                agent_dir / TOMBSTONES_LOG_FILE,
            }
            archive = agent_dir / ARCHIVE_DIR
            if archive.is_dir():
                covered |= {p for p in archive.iterdir() if snapshot_time(p.name) is not None}
            covered |= set(self._tombstone_archives(agent_dir))
        for _, suffixes in self._reports():
            covered |= set(suffixes.values())
        gate_dir = self.files.gate_dir
        if gate_dir.is_dir():
            covered |= {p for p in gate_dir.glob(JSON_FILES) if is_safe_identifier(p.stem)}
            covered |= {
                p for p in self.layout.souls_dir.glob(SOUL_FILES) if is_safe_identifier(p.stem)
            }
        skipped = []
        for folder in (self.layout.data_dir, self.layout.state_dir):
            if not folder.is_dir():
                continue
            for path in sorted(folder.rglob("*")):
                if (
                    _is_data_file(path)
                    and path not in covered
                    and not path.is_relative_to(self.files.cache_dir)
                ):
                    skipped.append(path.relative_to(self.root).as_posix())
        return skipped

    # -- writing --------------------------------------------------------------------------------
    def load_items(self, items: Iterable[Item]) -> dict[str, int]:
        """Write items as the file store would have; the root must hold no store data."""
        if self.has_data():
            raise not_empty(self.describe())
        counts: Counter[str] = Counter()
        logs = {
            EVENT: _LogWriter(self.files.events_path),
            ERROR: _LogWriter(self.files.errors_path, journal=self.files.errors_journal),
            PATTERN_MERGE: _LogWriter(self.files.merges_path),
        }
        try:
            for item in items:
                counts[item.kind] += 1
                if item.kind in logs:
                    logs[item.kind].add(item.text)
                else:
                    path = self._path(item)
                    data = (
                        dump_json(orjson.loads(item.text))
                        if item.kind == VIDEO_EVENT
                        else item.text.encode()
                    )
                    atomic_write(path, data)
            for writer in logs.values():
                writer.finish()
        finally:
            for writer in logs.values():
                writer.discard()
        return dict(counts)

    def _path(self, item: Item) -> Path:
        for part in item.key:
            if not is_safe_identifier(part):
                raise StoreError(f"unsafe name {part!r} in a {item.kind} record; nothing written")
        return self.layout.item_path(item.kind, item.key)


class _LogWriter:
    """An append-only log written in one go, in the layout ``JsonArrayLog`` appends to:
    ``[``, one element per line, ``]``. Built in a temp file, renamed into place at the end.
    With ``journal``, the same elements also go to that JSON-lines copy (the error log's)."""

    def __init__(self, path: Path, journal: Path | None = None) -> None:
        self.path = path
        self.tmp: Path | None = None
        self.fh: Any = None
        self.count = 0
        self.journal = journal
        self.lines: list[bytes] = []

    def add(self, text: str) -> None:
        if "\n" in text:
            text = orjson.dumps(orjson.loads(text)).decode()
        if self.fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = temp_path_for(self.path)
            self.fh = self.tmp.open("xb")
            self.fh.write(b"[\n")
        else:
            self.fh.write(b",\n")
        self.fh.write(text.encode())
        self.count += 1
        if self.journal is not None:
            self.lines.append(text.encode())

    def finish(self) -> None:
        if self.fh is None or self.tmp is None:
            return
        self.fh.write(b"\n]\n")
        self.fh.close()
        self.fh = None
        os.replace(self.tmp, self.path)
        self.tmp = None
        if self.journal is not None:
            atomic_write(self.journal, b"".join(line + b"\n" for line in self.lines))

    def discard(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self.tmp.unlink()
            self.tmp = None


def _is_data_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.endswith(LOCK_SUFFIX)
        and not is_temp_file(path)
        and not path.name.startswith(".")
    )


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFileError(path, f"is not UTF-8 text ({e.reason})") from e


def _read_text(path: Path) -> str:
    return _decode(path.read_bytes(), path)
