"""The learning gate and error-log patterns over a large history.

    python benchmarks/bench_gate.py [--events 100000] [--errors 20000] [--samples 200]

Targets (DESIGN.md §7): gate p50 ≤ 10 ms warm in-process and ≤ 400 ms for a cold
`rayvault-learn gate` process, with 100k events and 20k error-log entries; error-log
`get_patterns` over 20k entries ≤ 1 s.
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
    STAGES,
    p50,
    pct,
    synthetic_errors,
    synthetic_events,
    timed,
    write_error_log,
    write_index,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--errors", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--cold", type=int, default=10, help="cold CLI runs")
    args = parser.parse_args()

    from rayvault.learning.errors import get_patterns
    from rayvault.learning.gate import learning_gate
    from rayvault.learning.store import FileStore

    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    try:
        print(f"data root {root}: {args.events:,} events, {args.errors:,} error-log entries")
        t0 = time.perf_counter()
        write_index(root, synthetic_events(args.events))
        write_error_log(root, synthetic_errors(args.errors))
        print(f"  synthetic history written in {time.perf_counter() - t0:.1f} s")
        agents = root / "agents"
        shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "agents"
        if shared.is_dir():
            shutil.copytree(shared, agents)
        store = FileStore(root)
        t0 = time.perf_counter()
        store.index.sync("events")
        store.index.sync("errors")
        print(f"  derived index built once in {time.perf_counter() - t0:.2f} s")

        rng = random.Random(3)
        pairs = [(f"v{rng.randrange(2000):05d}", rng.choice(STAGES)) for _ in range(64)]
        for video, stage in pairs:
            learning_gate(video, stage, store=store)  # baselines (first runs write more)
        it = iter(range(10**9))

        def one() -> None:
            video, stage = pairs[next(it) % len(pairs)]
            learning_gate(video, stage, store=store)

        times = timed(one, args.samples)
        warm = f"p50 {p50(times):.2f} ms, p95 {pct(times, 0.95):.2f} ms"
        print(f"learning_gate warm, in-process: {warm}")

        times = timed(lambda: get_patterns(2, store=store), 5)
        print(f"error-log get_patterns over {args.errors:,} entries: p50 {p50(times):.1f} ms")
        store.close()

        # Timed from a small launcher process: forking this one (its heap grew while building
        # the history) would add the parent's cost to every cold run.
        exe = shutil.which("rayvault-learn")
        cmd = [exe] if exe else [sys.executable, "-m", "rayvault.cli"]
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
        print(f"rayvault-learn gate, cold process: p50 {p50(ms):.0f} ms, max {max(ms):.0f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
