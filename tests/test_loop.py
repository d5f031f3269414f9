"""The closed loop: gate → execute → fail → diagnose → learn → apply → retry, and its record.

Runs on both stores; tests about the bytes of the file layout are marked ``files_only``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from rayvault.cli import main
from rayvault.learning import (
    GateBlocked,
    InvalidInputError,
    create_event,
    get_event,
    list_events,
    load_active_memory,
    update_event,
)
from rayvault.learning.errors import get_error, list_errors, log_error, resolve_error
from rayvault.learning.gate import learning_gate
from rayvault.learning.loop import (
    Diagnosis,
    Failure,
    LoopStep,
    StageContext,
    StageRun,
    chain_diagnosers,
    diagnose_from_history,
    learning_stage,
    run_stage,
)
from rayvault.learning.store import FileStore, Store, get_store

from . import _raw
from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores

FIX = "Use the original 3/4 reference angle"
ANGLE = Diagnosis(
    root_cause="Reference photo switched from 3/4 to top-down", fix=FIX, source="runbook"
)


def angle_diagnoser(failure: Failure) -> Diagnosis | None:
    return ANGLE if "reference angle" in failure.symptom else None


def never(failure: Failure) -> Diagnosis | None:
    return None


class AssetsStage:
    """Fails until the rendered rules carry the fix; records what each attempt received."""

    def __init__(self) -> None:
        self.seen: list[StageContext] = []

    def __call__(self, ctx: StageContext) -> str:
        self.seen.append(ctx)
        if not ctx.has_rule("3/4 reference angle"):
            raise ValueError(
                f"Product shape wrong in {len(self.seen) + 1} of 5 images: reference angle top-down"
            )
        return "5 images"


def steps(run_or_event: Any) -> list[str]:
    items = run_or_event.steps if isinstance(run_or_event, StageRun) else run_or_event.loop_steps
    return [s.step if isinstance(s, LoopStep) else s["step"] for s in items]


def test_fails_once_then_succeeds_once_the_rule_is_present(root: Path, clock: Clock) -> None:
    """The learned rule reaches fn on the retry; the event ends verified, the error resolved."""
    stage = AssetsStage()
    run = run_stage("v042", "assets", stage, diagnose=angle_diagnoser, run_id="v042-run-1")

    assert run.ok and run.outcome == "succeeded"
    assert run.value == "5 images" and run.attempts == 2
    first, retry = stage.seen
    assert (first.attempt, retry.attempt) == (1, 2)
    assert first.rendered_rules == "" and first.rules == ()
    assert first.agent == retry.agent == "dzine_producer"
    assert f"Do: {FIX}." in retry.rendered_rules
    assert retry.rendered_rules.startswith("Learned rules for dzine_producer")
    assert [r.rule_id for r in retry.rules] == run.rule_ids
    assert retry.is_retry and isinstance(retry.previous_error, ValueError)

    [event] = list_events()
    assert run.event_ids == [event.event_id]
    assert event.status == "verified" and event.resolved
    assert event.run_id == "v042-run-1"
    assert event.agent == "dzine_producer" and event.rule_id == run.rule_ids[0]
    assert event.root_cause == ANGLE.root_cause and event.fix_applied == FIX
    assert event.verification == (
        "closed loop: assets of v042 succeeded on attempt 2 of 2 (run v042-run-1) with "
        f"{event.rule_id} delivered to dzine_producer"
    )
    [error_id] = run.error_ids
    error = get_error(error_id)
    assert event.source_error_id == error_id and error.learning_event_id == event.event_id
    assert error.resolved and error.resolution is not None
    assert (error.resolution.root_cause, error.resolution.fix) == (ANGLE.root_cause, FIX)
    assert "Traceback (most recent call last)" in error.error
    assert error.context == {
        "run_id": "v042-run-1",
        "attempt": 1,
        "agent": "dzine_producer",
        "rule_ids": [],
        "rules_sha256": None,  # no rules delivered: no block
    }
    assert event.fingerprint == error.fingerprint  # the event's symptom is the failure line
    assert (
        event.symptom
        == "ValueError: Product shape wrong in 2 of 5 images: reference angle top-down"
    )

    expected = [
        "gate",
        "execute",
        "fail",
        "diagnose",
        "learn",
        "apply",
        "retry",
        "execute",
        "succeed",
        "verify",
    ]
    assert steps(run) == expected
    assert steps(event) == expected  # the replay is on the event
    # A rule learned in this run is not counted again when delivered into its retry.
    [rule] = load_active_memory("dzine_producer").rules
    assert rule.applied_count == 1


def test_delivery_increments_applied_count_once_per_run(root: Path, clock: Clock) -> None:
    """Each rule delivered into a run counts once (applied_count, last_applied), unarchived."""
    run_stage("v042", "assets", AssetsStage(), diagnose=angle_diagnoser)
    snapshots = get_store().list_memory_snapshots("dzine_producer")
    clock.advance(hours=1)

    stage = AssetsStage()
    run = run_stage("v043", "assets", stage)
    assert run.ok and run.attempts == 1
    [ctx] = stage.seen
    [rule] = load_active_memory("dzine_producer").rules
    assert rule.applied_count == 2
    assert rule.last_applied == clock.now
    assert ctx.rules[0].applied_count == 2  # the context carries the rules as counted
    assert run.delivered_rule_ids == [rule.rule_id]
    # counting a delivery is not a new version
    assert get_store().list_memory_snapshots("dzine_producer") == snapshots

    # Delivered on two attempts of one run: counted once.
    calls: list[int] = []

    def flaky(ctx: StageContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            raise TimeoutError("Render farm busy for 12s")
        return "ok"

    def busy(failure: Failure) -> Diagnosis:
        return Diagnosis(root_cause="farm saturated", fix="wait and retry", severity="WARN")

    run = run_stage("v044", "assets", flaky, diagnose=busy)
    assert calls == [1, 2] and run.ok
    counts = {r.rule_id: r.applied_count for r in load_active_memory("dzine_producer").rules}
    assert counts[rule.rule_id] == 3
    assert counts[run.rule_ids[0]] == 1


def test_failure_without_diagnosis_leaves_an_open_event_and_the_gate_blocks(root: Path) -> None:
    """No diagnosis: an open FAIL event, no rule, no retry; the next gate holds the stage."""
    calls: list[int] = []

    def tts(ctx: StageContext) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError("Voice engine returned 0 bytes for segment 7 of 12")

    with pytest.raises(RuntimeError, match="0 bytes for segment 7"):
        run_stage("v103", "tts", tts, retries=3, diagnose=never)
    assert calls == [1]  # nothing learned: a retry would repeat the same run

    [event] = list_events()
    assert event.status == "open" and event.severity == "FAIL"
    assert event.rule_id is None and event.root_cause == "" and event.fix_applied == ""
    assert load_active_memory("publisher").rules == []
    [error] = list_errors()
    assert not error.resolved and error.learning_event_id == event.event_id
    assert steps(event) == ["gate", "execute", "fail", "diagnose", "learn", "give_up"]
    assert "no diagnosis: not retried" in event.loop_steps[-1]["detail"]

    gate = learning_gate("v103", "tts")
    assert gate.blocked
    regressions = next(c for c in gate.checks if c.name == "check_regressions")
    assert regressions.details == {"event_ids": [event.event_id]}

    with pytest.raises(GateBlocked) as blocked:
        run_stage("v103", "tts", tts)
    assert blocked.value.result.blocked
    assert event.event_id in blocked.value.result.reason
    assert calls == [1]  # the stage never ran


def test_gate_block_raises_or_reports(root: Path) -> None:
    """A blocked gate raises GateBlocked carrying the result, or returns the blocked run."""
    create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]  # open FAIL on v042/assets
    called: list[int] = []

    def stage(ctx: StageContext) -> None:
        called.append(1)

    with pytest.raises(GateBlocked) as raised:
        run_stage("v042", "assets", stage)
    result = raised.value.result
    assert result.blocked and result.video_id == "v042" and result.stage == "assets"
    assert str(raised.value).startswith("learning gate blocked v042/assets: check_regressions")

    run = run_stage("v042", "assets", stage, on_blocked="return")
    assert run.outcome == "blocked" and run.blocked and not run.ok
    assert run.attempts == 0 and run.gate is not None and run.gate.blocked
    assert steps(run) == ["gate"] and run.steps[0].data["failed_checks"] == ["check_regressions"]
    with pytest.raises(GateBlocked):
        run.result()
    assert called == []
    assert list_errors() == []  # a blocked stage is not a failure


def test_decorator_runs_the_loop_and_passes_arguments(root: Path) -> None:
    """@learning_stage: call with a video id and the function's own arguments."""
    seen: list[tuple[int, str, int]] = []

    @learning_stage("assets", retries=1, diagnose=angle_diagnoser)
    def make_assets(ctx: StageContext, product: str, *, count: int = 5) -> list[str]:
        """Draw the product images."""
        seen.append((ctx.attempt, product, count))
        if not ctx.has_rule("3/4 reference angle"):
            raise ValueError("Product shape wrong: reference angle top-down")
        return [f"{product}-{i}.png" for i in range(count)]

    assert make_assets("v042", "B0ABC", count=2) == ["B0ABC-0.png", "B0ABC-1.png"]
    assert seen == [(1, "B0ABC", 2), (2, "B0ABC", 2)]
    assert make_assets.__name__ == "make_assets"
    assert make_assets.__doc__ == "Draw the product images."
    assert make_assets.stage == "assets"

    run = make_assets.run("v043", "B0XYZ")
    assert isinstance(run, StageRun) and run.ok and run.attempts == 1
    assert run.value == [f"B0XYZ-{i}.png" for i in range(5)]

    create_event(**event_kwargs(video_id="v044", verification=""))  # type: ignore[arg-type]
    with pytest.raises(GateBlocked):
        make_assets("v044", "B0ABC")
    blocked = make_assets.run("v044", "B0ABC")
    assert blocked.outcome == "blocked"

    @learning_stage("tts", retries=0, diagnose=never)
    def speak(ctx: StageContext) -> None:
        raise RuntimeError("no voice")

    with pytest.raises(RuntimeError, match="no voice"):
        speak("v042")
    failed = speak.run("v045")
    assert failed.outcome == "failed" and isinstance(failed.error, RuntimeError)


