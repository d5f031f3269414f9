"""One version per ``create_event`` in the file store's log, and what a writer that stops in
the middle of the loop leaves (issue 15, item 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rayvault.learning import create_event, get_event, list_events
from rayvault.learning.store import open_store
from rayvault.learning.store.files.layout import Layout

from .conftest import Clock, event_kwargs


class Stopped(BaseException):
    """Stands for the writer's process ending inside the loop (what a kill does to it)."""


def _log(root: Path) -> list[dict[str, object]]:
    return list(json.loads(Layout(root).events_path.read_text()))


def _pending(root: Path) -> list[str]:
    folder = Layout(root).pending_dir
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.files_only("the event log's versions")
def test_one_version_per_event_whose_loop_runs(root: Path, clock: Clock) -> None:
    for i in range(5):
        create_event(**event_kwargs(symptom=f"Failure number {i}", verification=""))  # type: ignore[arg-type]
    log = _log(root)
    assert len(log) == 5
    assert all(e["status"] == "applied" and e["rule_id"] for e in log)
    assert _pending(root) == []


@pytest.mark.files_only("the pending file of the file store")
def test_writer_stopped_in_the_loop_leaves_its_event_for_the_next_writer(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that stops after its rule is in memory but before its final version: the
    event is pending (the doctor does not call the rule's source missing); the next writer of
    the log appends it, and its next touch records its rule."""
    from rayvault.learning import events

    real = events.apply_event

    def apply_then_stop(*args: object, **kwargs: object) -> object:
        real(*args, **kwargs)  # type: ignore[arg-type]
        raise Stopped

    monkeypatch.setattr(events, "apply_event", apply_then_stop)
    with pytest.raises(Stopped):
        create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]
    monkeypatch.setattr(events, "apply_event", real)
    [name] = _pending(root)
    event_id = name.removesuffix(".json")
    assert not Layout(root).events_path.exists()  # nothing in the log yet
    store = open_store()
    assert store.event_pending(event_id)
    from rayvault.learning.doctor import check_root

    assert not [f for f in check_root().findings if f.code == "rule-source-missing"]

    create_event(**event_kwargs(symptom="Another failure", verification=""))  # type: ignore[arg-type]
    assert _pending(root) == []
    [first, second] = _log(root)
    assert first["event_id"] == event_id and first["status"] == "open" and not first["rule_id"]
    assert second["status"] == "applied"
    completed = get_event(event_id)  # its rule is in memory: recorded on its next touch
    assert completed.status == "applied" and completed.rule_id
    assert {e.event_id for e in list_events()} == {event_id, second["event_id"]}


@pytest.mark.files_only("the pending file of the file store")
def test_a_live_writers_pending_event_is_left_alone(root: Path, clock: Clock) -> None:
    """Another writer of the log never appends an event whose writer still holds it."""
    from rayvault.learning.models import LearningEvent

    store = open_store()
    first = create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]
    held = first.model_copy(update={"event_id": "le-20260219T120000Z-000000000001"})
    assert isinstance(held, LearningEvent)
    with store.pending_event(held):  # type: ignore[attr-defined]
        create_event(**event_kwargs(symptom="Meanwhile", verification=""))  # type: ignore[arg-type]
        assert [e["event_id"] for e in _log(root)].count(held.event_id) == 0
        assert _pending(root) == [f"{held.event_id}.json"]
        store.append_events([held])
    assert _pending(root) == []
    assert [e["event_id"] for e in _log(root)].count(held.event_id) == 1


@pytest.mark.files_only("the pending file of the file store")
def test_durable_create_event_flushes_the_pending_file_first(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With durable writes the pending version is flushed before the loop writes anything,
    and the loop's writes are flushed together (a group commit), not file by file."""
    import rayvault.learning.store._fs as fs

    monkeypatch.setenv("RAYVAULT_FSYNC", "1")
    flushes: list[tuple[list[str], list[str]]] = []
    real = fs.flush_now

    def spy(anchor: Path, files: list[str], folders: list[str]) -> None:
        flushes.append((files, folders))
        real(anchor, files, folders)

    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(fs, "flush_now", spy)
    import rayvault.learning.store.files.store as file_store

    monkeypatch.setattr(file_store, "flush_now", spy)
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[-1])
    create_event(**event_kwargs())  # type: ignore[arg-type]
    assert len(flushes) == 2
    (pending, _), (group, folders) = flushes
    assert pending[0].endswith(".json") and "pending_events" in pending[0]
    assert any(f.endswith("learning_events.json") for f in group)
    assert any(f.endswith("memory_active.json") for f in group)
    assert folders  # the per-video folder, the agent's, the skill graph's
    if fs._syncfs_call() is not None:
        assert fsyncs == []  # no file flushed on its own: one syncfs for them all


@pytest.mark.files_only("the derived index's rows")
def test_the_index_keeps_each_event_packed_and_whole(root: Path, clock: Clock) -> None:
    """The index's copy of an event is packed (a quarter of its JSON or less here), unpacks to
    the log's record byte for byte, and still restores an event the log lost."""
    import orjson

    from rayvault.learning.store.files._packed import PACKED, pack, unpack

    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    store = open_store()
    conn = store.index.sync("events")  # type: ignore[attr-defined]
    [(data,)] = conn.execute("SELECT data FROM events").fetchall()
    [logged] = _log(root)
    as_json = orjson.dumps(logged)
    assert data[:1] == PACKED and len(data) <= len(as_json) * 0.35
    assert orjson.loads(unpack(data)) == logged
    assert unpack(as_json) == as_json  # rows written unpacked read as they are
    assert unpack(pack(b'{"a":1}')) == b'{"a":1}'
    (text,) = conn.execute("SELECT json_extract(record(data), '$.symptom') FROM events").fetchone()
    assert text == event.symptom


def test_durable_writes_are_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, ``RAYVAULT_FSYNC`` means flushed writes; ``0`` (or false, no, off) turns them off."""
    from rayvault.learning.store._fs import fsync_enabled

    monkeypatch.delenv("RAYVAULT_FSYNC")
    assert fsync_enabled()
    for value in ("1", "yes", "", "on"):
        monkeypatch.setenv("RAYVAULT_FSYNC", value)
        assert fsync_enabled()
    for value in ("0", "false", "No", " off "):
        monkeypatch.setenv("RAYVAULT_FSYNC", value)
        assert not fsync_enabled()


@pytest.mark.files_only("the pending file of the file store")
def test_the_doctor_reports_a_stopped_writers_pending_event_and_repair_appends_it(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rayvault.learning import events
    from rayvault.learning.doctor import check_root

    def stop(*args: object, **kwargs: object) -> object:
        raise Stopped

    monkeypatch.setattr(events, "record_learning", stop)
    with pytest.raises(Stopped):
        create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]
    [name] = _pending(root)
    found = [f for f in check_root().findings if f.code.startswith("event-pending")]
    assert [(f.code, f.path, f.repairable) for f in found] == [
        ("event-pending-stopped", f"state/pending_events/{name}", True)
    ]
    check_root(repair=True)
    assert _pending(root) == []
    assert [e["event_id"] for e in _log(root)] == [name.removesuffix(".json")]
    assert not [f for f in check_root().findings if f.code.startswith("event-pending")]


def test_a_barrier_flushes_what_the_group_wrote_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a durable group, ``barrier`` flushes the writes made so far (and only those): an
    eviction's tombstone is durable before the memory that drops its rule."""
    import rayvault.learning.store._fs as fs

    monkeypatch.setenv("RAYVAULT_FSYNC", "1")
    flushes: list[list[str]] = []
    monkeypatch.setattr(fs, "flush_now", lambda anchor, files, folders: flushes.append(files))
    fs.barrier(tmp_path)  # outside a group: nothing pending
    assert flushes == []
    with fs.durable_group(tmp_path):
        fs.atomic_write(tmp_path / "first.json", b"{}")
        fs.barrier(tmp_path)
        fs.atomic_write(tmp_path / "second.json", b"{}")
    assert flushes == [[str(tmp_path / "first.json")], [str(tmp_path / "second.json")]]
