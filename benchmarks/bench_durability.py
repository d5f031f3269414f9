"""What the second copies that ``doctor --repair`` restores from cost a write (file store).

    python benchmarks/bench_durability.py [--samples 2000]

- ``log_error``: with the error log's journal (``data/error_log.journal``, one ``O_APPEND`` write
  per call) and with the journal switched off;
- a version of an event: appended with its per-video file and without;
- ``create_event`` end to end, for scale (one version per event since issue 15; its p50 with
  durable writes on and off: ``bench_scale.py --only fsync``).

Run as it is, writes are flushed (the default); ``RAYVAULT_FSYNC=0`` measures them unflushed.

Each figure is the p50 over ``--samples`` calls in a fresh data root (create_event: a quarter
as many), in microseconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DIR, create_event_times, p50, timed


def bench_log_error(samples: int, *, journal: bool) -> float:
    from rayvault.learning.errors import log_error
    from rayvault.learning.store import FileStore
    from rayvault.learning.store.files import store as files

    store = FileStore(tempfile.mkdtemp(dir=BENCH_DIR))
    original = files.append_journal
    if not journal:
        files.append_journal = lambda path, lines: None  # type: ignore[assignment]
    try:
        times = [
            timed(lambda i=i: log_error(f"v{i % 50}", "research", f"Timeout {i}", store=store), 1)[
                0
            ]
            for i in range(samples)
        ]
    finally:
        files.append_journal = original  # type: ignore[assignment]
        store.close()
    return p50(times)


def bench_first_version(samples: int, *, video_files: bool) -> float:
    from rayvault.learning._ids import new_event_id
    from rayvault.learning._time import utcnow
    from rayvault.learning.models import LearningEvent
    from rayvault.learning.store import FileStore

    store = FileStore(tempfile.mkdtemp(dir=BENCH_DIR))
    times = []
    for i in range(samples):
        now = utcnow()
        event = LearningEvent(
            event_id=new_event_id(now),
            run_id="bench",
            timestamp=now,
            severity="WARN",
            component="assets",
            symptom=f"Benchmark failure {i}",
            video_id=f"v{i % 50}",
            status="open",
        )
        times.append(timed(lambda e=event: store.append_events([e], video_files=video_files), 1)[0])
    store.close()
    return p50(times)


def bench_create_event(samples: int) -> float:
    from rayvault.learning.store import FileStore

    store = FileStore(tempfile.mkdtemp(dir=BENCH_DIR))
    times = create_event_times(store, samples)
    store.close()
    return p50(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    n = args.samples
    with_journal = bench_log_error(n, journal=True)
    without = bench_log_error(n, journal=False)
    print(
        f"log_error p50: {with_journal * 1e3:.0f} µs with the journal, "
        f"{without * 1e3:.0f} µs without (+{(with_journal - without) * 1e3:.0f} µs)"
    )
    copy = bench_first_version(n, video_files=True)
    bare = bench_first_version(n, video_files=False)
    print(
        f"a version of an event p50: {copy * 1e3:.0f} µs with its per-video file, "
        f"{bare * 1e3:.0f} µs without (+{(copy - bare) * 1e3:.0f} µs)"
    )
    print(f"create_event p50 (agent and video): {bench_create_event(n // 4) * 1e3:.0f} µs")


if __name__ == "__main__":
    main()
