"""Rules follow the evidence (issue 14, item 0): how a fix was verified (``verified_by``), a
rule's text revised when its failure keeps recurring while delivered (its text history kept and
shown by ``rules history``), retry-verified fixes overturned, and ``diagnose_from_history``
never handing back a fix the evidence refuted.

Runs on both stores."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.cli import main
from rayvault.learning import (
    InvalidInputError,
    RuleNotFoundError,
    create_event,
    get_event,
    ineffective_rule,
    is_losing,
    load_active_memory,
    record_attempt,
    record_verification,
    resolve_event,
    rule_history,
    text_counters,
    update_event,
)
from rayvault.learning.errors import resolve_error
from rayvault.learning.loop import (
    Diagnosis,
    Failure,
    StageRun,
    chain_diagnosers,
    diagnose_from_history,
    run_stage,
)
from rayvault.learning.models import AgentMemory, Rule, TombstoneFile
from rayvault.learning.resolution import resolve_events
from rayvault.learning.store import Store

from ._stages import Scripted
from .conftest import Clock
from .test_original_formats import FIXTURE

pytestmark = pytest.mark.both_stores

AGENT = "dzine_producer"
ANGLE = "product shape wrong: reference angle top-down"
RATE = "HTTP 429 Too Many Requests from the image API"
WRONG = Diagnosis("Background too dark", "Use a brighter background")
RIGHT = Diagnosis("Reference switched to top-down", "Use the 3/4 angle")
NEW_NAMES = ("verified_by", "overturned_at", "revisions", "alternatives")


@dataclass
class FakeLLM:
    """A diagnoser chained after history: records every failure it is asked about, and answers
    from its list in turn."""

    answers: list[Diagnosis]
    asked: list[Failure] = field(default_factory=list)

    def __call__(self, failure: Failure) -> Diagnosis:
        self.asked.append(failure)
        found = self.answers[min(len(self.asked), len(self.answers)) - 1]
        return Diagnosis(found.root_cause, found.fix, source="llm")


def the_rule(store: Store) -> Rule:
    [rule] = load_active_memory(AGENT, store=store).rules
    return rule


def steps(run: StageRun, name: str) -> list[dict[str, object]]:
    return [s.to_dict() for s in run.steps if s.step == name]


def event_with_rule(store: Store, diagnosis: Diagnosis, **more: str) -> str:
    """A learning event of the ANGLE failure learned into the agent's memory; its id."""
    return create_event(
        run_id="r",
        severity="FAIL",
        component="assets",
        symptom=f"ValueError: {ANGLE}",
        root_cause=diagnosis.root_cause,
        fix_applied=diagnosis.fix,
        agent=AGENT,
        store=store,
        **more,
    ).event_id


def capture(into: list[Failure]) -> Callable[[Failure], None]:
    """A diagnoser that keeps the failures it is asked about and diagnoses none."""

    def diagnoser(failure: Failure) -> None:
        into.append(failure)

    return diagnoser


def count(
    store: Store,
    rule: Rule,
    outcome: str,
    n: int,
    *,
    recurred: bool = False,
    answered: bool = False,
) -> None:
    """``n`` attempts that carried ``rule`` and ended in ``outcome`` (failing with its own
    pattern when ``recurred``; retries right after its own failure — fix tries — when
    ``answered``)."""
    for i in range(n):
        record_attempt(
            AGENT,
            [rule.rule_id],
            outcome=outcome,  # type: ignore[arg-type]
            run_id=f"run-{outcome}-{i}",
            video_id=f"v{i}",
            stage="assets",
            attempt=2 if answered else 1,
            fingerprint=rule.fingerprint if recurred else None,
            answering=rule.fingerprint if answered else None,
            store=store,
        )


