"""The closed loop's own cost over a large history: what `run_stage` adds around a stage.

    python benchmarks/bench_loop.py [--events 100000] [--errors 20000] [--samples 100]

Measures, in one warm process on the file store:

- a stage that succeeds at once, its agent holding 10 rules: gate + rules rendered + delivery
  counted (one memory write) + the call; then the same with ``task=`` (the rules ranked by
  full-text relevance to it);
- the default history diagnoser for a failure seen before (two indexed look-ups);
- a full cycle on a new video: fail → error logged → diagnosed (history first: the renderer's
  busy spell goes away on retry whatever the fix, so its retry-verified fix is overturned by the
  first recurrence and history skips it; the chained stand-in for an LLM answers) → event + rule
  → retry → success → event verified and error resolved.

No target in DESIGN.md §7; the gate alone has one (≤ 10 ms), and the loop should add little to it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    BENCH_DIR,
    p50,
    pct,
    synthetic_errors,
    synthetic_events,
    timed,
    write_error_log,
    write_index,
)

STAGE = "thumbnail"
AGENT = "thumb_maker"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--errors", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()

    from rayvault.learning.events import create_event
    from rayvault.learning.loop import (
        Diagnosis,
        Failure,
        StageContext,
        chain_diagnosers,
        diagnose_from_history,
    )
    from rayvault.learning.loop import run_stage as run
    from rayvault.learning.store import FileStore

    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    try:
        print(f"data root {root}: {args.events:,} events, {args.errors:,} error-log entries")
        t0 = time.perf_counter()
        write_index(root, synthetic_events(args.events))
        write_error_log(root, synthetic_errors(args.errors))
        # A stage of its own, so the synthetic history's open failures do not block its gate
        # (the gate still queries the whole history).
        (root / "policies.py").write_text(f"LEARNING_STAGE_AGENTS = {{{STAGE!r}: {AGENT!r}}}\n")
        store = FileStore(root)
        for i in range(10):
            create_event(
                run_id="bench",
                severity="FAIL",
                component=STAGE,
                # Ten failures grouping tells apart: texts of different lengths (variants of one
                # text in a few words would be one pattern, so one rule).
                symptom=" ".join(["Known failure", *["again"] * i]),
                fix_applied="do the thing",
                verification="checked",
                agent=AGENT,
                store=store,
            )
        store.index.sync("events")
        store.index.sync("errors")
        print(f"  history written and indexed in {time.perf_counter() - t0:.1f} s")

        def ok(ctx: StageContext) -> str:
            assert len(ctx.rules) >= 10
            return "ok"

        counter = iter(range(10**9))
        run("warm", STAGE, ok, store=store)
        success = timed(lambda: run(f"s{next(counter)}", STAGE, ok, store=store), args.samples)
        print(
            f"  run_stage, success at once, {AGENT} has 10 rules: p50 {p50(success):.2f} ms, "
            f"p95 {pct(success, 0.95):.2f} ms"
        )
        task = "Gadget review: a known failure on the listing, again"
        with_task = timed(
            lambda: run(f"s{next(counter)}", STAGE, ok, store=store, task=task), args.samples
        )
        print(
            f"  the same with task= (rules ranked by relevance to it): p50 "
            f"{p50(with_task):.2f} ms, p95 {pct(with_task, 0.95):.2f} ms"
        )

        def flaky(ctx: StageContext) -> str:
            if ctx.attempt == 1:
                raise TimeoutError(f"Thumbnail renderer busy for {ctx.video_id[1:]}s")
            return "ok"

        seen: list[Failure] = []

        def first_time(failure: Failure) -> Diagnosis:
            seen.append(failure)
            return Diagnosis("renderer saturated", "wait, then resubmit")

        assert run("c999999", STAGE, flaky, store=store, diagnose=first_time).ok
        lookups = timed(lambda: diagnose_from_history(seen[0]), args.samples)
        print(
            f"  diagnose_from_history (event + lesson look-ups): p50 {p50(lookups):.2f} ms, "
            f"p95 {pct(lookups, 0.95):.2f} ms"
        )

        chain = chain_diagnosers(diagnose_from_history, first_time)

        def cycle() -> None:
            result = run(f"c{next(counter)}", STAGE, flaky, store=store, diagnose=chain)
            assert result.ok and result.attempts == 2 and result.diagnoses

        cycles = timed(cycle, args.samples)
        print(
            "  run_stage, fail → diagnose (history, then the stand-in LLM) → learn → retry → "
            "verify: "
            f"p50 {p50(cycles):.2f} ms, p95 {pct(cycles, 0.95):.2f} ms"
        )
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
