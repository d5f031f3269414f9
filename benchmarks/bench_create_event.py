"""create_event latency at growing index sizes, and multi-process throughput.

    python benchmarks/bench_create_event.py [--sizes 1000,10000,100000] [--samples 300]
                                            [--workers 8] [--per-worker 500]
                                            [--store postgresql://USER@HOST/DB]

Targets (DESIGN.md §7): p50 ≤ 3 ms at every size, p50(100k)/p50(1k) ≤ 1.5, and 8 × 500 events
written by 8 processes at once all kept in a valid index. With ``--store URL`` the same figures
are measured on PostgreSQL too (each size in a schema of its own, dropped afterwards), next to
the file store's.
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

from benchmarks._common import (
    BENCH_DIR,
    bench_schema_url,
    drop_schema,
    open_history,
    p50,
    pct,
    store_label,
    synthetic_events,
    timed,
)


class Root:
    """A store holding ``size`` synthetic events, indexed, ready for create_event."""

    def __init__(self, size: int, base: str, url: str | None = None) -> None:
        self.size = size
        self.url = bench_schema_url(url) if url else None
        self.label = store_label(url)
        self.path = Path(tempfile.mkdtemp(dir=base))
        self.store = open_history(self.path, self.url, synthetic_events(size))
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
            store=self.store,  # type: ignore[arg-type]
        )

    def close(self) -> None:
        self.store.close()  # type: ignore[attr-defined]
        if self.url:
            drop_schema(self.url)


def bench_sizes(
    sizes: list[int], samples: int, urls: list[str | None], rounds: int = 10
) -> list[Root]:
    """Time create_event on every size and store in interleaved rounds, so disk noise (writeback
    of the setup data, other load) falls on all of them alike."""
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as base:
        roots = [Root(size, base, url) for url in urls for size in sizes]
        os.sync()
        try:
            for root in roots:
                timed(root.one, 20)  # warm-up
            per_round = max(1, samples // rounds)
            for _ in range(rounds):
                for root in roots:
                    root.samples += timed(root.one, per_round)
        finally:
            for root in roots:
                root.close()
        return roots


def _worker(root: str, worker: int, count: int, url: str | None) -> int:
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore, open_store

    store = open_store(root, url) if url else FileStore(root)
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
    store.close()
    return count


def bench_processes(workers: int, per_worker: int, url: str | None) -> tuple[int, int, bool, float]:
    from rayvault.learning.store import EventQuery, FileStore
    from rayvault.learning.store.files.layout import Layout
    from rayvault.learning.store.postgres import PostgresStore

    schema_url = bench_schema_url(url) if url else None
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        if schema_url:
            PostgresStore(tmp, schema_url).init_schema()
        ctx = multiprocessing.get_context("spawn")
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            done = sum(
                pool.map(
                    _worker,
                    [tmp] * workers,
                    range(workers),
                    [per_worker] * workers,
                    [schema_url] * workers,
                )
            )
        elapsed = time.perf_counter() - t0
        if schema_url:
            store = PostgresStore(tmp, schema_url)
            kept, valid = store.count_events(EventQuery()), True
            store.close()
            drop_schema(schema_url)
        else:
            raw = json.loads(Layout(Path(tmp)).events_path.read_bytes())
            kept, valid = FileStore(tmp).count_events(EventQuery()), isinstance(raw, list)
        return done, kept, valid, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--per-worker", type=int, default=500)
    parser.add_argument(
        "--store",
        default=None,
        help="also measure this PostgreSQL store (postgresql://…; a schema per run, dropped)",
    )
    args = parser.parse_args()

    sizes = [int(s) for s in args.sizes.split(",")]
    urls: list[str | None] = [None, args.store] if args.store else [None]
    print(f"create_event with an agent, data in {BENCH_DIR}, {args.samples} samples per size")
    print(f"{'store':>11} {'index size':>12} {'p50 ms':>8} {'p95 ms':>8}")
    results: dict[tuple[str, int], float] = {}
    for root in bench_sizes(sizes, args.samples, urls):
        results[root.label, root.size] = p50(root.samples)
        print(
            f"{root.label:>11} {root.size:>12,} {p50(root.samples):>8.2f} "
            f"{pct(root.samples, 0.95):>8.2f}",
            flush=True,
        )
    if len(sizes) > 1:
        for url in urls:
            label = store_label(url)
            ratio = results[label, sizes[-1]] / results[label, sizes[0]]
            print(f"{label}: p50({sizes[-1]:,}) / p50({sizes[0]:,}) = {ratio:.2f}")

    if args.workers:
        for url in urls:
            done, kept, valid, elapsed = bench_processes(args.workers, args.per_worker, url)
            what = "index valid JSON" if url is None else "all in the events table"
            print(
                f"{store_label(url)}: {args.workers} processes × {args.per_worker} events: "
                f"{kept} of {done} kept, {what}: {valid}, {elapsed:.1f} s "
                f"({done / elapsed:.0f} events/s)"
            )


if __name__ == "__main__":
    main()