# -- revised at learn time ----------------------------------------------------------------------
def test_wrong_first_diagnosis_is_revised_once_it_recurred(store: Store, clock: Clock) -> None:
    """The first diagnosis was wrong (a retry verified it anyway); in the next run the failure
    recurs while its text is delivered, a differing diagnosis is learned and revises the rule at
    once, so the retry of that same run carries the new text."""
    first = run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=lambda f: WRONG)
    assert first.ok
    rule = the_rule(store)
    assert "brighter background" in rule.rule and rule.verified_by == "retry"
    assert get_event(first.event_ids[0], store=store).verified_by == "retry"
    clock.advance(minutes=5)
    stage = Scripted([ANGLE, None])
    second = run_stage("v2", "assets", stage, diagnose=lambda f: RIGHT)
    assert second.ok and second.rule_ids == [rule.rule_id]
    assert "brighter background" in stage.seen[0].rendered_rules
    assert stage.seen[1].has_rule("Do: Use the 3/4 angle.")  # the retry carries the new text
    assert not stage.seen[1].has_rule("brighter background")

    revised = the_rule(store)
    assert revised.rule_id == rule.rule_id and revised.rule.endswith("Do: Use the 3/4 angle.")
    assert revised.verified_by == "retry"  # the new text, verified by run 2's retry
    assert (revised.deliveries, revised.recurrences, revised.successes) == (3, 1, 2)
    assert text_counters(revised) == (1, 0, 1)
    old, new = revised.revisions
    assert old["rule"] == rule.rule and old["source_event_id"] == first.event_ids[0]
    assert old["verified_by"] == "overturned" and old["overturned_at"]
    assert new["source_event_id"] == second.event_ids[0]
    assert new["reason"] == (
        "the previous text recurred in 1 of 2 deliveries (1 succeeded); its fix failed again "
        f"in 0 of 1 tries; new diagnosis from {second.event_ids[0]}"
    )
    assert (new["deliveries"], new["recurrences"], new["successes"]) == (2, 1, 1)
    assert (new["fix_tries"], new["fix_failures"]) == (1, 0)  # run 1's retry carried it
    [apply] = steps(second, "apply")
    assert str(apply["detail"]).startswith(f"rule {rule.rule_id} revised in {AGENT}'s memory")
    assert "recurred in 1 of 2 deliveries" in str(apply["detail"])
    assert str(apply["detail"]).endswith("Do: Use the 3/4 angle.")

    history = rule_history(AGENT, rule.rule_id, store=store)
    assert [(r.deliveries, r.recurrences, r.successes) for r in history.revisions] == [
        (2, 1, 1),
        (1, 0, 1),
    ]
    assert [r.current for r in history.revisions] == [False, True]
    assert [r.verified_by for r in history.revisions] == ["overturned", "retry"]
    assert history.verified_by == "retry" and history.overturned_at is None


def test_same_text_learned_again_is_not_a_revision(store: Store, clock: Clock) -> None:
    """The same diagnosis learned again, even while its text is losing, changes no text."""
    run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=lambda f: RIGHT)
    run_stage("v2", "assets", Scripted([ANGLE, None]), diagnose=lambda f: RIGHT)
    rule = the_rule(store)
    assert rule.revisions == [] and rule.occurrences == 2
    assert "revisions" not in rule.to_dict()


# -- overturned ---------------------------------------------------------------------------------
def test_transient_failure_overturns_its_retry_verified_fix(store: Store, clock: Clock) -> None:
    """A 429 goes away on retry whatever the fix: the wrong fix is verified by the retry, comes
    back while delivered, is overturned, and history no longer hands it back — the chained LLM
    is asked instead (and its differing answer revises the rule before the retry)."""
    llm = FakeLLM(
        [
            Diagnosis("Too many images per request", "Send one image per request"),
            Diagnosis("Rate limit of the API", "Wait for Retry-After, then resubmit"),
        ]
    )
    chain = chain_diagnosers(diagnose_from_history, llm)
    first = run_stage("v1", "assets", Scripted([RATE, None]), diagnose=chain)
    assert first.ok and len(llm.asked) == 1  # history knew nothing
    rule = the_rule(store)
    assert rule.verified_by == "retry"

    clock.advance(hours=1)
    second = run_stage("v2", "assets", Scripted([RATE, None]), diagnose=chain)
    assert second.ok
    assert len(llm.asked) == 2  # history returned nothing: its only fix had failed
    [diagnose] = steps(second, "diagnose")
    # Its verified event and the error-log lesson the retry resolved with the same fix.
    event_note, lesson_note = diagnose["history_skipped"]  # type: ignore[misc]
    assert event_note.startswith(f"history fix from {first.event_ids[0]} skipped: ")
    assert lesson_note.startswith(f"history fix from {first.error_ids[0]} skipped: ")
    assert "overturned" in event_note and "overturned" in lesson_note
    assert "every fix in history failed" not in str(diagnose["detail"])  # the LLM answered
    assert "overturned" in str(diagnose["detail"])
    assert second.diagnoses[0].source == "llm"

    history = rule_history(AGENT, rule.rule_id, store=store)
    old, new = history.revisions
    assert old.verified_by == "overturned" and old.overturned_at is not None
    assert (old.deliveries, old.recurrences, old.successes) == (2, 1, 1)
    assert new.current and "Retry-After" in new.rule and new.verified_by == "retry"


