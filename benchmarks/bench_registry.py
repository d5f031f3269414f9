"""Registry queries and the weekly revisit over a large history.

    RAYVAULT_BENCH_DIR=/var/tmp python benchmarks/bench_registry.py [--events 100000]
                                        [--agents 7] [--rules 50] [--repeat 5]

Builds ``--events`` synthetic events over 90 days, and ``--agents`` agents with ``--rules``
active rules each (plus tombstones and memory snapshots), then builds the derived index (timed
on its own) and times, warm:

- ``query_events(component="assets", severity="FAIL")`` (the spec's example) and a 7-day range;
- ``get_patterns(min_count=3)``;
- ``revisit(scope="all", days=7)``: dry runs, then one real run (report + sweep written);
- ``rayvault-learn revisit --scope all --days 7 --dry-run --json`` as a new process.

Targets (DESIGN.md §7): the queries ≤ 1 s, the revisit ≤ 3 s, over 100k events.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import BENCH_DIR, p50, synthetic_events, timed, write_index

AGENT_NAMES = [
    "researcher",
    "scriptwriter",
    "reviewer",
    "dzine_producer",
    "publisher",
    "davinci_editor",
    "market_scout",
]
AGENT_STAGE = {
    "researcher": "research",
    "scriptwriter": "script",
    "reviewer": "script-review",
    "dzine_producer": "assets",
    "publisher": "tts",
    "davinci_editor": "render",
    "market_scout": "day",
}
FIXES = [
    "Increase the timeout to {n}s",
    "Decrease the timeout",
    "Use the SiteStripe Get link button",
    "Never use the browser session for {w}",
    "Changed reference angle from 3/4 to {w}",
    "Reverted to original 3/4 angle",
    "Set retries to {n}",
    "Validate prices against the median of {w}",
    "Use flux instead of sdxl for {w}",
    "Crop the phone image to 16:9",
]


def ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_agents(
    root: Path, events: list[dict[str, object]], agents: int, rules: int, seed: int = 11
) -> None:
    """Memory, tombstones and snapshots for ``agents`` agents of ``rules`` rules each."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    for agent in AGENT_NAMES[:agents]:
        folder = root / "state" / "agents" / agent
        (folder / "memory_archive").mkdir(parents=True, exist_ok=True)
        active = []
        for i in range(rules):
            created = now - timedelta(days=rng.uniform(0, 90))
            last = created + (now - created) * rng.random()
            source = rng.choice(events)
            fix = rng.choice(FIXES).format(n=rng.randint(1, 99), w=rng.choice(["a", "b", "c"]))
            active.append(
                {
                    "rule_id": f"rule-{agent}-{i:03d}",
                    "source_event_id": source["event_id"],
                    "created": ts(created),
                    "severity": rng.choice(["INFO", "WARN", "FAIL", "BLOCKER"]),
                    "component": AGENT_STAGE[agent],
                    "rule": f"Avoid: failure {i} of {agent}. Do: {fix}.",
                    "symptom": f"failure {i} of {agent}",
                    "video_id": source["video_id"],
                    "applied_count": rng.choice([1, 1, 1, 2, 3, 5]),
                    "last_applied": ts(last),
                }
            )
        memory = {"rules": active, "updated": ts(now), "count": len(active)}
        (folder / "memory_active.json").write_bytes(orjson.dumps(memory))
        stones = []
        for i in range(20):
            when = now - timedelta(days=rng.uniform(0, 60))
            stones.append(
                {
                    **active[i % len(active)],
                    "rule_id": f"rule-{agent}-gone-{i:03d}",
                    "tombstoned_at": ts(when),
                    "reason": "obsolete",
                    "evidence_ids": [],
                    "superseded_by": None,
                    "kind": rng.choice(["tombstoned", "evicted"]),
                }
            )
        tombstones = {"tombstones": stones, "updated": ts(now), "count": len(stones)}
        (folder / "memory_tombstones.json").write_bytes(orjson.dumps(tombstones))
        for days in (1, 30, 95, 120):
            stamp = (now - timedelta(days=days)).strftime("%Y%m%dT%H%M%SZ")
            (folder / "memory_archive" / f"memory_active-{stamp}-abcd.json").write_bytes(b"{}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=7)
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from rayvault.learning.registry import get_patterns, query_events
    from rayvault.learning.revisit import revisit
    from rayvault.learning.store import EventQuery, FileStore

    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        events = synthetic_events(args.events)
        write_index(root, events)
        write_agents(root, events, args.agents, args.rules)
        print(
            f"{args.events:,} events, {args.agents} agents × {args.rules} rules "
            f"(+20 tombstones each), data root in {BENCH_DIR} "
            f"(generated in {time.perf_counter() - t0:.1f} s)"
        )
        os.sync()
        store = FileStore(root)
        t0 = time.perf_counter()
        store.count_events(EventQuery())
        print(f"derived index build (once, then incremental): {time.perf_counter() - t0:.2f} s")

        def show(label: str, samples: list[float], target: float | None, extra: str = "") -> None:
            mark = "" if target is None else (" ok" if p50(samples) <= target else " OVER TARGET")
            limit = "" if target is None else f" (target ≤ {target / 1000:.0f} s)"
            print(f"  {label:<58} p50 {p50(samples):8.1f} ms{limit}{mark}{extra}")

        found = query_events(component="assets", severity="FAIL", store=store)
        show(
            'query_events(component="assets", severity="FAIL")',
            timed(
                lambda: query_events(component="assets", severity="FAIL", store=store), args.repeat
            ),
            1000,
            f"  → {len(found):,} events",
        )
        week = datetime.now(UTC) - timedelta(days=7)
        found = query_events(date_from=week, store=store)
        show(
            "query_events(date_from=<7 days ago>)",
            timed(lambda: query_events(date_from=week, store=store), args.repeat),
            1000,
            f"  → {len(found):,} events",
        )
        found = query_events(store=store)
        show(
            "query_events() (no filter: every event, validated)",
            timed(lambda: query_events(store=store), max(1, args.repeat // 2)),
            None,
            f"  → {len(found):,} events",
        )
        patterns = get_patterns(min_count=3, store=store)
        show(
            "get_patterns(min_count=3)",
            timed(lambda: get_patterns(min_count=3, store=store), args.repeat),
            1000,
            f"  → {len(patterns):,} patterns",
        )
        result = revisit("all", 7, dry_run=True, store=store)
        show(
            'revisit("all", 7, dry_run=True)',
            timed(lambda: revisit("all", 7, dry_run=True, store=store), args.repeat),
            3000,
            f"  → {len(result.revalidation.stale)} stale, "
            f"{len(result.revalidation.conflicts)} conflicts, {len(result.promotions)} promotable",
        )
        t0 = time.perf_counter()
        written = revisit("all", 7, store=store)
        real_ms = (time.perf_counter() - t0) * 1000
        archived = sum(s.tombstones_archived for s in written.tombstone_sweep)
        pruned = sum(len(s.snapshots_pruned) for s in written.tombstone_sweep)
        show(
            'revisit("all", 7) (writes report, archives, prunes)',
            [real_ms],
            3000,
            f"  → {written.report_name}, {archived} tombstones archived, {pruned} pruned",
        )
        env = {**os.environ, "RAYVAULT_ROOT": str(root)}
        cmd = [sys.executable, "-m", "rayvault.cli", "revisit", "--scope", "all", "--days", "7",
               "--dry-run", "--json"]  # fmt: skip

        def cli() -> None:
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)

        show("rayvault-learn revisit --scope all --days 7 (new process)", timed(cli, 3), 3000)
        store.close()


if __name__ == "__main__":
    main()
