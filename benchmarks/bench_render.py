"""What ranking an agent's rules costs: ``render_rules`` with 50 active rules, without context and
with a stage, a task and a retried failure (issue 14 item 5), on the file store and PostgreSQL.

    python benchmarks/bench_render.py [--rules 50] [--samples 300] [--store postgresql://…]

Measures, in one warm process:

- ``render_rules(agent)``: no context (severity, efficacy, when learned) — the figure to compare
  with the release before ranking by relevance (run this script from that checkout: the calls
  it does not know print ``n/a``);
- ``render_rules(agent, stage=…, task=…)``: the stage's rules, then full-text relevance to the
  task (``Store.rank_texts``: SQLite FTS5 in memory / PostgreSQL ``ts_rank``);
- the same with ``failure=`` a pattern key, as a retry renders;
- ``Store.rank_texts`` alone, on the texts of the last call (what every attempt of one agent
  does) and on new texts each time (the agent's rules changed).

Nothing here grows with history: the rules are an agent's active memory (capped), the ranking
runs over them only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    BENCH_DIR,
    bench_schema_url,
    drop_schema,
    p50,
    pct,
    store_label,
    timed,
)

AGENT = "dzine_producer"
WORDS = [
    "price",
    "anomaly",
    "listing",
    "timeout",
    "voiceover",
    "audio",
    "clipping",
    "watermark",
    "hero",
    "image",
    "angle",
    "script",
    "hook",
    "intro",
    "brand",
    "logo",
    "subtitle",
    "sync",
    "render",
    "export",
    "thumbnail",
    "contrast",
]
TASK = "Gadget review: the price anomaly on the B0ABC listing, with a new intro hook"


def seed(store: object, n: int) -> str:
    """``n`` rules of :data:`AGENT` over three stages and four severities; the pattern key of
    one of them (a retried failure's)."""
    from rayvault.learning._time import utcnow
    from rayvault.learning.models import Rule

    now = utcnow()
    rules = []
    for i in range(n):
        words = " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(4))
        rules.append(
            Rule(
                rule_id=f"rule-bench-{i:03d}",
                created=now - timedelta(hours=i),
                severity=("INFO", "WARN", "FAIL", "BLOCKER")[i % 4],
                component=("assets", "script", "tts")[i % 3],
                rule=f"Avoid: {words} failure {i}. Cause: a cause. Do: the fix for {words}.",
                symptom=f"{words} failure {i}",
                fingerprint=f"assets:{i:016x}",
                deliveries=i % 5,
                recurrences=i % 2,
            )
        )
    with store.agent_state(AGENT) as state:  # type: ignore[attr-defined]
        state.memory.rules = rules
        state.memory_changed = True
    return f"assets:{(n // 2):016x}"


def figure(samples: list[float]) -> str:
    return f"p50 {p50(samples) * 1000:.0f} µs, p95 {pct(samples, 0.95) * 1000:.0f} µs"


def bench_store(args: argparse.Namespace, url: str | None) -> None:
    from rayvault.learning.memory import render_rules
    from rayvault.learning.store import open_store

    label = store_label(url)
    schema_url = bench_schema_url(url) if url else None
    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    try:
        store = open_store(root, schema_url)
        if schema_url:
            store.init_schema()  # type: ignore[attr-defined]
        key = seed(store, args.rules)
        print(f"[{label}] {args.rules} active rules of {AGENT}")
        cases = {
            "render_rules, no context": {},
            "render_rules, stage + task": {"stage": "assets", "task": TASK},
            "render_rules, stage + task + failure (a retry)": {
                "stage": "assets",
                "task": TASK,
                "failure": key,
            },
        }
        for what, kwargs in cases.items():
            try:
                render_rules(AGENT, store=store, **kwargs)  # type: ignore[arg-type]
            except TypeError:
                print(f"[{label}]   {what}: n/a (this checkout has no such arguments)")
                continue
            call = lambda kw=kwargs: render_rules(AGENT, store=store, **kw)  # type: ignore[arg-type]  # noqa: E731
            print(f"[{label}]   {what}: {figure(timed(call, args.samples))}")
        rank = getattr(store, "rank_texts", None)
        if rank is not None:
            texts = [f"rule text {i} " + " ".join(WORDS[i % 20 :]) for i in range(args.rules)]
            rank(TASK, texts)
            same = timed(lambda: rank(TASK, texts), args.samples)
            print(f"[{label}]   rank_texts, the same {args.rules} texts: {figure(same)}")
            it = iter(range(10**9))
            fresh = timed(lambda: rank(TASK, [f"{t} {next(it)}" for t in texts]), args.samples)
            print(f"[{label}]   rank_texts, {args.rules} new texts each call: {figure(fresh)}")
        store.close()
    finally:
        if schema_url:
            drop_schema(schema_url)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--samples", type=int, default=300)
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
