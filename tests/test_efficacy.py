"""Separate rule counters with evidence (issue 14, item 1): occurrences, deliveries, recurrences
and successes per rule, counted by ``run_stage`` for every attempt; the rule ids and the hash of
the block each attempt delivered; ``rule_history`` and ``rayvault-learn rules history``.

Runs on both stores."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import (
    InvalidInputError,
    RuleNotFoundError,
    create_event,
    get_event,
    load_active_memory,
    record_attempt,
    rule_history,
    tombstone_rule,
)
from rayvault.learning.efficacy import RULE_ATTEMPTS_KEPT
from rayvault.learning.errors import get_error
from rayvault.learning.loop import Diagnosis, Failure, StageContext, StageRun, run_stage
from rayvault.learning.models import AgentMemory, Rule, RuleAttempt
from rayvault.learning.store import FileStore, Store

from . import _workers
from ._stages import Scripted
from .conftest import Clock
from .test_original_formats import FIXTURE, load_original

pytestmark = pytest.mark.both_stores

AGENT = "dzine_producer"
#: Two failure patterns of the assets stage (each message the same every time).
ANGLE = "ValueError: product shape wrong: reference angle top-down"
MEMORY = "RuntimeError: out of GPU memory while upscaling the background"
FIXES = {
    ANGLE: Diagnosis(root_cause="Reference switched to top-down", fix="Use the 3/4 angle"),
    MEMORY: Diagnosis(root_cause="Upscaler batch too large", fix="Upscale one image at a time"),
}


def diagnose(failure: Failure) -> Diagnosis | None:
    return next((d for text, d in FIXES.items() if text.split(": ", 1)[1] in failure.symptom), None)


def rules_by_text(store: Store) -> dict[str, Rule]:
    rules = load_active_memory(AGENT, store=store).rules
    return {("angle" if "3/4 angle" in r.rule else "memory"): r for r in rules}


def counters(rule: Rule) -> tuple[int, int, int, int, int]:
    return (
        rule.occurrences,
        rule.deliveries,
        rule.recurrences,
        rule.successes,
        rule.applied_count,
    )


def scripted_runs(store: Store) -> tuple[StageRun, StageRun, Scripted]:
    """Run A: fails with ANGLE, learns its rule, succeeds with it. Run B: fails with MEMORY
    (ANGLE's rule delivered: not a recurrence), learns a second rule, fails with ANGLE while its
    rule is delivered (a recurrence, and the failure learned again), then succeeds."""
    a = run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=diagnose, store=store)
    stage_b = Scripted([MEMORY, ANGLE, None])
    b = run_stage("v2", "assets", stage_b, retries=2, diagnose=diagnose, store=store)
    assert a.ok and b.ok and b.attempts == 3
    return a, b, stage_b


def test_counters_after_a_scripted_sequence(store: Store, clock: Clock) -> None:
    """Each counter counts one thing; applied_count keeps its seed meaning."""
    a, b, stage_b = scripted_runs(store)
    rules = rules_by_text(store)
    angle, memory = rules["angle"], rules["memory"]
    # occurrences: learned in A and again in B; deliveries: A2, B1, B2, B3; recurrences: B2;
    # successes: A2, B3; applied_count: created (1), delivered once into run B (2), learned
    # again in B (3) — its delivery into run A, where it was learned, is not counted.
    assert counters(angle) == (2, 4, 1, 2, 3)
    # Learned in B1, delivered in B2 (failed with another pattern) and B3 (succeeded).
    assert counters(memory) == (1, 2, 0, 1, 1)
    assert a.rule_ids == [angle.rule_id] and b.rule_ids == [memory.rule_id, angle.rule_id]
    # The attempts kept on the rule: run, video, stage, attempt, outcome, the block's hash.
    kept = [(x["video_id"], x["attempt"], x["outcome"], x["recurred"]) for x in angle.attempts]
    assert kept == [
        ("v1", 2, "succeeded", False),
        ("v2", 1, "failed", False),
        ("v2", 2, "failed", True),
        ("v2", 3, "succeeded", False),
    ]
    b2 = RuleAttempt.model_validate(angle.attempts[2])
    ctx = stage_b.seen[1]
    assert b2.run_id == b.run_id and b2.stage == "assets"
    assert b2.rules_sha256 == hashlib.sha256(ctx.rendered_rules.encode()).hexdigest()
    assert b2.rules_sha256 == ctx.rules_sha256
    assert {r.rule_id for r in ctx.rules} == {angle.rule_id, memory.rule_id}
    assert b2.error_id == b.error_ids[1]
    assert [x["recurred"] for x in memory.attempts] == [False, False]


def test_failed_attempts_record_what_they_delivered(store: Store, clock: Clock) -> None:
    """A failed attempt's error-log entry and the run's events carry the rule ids and hash."""
    _, b, stage_b = scripted_runs(store)
    angle = rules_by_text(store)["angle"]
    first, second = (get_error(e, store=store) for e in b.error_ids)
    assert first.context["rule_ids"] == [angle.rule_id]
    assert first.context["rules_sha256"] == stage_b.seen[0].rules_sha256
    assert second.context["rule_ids"] == [r.rule_id for r in stage_b.seen[1].rules]
    assert second.context["rules_sha256"] == stage_b.seen[1].rules_sha256
    assert len({first.context["rules_sha256"], second.context["rules_sha256"]}) == 2
    event = get_event(b.event_ids[0], store=store)
    executes = [s for s in event.loop_steps if s["step"] == "execute"]
    assert [s["rules_sha256"] for s in executes] == [c.rules_sha256 for c in stage_b.seen]
    [fail_b2] = [s for s in event.loop_steps if s["step"] == "fail" and s["attempt"] == 2]
    assert fail_b2["recurred_rule_ids"] == [angle.rule_id]


def test_rule_history_newest_first(store: Store, clock: Clock) -> None:
    scripted_runs(store)
    angle = rules_by_text(store)["angle"]
    history = rule_history(AGENT, angle.rule_id, store=store)
    assert history.state == "active" and history.rule == angle.rule
    assert (history.occurrences, history.deliveries, history.recurrences, history.successes) == (
        2,
        4,
        1,
        2,
    )
    assert history.applied_count == 3 and history.attempts_dropped == 0
    assert [(x.video_id, x.attempt) for x in history.attempts] == [
        ("v2", 3),
        ("v2", 2),
        ("v2", 1),
        ("v1", 2),
    ]
    # Still there once the rule is tombstoned: its evidence goes with it.
    tombstone_rule(AGENT, angle.rule_id, "replaced", store=store)
    gone = rule_history(AGENT, angle.rule_id, store=store)
    assert gone.state == "tombstoned" and gone.deliveries == 4 and len(gone.attempts) == 4


def test_rule_history_bad_ids(store: Store, clock: Clock) -> None:
    scripted_runs(store)
    with pytest.raises(RuleNotFoundError, match="no active rule 'rule-nope'"):
        rule_history(AGENT, "rule-nope", store=store)
    with pytest.raises(InvalidInputError, match="unknown agent 'nobody'"):
        rule_history("nobody", "rule-nope", store=store)
    with pytest.raises(InvalidInputError):
        rule_history(AGENT, "../x", store=store)


def test_cli_rules_history(store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]) -> None:
    """Human and JSON; unknown agent and rule id: one error line, exit 1."""
    _, b, _ = scripted_runs(store)
    angle = rules_by_text(store)["angle"]
    capsys.readouterr()
    assert main(["rules", "history", AGENT, angle.rule_id]) == 0
    out = capsys.readouterr().out
    assert f"rule {angle.rule_id}" in out
    assert "Attempts that carried it (4, newest first)" in out
    assert "recurred" in out and "succeeded" in out and "v2" in out
    assert angle.attempts[2]["rules_sha256"][:16] in out
    assert main(["rules", "history", AGENT, angle.rule_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["occurrences"], data["deliveries"], data["recurrences"], data["successes"]) == (
        2,
        4,
        1,
        2,
    )
    assert data["applied_count"] == 3
    newest = data["attempts"][0]
    assert (newest["video_id"], newest["stage"], newest["attempt"], newest["outcome"]) == (
        "v2",
        "assets",
        3,
        "succeeded",
    )
    assert newest["at"].endswith("Z") and len(newest["rules_sha256"]) == 64
    assert data["attempts"][1]["error_id"] == b.error_ids[1]

    assert main(["rules", "history", AGENT, "rule-nope"]) == 1
    err = capsys.readouterr().err
    assert "no active rule 'rule-nope'" in err and "Traceback" not in err
    assert main(["rules", "history", "nobody", angle.rule_id, "--json"]) == 1
    assert "unknown agent 'nobody'" in capsys.readouterr().err


def test_events_get_shows_what_each_attempt_delivered(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    _, b, stage_b = scripted_runs(store)
    angle = rules_by_text(store)["angle"]
    capsys.readouterr()
    assert main(["events", "get", b.event_ids[0], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(d["attempt"], d["outcome"]) for d in data["deliveries"]] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert [d["rule_ids"] for d in data["deliveries"]] == [
        [r.rule_id for r in c.rules] for c in stage_b.seen
    ]
    assert [d["rules_sha256"] for d in data["deliveries"]] == [c.rules_sha256 for c in stage_b.seen]
    assert data["deliveries"][1]["error_id"] == b.error_ids[1]
    assert data["deliveries"][1]["recurred_rule_ids"] == [angle.rule_id]
    assert main(["events", "get", b.event_ids[0]]) == 0
    out = capsys.readouterr().out
    assert "Rules delivered, per attempt" in out
    assert f"{angle.rule_id} (recurred)" in out
    assert str(stage_b.seen[1].rules_sha256)[:16] in out
    # An event made outside the loop has no deliveries.
    other = create_event(
        run_id="r", severity="WARN", component="assets", symptom="x happened", store=store
    )
    assert main(["events", "get", other.event_id, "--json"]) == 0
    assert "deliveries" not in json.loads(capsys.readouterr().out)


def test_recurrence_follows_pattern_merges(store: Store, clock: Clock) -> None:
    """A failure whose key was merged into the rule's pattern (or the reverse) is a recurrence."""
    event = create_event(
        run_id="r",
        severity="FAIL",
        component="assets",
        symptom="upload to bucket alpha refused",
        root_cause="cause",
        fix_applied="fix",
        agent=AGENT,
        store=store,
    )
    rule_key = str(event.fingerprint)
    other = "assets:00000000deadbeef"
    with store.pattern_book("assets") as book:
        assert book.link(other, rule_key, "regroup")
    assert store.resolve_pattern(other) == rule_key
    kwargs = dict(run_id="r1", video_id="v9", stage="assets", store=store)
    [rule] = record_attempt(
        AGENT, [str(event.rule_id)], outcome="failed", attempt=1, fingerprint=other, **kwargs
    )
    assert (rule.deliveries, rule.recurrences, rule.successes) == (1, 1, 0)
    [rule] = record_attempt(
        AGENT,
        [str(event.rule_id), "rule-gone"],
        outcome="failed",
        attempt=2,
        fingerprint="assets:1111111111111111",
        **kwargs,
    )
    assert (rule.deliveries, rule.recurrences, rule.successes) == (2, 1, 0)
    assert record_attempt(AGENT, [], outcome="succeeded", attempt=3, **kwargs) == []


def test_attempts_kept_are_bounded_and_bad_input_refused(store: Store, clock: Clock) -> None:
    """The counters count every attempt; the rule keeps the newest RULE_ATTEMPTS_KEPT."""
    event = create_event(
        run_id="r",
        severity="WARN",
        component="assets",
        symptom="caption overlaps the product",
        fix_applied="Move captions to the lower third",
        agent=AGENT,
        store=store,
    )
    rule_id = str(event.rule_id)
    for i in range(RULE_ATTEMPTS_KEPT + 3):
        record_attempt(
            AGENT,
            [rule_id],
            outcome="succeeded",
            run_id=f"r{i}",
            video_id=f"v{i}",
            stage="assets",
            attempt=1,
            store=store,
        )
    history = rule_history(AGENT, rule_id, store=store)
    assert (history.deliveries, history.successes) == (RULE_ATTEMPTS_KEPT + 3,) * 2
    assert len(history.attempts) == RULE_ATTEMPTS_KEPT and history.attempts_dropped == 3
    assert history.attempts[0].video_id == f"v{RULE_ATTEMPTS_KEPT + 2}"
    assert history.attempts[-1].video_id == "v3"
    with pytest.raises(InvalidInputError, match="outcome"):
        record_attempt(
            AGENT,
            [rule_id],
            outcome="maybe",  # type: ignore[arg-type]
            run_id="r",
            video_id="v",
            stage="assets",
            attempt=1,
            store=store,
        )
    assert rule_history(AGENT, rule_id, store=store).deliveries == RULE_ATTEMPTS_KEPT + 3


def test_attempt_not_learned_from_is_not_counted(store: Store, clock: Clock) -> None:
    """An exception in ``ignore=`` propagates uncounted, as it is unlogged."""
    run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=diagnose, store=store)
    before = rules_by_text(store)["angle"]

    def cancelled(ctx: StageContext) -> str:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("v2", "assets", cancelled, ignore=KeyboardInterrupt, store=store)
    after = rules_by_text(store)["angle"]
    assert (after.deliveries, after.successes, after.recurrences) == (
        before.deliveries,
        before.successes,
        before.recurrences,
    )
    assert after.applied_count == before.applied_count + 1  # its seed meaning: delivered


