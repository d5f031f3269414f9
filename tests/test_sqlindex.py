"""The derived SQLite index: it catches up with appends, rebuilds itself when a log is rewritten
or the index is damaged, and never disagrees with the JSON logs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import orjson
import pytest

from rayvault.learning import CorruptFileError, create_event, list_events
from rayvault.learning.errors import log_error
from rayvault.learning.store import EventQuery, FileStore
from rayvault.learning.store.base import ErrorQuery

from .conftest import event_kwargs

pytestmark = pytest.mark.files_only("the file store's derived SQLite index over its JSON logs")


def ids(store: FileStore) -> list[str]:
    return [e.event_id for e in store.query_events(EventQuery())]


def index_file(root: Path) -> Path:
    return root / "state/cache/index.sqlite3"


def test_catch_up_reads_only_new_bytes(root: Path, store: FileStore) -> None:
    first = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    conn = store.index.sync("events")
    (offset_before,) = conn.execute("SELECT offset FROM sources WHERE name='events'").fetchone()
    second = create_event(**event_kwargs(symptom="another"), store=store)  # type: ignore[arg-type]
    conn = store.index.sync("events")
    (offset_after,) = conn.execute("SELECT offset FROM sources WHERE name='events'").fetchone()
    assert offset_after > offset_before
    assert ids(store) == [first.event_id, second.event_id]
    size = (root / "data/learning_events.json").stat().st_size
    assert offset_after == size - len("\n]\n")


def test_rewritten_log_is_reindexed(root: Path, store: FileStore) -> None:
    """A log replaced by another file (compaction, an editor) is read again from the start."""
    a = create_event(**event_kwargs(symptom="a"), store=store)  # type: ignore[arg-type]
    b = create_event(**event_kwargs(symptom="b"), store=store)  # type: ignore[arg-type]
    assert len(ids(store)) == 2
    path = root / "data/learning_events.json"
    latest = {e["event_id"]: e for e in json.loads(path.read_text())}
    tmp = path.with_name("rewrite.json")
    tmp.write_text(json.dumps([latest[b.event_id]], indent=2))  # a different inode, b only
    os.replace(tmp, path)
    assert ids(store) == [b.event_id]
    assert a.event_id not in {e.event_id for e in list_events()}


def test_in_place_edit_before_the_offset_is_noticed(root: Path, store: FileStore) -> None:
    event = create_event(**event_kwargs(symptom="original text"), store=store)  # type: ignore[arg-type]
    assert store.get_event(event.event_id).symptom == "original text"  # type: ignore[union-attr]
    path = root / "data/learning_events.json"
    data = path.read_bytes().replace(b"original text", b"edited! text!")
    with path.open("r+b") as fh:  # same inode, same size
        fh.write(data)
    assert store.get_event(event.event_id).symptom == "edited! text!"  # type: ignore[union-attr]


@pytest.mark.parametrize("damage", ["delete", "garbage", "truncate"])
def test_missing_or_damaged_index_is_rebuilt(root: Path, damage: str) -> None:
    writer = FileStore(root)
    events = [create_event(**event_kwargs(symptom=f"s{i}"), store=writer) for i in range(3)]  # type: ignore[arg-type]
    log_error("v1", "research", "Timeout after 30s", store=writer)
    writer.close()
    path = index_file(root)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if damage == "delete":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.write_bytes(path.read_bytes()[:100])
    reader = FileStore(root)
    assert ids(reader) == [e.event_id for e in events]
    assert len(reader.query_errors(ErrorQuery())) == 1
    reader.close()


def test_corrupt_log_is_reported_not_indexed(root: Path, store: FileStore) -> None:
    create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    path = root / "data/learning_events.json"
    path.write_bytes(b'[{"event_id": "broken"')
    with pytest.raises(CorruptFileError, match="learning_events.json is corrupt"):
        store.query_events(EventQuery())
    assert path.read_bytes() == b'[{"event_id": "broken"'


def test_record_without_key_is_corruption(root: Path, store: FileStore) -> None:
    path = root / "data/learning_events.json"
    path.parent.mkdir(parents=True)
    path.write_text('[{"symptom": "no id"}]')
    with pytest.raises(CorruptFileError, match="element 0 is not a record with a 'event_id'"):
        store.query_events(EventQuery())


def test_last_version_wins_in_the_index(root: Path, store: FileStore) -> None:
    event = create_event(**event_kwargs(verification=""), store=store)  # type: ignore[arg-type]
    assert store.get_event(event.event_id).status == "applied"  # type: ignore[union-attr]
    from rayvault.learning import resolve_event

    resolve_event(event.event_id, "checked", store=store)
    assert store.count_events(EventQuery(unresolved=True)) == 0
    assert store.count_events(EventQuery(statuses=("verified",))) == 1


def test_a_stale_size_is_not_taken_for_a_shrunk_log(
    root: Path, store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process catches the index up between this process's look at the log and its
    taking the index's lock: the size it saw is smaller than what is indexed, yet the log only
    grew. The index catches up without a rebuild (the log is looked at again under the lock)."""
    from rayvault.learning.store.files import _sqlindex

    create_event(**event_kwargs(symptom="first"), store=store)  # type: ignore[arg-type]
    store.index.sync("events")
    stale = _sqlindex._stat(store.events_path)
    create_event(**event_kwargs(symptom="second"), store=store)  # type: ignore[arg-type]
    other = FileStore(root)  # another process: catches the index up to the second event
    other.index.sync("events")
    other.close()
    third = create_event(**event_kwargs(symptom="third"), store=store)  # type: ignore[arg-type]
    real_stat = _sqlindex._stat
    calls: list[int] = []

    def first_stale(path: Path) -> tuple[int, int, int] | None:
        if path != store.events_path:
            return real_stat(path)  # the merges log, caught up first
        calls.append(1)
        return stale if len(calls) == 1 else real_stat(path)

    monkeypatch.setattr(_sqlindex, "_stat", first_stale)
    store.index.forget()
    before = store.index.rebuilds
    assert store.get_event(third.event_id) is not None
    assert len(calls) == 2  # once before the lock, once under it
    assert store.index.rebuilds == before


