"""Compacting the event index: one version per event, the old file archived, and every reader's
derived index (this process's and others') right afterwards."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import CorruptFileError, create_event, list_events, resolve_event
from rayvault.learning.events import event_stats
from rayvault.learning.store import EventQuery, FileStore

from . import _workers
from .conftest import Clock, event_kwargs

EVENTS = "data/learning_events.json"


def versions(root: Path) -> list[dict[str, object]]:
    return json.loads((root / EVENTS).read_text())


def make_history(clock: Clock, n: int = 4) -> list[str]:
    """``n`` events of which every other one is resolved later: 2n + n/2 versions."""
    ids = []
    for i in range(n):
        event = create_event(
            **event_kwargs(symptom=f"failure kind {'abcdefgh'[i]}", verification="")  # type: ignore[arg-type]
        )
        ids.append(event.event_id)
        clock.advance(minutes=1)
    for event_id in ids[::2]:
        resolve_event(event_id, "checked")
    return ids


def test_compact_keeps_the_latest_version_of_each_event(root: Path, clock: Clock) -> None:
    ids = make_history(clock)
    before = (root / EVENTS).read_bytes()
    latest = {e.event_id: e.to_dict() for e in list_events()}
    assert len(versions(root)) == 10

    result = FileStore(root).compact_events()
    assert result.compacted is True
    assert (result.versions_before, result.events_after) == (10, 4)
    assert result.path == EVENTS
    assert result.archive == "data/archive/learning_events-20260219T120400Z.json"
    assert (root / result.archive).read_bytes() == before  # the old index, untouched
    assert result.bytes_before == len(before)
    after = versions(root)
    assert [v["event_id"] for v in after] == ids  # one line each, in order of creation
    assert {v["event_id"]: v for v in after} == latest
    assert (root / EVENTS).read_text().count("\n") == 6  # "[", 4 events, "]"


def test_reads_after_compaction_are_right_in_every_process(root: Path, clock: Clock) -> None:
    """A reader whose derived index followed the old file notices the rewrite (new inode) and
    rebuilds; appends after compaction are read too."""
    ids = make_history(clock)
    reader = FileStore(root)
    expected = {e.event_id: e.to_dict() for e in reader.query_events(EventQuery())}
    stats = event_stats(store=reader)
    FileStore(root).compact_events()  # another store: its own connection and memory of the log
    assert {e.event_id: e.to_dict() for e in reader.query_events(EventQuery())} == expected
    assert event_stats(store=reader) == stats
    assert reader.get_event(ids[0]).status == "verified"  # type: ignore[union-attr]
    assert reader.known_failures(("assets",), 1)  # the occurrence counts were rebuilt too

    later = create_event(**event_kwargs(symptom="after compaction"))  # type: ignore[arg-type]
    assert reader.get_event(later.event_id) is not None
    assert len(reader.query_events(EventQuery())) == 5
    assert versions(root)[-1]["event_id"] == later.event_id


def test_compacting_a_compact_index_changes_nothing(root: Path, clock: Clock) -> None:
    make_history(clock)
    store = FileStore(root)
    store.compact_events()
    data = (root / EVENTS).read_bytes()
    result = store.compact_events()
    assert result.compacted is False and result.archive is None
    assert (root / EVENTS).read_bytes() == data
    assert len(list((root / "data/archive").iterdir())) == 1
    assert FileStore(root / "empty").compact_events().versions_before == 0


def test_compaction_leaves_a_torn_tail_out_and_keeps_it(root: Path, clock: Clock) -> None:
    make_history(clock, 2)
    path = root / EVENTS
    path.write_bytes(path.read_bytes().rstrip()[:-1].rstrip() + b',\n{"event_id": "le-half')
    result = FileStore(root).compact_events()
    assert result.compacted and result.torn_tail_dropped
    assert len(versions(root)) == 2
    assert (root / str(result.archive)).read_bytes().endswith(b'{"event_id": "le-half')


def test_a_corrupt_index_is_not_compacted(root: Path) -> None:
    path = root / EVENTS
    path.parent.mkdir(parents=True)
    path.write_bytes(b'[{"event_id": "a"}, garbage, {"event_id": "b"}]')
    with pytest.raises(CorruptFileError, match="learning_events.json is corrupt"):
        FileStore(root).compact_events()
    assert path.read_bytes() == b'[{"event_id": "a"}, garbage, {"event_id": "b"}]'
    assert not (root / "data/archive").exists()


def test_archives_never_overwrite_each_other(root: Path, clock: Clock) -> None:
    """Two compactions in the same second keep two archives."""
    ids = make_history(clock, 2)
    store = FileStore(root)
    store.compact_events()
    resolve_event(ids[1], "checked")
    second = store.compact_events()
    archives = sorted((root / "data/archive").iterdir())
    assert len(archives) == 2
    assert second.archive != "data/archive/learning_events-20260219T120200Z.json"


@pytest.mark.slow
def test_writers_during_compaction_lose_nothing(root: Path) -> None:
    """Compact again and again while four processes append: every event is kept."""
    ctx = multiprocessing.get_context("spawn")
    store = FileStore(root)
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        futures = [pool.submit(_workers.create_many, str(root), w, 25) for w in range(4)]
        while not all(f.done() for f in futures):
            store.compact_events()
        ids = [event_id for f in futures for event_id in f.result()]
    store.compact_events()
    assert {v["event_id"] for v in versions(root)} == set(ids)
    assert len(versions(root)) == 100
    assert all(e.status == "applied" for e in store.query_events(EventQuery()))


def test_cli_events_compact(root: Path, clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    make_history(clock)
    assert main(["events", "compact"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Compacted {EVENTS}: 10 versions → 4 events (")
    assert "the old index is kept in data/archive/learning_events-20260219T120400Z.json." in out
    assert main(["events", "compact", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["compacted"] is False and data["events_after"] == 4
    assert main(["events", "compact"]) == 0
    assert capsys.readouterr().out == (
        f"{EVENTS} is already compact: 4 events, one version each.\n"
    )
