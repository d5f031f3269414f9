"""Maintenance at scale: compacting the event index, the doctor, and the migration.

    python benchmarks/bench_maintenance.py [--events 100000] [--notes 2000] [--errors 20000]
                                           [--store postgresql://USER@HOST/DB]

- ``events compact`` over an index holding two versions of each of ``--events`` events, and the
  first read afterwards (the derived index rebuilds);
- ``doctor`` over the same root with a per-video file for every event (clean, then with one
  per-video file missing and ``--repair``);
- ``migrate`` dry run and apply of ``--notes`` skill-graph notes (copies of the real notes in
  ``tests/data``, or ``RAYVAULT_SHARED_DATA``, or synthetic ones) and ``--errors`` error-log
  entries, about half resolved; then the second, idempotent apply.

With ``--store URL`` the same is measured on PostgreSQL too (a schema of its own, dropped
afterwards): compaction of ``event_versions``, the doctor's table checks (clean, then with wrong
failure counts and ``--repair``), and the migration.

No target in DESIGN.md §7 covers these; the figures say what an operator waits.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    BENCH_DIR,
    REAL_DATA,
    bench_schema_url,
    drop_schema,
    open_history,
    synthetic_errors,
    synthetic_events,
    write_error_log,
    write_index,
)

SHARED_NOTES = REAL_DATA / "skill-graph" / "learnings"


T = TypeVar("T")


def seconds(fn: Callable[[], T]) -> tuple[float, T]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def bench_compact_and_doctor(count: int) -> None:
    import orjson

    from rayvault.learning.doctor import check_root
    from rayvault.learning.store import EventQuery, FileStore
    from rayvault.learning.store.files.layout import Layout

    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    try:
        events = synthetic_events(count)
        second = [{**e, "status": "archived"} for e in events]
        write_index(root, events + second)
        for event in second:  # the per-video files hold the latest version
            path = Layout(root).video_event_path(str(event["video_id"]), str(event["event_id"]))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(orjson.dumps(event, option=orjson.OPT_INDENT_2))
        store = FileStore(root)
        store.count_events(EventQuery())  # a running system has its derived index
        size = Layout(root).events_path.stat().st_size
        took, result = seconds(store.compact_events)
        print(
            f"events compact: {count * 2:,} versions ({size / 1e6:.0f} MB) → "
            f"{result.events_after:,} events in {took:.2f} s"
        )
        took, _ = seconds(lambda: store.count_events(EventQuery(video_id="v00001")))
        print(f"  first read after compaction (derived index rebuilt): {took:.2f} s")

        took, report = seconds(lambda: check_root(store=store))
        print(
            f"doctor, {count:,} events and per-video files: {took:.2f} s, "
            f"{len(report.findings)} findings"
        )
        victim = next(iter((root / "artifacts/videos").glob("*/learning/events/*.json")))
        victim.unlink()
        took, report = seconds(lambda: check_root(repair=True, store=store))
        print(
            f"doctor --repair with one per-video file missing: {took:.2f} s, "
            f"{report.repaired} repaired"
        )
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def bench_compact_and_doctor_pg(count: int, url: str) -> None:
    from rayvault.learning.doctor import check_root
    from rayvault.learning.store import EventQuery

    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    schema_url = bench_schema_url(url)
    try:
        events = synthetic_events(count)
        second = [{**e, "status": "archived"} for e in events]
        store: Any = open_history(root, schema_url, events + second)
        took, result = seconds(store.compact_events)
        print(
            f"[postgresql] events compact: {result.versions_before:,} versions "
            f"({result.bytes_before / 1e6:.0f} MB) → {result.events_after:,} events in "
            f"{took:.2f} s"
        )
        took, _ = seconds(lambda: store.count_events(EventQuery(video_id="v00001")))
        print(f"[postgresql]   first read after compaction: {took * 1000:.1f} ms")
        took, report = seconds(lambda: check_root(store=store))
        print(
            f"[postgresql] doctor, {count:,} events: {took:.2f} s, {len(report.findings)} findings"
        )
        with store.connect() as conn:
            conn.execute("UPDATE fp_counts SET total = total + 1 WHERE component = 'assets'")
        took, report = seconds(lambda: check_root(repair=True, store=store))
        print(
            f"[postgresql] doctor --repair with wrong failure counts: {took:.2f} s, "
            f"{report.repaired} repaired"
        )
        store.close()
    finally:
        drop_schema(schema_url)
        shutil.rmtree(root, ignore_errors=True)


def bench_migrate(notes: int, errors: int, url: str | None = None) -> None:
    from rayvault.learning.migrate import migrate_learnings
    from rayvault.learning.store import FileStore

    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    schema_url = bench_schema_url(url) if url else None
    label = "[postgresql] " if url else ""
    try:
        folder = root / "agents/skills/learnings"
        folder.mkdir(parents=True)
        sources = sorted(SHARED_NOTES.glob("2*.md")) if SHARED_NOTES.is_dir() else []
        for i in range(notes):
            if sources:
                source = sources[i % len(sources)]
                (folder / f"{source.stem}-{i}.md").write_bytes(source.read_bytes())
            else:
                (folder / f"2026-02-19-fail-assets-n{i}.md").write_text(
                    f"---\nseverity: fail\n---\n# [FAIL] assets: failure {i}\n\n"
                    "## Symptom\n\nfailure\n\n## Root Cause\n\ncause\n\n## Fix Applied\n\nfix\n"
                )
        if schema_url:
            store: Any = open_history(root, schema_url, [], synthetic_errors(errors))
        else:
            write_error_log(root, synthetic_errors(errors))
            store = FileStore(root)
        took, report = seconds(lambda: migrate_learnings(store=store))
        print(
            f"{label}migrate dry run, {notes:,} notes + {errors:,} error-log entries: "
            f"{took:.2f} s ({report.migrated:,} would be migrated)"
        )
        took, report = seconds(lambda: migrate_learnings(apply=True, store=store))
        print(f"{label}migrate --apply: {took:.2f} s ({report.migrated:,} events written)")
        took, report = seconds(lambda: migrate_learnings(apply=True, store=store))
        print(
            f"{label}migrate --apply again: {took:.2f} s ({report.migrated:,} written, "
            f"{report.present:,} already present)"
        )
        store.close()
    finally:
        if schema_url:
            drop_schema(schema_url)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--notes", type=int, default=2000)
    parser.add_argument("--errors", type=int, default=20_000)
    parser.add_argument(
        "--store", help="also measure PostgreSQL at this URL (postgresql://USER@HOST/DB)"
    )
    args = parser.parse_args()
    print(f"data roots in {BENCH_DIR}")
    if args.events:
        bench_compact_and_doctor(args.events)
        if args.store:
            bench_compact_and_doctor_pg(args.events, args.store)
    if args.notes or args.errors:
        bench_migrate(args.notes, args.errors)
        if args.store:
            bench_migrate(args.notes, args.errors, args.store)


if __name__ == "__main__":
    main()
