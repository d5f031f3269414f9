"""``StepFailed``: a stage that runs an external step reports its failure as text and an exit
code, and the loop logs exactly that (no Python traceback), then diagnoses and retries as usual."""

from __future__ import annotations

import pytest

from rayvault.learning import Diagnosis, run_stage
from rayvault.learning.errors import list_errors
from rayvault.learning.loop import StageContext, StepFailed
from rayvault.learning.store import Store


def test_a_step_failure_is_logged_with_its_text_exit_code_and_context(store: Store) -> None:
    """The error log holds the step's own text and exit code; its context joins the loop's."""

    def stage(ctx: StageContext) -> None:
        raise StepFailed("ffmpeg: codec h265 not found", exit_code=7, context={"step": "encode"})

    run = run_stage("v042", "render", stage, retries=0, on_failure="return", store=store)
    assert run.outcome == "failed"
    [entry] = list_errors(store=store)
    assert entry.error == "ffmpeg: codec h265 not found"
    assert "Traceback" not in entry.error
    assert entry.exit_code == 7
    assert entry.context["step"] == "encode"
    assert entry.context["run_id"] == run.run_id and entry.context["attempt"] == 1


def test_a_step_failure_is_diagnosed_and_retried_like_any_other(store: Store) -> None:
    """With a diagnosis the retry runs with the new rule; a plain exception still logs exit 1."""
    calls: list[int] = []

    def stage(ctx: StageContext) -> str:
        calls.append(ctx.attempt)
        if not ctx.has_rule("pass --fast"):
            raise StepFailed("render timed out after 600s", exit_code=4)
        return "ok"

    run = run_stage(
        "v042",
        "render",
        stage,
        retries=1,
        diagnose=lambda failure: Diagnosis("slow mode", "pass --fast"),
        store=store,
    )
    assert run.ok and calls == [1, 2]
    assert [e.exit_code for e in list_errors(store=store)] == [4]

    def plain(ctx: StageContext) -> None:
        raise ValueError("bad frame")

    with pytest.raises(ValueError):
        run_stage("v043", "render", plain, retries=0, store=store)
    assert sorted(e.exit_code for e in list_errors(store=store)) == [1, 4]