@pytest.mark.files_only("a corrupt error-log file")
def test_a_success_is_kept_when_its_events_cannot_be_verified(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bookkeeping after a success (a corrupt error log) warns; the stage's value is kept and
    the corrupt file is left as it is."""
    log_path = root / "data/error_log.json"

    def stage(ctx: StageContext) -> str:
        if ctx.attempt == 1:
            raise ValueError("Product shape wrong: reference angle top-down")
        log_path.write_text("{broken")
        return "done"

    with caplog.at_level(logging.WARNING, logger="rayvault.learning"):
        run = run_stage("v042", "assets", stage, diagnose=angle_diagnoser)
    assert run.ok and run.value == "done"
    assert "succeeded, but its learning events could not be verified" in caplog.text
    last = run.steps[-1]
    assert last.step == "verify" and last.data["verify_error"]["type"] == "CorruptFileError"
    assert log_path.read_text() == "{broken"
    assert get_event(run.event_ids[0]).status == "applied"  # not verified: nothing pretended


def test_custom_diagnoser_sees_the_failure_and_sets_the_event(root: Path) -> None:
    """A diagnoser gets the exception, the logged entry and the context; its severity and
    source are recorded."""
    received: list[Failure] = []

    def llm(failure: Failure) -> Diagnosis:
        received.append(failure)
        return Diagnosis(
            root_cause="The model was asked for 6 images in one call",
            fix="Ask for at most 4 images per call",
            severity="blocker",
            source="llm",
        )

    def stage(ctx: StageContext) -> str:
        if "at most 4 images" not in ctx.rendered_rules:
            raise KeyError("image-6")
        return "ok"

    run = run_stage("v042", "assets", stage, diagnose=llm)
    assert run.ok
    [failure] = received
    assert isinstance(failure.exception, KeyError)
    assert (failure.video_id, failure.stage, failure.agent, failure.attempt) == (
        "v042",
        "assets",
        "dzine_producer",
        1,
    )
    assert failure.error.id == run.error_ids[0]
    assert failure.fingerprint == failure.error.fingerprint
    assert failure.symptom == "KeyError: 'image-6'"
    assert failure.store is get_store()
    [diagnosis] = run.diagnoses
    assert diagnosis.severity == "BLOCKER"
    event = get_event(run.event_ids[0])
    assert event.severity == "BLOCKER" and event.status == "verified"
    diagnose_step = next(s for s in event.loop_steps if s["step"] == "diagnose")
    assert diagnose_step["diagnosis"]["source"] == "llm"
    assert diagnose_step["detail"].startswith("from llm: root cause: The model was asked")


def test_a_diagnoser_that_fails_counts_as_no_diagnosis(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An LLM call that raises does not hide the stage's failure: it is logged, the event open."""

    def broken(failure: Failure) -> Diagnosis:
        raise ConnectionError("LLM endpoint unreachable")

    with caplog.at_level(logging.WARNING, logger="rayvault.learning"):
        run = run_stage("v042", "assets", AssetsStage(), diagnose=broken, on_failure="return")
    assert run.outcome == "failed" and run.attempts == 1
    assert "the diagnoser failed: ConnectionError: LLM endpoint unreachable" in caplog.text
    [event] = list_events()
    assert event.status == "open"
    step = next(s for s in event.loop_steps if s["step"] == "diagnose")
    assert step["diagnoser_error"] == {
        "type": "ConnectionError",
        "message": "LLM endpoint unreachable",
    }


def test_a_diagnoser_must_return_a_diagnosis(root: Path) -> None:
    """Returning anything else is a clear error, not a silent pass."""
    with pytest.raises(InvalidInputError, match="must return a Diagnosis or None, got dict"):
        run_stage("v042", "assets", AssetsStage(), diagnose=lambda f: {"fix": "x"})  # type: ignore[arg-type,return-value]
    with pytest.raises(InvalidInputError, match="needs a root cause or a fix"):
        Diagnosis(root_cause=" ", fix="")
    with pytest.raises(InvalidInputError, match="severity must be one of"):
        Diagnosis(root_cause="x", fix="y", severity="CRITICAL")


def test_retries_exhausted_raise_the_last_exception_and_leave_everything_open(root: Path) -> None:
    """The same failure on every attempt: one event, every error linked to it, all open."""

    def stage(ctx: StageContext) -> None:
        raise ValueError(
            f"Product shape wrong in {ctx.attempt} of 5 images: reference angle top-down"
        )

    with pytest.raises(ValueError, match="wrong in 3 of 5") as raised:
        run_stage("v042", "assets", stage, retries=2, diagnose=angle_diagnoser)
    assert raised.value.__traceback__ is not None

    [event] = list_events()
    assert event.status == "applied" and not event.resolved  # its rule is in memory, unproven
    errors = list_errors()
    assert len(errors) == 3
    assert all(not e.resolved and e.learning_event_id == event.event_id for e in errors)
    assert steps(event) == [
        "gate", "execute", "fail", "diagnose", "learn", "apply", "retry",
        "execute", "fail", "learn", "retry",
        "execute", "fail", "learn", "give_up",
    ]  # fmt: skip
    assert "retries exhausted after 3 attempts" in event.loop_steps[-1]["detail"]
    assert learning_gate("v042", "assets").blocked

    run = run_stage(
        "v043", "assets", stage, retries=0, diagnose=angle_diagnoser, on_failure="return"
    )
    assert run.outcome == "failed" and run.attempts == 1
    assert isinstance(run.error, ValueError)
    with pytest.raises(ValueError):
        run.result()
    assert run.to_dict()["error"] == {"type": "ValueError", "message": str(run.error)}


def test_history_diagnoses_a_recurring_failure_with_different_numbers(
    root: Path, clock: Clock
) -> None:
    """The second occurrence is diagnosed from the first one's verified event, by fingerprint.
    (A person verified the fix: a fix verified only by the retry would be overturned by the
    recurrence at a first attempt that carried it, and history would not hand it back.)"""

    def research(ctx: StageContext) -> str:
        if ctx.attempt == 1 and ctx.video_id != "v2":
            raise TimeoutError(
                f"Timeout after {30 + len(ctx.video_id)}.2s on B0ABC{ctx.video_id[-1]}1234"
            )
        return "ok"

    first = run_stage(
        "v1", "research", research, diagnose=lambda f: Diagnosis("API slow", "Raise the timeout")
    )
    update_event(first.event_ids[0], status="verified", verified_by="person")
    assert run_stage("v2", "research", research).attempts == 1  # the rule carried, a success
    clock.advance(minutes=5)
    second = run_stage("v22", "research", research)  # the default diagnoser: history
    assert second.ok
    [diagnosis] = second.diagnoses
    assert diagnosis == Diagnosis(
        root_cause="API slow",
        fix="Raise the timeout",
        source="history",
        reference=first.event_ids[0],
    )
    assert second.rule_ids == first.rule_ids  # the same rule, applied again
    [rule] = load_active_memory("researcher").rules
    assert rule.applied_count == 4  # learned, delivered into runs 2 and 3, learned again


def test_history_uses_the_most_recent_error_log_lesson(root: Path, clock: Clock) -> None:
    """A lesson in the error log (resolved by hand) diagnoses the failure; the newest wins."""
    old = log_error("v1", "discover-products", "LookupError: Price missing for B0AAA11111")
    resolve_error(old.id, "old cause", "old fix")
    clock.advance(days=1)
    new = log_error("v2", "research", "LookupError: Price missing for B0BBB22222")
    resolve_error(new.id, "Scraper skipped sponsored rows", "Read sponsored rows too")
    clock.advance(days=1)

    def research(ctx: StageContext) -> str:
        if ctx.attempt == 1:
            raise LookupError("Price missing for B0CCC33333")
        return "ok"

    failure_seen: list[Failure] = []

    def spy(failure: Failure) -> Diagnosis | None:
        failure_seen.append(failure)
        return None

    # History first, the spy (an LLM, say) only when history knows nothing.
    run = run_stage(
        "v3", "research", research, diagnose=chain_diagnosers(diagnose_from_history, spy)
    )
    assert run.ok and failure_seen == []
    [diagnosis] = run.diagnoses
    assert (diagnosis.root_cause, diagnosis.fix, diagnosis.reference) == (
        "Scraper skipped sponsored rows",
        "Read sponsored rows too",
        new.id,
    )
    assert get_store().latest_resolution(str(new.fingerprint)) is not None


def test_latest_resolution_is_an_indexed_lookup(store: Store, clock: Clock) -> None:
    """The store answers the newest resolution of a fingerprint through its index."""
    a = log_error("v1", "research", "Price missing for B0AAA11111")
    assert store.latest_resolution(str(a.fingerprint)) is None
    b = log_error("v2", "research", "Price missing for B0BBB22222")
    resolve_error(b.id, "cause b", "fix b")
    clock.advance(hours=1)
    resolve_error(a.id, "cause a", "fix a")  # older occurrence, newer resolution
    found = store.latest_resolution(str(a.fingerprint))
    assert found is not None and found.id == a.id
    assert store.latest_resolution("research:0000000000000000") is None

    from rayvault.learning.store._sql import LATEST_RESOLUTION_SQL

    if isinstance(store, FileStore):
        conn = store.index.sync("errors")
        plan = " ".join(
            str(row[-1])
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + LATEST_RESOLUTION_SQL.format(ph="?"), ("x",)
            )
        )
        assert "errors_fingerprint" in plan and "SCAN errors" not in plan
        return
    from rayvault.learning.store.postgres import LATEST_RESOLUTION, PostgresStore

    assert isinstance(store, PostgresStore)
    with store.connect() as pg:  # a handful of rows: make the planner show what it can use
        pg.execute("SET enable_seqscan = off")
        plan = " ".join(str(row[0]) for row in pg.execute("EXPLAIN " + LATEST_RESOLUTION, ("x",)))
    assert "errors_fingerprint" in plan and "Seq Scan" not in plan


