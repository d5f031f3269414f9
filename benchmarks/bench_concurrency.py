"""Many writer processes at once, with readers: throughput, errors, lost events, index rebuilds.

    python benchmarks/bench_concurrency.py [--writers 8,16,32] [--severities WARN,FAIL]
                                           [--per-worker 50] [--readers 2] [--history 0,20000]

Every writer is a real process creating ``--per-worker`` events of one severity (each a distinct
failure, with an agent: the rule goes to memory); the readers are processes that, until the
writers are done, alternate a whole-file read of ``data/learning_events.json`` (the log's own
reader) with a count through the derived index, pausing ``--read-pause`` between reads. Printed
per run:

- events/s: events acknowledged by the writers / the time from the start signal until the last
  writer finished (process start-up is not counted);
- errors: exceptions raised in writers and readers (``CorruptFileError`` and others);
- lost: events whose ``create_event`` returned but which are not in the log or the index, plus
  events whose ``create_event`` raised (they were not acknowledged, but a caller lost them);
- rebuilds: full rebuilds of the derived index from the log, summed over every process.

Targets (issue 11): 0 errors and 0 lost at 16 and 32 writers; FAIL throughput within 1.3× of
WARN, also with 20k events of history; no full rebuild when nothing rewrote the log.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DIR, synthetic_events, write_index


def _writer(
    root: str, worker: int, count: int, severity: str, start: Any
) -> tuple[list[str], list[str], int]:
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore

    store = FileStore(root)
    start.wait()
    ids: list[str] = []
    errors: list[str] = []
    for i in range(count):
        try:
            event = create_event(
                run_id=f"w{worker}",
                severity=severity,
                component="assets",
                symptom=f"writer {worker} failure {_letters(worker, i)}",
                root_cause="cause",
                fix_applied="fix",
                video_id=f"v{worker % 50}",
                agent="dzine_producer",
                store=store,
            )
            ids.append(event.event_id)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    n = store.index.rebuilds
    store.close()
    return ids, errors, n


def _letters(worker: int, i: int) -> str:
    return "".join(chr(97 + int(d)) for d in f"{worker:02d}{i:05d}")


def _reader(root: str, pause: float, start: Any, stop: Any) -> tuple[int, list[str], int]:
    from rayvault.learning.store import EventQuery, FileStore
    from rayvault.learning.store.files._jsonlog import JsonArrayLog

    store = FileStore(root)
    log = JsonArrayLog(store.events_path)
    start.wait()
    reads = 0
    errors: list[str] = []
    while not stop.is_set():
        try:
            log.read()
            store.count_events(EventQuery(components=("assets",)))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        reads += 1
        time.sleep(pause)
    n = store.index.rebuilds
    store.close()
    return reads, errors, n


@dataclass
class Run:
    writers: int
    severity: str
    history: int
    readers: int
    events: int
    elapsed: float
    errors: list[str]
    lost: int
    rebuilds: int
    reads: int

    @property
    def rate(self) -> float:
        return self.events / self.elapsed


def run(
    *, writers: int, per_worker: int, severity: str, readers: int, history: int, pause: float
) -> Run:
    from rayvault.learning.store import EventQuery, FileStore
    from rayvault.learning.store.files._jsonlog import JsonArrayLog

    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        if history:
            write_index(Path(tmp), synthetic_events(history))
            setup = FileStore(tmp)
            setup.index.sync("events")
            setup.index.sync("errors")
            setup.close()
        ctx = multiprocessing.get_context("spawn")
        manager = ctx.Manager()
        start, stop = manager.Event(), manager.Event()
        with ProcessPoolExecutor(max_workers=writers + readers, mp_context=ctx) as pool:
            reading = [pool.submit(_reader, tmp, pause, start, stop) for _ in range(readers)]
            writing = [
                pool.submit(_writer, tmp, w, per_worker, severity, start) for w in range(writers)
            ]
            time.sleep(0.5)
            while len(pool._processes) < writers + readers:  # every process started
                time.sleep(0.05)
            time.sleep(1.0)  # and has imported the library
            t0 = time.perf_counter()
            start.set()
            written = [f.result() for f in writing]
            elapsed = time.perf_counter() - t0
            stop.set()
            read = [f.result() for f in reading]
        manager.shutdown()

        acknowledged = {event_id for ids, _, _ in written for event_id in ids}
        errors = [e for _, errs, _ in written for e in errs] + [
            e for _, errs, _ in read for e in errs
        ]
        failed_writes = sum(len(errs) for _, errs, _ in written)
        store = FileStore(tmp)
        in_log = {item["event_id"] for item in JsonArrayLog(store.events_path).read().items}
        in_index = {e.event_id for e in store.query_events(EventQuery(components=("assets",)))}
        store.close()
        lost = len(acknowledged - in_log) + len(acknowledged - in_index) + failed_writes
        rebuilds = sum(n for _, _, n in written) + sum(n for _, _, n in read)
        return Run(
            writers,
            severity,
            history,
            readers,
            len(acknowledged),
            elapsed,
            errors,
            lost,
            rebuilds,
            sum(n for n, _, _ in read),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="8,16,32")
    parser.add_argument("--severities", default="WARN,FAIL")
    parser.add_argument("--per-worker", type=int, default=50)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--history", default="0,20000")
    parser.add_argument(
        "--read-pause", type=float, default=0.01, help="seconds each reader sleeps between reads"
    )
    args = parser.parse_args()

    print(f"create_event from many processes, {args.readers} readers, data in {BENCH_DIR}")
    print(
        f"{'history':>8} {'writers':>7} {'severity':>8} {'events':>7} {'events/s':>9} "
        f"{'errors':>6} {'lost':>5} {'rebuilds':>8} {'reads':>6}"
    )
    samples: list[str] = []
    for history in [int(h) for h in args.history.split(",")]:
        for writers in [int(w) for w in args.writers.split(",")]:
            for severity in args.severities.split(","):
                r = run(
                    writers=writers,
                    per_worker=args.per_worker,
                    severity=severity,
                    readers=args.readers,
                    history=history,
                    pause=args.read_pause,
                )
                print(
                    f"{r.history:>8,} {r.writers:>7} {r.severity:>8} {r.events:>7} "
                    f"{r.rate:>9.0f} {len(r.errors):>6} {r.lost:>5} {r.rebuilds:>8} "
                    f"{r.reads:>6}",
                    flush=True,
                )
                samples += r.errors[:3]
    for line in samples:
        print(f"  error: {line}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        traceback.print_exc()
        sys.exit(1)
