"""kill -9 loop: what a writer killed at a random moment leaves, and what heals it.

    python benchmarks/bench_crash.py [--kills 60] [--seed 1]

A process creates FAIL events with an agent and a video (``tests/_workers.py``) and is killed
with SIGKILL at a random moment, ``--kills`` times. After each kill the doctor runs (no repair)
before and after the next write (one ``create_event``); the figures say how often it found
problems, which, and how many events the killed writers left without their recorded rule.
Every id the writer printed (``create_event`` had returned) must be in the log.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DIR

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from rayvault.learning import create_event, list_events
    from rayvault.learning.doctor import check_root
    from rayvault.learning.events import get_event, loop_incomplete
    from rayvault.learning.store import FileStore

    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    before: Counter[str] = Counter()
    after: Counter[str] = Counter()
    unclean_before = unclean_after = 0
    acknowledged: list[str] = []
    for _ in range(args.kills):
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests/_workers.py"), str(root)],
            stdout=subprocess.PIPE,
            cwd=REPO,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdout is not None
        with proc.stdout:
            acknowledged.append(proc.stdout.readline().strip())
            time.sleep(rng.random() * 0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            acknowledged += [line.strip() for line in proc.stdout if line.strip()]
        store = FileStore(root)
        found = [f.code for f in check_root(store=store).findings if f.open]
        before.update(found)
        unclean_before += bool(found)
        create_event(
            run_id="next", severity="INFO", component="research", symptom="next", store=store
        )
        found = [f.code for f in check_root(store=store).findings if f.open]
        after.update(found)
        unclean_after += bool(found)
        store.close()
    store = FileStore(root)
    events = list_events(store=store)
    incomplete = [e for e in events if loop_incomplete(e)]
    for event in incomplete:
        get_event(event.event_id, store=store)  # the next touch
    still = sum(loop_incomplete(e) for e in list_events(store=store))
    lost = set(acknowledged) - {e.event_id for e in events}
    print(f"{args.kills} kills, {len(acknowledged)} acknowledged events, {len(lost)} lost")
    print(f"doctor unclean right after the kill: {unclean_before}/{args.kills} {dict(before)}")
    print(f"doctor unclean after the next write: {unclean_after}/{args.kills} {dict(after)}")
    print(
        f"events left without their recorded rule: {len(incomplete)}; "
        f"after their next touch: {still} (touched within 5 minutes, only those whose rule "
        "was already in memory complete; the others are applied by the touch after that, "
        "or by doctor --repair)"
    )


if __name__ == "__main__":
    main()
