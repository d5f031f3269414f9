"""Compacting the event log: one version per event, what was removed kept (the old index file,
or the rows of PostgreSQL's ``event_version_archive``), and every reader right afterwards.

Runs on both stores; tests about the index file's bytes are marked ``files_only``."""

from __future__ import annotations

import json
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from rayvault.cli import main
from rayvault.learning import CorruptFileError, create_event, list_events, resolve_event
from rayvault.learning.events import event_stats
from rayvault.learning.models import CompactResult
from rayvault.learning.store import EventQuery, FileStore, Store, open_store

from . import _raw, _workers
from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores
EVENTS = "data/learning_events.json"
STAMP = "learning_events-20260219T120400Z"


def versions(store: Store) -> list[dict[str, Any]]:
    """The event log as stored: every version, in order."""
    if isinstance(store, FileStore):
        path = store.events_path
        return json.loads(path.read_text()) if path.exists() else []
    with store.connect() as conn:  # type: ignore[attr-defined]
        return [
            json.loads(text)
            for (text,) in conn.execute("SELECT data::text FROM event_versions ORDER BY seq")
        ]


def restored(store: Store, result: CompactResult) -> list[dict[str, Any]]:
    """The event log as it was before ``result``'s compaction, from what compaction kept (right
    after it: no version written since)."""
    assert result.archive is not None
    if isinstance(store, FileStore):
        return json.loads((store.root / result.archive).read_text())
    match = re.fullmatch(r".*\.event_version_archive\[(.+)\]", result.archive)
    assert match, result.archive
    with store.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            """
            SELECT seq, data::text FROM event_version_archive WHERE compaction = %(name)s
            UNION ALL
            SELECT seq, data::text FROM event_versions WHERE seq NOT IN
                (SELECT seq FROM event_version_archive WHERE compaction = %(name)s)
            ORDER BY 1
            """,
            {"name": match.group(1)},
        )
        return [json.loads(text) for _, text in rows]


def archives(store: Store) -> int:
    """How many compactions kept something."""
    if isinstance(store, FileStore):
        folder = store.archive_dir
        return len(list(folder.iterdir())) if folder.is_dir() else 0
    with store.connect() as conn:  # type: ignore[attr-defined]
        row = conn.execute("SELECT count(DISTINCT compaction) FROM event_version_archive")
        return int(row.fetchone()[0])


def where(store: Store) -> tuple[str, str]:
    """How the store names its event log and the archive of the compaction at 12:04:00."""
    if isinstance(store, FileStore):
        return EVENTS, f"data/archive/{STAMP}.json"
    schema = store.schema  # type: ignore[attr-defined]
    return f"{schema}.event_versions", f"{schema}.event_version_archive[{STAMP}]"


def created_versions(store: Store) -> int:
    """Versions a ``create_event`` stores: one in the file store (its loop runs while the event
    is pending, issue 15), two in PostgreSQL (the first stored at once, then the final one)."""
    return 1 if isinstance(store, FileStore) else 2


def make_history(clock: Clock, n: int = 4) -> list[str]:
    """``n`` events of which every other one is resolved later: ``created_versions`` × n + n/2
    versions."""
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


def test_compact_keeps_the_latest_version_of_each_event(store: Store, clock: Clock) -> None:
    ids = make_history(clock)
    before = versions(store)
    latest = {e.event_id: e.to_dict() for e in list_events()}
    stored = created_versions(store) * 4 + 2
    assert len(before) == stored

    result = store.compact_events()
    assert result.compacted is True
    assert (result.versions_before, result.events_after) == (stored, 4)
    assert (result.path, result.archive) == where(store)
    assert restored(store, result) == before  # nothing lost: the old log, version for version
    assert 0 < result.bytes_after < result.bytes_before
    after = versions(store)
    assert [v["event_id"] for v in after] == ids  # one version each, in order of creation
    assert {v["event_id"]: v for v in after} == latest
    assert {e.event_id: e.to_dict() for e in list_events()} == latest


@pytest.mark.files_only("the bytes of the index file and of its archive")
def test_compacted_index_file_bytes(root: Path, clock: Clock) -> None:
    make_history(clock)
    before = (root / EVENTS).read_bytes()
    result = FileStore(root).compact_events()
    assert (root / str(result.archive)).read_bytes() == before  # the old index, untouched
    assert result.bytes_before == len(before)
    assert result.bytes_after == len((root / EVENTS).read_bytes())
    assert (root / EVENTS).read_text().count("\n") == 6  # "[", 4 events, "]"