def test_history_returns_nothing_when_its_only_fix_failed(store: Store, clock: Clock) -> None:
    """Asked directly, before the loop counted the attempt: the current failure counts as a
    recurrence of the delivered text, so its fix is failed and None is returned."""
    run_stage("v1", "assets", Scripted([RATE, None]), diagnose=lambda f: WRONG)
    captured: list[Failure] = []
    clock.advance(hours=1)
    run_stage(
        "v2", "assets", Scripted([RATE]), retries=0, diagnose=capture(captured), on_failure="return"
    )
    [failure] = captured
    # The loop counted the attempt before asking: one recurrence against one success.
    rule = the_rule(store)
    assert (rule.recurrences, rule.successes) == (1, 1) and rule.verified_by == "overturned"
    assert diagnose_from_history(failure) is None
    assert any("overturned" in n for n in failure.notes)


def test_history_prefers_a_fix_that_succeeded(store: Store, clock: Clock) -> None:
    """A succeeding text is returned (its fix worked in later runs' retries too, so the
    recurrence at a first attempt does not overturn it); an untried one (no rule of the pattern
    for this agent) is returned when it is all there is."""
    first = run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=lambda f: RIGHT)
    rule = the_rule(store)
    count(store, rule, "succeeded", 3, answered=True)
    assert the_rule(store).verified_by == "later_runs"
    captured: list[Failure] = []
    clock.advance(hours=1)
    run_stage(
        "v2",
        "assets",
        Scripted([ANGLE]),
        retries=0,
        diagnose=capture(captured),
        on_failure="return",
    )
    found = diagnose_from_history(captured[0])
    assert found is not None and found.reference == first.event_ids[0]
    assert found.fix == RIGHT.fix and captured[0].notes == []


# -- a good rule is not replaced at learn time ---------------------------------------------------
def test_good_rule_is_not_revised_at_learn_time_but_by_a_person(store: Store, clock: Clock) -> None:
    """9 successes, 1 recurrence: a differing diagnosis does not replace the text when it is
    learned; verified by a retry it is kept as an alternative; verified by a person it wins."""
    event_with_rule(store, RIGHT)
    rule = the_rule(store)
    count(store, rule, "succeeded", 9, answered=True)
    count(store, rule, "failed", 1, recurred=True)
    rule = the_rule(store)
    assert (rule.deliveries, rule.recurrences, rule.successes) == (10, 1, 9)
    assert (rule.fix_tries, rule.fix_failures) == (9, 0)
    assert not is_losing(rule, store.policies)
    assert rule.verified_by == "later_runs"  # its fix worked in later runs' retries

    by_retry = event_with_rule(store, WRONG)
    assert the_rule(store).rule == rule.rule  # not losing: the text stays
    snapshots = len(store.list_memory_snapshots(AGENT))
    update_event(by_retry, status="verified", verified_by="retry", store=store)
    assert len(store.list_memory_snapshots(AGENT)) == snapshots  # no text changed
    kept = the_rule(store)
    assert kept.rule == rule.rule and kept.revisions == []
    [alternative] = kept.alternatives
    assert alternative["source_event_id"] == by_retry and alternative["verified_by"] == "retry"
    assert "brighter background" in alternative["rule"]

    other = Diagnosis("Reference image cropped", "Use the uncropped reference")
    by_person = event_with_rule(store, other)
    assert the_rule(store).rule == rule.rule
    snapshots = len(store.list_memory_snapshots(AGENT))
    event = resolve_event(by_person, "re-ran 5 videos, all correct", store=store)
    assert len(store.list_memory_snapshots(AGENT)) == snapshots + 1  # archived, as any change
    assert event.verified_by == "person"
    revised = the_rule(store)
    assert revised.rule.endswith("Do: Use the uncropped reference.")
    assert revised.verified_by == "person"
    assert revised.revisions[-1]["reason"] == f"verified by a person ({by_person})"
    assert revised.revisions[0]["verified_by"] == "later_runs"
    assert text_counters(revised) == (0, 0, 0)
    assert (revised.deliveries, revised.recurrences, revised.successes) == (10, 1, 9)