def test_unmapped_stage_runs_without_an_agent(root: Path) -> None:
    """A stage with no agent gets no rules; a diagnosed failure is recorded on its event only."""
    (root / "policies.py").write_text('LEARNING_STAGE_ALIASES = {"quality-check": "qa"}\n')
    attempts: list[StageContext] = []

    def qa(ctx: StageContext) -> str:
        attempts.append(ctx)
        if ctx.attempt == 1:
            raise AssertionError("3 frames black")
        return "ok"

    run = run_stage("v042", "qa", qa, diagnose=lambda f: Diagnosis("codec", "re-encode"))
    assert run.ok and run.agent is None
    assert all(c.agent is None and c.rendered_rules == "" for c in attempts)
    [event] = list_events()
    assert event.rule_id is None and event.status == "verified"
    apply_step = next(s for s in event.loop_steps if s["step"] == "apply")
    assert "has no agent" in apply_step["detail"]


def test_progress_and_logging_see_every_step(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The progress callback gets each step as it happens; logging gets it at INFO."""
    seen: list[LoopStep] = []
    with caplog.at_level(logging.INFO, logger="rayvault.learning"):
        run = run_stage(
            "v042", "assets", AssetsStage(), diagnose=angle_diagnoser, progress=seen.append
        )
    assert seen == run.steps
    assert all(
        s.video_id == "v042" and s.stage == "assets" and s.run_id == run.run_id for s in seen
    )
    assert "v042/assets retry (attempt 2): attempt 2 of 2" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_bad_arguments_are_refused_before_anything_is_written(root: Path) -> None:
    """Invalid ids and options are clear errors; nothing is written."""
    before = _raw.everything(get_store())
    with pytest.raises(InvalidInputError, match="retries must be a whole number"):
        run_stage("v042", "assets", AssetsStage(), retries=-1)
    with pytest.raises(InvalidInputError, match="on_blocked must be 'raise' or 'return'"):
        run_stage("v042", "assets", AssetsStage(), on_blocked="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="invalid video id '../x'"):
        run_stage("../x", "assets", AssetsStage())
    with pytest.raises(InvalidInputError, match="retries must be a whole number"):
        learning_stage("assets", retries=True)
    assert _raw.everything(get_store()) == before


def test_events_get_replays_the_loop(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rayvault-learn events get ID` shows the loop's steps; --json carries them."""
    run = run_stage("v042", "assets", AssetsStage(), diagnose=angle_diagnoser)
    event_id = run.event_ids[0]
    capsys.readouterr()
    assert main(["events", "get", event_id]) == 0
    out = capsys.readouterr().out
    assert f"Closed loop, run {run.run_id}" in out
    for name in (
        "gate",
        "execute",
        "fail",
        "diagnose",
        "learn",
        "apply",
        "retry",
        "succeed",
        "verify",
    ):
        assert f" {name} " in out
    assert "from runbook: root cause: Reference photo switched" in out
    assert main(["events", "get", event_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["step"] for s in data["loop_steps"]] == steps(run)
    assert data["loop_steps"][2]["error_id"] == run.error_ids[0]
    assert set(data["loop_steps"][0]) == {"step", "at", "attempt", "detail", "agent"}