def test_rebuilds_are_counted_and_logged(
    root: Path, store: FileStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Appends never rebuild; a log replaced by a new file is rebuilt once, counted and logged
    with the reason."""
    for i in range(3):
        create_event(**event_kwargs(symptom=f"event {i}"), store=store)  # type: ignore[arg-type]
        assert len(ids(store)) == i + 1
    assert store.index.rebuilds == 0
    path = root / "data/learning_events.json"
    tmp = path.with_name("rewrite.json")
    tmp.write_bytes(path.read_bytes())
    os.replace(tmp, path)
    with caplog.at_level("INFO", logger="rayvault.learning.index"):
        assert len(ids(store)) == 3
    assert store.index.rebuilds == 1
    assert "replaced by a new file" in caplog.text


def test_a_log_caught_in_the_middle_of_an_append_is_no_rewrite(
    root: Path, store: FileStore
) -> None:
    """An append under way has already set the log's change time but not yet its size: that
    looks like a rewrite in place. The index judges the log only by what it sees under the log's
    shared lock, after the append: it catches up without a rebuild."""
    import fcntl
    import threading

    create_event(**event_kwargs(symptom="first"), store=store)  # type: ignore[arg-type]
    store.index.sync("events")
    path = root / "data/learning_events.json"
    size = path.stat().st_size
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer mid-append
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        reader = FileStore(root)  # another process
        found: list[int] = []
        thread = threading.Thread(
            target=lambda: found.append(len(reader.query_events(EventQuery())))
        )
        thread.start()
        thread.join(0.3)
        assert thread.is_alive()  # waiting for the append, not rebuilding
        second = orjson.dumps({**json.loads(path.read_bytes())[0], "event_id": "second"})
        os.pwrite(fd, b",\n" + second + b"\n]\n", size - 3)
        fcntl.flock(fd, fcntl.LOCK_UN)
        thread.join(10)
    finally:
        os.close(fd)
    assert found == [2]
    assert reader.index.rebuilds == 0
    reader.close()


def test_a_write_whose_index_cannot_catch_up_is_still_done_and_says_so(
    root: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-up after a write is a courtesy to the next reader: when it fails, the write
    stands (returned, and read back once the index works) and a warning names the log."""
    from rayvault.learning import get_event
    from rayvault.learning.exceptions import StoreError
    from rayvault.learning.models import LearningEvent
    from rayvault.learning.store import FileStore

    store = FileStore(root)
    event = create_event(**event_kwargs(video_id="v042"), store=store)  # type: ignore[arg-type]

    def refuse(name: str) -> object:
        raise StoreError("the index is locked by a test")

    def archive(current: LearningEvent) -> LearningEvent:
        monkeypatch.setattr(store.index, "sync", refuse)  # read done; the write comes next
        return current.model_copy(update={"status": "archived"})

    with caplog.at_level("WARNING", logger="rayvault.learning"):
        updated = store.update_event(event.event_id, archive)
    assert updated.status == "archived"
    assert "did not catch up with the events log: the index is locked by a test" in caplog.text
    monkeypatch.undo()
    again = get_event(event.event_id, store=store)
    assert again.status == "archived"
