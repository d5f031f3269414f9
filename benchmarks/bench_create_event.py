"""create_event latency at growing index sizes, and multi-process throughput.

    python benchmarks/bench_create_event.py [--sizes 1000,10000,100000] [--samples 300]
                                            [--workers 8] [--per-worker 500]

Targets (DESIGN.md §7): p50 ≤ 3 ms at every size, p50(100k)/p50(1k) ≤ 1.5, and 8 × 500 events
written by 8 processes at once all kept in a valid index.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DIR, p50, pct, synthetic_events, timed, write_index


class Root:
    """A data root holding ``size`` synthetic events, indexed, ready for create_event."""

    def __init__(self, size: int, base: str) -> None:
        from rayvault.learning.store import EventQuery, FileStore

        self.size = size
        self.path = Path(tempfile.mkdtemp(dir=base))
        write_index(self.path, synthetic_events(size))
        self.store = FileStore(self.path)
        self.store.count_events(EventQuery())  # build the derived index, as a running system has
        self.counter = 0
        self.samples: list[float] = []

    def one(self) -> None:
        from rayvault.learning import create_event

        i = self.counter = self.counter + 1
        create_event(
            run_id=f"bench-{i}",
            severity="FAIL" if i % 4 == 0 else "WARN",
            component="assets",
            symptom=f"Benchmark failure {i % 97} on variant {'abcdefgh'[i % 8]}",
            root_cause="synthetic",
            fix_applied="synthetic fix",
            video_id=f"v{i % 50:03d}",
            agent="dzine_producer",
            store=self.store,
        )


def bench_sizes(sizes: list[int], samples: int, rounds: int = 10) -> dict[int, list[float]]:
    """Time create_event on every size in interleaved rounds, so disk noise (writeback of the
    setup data, other load) falls on all sizes alike."""
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as base:
        roots = [Root(size, base) for size in sizes]
        os.sync()
        for root in roots:
            timed(root.one, 20)  # warm-up
        per_round = max(1, samples // rounds)
        for _ in range(rounds):
            for root in roots:
                root.samples += timed(root.one, per_round)
        for root in roots:
            root.store.close()
        return {root.size: root.samples for root in roots}


def _worker(root: str, worker: int, count: int) -> int:
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore

    store = FileStore(root)
    for i in range(count):
        create_event(
            run_id=f"w{worker}",
            severity="WARN",
            component="assets",
            symptom=f"worker {worker} failure {i}",
            video_id=f"v{worker}",
            agent="dzine_producer",
            store=store,
        )
    return count


def bench_processes(workers: int, per_worker: int) -> tuple[int, int, bool, float]:
    from rayvault.learning.store import EventQuery, FileStore

    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        ctx = multiprocessing.get_context("spawn")
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            done = sum(pool.map(_worker, [tmp] * workers, range(workers), [per_worker] * workers))
        elapsed = time.perf_counter() - t0
        raw = json.loads((Path(tmp) / "data/learning_events.json").read_bytes())
        kept = FileStore(tmp).count_events(EventQuery())
        return done, kept, isinstance(raw, list), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--per-worker", type=int, default=500)
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"create_event with an agent, file store in {BENCH_DIR}, {args.samples} samples per size")
    print(f"{'index size':>12} {'p50 ms':>8} {'p95 ms':>8}")
    results = {}
    for size, samples in bench_sizes(sizes, args.samples).items():
        results[size] = p50(samples)
        print(f"{size:>12,} {p50(samples):>8.2f} {pct(samples, 0.95):>8.2f}", flush=True)
    if len(sizes) > 1:
        ratio = results[sizes[-1]] / results[sizes[0]]
        print(f"p50({sizes[-1]:,}) / p50({sizes[0]:,}) = {ratio:.2f}")

    if args.workers:
        done, kept, valid, elapsed = bench_processes(args.workers, args.per_worker)
        print(
            f"{args.workers} processes × {args.per_worker} events: {kept} of {done} kept, "
            f"index valid JSON: {valid}, {elapsed:.1f} s ({done / elapsed:.0f} events/s)"
        )


if __name__ == "__main__":
    main()