def test_reads_after_compaction_are_right_in_every_process(
    root: Path, backend: str | None, clock: Clock
) -> None:
    """A reader that read the log before sees the same after another store compacted it (the
    file store's derived index notices the new file and rebuilds); appends after compaction are
    read too."""
    ids = make_history(clock)
    reader = open_store(root, backend)
    expected = {e.event_id: e.to_dict() for e in reader.query_events(EventQuery())}
    stats = event_stats(store=reader)
    failures = reader.known_failures(("assets",), 1)
    other = open_store(root, backend)  # its own connection and memory of the log
    other.compact_events()
    assert {e.event_id: e.to_dict() for e in reader.query_events(EventQuery())} == expected
    assert event_stats(store=reader) == stats
    assert reader.get_event(ids[0]).status == "verified"  # type: ignore[union-attr]
    assert reader.known_failures(("assets",), 1) == failures  # the occurrence counts too

    later = create_event(**event_kwargs(symptom="after compaction"))  # type: ignore[arg-type]
    assert reader.get_event(later.event_id) is not None
    resolve_event(ids[1], "checked after compaction")
    assert reader.get_event(ids[1]).status == "verified"  # type: ignore[union-attr]
    assert len(reader.query_events(EventQuery())) == 5
    created = [later.event_id] * created_versions(reader)
    assert [v["event_id"] for v in versions(reader)][-len(created) - 1 :] == [*created, ids[1]]
    reader.close()
    other.close()


def test_compacting_a_compact_log_changes_nothing(store: Store, clock: Clock) -> None:
    empty = store.compact_events()
    assert (empty.compacted, empty.versions_before, empty.archive) == (False, 0, None)
    make_history(clock)
    store.compact_events()
    log = versions(store)
    result = store.compact_events()
    assert result.compacted is False and result.archive is None
    assert (result.versions_before, result.events_after) == (4, 4)
    assert versions(store) == log
    assert archives(store) == 1


@pytest.mark.files_only("a torn tail of the index file")
def test_compaction_leaves_a_torn_tail_out_and_keeps_it(root: Path, clock: Clock) -> None:
    make_history(clock, 2)
    path = root / EVENTS
    path.write_bytes(path.read_bytes().rstrip()[:-1].rstrip() + b',\n{"event_id": "le-half')
    result = FileStore(root).compact_events()
    assert result.compacted and result.torn_tail_dropped
    assert len(versions(FileStore(root))) == 2
    assert (root / str(result.archive)).read_bytes().endswith(b'{"event_id": "le-half')


@pytest.mark.files_only("an index file that does not parse")
def test_a_corrupt_index_is_not_compacted(root: Path) -> None:
    path = root / EVENTS
    path.parent.mkdir(parents=True)
    path.write_bytes(b'[{"event_id": "a"}, garbage, {"event_id": "b"}]')
    with pytest.raises(CorruptFileError, match="learning_events.json is corrupt"):
        FileStore(root).compact_events()
    assert path.read_bytes() == b'[{"event_id": "a"}, garbage, {"event_id": "b"}]'
    assert not (root / "data/archive").exists()


def test_archives_never_overwrite_each_other(store: Store, clock: Clock) -> None:
    """Two compactions in the same second keep two archives."""
    ids = make_history(clock, 2)
    first = store.compact_events()
    resolve_event(ids[1], "checked")
    second = store.compact_events()
    assert archives(store) == 2
    assert first.archive != second.archive
    assert second.archive != where(store)[1].replace("20260219T120400Z", "20260219T120200Z")


@pytest.mark.slow
def test_writers_during_compaction_lose_nothing(store: Store, backend: str | None) -> None:
    """Compact again and again while four processes append: every event is kept."""
    ctx = multiprocessing.get_context("spawn")
    root = str(store.root)
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        futures = [
            pool.submit(_workers.create_many, root, w, 25, "WARN", backend) for w in range(4)
        ]
        while not all(f.done() for f in futures):
            store.compact_events()
        ids = [event_id for f in futures for event_id in f.result()]
    store.compact_events()
    assert {v["event_id"] for v in versions(store)} == set(ids)
    assert len(versions(store)) == 100
    assert all(e.status == "applied" for e in store.query_events(EventQuery()))
    if _raw.is_pg(store):
        from rayvault.learning.doctor import check_root

        assert check_root(store=store).findings == []  # the tables and counts agree


def test_cli_events_compact(store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    make_history(clock)
    path, archive = where(store)
    assert main(["events", "compact"]) == 0
    out = capsys.readouterr().out
    stored = created_versions(store) * 4 + 2
    assert out.startswith(f"Compacted {path}: {stored} versions → 4 events (")
    assert f"the old versions are kept in {archive}." in out
    assert main(["events", "compact", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["compacted"] is False and data["events_after"] == 4
    assert main(["events", "compact"]) == 0
    assert capsys.readouterr().out == f"{path} is already compact: 4 events, one version each.\n"
