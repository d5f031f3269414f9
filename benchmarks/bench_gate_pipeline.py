"""Does the gate stall a pipeline that is learning? A simulated pipeline, with and without the gate.

    python benchmarks/bench_gate_pipeline.py [--videos 150] [--seed 7] [--right 0.8]

150 videos × 4 stages (research, script, assets, tts) run through ``run_stage`` (one retry), on a
fresh file store each time. 23 kinds of failure recur, each belonging to one stage, each with
details that vary between occurrences (durations, ids, counts: one fingerprint per kind). A stage
run hits one of its stage's kinds 30 % of the time; a kind whose *correct* fix is among the rules
delivered to the agent is avoided 70 % of the time (the agent follows its rules, not always).
The diagnoser is LLM-like: it always answers, with the right fix 80 % of the time and a plausible
wrong one otherwise; a retry succeeds when the diagnosis it follows is right. Nobody resolves
anything by hand. Every random draw is seeded per (video, stage, attempt), so the runs with and
without the gate see the same failures and the same diagnoses.

Printed: the stage runs lost (blocked or failed) with the gate on and off, the ratio, and how
often the known-failures check warned or denied. The issue's bar: gate on ≤ 1.10 × gate off
(the gate that denied every recurring open failure lost 519 runs against 114).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("research", "script", "assets", "tts")
#: 23 recurring failures: a text with varying details (masked away by the fingerprint).
KINDS: tuple[tuple[str, str], ...] = tuple(
    (STAGES[i % len(STAGES)], text)
    for i, text in enumerate(
        (
            "Product page timed out after {dur}s for {asin}",
            "Outline has {n} sections, the brief asks for five",
            "Reference image rejected: background hallucinated on {asin}",
            "Voice clip clipped at {n} dB in segment {n2}",
            "Price anomaly on {asin}: listed at {n} dollars",
            "Hook line longer than {n} words",
            "Upscaler returned blank frame {n} of {n2}",
            "Narration speed drifted to {n} words per minute",
            "Review count missing on {asin}",
            "Claim without a source in paragraph {n}",
            "Logo distorted in thumbnail variant {n}",
            "Silence gap of {dur}s before segment {n}",
            "Search returned {n} results, fewer than needed",
            "Script mentions a discontinued model in line {n}",
            "Aspect ratio {n}x{n2} instead of portrait",
            "Pronunciation of brand name wrong in take {n}",
            "Affiliate link invalid for {asin}",
            "Call to action missing from the ending after {n} drafts",
            "Text overlay cut off at {n} pixels",
            "Background music louder than voice by {n} dB",
            "Comparison table has {n} empty cells",
            "Product render shows the wrong colour on {asin}",
            "Loudness normalisation failed with code {n}",
        )
    )
)
P_FAILURE = 0.30
P_RULE_AVOIDS = 0.70


def _fix(kind: int, right: bool) -> str:
    return f"apply remedy {chr(65 + kind)}{'' if right else ' (wrong)'} for failure kind"


@dataclass
class Outcome:
    """One simulated pipeline: stage runs lost, and what the known-failures check said."""

    runs: int = 0
    lost: int = 0
    blocked: int = 0
    failed: int = 0
    known_failures: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "lost": self.lost,
            "blocked": self.blocked,
            "failed": self.failed,
            "known_failures": dict(self.known_failures),
        }


def simulate(
    root: Path, *, gate: bool, videos: int = 150, seed: int = 7, right: float = 0.8
) -> Outcome:
    """Run the simulated pipeline in the (empty) data root ``root``; see the module doc."""
    from rayvault.learning.loop import Diagnosis, Failure, StageContext, run_stage
    from rayvault.learning.store import FileStore

    if not gate:
        (root / "policies.py").write_text("LEARNING_GATE_ENABLED = False\n")
    store = FileStore(root)
    outcome = Outcome()
    by_stage = {s: [i for i, (stage, _) in enumerate(KINDS) if stage == s] for s in STAGES}
    #: The kind a run is hitting, and whether the diagnosis its retry follows is right.
    hit: dict[str, int] = {}
    diagnosed_right: dict[str, bool] = {}

    def details(rng: random.Random) -> dict[str, str]:
        letters = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
        return {
            "dur": f"{rng.uniform(5, 90):.1f}",
            "asin": "B0" + "".join(rng.choice(letters) for _ in range(8)),
            "n": str(rng.randrange(2, 400)),
            "n2": str(rng.randrange(2, 400)),
        }

    def stage_fn(ctx: StageContext) -> str:
        key = ctx.run_id
        rng = random.Random(f"{seed}/{ctx.video_id}/{ctx.stage}/run")
        if ctx.attempt == 1:
            if rng.random() >= P_FAILURE:
                return "ok"
            kinds = by_stage[ctx.stage]
            # Some kinds are much more frequent than others, as in a real pipeline.
            kind = rng.choices(kinds, weights=[len(kinds) - i for i in range(len(kinds))])[0]
            if ctx.has_rule(_fix(kind, True)) and rng.random() < P_RULE_AVOIDS:
                return "ok"
            hit[key] = kind
        elif diagnosed_right.get(key):
            return "ok"
        text = KINDS[hit[key]][1].format(**details(random.Random(f"{key}/{ctx.attempt}")))
        raise RuntimeError(text)

    def llm(failure: Failure) -> Diagnosis:
        key = failure.context.run_id
        ok = random.Random(f"{seed}/{key}/{failure.attempt}/diagnose").random() < right
        diagnosed_right[key] = ok
        return Diagnosis(
            root_cause=f"kind {hit[key]} {'understood' if ok else 'misread'}",
            fix=_fix(hit[key], ok),
            source="llm",
        )

    for v in range(videos):
        video = f"v{v:03d}"
        for stage in STAGES:
            run = run_stage(
                video,
                stage,
                stage_fn,
                retries=1,
                diagnose=llm,
                run_id=f"{video}-{stage}",
                on_blocked="return",
                on_failure="return",
                store=store,
            )
            outcome.runs += 1
            if run.gate is not None and run.gate.enabled:
                known = next(c for c in run.gate.checks if c.name == "check_known_failures")
                outcome.known_failures[known.outcome] += 1
            if not run.ok:
                outcome.lost += 1
                outcome.blocked += run.blocked
                outcome.failed += not run.blocked
    store.close()
    return outcome


def compare(videos: int = 150, seed: int = 7, right: float = 0.8) -> tuple[Outcome, Outcome]:
    """The same simulated pipeline with the gate on, then off, each in a fresh data root."""
    results = []
    for gate in (True, False):
        root = Path(tempfile.mkdtemp(prefix="rv-gate-sim-"))
        try:
            results.append(simulate(root, gate=gate, videos=videos, seed=seed, right=right))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--right", type=float, default=0.8, help="diagnoser accuracy")
    args = parser.parse_args()
    t0 = time.perf_counter()
    on, off = compare(args.videos, args.seed, args.right)
    print(
        f"{args.videos} videos × {len(STAGES)} stages, {len(KINDS)} failure kinds, "
        f"diagnoser right {args.right:.0%}, seed {args.seed} ({time.perf_counter() - t0:.1f} s)"
    )
    print(
        f"  gate on : {on.lost} of {on.runs} stage runs lost "
        f"({on.blocked} blocked, {on.failed} failed)"
    )
    print(f"  gate off: {off.lost} of {off.runs} stage runs lost ({off.failed} failed)")
    print(f"  ratio on/off: {on.lost / max(off.lost, 1):.2f} (bar: ≤ 1.10)")
    print(f"  known-failures check with the gate on: {dict(on.known_failures)}")


if __name__ == "__main__":
    main()