def test_ineffective_verdict_resets_after_a_revision(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ineffective on its current text; revised by a differing diagnosis (it is losing), the
    rule starts clean while its lifetime counters stay (`memory show` shows the current text's
    figures, as the verdict judges them)."""
    event_with_rule(store, WRONG)
    rule = the_rule(store)
    count(store, rule, "failed", 5, recurred=True)
    rule = the_rule(store)
    assert ineffective_rule(AGENT, rule, store.policies) is not None
    capsys.readouterr()
    assert main(["memory", "show", AGENT]) == 0
    assert "5/5 INEFFECTIVE" in capsys.readouterr().out
    event_with_rule(store, RIGHT)
    assert main(["memory", "show", AGENT]) == 0
    shown = capsys.readouterr().out
    assert "INEFFECTIVE" not in shown and "5/5" not in shown
    revised = the_rule(store)
    assert revised.rule.endswith("Do: Use the 3/4 angle.")
    assert ineffective_rule(AGENT, revised, store.policies) is None
    assert (revised.deliveries, revised.recurrences) == (5, 5)
    assert text_counters(revised) == (0, 0, 0)
    count(store, revised, "failed", 5, recurred=True)  # the new text fails too: flagged again
    flagged = ineffective_rule(AGENT, the_rule(store), store.policies)
    assert flagged is not None and (flagged.deliveries, flagged.recurrences) == (5, 5)


def test_revision_rechecks_conflicts(store: Store, clock: Clock) -> None:
    """The revised text is checked against the agent's other rules, as a new rule would be."""
    create_event(
        run_id="r",
        severity="FAIL",
        component="assets",
        symptom="ValueError: background colour off",
        fix_applied="Never use a brighter background",
        agent=AGENT,
        store=store,
    )
    event_with_rule(store, RIGHT)
    rules = {r.fingerprint: r for r in load_active_memory(AGENT, store=store).rules}
    angle = next(r for r in rules.values() if "3/4" in r.rule)
    assert angle.conflicts_with == []
    count(store, angle, "failed", 1, recurred=True)
    event_with_rule(store, WRONG)  # "Use a brighter background": conflicts with the other
    after = {r.rule_id: r for r in load_active_memory(AGENT, store=store).rules}
    other = next(i for i in after if i != angle.rule_id)
    assert after[angle.rule_id].conflicts_with == [other]
    assert after[other].conflicts_with == [angle.rule_id]


# -- verified_by on events ----------------------------------------------------------------------
def test_verified_by_through_the_api(store: Store, clock: Clock) -> None:
    """person for update_event / resolve_event / bulk resolution / created verified; retry or
    later_runs when told; cleared when an event is re-opened."""
    made = create_event(
        run_id="r",
        severity="WARN",
        component="assets",
        symptom="x",
        verification="checked",
        store=store,
    )
    assert made.verified_by == "person"
    updated = event_with_rule(store, RIGHT)
    assert get_event(updated, store=store).verified_by is None
    assert update_event(updated, status="verified", store=store).verified_by == "person"
    assert update_event(updated, status="open", store=store).verified_by is None
    assert the_rule(store).verified_by == "person"  # the rule heard of it
    told = update_event(updated, status="verified", verified_by="later_runs", store=store)
    assert told.verified_by == "later_runs"
    bulk = [event_with_rule(store, RIGHT) for _ in range(2)]
    result = resolve_events(bulk, verification="looked at them", apply=True, store=store)
    assert [e.verified_by for e in result.events] == ["person", "person"]
    assert [get_event(e, store=store).verified_by for e in bulk] == ["person", "person"]


def test_error_resolved_by_a_person_verifies_its_event(store: Store, clock: Clock) -> None:
    """A failed run leaves its event applied; resolving its error by hand verifies the event,
    by a person, and the rule's text with it."""
    run = run_stage(
        "v1",
        "assets",
        Scripted([ANGLE]),
        retries=0,
        diagnose=lambda f: RIGHT,
        on_failure="return",
    )
    assert run.outcome == "failed"
    assert get_event(run.event_ids[0], store=store).verified_by is None
    resolve_error(run.error_ids[0], RIGHT.root_cause, RIGHT.fix, store=store)
    event = get_event(run.event_ids[0], store=store)
    assert (event.status, event.verified_by) == ("verified", "person")
    assert the_rule(store).verified_by == "person"


def test_verified_by_bad_input(store: Store, clock: Clock) -> None:
    event_id = event_with_rule(store, RIGHT)
    with pytest.raises(InvalidInputError, match="verified_by must be one of person, retry"):
        update_event(event_id, status="verified", verified_by="robot", store=store)
    with pytest.raises(InvalidInputError, match="needs status verified"):
        update_event(event_id, status="archived", verified_by="person", store=store)
    with pytest.raises(InvalidInputError, match="needs status verified"):
        update_event(event_id, verified_by="person", store=store)  # still applied
    with pytest.raises(InvalidInputError, match="verified_by must be one of"):
        resolve_event(event_id, "checked", verified_by="overturned", store=store)
    with pytest.raises(InvalidInputError, match="verified_by must be one of"):
        record_verification(get_event(event_id, store=store), "maybe", store=store)
    assert get_event(event_id, store=store).status == "applied"  # nothing written
    with pytest.raises(RuleNotFoundError):
        rule_history(AGENT, "rule-nope", store=store)


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_verified_by_and_rules_history(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=lambda f: WRONG)
    run_stage("v2", "assets", Scripted([ANGLE, None]), diagnose=lambda f: RIGHT)
    rule = the_rule(store)
    capsys.readouterr()
    assert main(["events", "get", first.event_ids[0], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verified_by"] == "retry"
    assert main(["events", "get", first.event_ids[0]]) == 0
    assert "retry" in capsys.readouterr().out

    assert main(["rules", "history", AGENT, rule.rule_id]) == 0
    out = capsys.readouterr().out
    assert "Text history (2, oldest first)" in out
    assert "overturned" in out and "current" in out and "recurred in 1 of 2" in out
    assert main(["rules", "history", AGENT, rule.rule_id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified_by"] == "retry"
    assert [(r["deliveries"], r["recurrences"], r["successes"]) for r in data["revisions"]] == [
        (2, 1, 1),
        (1, 0, 1),
    ]
    assert data["revisions"][0]["verified_by"] == "overturned"
    assert data["revisions"][1]["current"] is True

    other = event_with_rule(store, RIGHT)
    assert main(["events", "update", other, "--status", "verified", "--verified-by", "x"]) == 1
    assert "verified_by must be one of" in capsys.readouterr().err
    assert main(["events", "update", other, "--status", "verified", "--verified-by", "retry"]) == 0
    assert "verified by retry" in capsys.readouterr().out
    third = event_with_rule(store, RIGHT)
    assert main(["events", "resolve", third, "--verification", "checked by hand"]) == 0
    assert "verified by person" in capsys.readouterr().out
    assert get_event(third, store=store).verified_by == "person"


def test_cli_rules_history_of_a_rule_never_revised(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    event_id = event_with_rule(store, RIGHT)
    rule = the_rule(store)
    capsys.readouterr()
    assert main(["rules", "history", AGENT, rule.rule_id, "--json"]) == 0
    [only] = json.loads(capsys.readouterr().out)["revisions"]
    assert only["current"] is True and only["source_event_id"] == event_id
    assert only["reason"] == "learned" and only["rule"] == rule.rule
    assert main(["rules", "history", AGENT, "rule-nope"]) == 1


# -- the original shapes ------------------------------------------------------------------------
def test_original_memory_files_keep_their_shape(store: Store, clock: Clock) -> None:
    """The original system's memory, tombstones and archived snapshots load, and dump without
    any of the new fields; a rule never revised nor verified writes none of them either."""
    agent_dir = FIXTURE / "state" / "agents" / "dzine_producer"
    files = sorted(agent_dir.rglob("memory*.json"))
    assert len(files) >= 3
    for path in files:
        raw = json.loads(path.read_text())
        model = TombstoneFile if "tombstones" in raw else AgentMemory
        first = model.model_validate(raw).to_dict()
        assert model.model_validate(first).to_dict() == first  # round-trips
        items = first.get("rules") or first.get("tombstones") or []
        for item in items:
            assert not set(NEW_NAMES) & set(item), path
            assert set(item) - set(raw.get("rules", raw.get("tombstones"))[0]) <= {
                "fingerprint",
                "last_event_id",
                "kind",
            }
    event_with_rule(store, RIGHT)
    assert not set(NEW_NAMES) & set(the_rule(store).to_dict())


# -- per-text figures, whatever happens -----------------------------------------------------------
_EXAMPLES = iter(range(10**6))


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(["succeeded", "recurred", "other", "diagnosis"]), max_size=14))
def test_per_text_counters_add_up(store: Store, clock: Clock, ops: list[str]) -> None:
    """Any sequence of attempts and differing diagnoses: a diagnosis revises the rule exactly
    when its text was losing; each text's figures add up to the lifetime counters; the current
    text's are what ``text_counters`` and the ineffective verdict use."""
    agent = f"agent{next(_EXAMPLES)}"

    def learn(i: int) -> Rule:
        create_event(
            run_id="r",
            severity="FAIL",
            component="assets",
            symptom=f"ValueError: {ANGLE}",
            root_cause=f"cause {i}",
            fix_applied=f"fix {i}",
            agent=agent,
            store=store,
        )
        [rule] = load_active_memory(agent, store=store).rules
        return rule

    rule = learn(0)
    texts = 1
    for i, op in enumerate(ops, start=1):
        if op == "diagnosis":
            losing = is_losing(rule, store.policies)
            rule = learn(i)
            texts += losing
            assert len(rule.revisions) == (texts if texts > 1 else 0)
            assert rule.rule.endswith(f"Do: fix {i}.") == losing
            continue
        record_attempt(
            agent,
            [rule.rule_id],
            outcome="succeeded" if op == "succeeded" else "failed",
            run_id=f"r{i}",
            video_id="v1",
            stage="assets",
            attempt=1,
            fingerprint=rule.fingerprint if op == "recurred" else "assets:0000000000000000",
            store=store,
        )
        [rule] = load_active_memory(agent, store=store).rules
    history = rule_history(agent, rule.rule_id, store=store)
    assert len(history.revisions) == texts and history.revisions[-1].current
    assert (
        sum(r.deliveries for r in history.revisions)
        == rule.deliveries
        == len([o for o in ops if o != "diagnosis"])
    )
    assert (
        sum(r.recurrences for r in history.revisions) == rule.recurrences == ops.count("recurred")
    )
    assert sum(r.successes for r in history.revisions) == rule.successes == ops.count("succeeded")
    current = history.revisions[-1]
    assert text_counters(rule) == (current.deliveries, current.recurrences, current.successes)
    flagged = ineffective_rule(agent, rule, store.policies)
    assert (flagged is not None) == (
        current.deliveries >= store.policies.LEARNING_EFFICACY_MIN_DELIVERIES
        and current.recurrences / current.deliveries
        >= store.policies.LEARNING_EFFICACY_MAX_RECURRENCE_RATE
    )
