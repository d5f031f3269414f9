"""Several processes writing at once lose nothing; a writer killed mid-append loses no
acknowledged event and leaves a repairable index."""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rayvault.learning import create_event, list_events, load_active_memory, load_tombstones
from rayvault.learning.store.files._jsonlog import JsonArrayLog

from . import _workers

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def run_workers(root: Path, workers: int, count: int) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_workers.create_many, str(root), w, count) for w in range(workers)]
        return [event_id for f in futures for event_id in f.result()]


def test_eight_processes_lose_no_event_and_no_rule(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "100000")
    ids = run_workers(root, 8, 40)
    assert len(set(ids)) == 320
    raw = json.loads((root / "data/learning_events.json").read_text())  # valid JSON
    assert len(raw) == 320  # one version per event: its loop completed (issue 15)
    events = list_events()
    assert {e.event_id for e in events} == set(ids)
    assert all(e.status == "applied" and e.rule_id for e in events)
    rules = load_active_memory("dzine_producer").rules
    assert {r.source_event_id for r in rules} == set(ids)
    for worker in range(8):
        folder = root / f"artifacts/videos/v{worker}/learning/events"
        assert len(list(folder.glob("*.json"))) == 40
    notes = list((root / "agents/skills/learnings").glob("2*.md"))
    assert len(notes) == 320
    folder = root / "agents/skills/learnings"
    recent = (folder / "_index.md").read_text().splitlines()
    older = (folder / "_index-archive.md").read_text().splitlines()
    entries = [line for line in recent + older if line.startswith("- [[")]
    assert len(entries) == 320  # the newest 50 in the map, the rest in its archive
    assert sum(line.startswith("- [[") for line in recent) == 50
    assert {e.split("]]")[0][4:] for e in entries} == {n.stem for n in notes}


def test_cap_holds_under_concurrency(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent appliers never leave more INFO/WARN rules than the cap; evicted rules are in
    the tombstones, so every rule is accounted for."""
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "20")
    ids = run_workers(root, 8, 25)
    active = load_active_memory("dzine_producer").rules
    evicted = load_tombstones("dzine_producer").tombstones
    assert len(active) == 20
    assert {r.source_event_id for r in active} | {t.source_event_id for t in evicted} == set(ids)
    assert len(active) + len(evicted) == 200


def test_killed_writer_loses_no_acknowledged_event(root: Path) -> None:
    """SIGKILL a writer at a random moment, several times: every id it printed (create_event
    had returned) is in the index, the index is readable, and the next write repairs it."""
    acknowledged: list[str] = []
    for round_ in range(3):
        proc = _workers.start_writer(root)
        assert proc.stdout is not None
        with proc.stdout:
            for _ in range(10 + 7 * round_):
                line = proc.stdout.readline().strip()
                assert line, "the writer stopped before it was killed"
                acknowledged.append(line)
            time.sleep(0.013 * round_)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            acknowledged += [line.strip() for line in proc.stdout if line.strip()]
        items = JsonArrayLog(root / "data/learning_events.json").read().items
        assert set(acknowledged) <= {item["event_id"] for item in items}

    event = create_event(
        run_id="after", severity="INFO", component="research", symptom="after the crashes"
    )
    data = json.loads((root / "data/learning_events.json").read_text())  # repaired, valid
    assert data[-1]["event_id"] == event.event_id
    assert set(acknowledged) <= {e.event_id for e in list_events()}


def test_sixteen_writers_and_two_readers_see_no_write_in_progress(root: Path) -> None:
    """16 writer processes (FAIL and WARN events) and 2 reader processes at once: no call fails,
    every acknowledged event is in the log and the index, the index agrees with the log, and no
    process rebuilt the index from scratch (nothing rewrote the log)."""
    from rayvault.learning.store import EventQuery, FileStore

    stop = root / "stop-readers"
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=18, mp_context=ctx) as pool:
        readers = [pool.submit(_workers.read_until, str(root), str(stop)) for _ in range(2)]
        writers = [
            pool.submit(_workers.create_counting, str(root), w, 12, "FAIL" if w % 2 else "WARN")
            for w in range(16)
        ]
        written = [f.result() for f in writers]
        stop.touch()
        read = [f.result() for f in readers]

    errors = [e for _, errs, _ in written + read for e in errs]
    assert errors == []
    assert all(reads > 0 for reads, _, _ in read)
    ids = {event_id for event_ids, _, _ in written for event_id in event_ids}
    assert len(ids) == 16 * 12
    raw = json.loads((root / "data/learning_events.json").read_bytes())  # valid JSON
    assert {e["event_id"] for e in raw} == ids
    store = FileStore(root)
    assert {e.event_id for e in store.query_events(EventQuery())} == ids
    latest = {e["event_id"]: e for e in raw}
    assert store.index.verify({"events": latest}) == []
    assert sum(rebuilds for _, _, rebuilds in written + read) == 0
    store.close()


def test_whole_file_reads_never_see_an_append_in_progress(tmp_path: Path) -> None:
    """Raw reads of a log while 3 processes append to it (elements up to 3 KB, so appends
    straddle pages and reads): every read is a complete array of whole records."""
    path = tmp_path / "log.json"
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=3, mp_context=ctx) as pool:
        futures = [pool.submit(_workers.append_many, str(path), w, 300) for w in range(3)]
        log = JsonArrayLog(path)
        reads = 0
        while not all(f.done() for f in futures):
            items = log.read().items
            assert all(set(item) == {"id", "pad"} for item in items)
            reads += 1
        assert sum(f.result() for f in futures) == 900
    assert reads > 0
    assert len(json.loads(path.read_bytes())) == 900
