"""A video pipeline wired into the closed loop: the gate, the decorator, ``run_stage``, an
LLM-backed diagnoser and logging.

Run it from a checkout, after ``pip install -e .``::

    python examples/pipeline.py --root /tmp/pipeline-example v042
    python examples/pipeline.py --root /tmp/pipeline-example v043   # the lesson is already there

The first run's image stage fails, the diagnoser explains why, the fix becomes a rule in the
image agent's memory, and the retry succeeds because the rule is in its prompt. The second video
gets the rule from its first attempt. Exit codes follow the gate's: 0 done, 2 a stage was held by
the learning gate, 1 a stage failed after the loop's retries.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from rayvault.learning import GateBlocked
from rayvault.learning.loop import (
    Diagnosis,
    Failure,
    StageContext,
    chain_diagnosers,
    diagnose_from_history,
    learning_stage,
    run_stage,
)

log = logging.getLogger("pipeline")


# -- an LLM-backed diagnoser --------------------------------------------------------------------
DIAGNOSIS_PROMPT = """You diagnose failures of one stage of a video pipeline.
Answer with JSON only: {{"root_cause": "...", "fix": "...", "severity": "FAIL" or "BLOCKER"}},
or {{}} when you cannot tell. The fix must be an instruction the stage's agent can follow.

Stage: {stage} (agent: {agent}), attempt {attempt}
Failure: {symptom}
Traceback (last lines):
{traceback}
Rules the agent already had:
{rules}
"""


def complete(prompt: str) -> str:
    """Send ``prompt`` to your LLM and return its text (Anthropic, OpenAI, a local model…).

    This example answers offline from a two-line runbook, so it runs anywhere without a key.
    """
    runbook = {
        "reference angle": {
            "root_cause": "The image prompt asked for a top-down shot of the product",
            "fix": "Always ask for the original 3/4 reference angle",
            "severity": "FAIL",
        },
        "rate limit": {
            "root_cause": "Too many catalogue requests in one minute",
            "fix": "Wait for the Retry-After delay before the next request",
        },
    }
    failure = prompt.split("Failure: ", 1)[-1].splitlines()[0]
    for key, answer in runbook.items():
        if key in failure:
            return json.dumps(answer)
    return "{}"


def llm_diagnoser(failure: Failure) -> Diagnosis | None:
    """Ask the LLM for a root cause and fix; None when it cannot tell (the loop then opens an
    event for a person and the gate holds the stage)."""
    prompt = DIAGNOSIS_PROMPT.format(
        stage=failure.stage,
        agent=failure.agent or "none",
        attempt=failure.attempt,
        symptom=failure.symptom,
        traceback="\n".join(failure.error.error.splitlines()[-6:]),
        rules=failure.context.rendered_rules or "(none)",
    )
    try:
        answer = json.loads(complete(prompt))
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict) or not answer.get("fix"):
        return None
    return Diagnosis(
        root_cause=str(answer.get("root_cause", "")),
        fix=str(answer["fix"]),
        severity=str(answer.get("severity", "FAIL")),
        source="llm",
    )


#: History first (a failure resolved before needs no LLM call), then the LLM.
DIAGNOSE = chain_diagnosers(diagnose_from_history, llm_diagnoser)


# -- the stages ---------------------------------------------------------------------------------
# The decorated functions use the process's default store (RAYVAULT_ROOT), set in main().
@learning_stage("research", retries=1, diagnose=DIAGNOSE)
def research(ctx: StageContext, topic: str) -> list[str]:
    """Shortlist products for ``topic``."""
    log.info("research for %s (attempt %d)", ctx.video_id, ctx.attempt)
    return ["B0ABC12345", "B0DEF67890", "B0GHI11223"]


@learning_stage("script", retries=1, diagnose=DIAGNOSE)
def write_script(ctx: StageContext, products: list[str]) -> str:
    return f"A comparison of {len(products)} products."


def image_model(prompt: str) -> list[str]:
    """A stand-in for an image model: wrong product shapes unless told the angle."""
    if "3/4 reference angle" not in prompt:
        raise ValueError("Product shape wrong in 2 of 3 images: reference angle was top-down")
    return ["img-1.png", "img-2.png", "img-3.png"]


@learning_stage("assets", retries=1, diagnose=DIAGNOSE)
def make_assets(ctx: StageContext, products: list[str]) -> list[str]:
    """Generate the product images; the agent's learned rules are part of its prompt."""
    prompt = f"Draw product shots for {', '.join(products)}.\n{ctx.rendered_rules}"
    return image_model(prompt)


def voice_over(ctx: StageContext) -> str:
    return f"{ctx.video_id}-voice.wav"


# -- the pipeline -------------------------------------------------------------------------------
def run_pipeline(video_id: str, topic: str) -> int:
    try:
        products = research(video_id, topic)
        script = write_script(video_id, products)
        images = make_assets(video_id, products)
        # The same loop without the decorator, keeping the whole StageRun.
        tts = run_stage(video_id, "tts", voice_over, retries=0, diagnose=DIAGNOSE)
    except GateBlocked as blocked:
        log.error("held by the learning gate: %s", blocked.result.reason)
        for check in blocked.result.checks:
            log.error("  [%s] %s", "PASS" if check.passed else "FAIL", check.name)
        return 2
    except Exception as e:  # the loop already logged, diagnosed and recorded it
        log.error("stage failed after the loop's retries: %s", e)
        return 1
    log.info(
        "done: %d products, %r, %d images, %s (tts took %d attempt)",
        len(products),
        script,
        len(images),
        tts.value,
        tts.attempts,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("video_id", nargs="?", default="v042")
    parser.add_argument("--root", help="data root (default: $RAYVAULT_ROOT or the cwd)")
    parser.add_argument("--topic", default="budget robot vacuums")
    args = parser.parse_args(argv)
    if args.root:
        os.environ["RAYVAULT_ROOT"] = args.root
    # The loop reports every step at INFO on the "rayvault.learning" logger.
    logging.basicConfig(level=logging.INFO, format="%(levelname)-7s %(name)s: %(message)s")
    return run_pipeline(args.video_id, args.topic)


if __name__ == "__main__":
    sys.exit(main())
