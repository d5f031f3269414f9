"""PostgreSQL on a schema that does not exist yet: reads and the migration dry run, against the
same on an initialised, empty schema.

    python benchmarks/bench_pg_schema.py --store postgresql://USER@HOST/DB [--notes 705]
                                         [--reads 200]

The data root holds ``--notes`` skill-graph notes: copies of the real notes in
``tests/data/skill-graph``, or ``RAYVAULT_SHARED_DATA`` (cycled to reach the count). Each case
opens a new store on a new schema (dropped afterwards) and measures, through the read-only view
dry runs use:

- ``--reads`` reads (``count_events``, ``query_events`` by source note, ``load_memory``);
- ``migrate`` without ``--apply`` over the notes.

``uninitialised`` is a schema that does not exist: the view reads it as an empty store. Before
issue 10, every pooled connection use re-ran every migration in a rolled-back transaction there
(343 s against 4.3 s for a 705-note dry run); now the empty schema is built once per store.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DIR, REAL_DATA, bench_schema_url, drop_schema

SHARED_NOTES = REAL_DATA / "skill-graph" / "learnings"
NOTES = "agents/skills/learnings"


def make_root(notes: int) -> Path:
    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    folder = root / NOTES
    folder.mkdir(parents=True)
    sources = sorted(SHARED_NOTES.glob("*.md"))
    if not sources:
        raise SystemExit(f"no notes in {SHARED_NOTES}")
    for i in range(notes):
        source = sources[i % len(sources)]
        name = source.name if i < len(sources) else f"{source.stem}-{i}.md"
        (folder / name).write_bytes(source.read_bytes())
    return root


def measure(root: Path, url: str, *, initialised: bool, reads: int) -> dict[str, float]:
    from rayvault.learning.migrate import migrate_learnings
    from rayvault.learning.store import EventQuery
    from rayvault.learning.store.postgres import PostgresStore

    schema_url = bench_schema_url(url)
    figures: dict[str, float] = {}
    try:
        if initialised:
            setup = PostgresStore(root, schema_url)
            setup.init_schema()
            setup.close()
        store = PostgresStore(root, schema_url)
        view: Any = store.read_only()
        t0 = time.perf_counter()
        for i in range(reads):
            view.count_events(EventQuery())
            view.query_events(EventQuery(source_note=f"{NOTES}/n{i}.md", limit=1))
            view.load_memory("researcher")
        figures["reads"] = time.perf_counter() - t0
        store.close()

        store = PostgresStore(root, schema_url)
        t0 = time.perf_counter()
        report = migrate_learnings(store=store)
        figures["dry_run"] = time.perf_counter() - t0
        figures["would_migrate"] = report.migrated
        store.close()
        check = PostgresStore(root, schema_url, migrate=False)
        with check.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (check.schema,)
            ).fetchone()
        figures["schema_exists_after"] = float(row[0]) if row else 0.0
        check.close()
    finally:
        drop_schema(schema_url)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="postgresql://USER@HOST/DB")
    parser.add_argument("--notes", type=int, default=705)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    root = make_root(args.notes)
    try:
        print(f"{args.notes} notes (copies of {SHARED_NOTES}), data root in {BENCH_DIR}")
        for initialised in (True, False):
            label = "initialised, empty" if initialised else "uninitialised     "
            f = measure(root, args.store, initialised=initialised, reads=args.reads)
            left = "yes" if f["schema_exists_after"] else "no"
            print(
                f"[postgresql] {label}: {args.reads} × 3 reads through the read-only view "
                f"{f['reads']:.2f} s ({f['reads'] / (3 * args.reads) * 1000:.2f} ms each); "
                f"migrate dry run {f['dry_run']:.2f} s ({int(f['would_migrate'])} would be "
                f"migrated); schema exists afterwards: {left}"
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
