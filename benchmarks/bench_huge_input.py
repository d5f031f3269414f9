"""create_event after a huge symptom: what one oversized record costs, and what it costs every
later write.

    python benchmarks/bench_huge_input.py [--size 10000000] [--after 5]
                                          [--store postgresql://USER@HOST/DB]

One event with a ``--size``-character symptom, then ``--after`` small events on the same video
and agent (the worst case: the same per-video file and the same memory are rewritten). For each
step: time, and bytes written and read by the process (``/proc/self/io``: files and sockets).
Target (issue 11.4): the huge write costs what a capped record costs, and the small writes after
it cost what they cost after a small symptom. Before the caps: 15 s and 120 MB for the huge
write, then 324 ms per small write (5 writes: 180 MB).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DIR, bench_schema_url, drop_schema, store_label


def io_bytes() -> tuple[int, int]:
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["wchar"]), int(fields["rchar"])


def run(size: int, after: int, url: str | None) -> list[tuple[str, float, int, int]]:
    from rayvault.learning import create_event
    from rayvault.learning.store import open_store

    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    schema = bench_schema_url(url) if url else None
    store = open_store(root, schema)
    kw = {
        "run_id": "bench",
        "severity": "FAIL",
        "component": "assets",
        "video_id": "v042",
        "agent": "dzine_producer",
        "root_cause": "Changed reference angle",
        "fix_applied": "Reverted the angle",
        "store": store,
    }
    rows: list[tuple[str, float, int, int]] = []

    def step(label: str, symptom: str) -> None:
        w0, r0 = io_bytes()
        start = time.perf_counter()
        create_event(symptom=symptom, **kw)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
        w1, r1 = io_bytes()
        rows.append((label, elapsed, w1 - w0, r1 - r0))

    step("small (warm-up)", "Image hallucination in product background")
    step("small, before", "Image hallucination on variant b")
    step(f"huge ({size:,} characters)", "Render failed at frame " + "9" * size)
    for i in range(after):
        step(f"small, after #{i + 1}", f"Image hallucination on variant {'cdefgh'[i % 6]}")
    store.close()
    if schema:
        drop_schema(schema)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000_000)
    parser.add_argument("--after", type=int, default=5)
    parser.add_argument("--store", default=None, help="also measure PostgreSQL at this URL")
    args = parser.parse_args()
    for url in [None, args.store] if args.store else [None]:
        print(f"\n== {store_label(url)} store: create_event after a huge symptom")
        print(f"{'step':<32} {'time':>9} {'written':>12} {'read':>12}")
        for label, elapsed, written, read in run(args.size, args.after, url):
            print(f"{label:<32} {elapsed * 1000:>7.1f}ms {written:>12,} {read:>12,}")


if __name__ == "__main__":
    main()