def test_original_memory_keeps_its_shape(store: Store, tmp_path: Path, clock: Clock) -> None:
    """Rules of the original system load with counters at 0 and are written back without the
    new fields until something is counted on them; then they count from there."""
    load_original(store, tmp_path)
    original = json.loads(
        (FIXTURE / "state/agents" / AGENT / "memory_active.json").read_text("utf-8")
    )
    [rule] = load_active_memory(AGENT, store=store).rules
    assert counters(rule) == (0, 0, 0, 0, 2) and rule.attempts == []
    written = rule.to_dict()
    assert Rule.model_validate(original["rules"][0]) == rule  # timestamps are written with Z
    assert set(written) - set(original["rules"][0]) == {"fingerprint", "last_event_id"}
    assert AgentMemory.model_validate(load_active_memory(AGENT, store=store).to_dict()) == (
        load_active_memory(AGENT, store=store)
    )
    # Another rule changes the memory: the original rule is written back with its shape.
    create_event(
        run_id="r",
        severity="WARN",
        component="assets",
        symptom="Product logo mirrored",
        root_cause="Flip augmentation",
        fix_applied="Disable horizontal flip",
        agent=AGENT,
        store=store,
    )
    stored = {r.rule_id: r for r in load_active_memory(AGENT, store=store).rules}
    assert set(stored[rule.rule_id].to_dict()) == set(written)
    # A stage run delivering it counts from 0; applied_count goes on from the original's 2.
    run = run_stage("v050", "assets", Scripted([None]), store=store)
    assert rule.rule_id in run.delivered_rule_ids
    again = {r.rule_id: r for r in load_active_memory(AGENT, store=store).rules}[rule.rule_id]
    assert counters(again) == (0, 1, 0, 1, 3)


