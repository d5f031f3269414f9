"""The learning gate and error-log patterns over a large history.

    python benchmarks/bench_gate.py [--events 100000] [--errors 20000] [--samples 200]
                                    [--store postgresql://USER@HOST/DB]

Targets (DESIGN.md §7): gate p50 ≤ 10 ms warm in-process and ≤ 400 ms for a cold
`rayvault-learn gate` process, with 100k events and 20k error-log entries; error-log
`get_patterns` over 20k entries ≤ 1 s. With ``--store URL`` the same history is also loaded into
PostgreSQL (a schema of its own, dropped afterwards) and measured next to the file store.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    BENCH_DIR,
    REAL_DATA,
    STAGES,
    bench_schema_url,
    drop_schema,
    open_history,
    p50,
    pct,
    store_label,
    synthetic_errors,
    synthetic_events,
    timed,
)


def bench_store(args: argparse.Namespace, url: str | None) -> None:
    from rayvault.learning.errors import get_patterns
    from rayvault.learning.gate import learning_gate

    label = store_label(url)
    schema_url = bench_schema_url(url) if url else None
    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    store: object = None
    try:
        print(f"[{label}] data root {root}: {args.events:,} events, {args.errors:,} errors")
        shared = REAL_DATA / "agents"
        if shared.is_dir():
            shutil.copytree(shared, root / "agents")
        t0 = time.perf_counter()
        store = open_history(
            root, schema_url, synthetic_events(args.events), synthetic_errors(args.errors)
        )
        how = "written and indexed" if url is None else "loaded with COPY"
        print(f"[{label}]   synthetic history {how} in {time.perf_counter() - t0:.1f} s")

        rng = random.Random(3)
        pairs = [(f"v{rng.randrange(2000):05d}", rng.choice(STAGES)) for _ in range(64)]
        for video, stage in pairs:
            learning_gate(video, stage, store=store)  # type: ignore[arg-type]  # baselines
        it = iter(range(10**9))

        def one() -> None:
            video, stage = pairs[next(it) % len(pairs)]
            learning_gate(video, stage, store=store)  # type: ignore[arg-type]

        times = timed(one, args.samples)
        warm = f"p50 {p50(times):.2f} ms, p95 {pct(times, 0.95):.2f} ms"
        print(f"[{label}] learning_gate warm, in-process: {warm}")

        times = timed(lambda: get_patterns(2, store=store), 5)  # type: ignore[arg-type]
        what = f"error-log get_patterns over {args.errors:,} entries"
        print(f"[{label}] {what}: p50 {p50(times):.1f} ms")
        store.close()  # type: ignore[attr-defined]

        # Timed from a small launcher process: forking this one (its heap grew while building
        # the history) would add the parent's cost to every cold run.
        exe = shutil.which("rayvault-learn")
        cmd = [exe] if exe else [sys.executable, "-m", "rayvault.cli"]
        if schema_url:
            cmd += ["--store", schema_url]
        runs = [
            [*cmd, "--root", str(root), "gate", *pairs[i % len(pairs)]] for i in range(args.cold)
        ]
        launcher = (
            "import json, subprocess, sys, time\n"
            "out = []\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    t0 = time.perf_counter()\n"
            "    code = subprocess.run(argv, capture_output=True).returncode\n"
            "    out.append(((time.perf_counter() - t0) * 1000, code))\n"
            "print(json.dumps(out))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", launcher, json.dumps(runs)],
            capture_output=True,
            text=True,
            check=True,
        )
        cold = json.loads(done.stdout)
        assert all(code in (0, 2) for _, code in cold), cold
        ms = [t for t, _ in cold]
        cold_ms = f"p50 {p50(ms):.0f} ms, max {max(ms):.0f} ms"
        print(f"[{label}] rayvault-learn gate, cold process: {cold_ms}")
    finally:
        if store is not None:
            store.close()  # type: ignore[attr-defined]
        if schema_url:
            drop_schema(schema_url)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--errors", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--cold", type=int, default=10, help="cold CLI runs")
    parser.add_argument(
        "--store",
        default=None,
        help="also measure this PostgreSQL store (postgresql://…; a schema per run, dropped)",
    )
    args = parser.parse_args()
    for url in [None, args.store] if args.store else [None]:
        bench_store(args, url)


if __name__ == "__main__":
    main()
