"""``event_versions`` on a large history (issue 18): the file store scans its event log.

    python benchmarks/bench_event_versions.py [--events 100000] [--samples 20] [--pg DSN]

Builds a root of ``--events`` events (``synthetic_events``), a tenth of them with three more
versions appended (as updates append them, so the log holds ~1.3 versions per event), then times
``store.event_versions`` of events whose versions sit early, midway and late in the log, and of an
unknown id, and prints each p50 next to ``get_event``'s. With ``--pg`` the same on PostgreSQL.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    bench_schema_url,
    drop_schema,
    open_history,
    p50,
    store_label,
    synthetic_events,
    timed,
)
from rayvault.learning.store import Store


def history(count: int) -> tuple[list[dict[str, object]], list[str]]:
    events = synthetic_events(count)
    log = list(events)
    for i, event in enumerate(events):
        if i % 10 == 0:
            for n in range(3):
                log.append({**event, "root_cause": f"cause {n}", "status": "open"})
    picks = [str(events[i]["event_id"]) for i in (0, count // 2, count - 10)]
    return log, picks


def report(store: Store, picks: list[str], samples: int) -> None:
    for name, event_id in zip(("early", "midway", "late"), picks, strict=True):
        found = store.event_versions(event_id)
        ms = p50(timed(partial(store.event_versions, event_id), samples))
        get = p50(timed(partial(store.get_event, event_id), samples))
        print(
            f"  event_versions ({name}, {len(found)} versions): p50 {ms:.1f} ms"
            f"  (get_event {get:.3f} ms)"
        )
    unknown = "le-20200101T000000Z-000000000000"
    ms = p50(timed(partial(store.event_versions, unknown), samples))
    print(f"  event_versions (unknown id): p50 {ms:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--pg", default=None, help="also measure PostgreSQL at this DSN")
    args = parser.parse_args()
    log, picks = history(args.events)
    urls: list[str | None] = [None]
    if args.pg:
        urls.append(bench_schema_url(args.pg))
    for url in urls:
        with tempfile.TemporaryDirectory() as tmp:
            store: Store = open_history(Path(tmp), url, log)  # type: ignore[assignment]
            try:
                print(
                    f"{store_label(url)}: {args.events:,} events, {len(log):,} versions in the log"
                )
                report(store, picks, args.samples)
            finally:
                store.close()
                if url is not None:
                    drop_schema(url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