@pytest.mark.files_only
def test_original_memory_file_untouched_by_reads(file_store: FileStore, clock: Clock) -> None:
    """Reading (history, prompt) never rewrites the original's memory file."""
    shutil.copytree(FIXTURE, file_store.root, dirs_exist_ok=True)
    path = file_store.root / "state/agents" / AGENT / "memory_active.json"
    before = path.read_bytes()
    [rule] = load_active_memory(AGENT, store=file_store).rules
    history = rule_history(AGENT, rule.rule_id, store=file_store)
    assert (history.deliveries, history.attempts) == (0, [])
    assert path.read_bytes() == before


@pytest.mark.slow
def test_concurrent_attempts_lose_no_count(
    store: Store, root: Path, backend: str | None, clock: Clock
) -> None:
    """Processes counting attempts on one rule at once (run_stage successes, and failures with
    the rule's pattern) lose none: one read-modify-write under the agent's lock each."""
    event = create_event(
        run_id="r",
        severity="WARN",
        component="assets",
        symptom="Background too dark for the product",
        root_cause="cause",
        fix_applied="Brighten the background",
        agent=AGENT,
        store=store,
    )
    workers, count = 4, 6
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(
                _workers.count_attempts,
                str(root),
                backend,
                w,
                count,
                rule_id=str(event.rule_id),
                pattern=str(event.fingerprint),
            )
            for w in range(workers)
        ]
        done = [f.result(timeout=240) for f in futures]
    assert done == [count] * workers
    [rule] = load_active_memory(AGENT, store=store).rules
    total = workers * count
    assert (rule.deliveries, rule.successes, rule.recurrences) == (total, total // 2, total // 2)
    assert rule.applied_count == 1 + total // 2  # one delivery per successful stage run
    assert len(rule.attempts) == min(total, RULE_ATTEMPTS_KEPT)


def test_success_kept_when_it_cannot_be_counted(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting a success is bookkeeping: when it fails, the stage's result is still returned and
    the problem recorded as a ``count`` step; counting a failure that fails raises."""
    import rayvault.learning.loop as loop_module
    from rayvault.learning.exceptions import StoreError

    run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=diagnose, store=store)

    def broken(*args: object, **kwargs: object) -> list[Rule]:
        raise StoreError("memory cannot be written")

    monkeypatch.setattr(loop_module, "record_attempt", broken)
    run = run_stage("v2", "assets", Scripted([None]), store=store)
    assert run.ok and run.value == "ok"
    [step] = [s for s in run.steps if s.step == "count"]
    assert "memory cannot be written" in step.detail
    with pytest.raises(StoreError):
        run_stage("v3", "assets", Scripted([MEMORY]), diagnose=diagnose, store=store)
