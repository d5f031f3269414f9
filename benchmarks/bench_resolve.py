"""Bulk resolution at scale: ``resolve_events`` over a history of ``--events`` events and
``--errors`` error-log entries.

    python benchmarks/bench_resolve.py [--events 100000] [--errors 20000]
                                       [--store postgresql://USER@HOST/DB]

Measured on the file store (and on PostgreSQL with ``--store``, a schema of its own dropped
afterwards):

- the dry run of a filter selecting about a sixth of the events (``--component assets``, the
  unresolved ones), and of one selecting all unresolved events before a date;
- applying the first (the events' new versions, their per-video files on the file store, and
  their linked error-log entries, in one locked batch per log), and the first read afterwards
  (on the file store, the derived index catches up with the versions appended);
- resolving one event by id (the error log's unresolved entries are read once).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    BENCH_DIR,
    bench_schema_url,
    drop_schema,
    open_history,
    synthetic_errors,
    synthetic_events,
)


def history(events: int, errors: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events and error-log entries, a tenth of the unresolved entries linked to an open event
    of the same stage (as the loop links them)."""
    evs = synthetic_events(events)
    errs = synthetic_errors(errors)
    rng = random.Random(3)
    open_by_stage: dict[str, list[str]] = {}
    for e in evs:
        if e["status"] in ("open", "applied"):
            open_by_stage.setdefault(str(e["component"]), []).append(str(e["event_id"]))
    for entry in errs:
        candidates = open_by_stage.get(str(entry["stage"]))
        if not entry["resolved"] and candidates and rng.random() < 0.1:
            entry["learning_event_id"] = rng.choice(candidates)
    return evs, errs


def run(events: int, errors: int, url: str | None) -> None:
    from rayvault.learning.resolution import resolve_events
    from rayvault.learning.store import EventQuery

    label = "[postgresql] " if url else "[files]      "
    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    schema_url = bench_schema_url(url) if url else None
    try:
        evs, errs = history(events, errors)
        store: Any = open_history(root, schema_url, evs, errs)
        cutoff = datetime.now(UTC) - timedelta(days=45)

        t0 = time.perf_counter()
        preview = resolve_events(component="assets", store=store)
        took = time.perf_counter() - t0
        print(
            f"{label}dry run --component assets: {len(preview.events):,} events, "
            f"{len(preview.errors):,} linked error-log entries in {took:.2f} s"
        )
        t0 = time.perf_counter()
        before = resolve_events(before=cutoff, store=store)
        took = time.perf_counter() - t0
        print(
            f"{label}dry run --before (half the history): {len(before.events):,} events, "
            f"{len(before.errors):,} linked error-log entries in {took:.2f} s"
        )
        t0 = time.perf_counter()
        done = resolve_events(component="assets", verification="bench", apply=True, store=store)
        took = time.perf_counter() - t0
        print(
            f"{label}apply --component assets: {len(done.events):,} events and "
            f"{len(done.errors):,} error-log entries resolved in {took:.2f} s"
        )
        t0 = time.perf_counter()
        store.count_events(EventQuery())
        took = time.perf_counter() - t0
        catch_up = " (index catch-up)" if url is None else ""
        print(f"{label}  first read afterwards{catch_up}: {took * 1000:.0f} ms")
        one = next(e for e in before.events if e.component != "assets")
        t0 = time.perf_counter()
        resolve_events([one.event_id], verification="bench", apply=True, store=store)
        took = time.perf_counter() - t0
        print(f"{label}resolve one event by id: {took * 1000:.0f} ms")
        store.close()
    finally:
        if schema_url:
            drop_schema(schema_url)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--errors", type=int, default=20_000)
    parser.add_argument(
        "--store", help="also measure PostgreSQL at this URL (postgresql://USER@HOST/DB)"
    )
    args = parser.parse_args()
    print(f"data roots in {BENCH_DIR}; {args.events:,} events, {args.errors:,} error-log entries")
    run(args.events, args.errors, None)
    if args.store:
        run(args.events, args.errors, args.store)


if __name__ == "__main__":
    main()
