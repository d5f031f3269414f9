"""The loop never learns from the library's own failures (issue 10, item 6): a ``LearningError``
raised inside a stage, and the exception types given as ``ignore=``, propagate at once with
nothing logged, no event, no rule and no skill-graph node. Runs on both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayvault.learning import InvalidInputError, list_events, load_active_memory
from rayvault.learning.errors import list_errors
from rayvault.learning.exceptions import GateBlocked, LearningError
from rayvault.learning.loop import Diagnosis, Failure, StageContext, learning_stage, run_stage
from rayvault.learning.store import get_store

from . import _raw

pytestmark = pytest.mark.both_stores

ALWAYS = Diagnosis(root_cause="whatever failed", fix="do it differently", source="test")


def always(failure: Failure) -> Diagnosis:
    """A diagnoser that answers everything: were the loop to learn, it would write a rule."""
    return ALWAYS


def _warm_up(video_id: str = "v042", stage: str = "assets") -> None:
    """A first successful run, so the gate's baselines exist before the snapshot."""
    run_stage(video_id, stage, lambda ctx: "ok", diagnose=always)


def _without_gate_state(snapshot: dict[str, str]) -> dict[str, str]:
    """What a stage run may change although it learns nothing: the gate's run record."""
    return {
        k: v
        for k, v in snapshot.items()
        if "learning_gate" not in k and k not in ("<gate_states>", "<soul_snapshots>")
    }


def _nothing_learned(root: Path) -> None:
    store = get_store()
    assert list_errors(store=store) == []
    assert list_events(store=store) == []
    assert load_active_memory("dzine_producer", store=store).rules == []
    skills = root / store.policies.LEARNING_SKILL_GRAPH_DIR
    assert not skills.exists() or not any(skills.rglob("*.md"))


def test_a_decorated_stage_passed_to_run_stage_writes_no_junk_rule(root: Path) -> None:
    """The README's old mistake: a decorated stage handed to run_stage is called with the
    context as its video id; the InvalidInputError goes straight to the caller."""

    @learning_stage("assets", diagnose=always)
    def make_assets(ctx: StageContext, products: list[str]) -> list[str]:
        return [f"{p}.png" for p in products]

    _warm_up()
    before = _without_gate_state(_raw.everything(get_store()))
    with pytest.raises(InvalidInputError, match="video_id must be text, got StageContext"):
        run_stage("v042", "assets", make_assets, diagnose=always)  # type: ignore[arg-type]
    # on_failure="return" does not swallow it either: it is not the stage's failure.
    with pytest.raises(InvalidInputError):
        run_stage(
            "v042",
            "assets",
            make_assets,  # type: ignore[arg-type]
            diagnose=always,
            on_failure="return",
        )
    assert _without_gate_state(_raw.everything(get_store())) == before
    _nothing_learned(root)


def test_a_learning_error_inside_a_stage_propagates_on_the_first_attempt(root: Path) -> None:
    calls: list[int] = []

    def stage(ctx: StageContext) -> str:
        calls.append(ctx.attempt)
        raise InvalidInputError("severity must be one of INFO, WARN, FAIL, BLOCKER")

    with pytest.raises(InvalidInputError, match="severity must be one of"):
        run_stage("v042", "assets", stage, diagnose=always, retries=3)
    assert calls == [1]  # not retried
    _nothing_learned(root)


def test_a_nested_stage_blocked_by_the_gate_is_not_a_failure_of_the_outer_one(
    root: Path,
) -> None:
    """GateBlocked is a LearningError: the outer stage does not learn "Avoid: GateBlocked"."""
    from rayvault.learning import create_event

    create_event(
        run_id="r1",
        severity="FAIL",
        component="tts",
        symptom="voice clipped",
        video_id="v042",
    )
    errors_before = list_errors()
    events_before = list_events()

    @learning_stage("tts", diagnose=always)
    def voice(ctx: StageContext) -> str:
        return "audio"

    def outer(ctx: StageContext) -> str:
        return voice(ctx.video_id)

    with pytest.raises(GateBlocked):
        run_stage("v042", "assets", outer, diagnose=always)
    assert list_errors() == errors_before
    assert list_events() == events_before
    assert load_active_memory("dzine_producer").rules == []


def test_ignored_exception_types_propagate_without_learning(root: Path) -> None:
    class Cancelled(Exception):
        pass

    def cancelled(ctx: StageContext) -> str:
        raise Cancelled("operator pressed stop")

    _warm_up()
    before = _without_gate_state(_raw.everything(get_store()))
    with pytest.raises(Cancelled):
        run_stage("v042", "assets", cancelled, diagnose=always, ignore=Cancelled)
    with pytest.raises(KeyError):
        run_stage(
            "v042",
            "assets",
            lambda ctx: {}["missing"],
            diagnose=always,
            ignore=(Cancelled, KeyError),
            on_failure="return",
        )

    @learning_stage("assets", diagnose=always, ignore=(Cancelled,))
    def decorated(ctx: StageContext) -> str:
        raise Cancelled("stop")

    with pytest.raises(Cancelled):
        decorated("v042")
    with pytest.raises(Cancelled):
        decorated.run("v042")  # run() returns failed runs, but an ignored type is not one
    assert _without_gate_state(_raw.everything(get_store())) == before
    _nothing_learned(root)


def test_exceptions_not_ignored_are_still_learned_from(root: Path) -> None:
    """The pass-through is narrow: a stage's own failure still becomes an error and an event."""

    def fails(ctx: StageContext) -> str:
        raise ValueError("Product shape wrong in 3 of 5 images")

    run = run_stage(
        "v042", "assets", fails, diagnose=always, ignore=KeyError, on_failure="return", retries=0
    )
    assert run.outcome == "failed"
    assert len(list_errors()) == 1
    assert [e.event_id for e in list_events()] == run.event_ids


@pytest.mark.parametrize("bad", [ValueError("x"), "KeyError", (KeyError, 3), int])
def test_a_bad_ignore_argument_is_refused_before_anything_runs(root: Path, bad: object) -> None:
    before = _raw.everything(get_store())
    called: list[int] = []
    with pytest.raises(InvalidInputError, match="ignore must be an exception type"):
        run_stage("v042", "assets", lambda ctx: called.append(1), ignore=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="ignore must be an exception type"):
        learning_stage("assets", ignore=bad)  # type: ignore[arg-type]
    assert called == []
    assert _raw.everything(get_store()) == before
    assert issubclass(InvalidInputError, LearningError)
