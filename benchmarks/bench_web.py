"""Server time of every page of the web app (issue 18), on roots of 1k and 100k events.

    python benchmarks/bench_web.py [--samples 10] [--pg postgresql://USER@HOST/DB]
                                   [--sizes 1000,100000]

Each root is built as benchmarks/bench_scale.py builds its histories (``synthetic_events`` at the
same rate whatever the size: the last 7 days hold the same ~780 events), plus what a running
system has beside its events: two rules per agent (SOUL files from tests/data), and gate runs
for a few videos. Every page is then requested ``--samples`` times through Starlette's ASGI test
client (no network: the server's time), after one warm-up round, the two roots interleaved
request by request, and its p50 printed next to
the target of 150 ms with PASS or FAIL. The event list pages (first page, filtered page, a page
deep in the history) are printed at both sizes with their ratio: they must not grow with the
number of events. Exit status 1 when a target fails.
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

from benchmarks._common import (
    BENCH_DIR,
    REAL_DATA,
    bench_schema_url,
    drop_schema,
    open_history,
    p50,
    store_label,
    synthetic_events,
)

TARGET_MS = 150.0
LOCAL = ("127.0.0.1", 50000)
#: A list page may cost at most this many times more at the large size than at the small one.
MAX_LIST_RATIO = 2.0
LIST_PAGES = ("events", "events?severity=FAIL", "events (page 10)")


def build(root: Path, url: str | None, size: int) -> Any:
    """A store at ``root`` with ``size`` events, rules with SOUL files, and gate runs."""
    from rayvault.learning import create_event, learning_gate

    shutil.copytree(REAL_DATA / "agents", root / "agents", dirs_exist_ok=True)
    store: Any = open_history(root, url, synthetic_events(size, days=max(7, size * 90 // 10_000)))
    for stage, agent in (("assets", "dzine_producer"), ("research", "researcher")):
        for n in range(2):
            create_event(
                run_id=f"bench-{n}",
                severity="FAIL",
                component=stage,
                symptom=f"Bench failure {n} in {stage}: product shape wrong",
                root_cause="a cause",
                fix_applied="a fix",
                verification="",
                video_id=f"v9{n:04d}",
                agent=agent,
                store=store,
            )
    for video in ("v00001", "v00002", "v00003"):
        for stage in ("research", "assets", "render"):
            learning_gate(video, stage, store=store)
    return store


def pages(store: Any) -> dict[str, str]:
    """The URL of every page, with ids taken from the store."""
    from dataclasses import replace

    from rayvault.learning._time import format_ts
    from rayvault.learning.store.base import EventQuery

    newest = store.query_events(EventQuery(newest_first=True, limit=1))[0]
    deep = store.query_events(EventQuery(newest_first=True, limit=10 * 50))[-1]
    agent = "dzine_producer"
    rule = store.load_memory(agent).rules[0]
    patterns = store.event_patterns(replace(EventQuery()), min_count=1)
    fingerprint = patterns[0].fingerprint
    return {
        "overview": "/",
        "events": "/events",
        "events?severity=FAIL": "/events?severity=FAIL",
        "events (page 10)": f"/events?before={format_ts(deep.timestamp)}&skip=1",
        "event": f"/events/{newest.event_id}",
        "batch confirm (video)": f"/events/resolve?video={newest.video_id}",
        "patterns": "/patterns",
        "pattern": f"/patterns/{fingerprint}",
        "agents": "/agents",
        "agent": f"/agents/{agent}",
        "promote diff": f"/agents/{agent}/rules/{rule.rule_id}/promote",
        "gate": "/gate",
        "gate cell": "/gate/v00001/assets",
    }


def measure(stores: dict[int, Any], samples: int) -> dict[int, dict[str, float]]:
    """p50 of every page at each size, the sizes interleaved request by request (a load that
    changes while the benchmark runs weighs on both sizes alike)."""
    from contextlib import ExitStack

    from starlette.testclient import TestClient

    from rayvault.web.app import Settings, create_app

    times: dict[int, dict[str, list[float]]] = {size: {} for size in stores}
    with ExitStack() as stack:
        clients = {
            size: stack.enter_context(
                TestClient(create_app(Settings(store=store, user="bench")), client=LOCAL)
            )
            for size, store in stores.items()
        }
        urls = {size: pages(store) for size, store in stores.items()}
        names = list(next(iter(urls.values())))
        for round_ in range(samples + 1):  # the first round warms up (templates, caches)
            for name in names:
                for size, client in clients.items():
                    t0 = time.perf_counter()
                    response = client.get(urls[size][name])
                    elapsed = (time.perf_counter() - t0) * 1000
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
                    if round_:
                        times[size].setdefault(name, []).append(elapsed)
    return {size: {n: p50(t) for n, t in found.items()} for size, found in times.items()}


def run(sizes: tuple[int, int], url: str | None, samples: int) -> dict[int, dict[str, float]]:
    stores: dict[int, Any] = {}
    made: list[tuple[Path, str | None]] = []
    try:
        for size in sizes:
            root = Path(tempfile.mkdtemp(prefix=f"bench-web-{size}-", dir=BENCH_DIR))
            schema = bench_schema_url(url) if url else None
            made.append((root, schema))
            stores[size] = build(root, schema, size)
        return measure(stores, samples)
    finally:
        for store in stores.values():
            store.close()
        for root, schema in made:
            if schema:
                drop_schema(schema)
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--pg", default=None, help="also run on PostgreSQL (a schema of its own)")
    parser.add_argument("--sizes", default="1000,100000")
    args = parser.parse_args(argv)
    small, large = (int(s) for s in args.sizes.split(","))
    failed = False
    for url in [None, *([args.pg] if args.pg else [])]:
        label = store_label(url)
        results = run((small, large), url, args.samples)
        print(f"\n{label} store: server time p50 (ms), {args.samples} samples per page")
        print(f"{'page':<24}{small:>10,}{large:>10,}  target at {large:,}")
        for name in results[large]:
            a, b = results[small][name], results[large][name]
            ok = b <= TARGET_MS
            failed |= not ok
            print(
                f"{name:<24}{a:>10.1f}{b:>10.1f}  ≤ {TARGET_MS:.0f} ms {'PASS' if ok else 'FAIL'}"
            )
        print(
            f"\nevent list pages, {large:,} vs {small:,} events (target ratio ≤ {MAX_LIST_RATIO}):"
        )
        for name in LIST_PAGES:
            ratio = results[large][name] / max(results[small][name], 0.01)
            ok = ratio <= MAX_LIST_RATIO
            failed |= not ok
            print(f"  {name:<22}{ratio:>6.2f}x  {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
