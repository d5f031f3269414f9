"""Fix tries (issue 14, items 0 and 2): a rule delivered in answer to its own failure — the retry
right after an attempt of the same run failed with its pattern — puts its fix to the test. The
ineffective verdict, whether a text is losing, ``later_runs`` and the overturning of a
retry-verified fix rest on them, because a rule is delivered to every run of its agent and its
failure shows up in few of them.

Runs on both stores."""

from __future__ import annotations

import pytest

from rayvault.learning import (
    create_event,
    ineffective_rule,
    load_active_memory,
    record_attempt,
    rule_history,
)
from rayvault.learning.efficacy import is_ineffective
from rayvault.learning.loop import Diagnosis, diagnose_from_history, run_stage
from rayvault.learning.models import Rule
from rayvault.learning.store import Store

from ._stages import Scripted
from .conftest import Clock

pytestmark = pytest.mark.both_stores

AGENT = "dzine_producer"
ANGLE = "product shape wrong: reference angle top-down"
RIGHT = Diagnosis(root_cause="Reference switched to top-down", fix="Use the 3/4 angle")


def the_rule(store: Store) -> Rule:
    [rule] = load_active_memory(AGENT, store=store).rules
    return rule


def learn(store: Store, fix: str = "Use the 3/4 angle") -> Rule:
    create_event(
        run_id="r",
        severity="FAIL",
        component="assets",
        symptom=f"ValueError: {ANGLE}",
        root_cause="cause",
        fix_applied=fix,
        agent=AGENT,
        store=store,
    )
    return the_rule(store)


def attempt(store: Store, rule: Rule, outcome: str, *, failed: bool, answered: bool) -> Rule:
    """One attempt that carried ``rule``: a first attempt, or a retry right after its own
    failure (``answered``); failing with its pattern when ``failed``."""
    [counted] = record_attempt(
        AGENT,
        [rule.rule_id],
        outcome=outcome,  # type: ignore[arg-type]
        run_id="run",
        video_id="v1",
        stage="assets",
        attempt=2 if answered else 1,
        fingerprint=rule.fingerprint if failed else None,
        answering=rule.fingerprint if answered else None,
        store=store,
    )
    return counted


def test_run_stage_counts_the_retry_as_a_fix_try(store: Store, clock: Clock) -> None:
    """Run 1 learns the rule at its first attempt, and the retry that carries it succeeds: a
    fix try that worked. Run 2 fails with it on both attempts: a recurrence at the first (a
    miss), then a failed fix try."""
    run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=lambda f: RIGHT)
    rule = the_rule(store)
    assert (rule.deliveries, rule.successes, rule.fix_tries, rule.fix_failures) == (1, 1, 1, 0)
    assert rule.attempts[-1]["answered"] is True
    clock.advance(minutes=5)
    run_stage(
        "v2", "assets", Scripted([ANGLE, ANGLE]), diagnose=lambda f: RIGHT, on_failure="return"
    )
    rule = the_rule(store)
    assert (rule.deliveries, rule.recurrences, rule.fix_tries, rule.fix_failures) == (3, 2, 2, 1)
    first, retry = rule.attempts[-2:]
    assert (first["recurred"], first.get("answered", False)) == (True, False)
    assert (retry["recurred"], retry["answered"]) == (True, True)
    history = rule_history(AGENT, rule.rule_id, store=store)
    assert (history.fix_tries, history.fix_failures) == (2, 1)
    assert history.revisions[-1].fix_tries == 2


def test_a_retry_after_another_failure_is_no_fix_try(store: Store, clock: Clock) -> None:
    rule = learn(store)
    counted = record_attempt(
        AGENT,
        [rule.rule_id],
        outcome="succeeded",
        run_id="run",
        video_id="v1",
        stage="assets",
        attempt=2,
        answering="assets:0000000000000000",
        store=store,
    )
    assert (counted[0].fix_tries, counted[0].attempts[-1].get("answered", False)) == (0, False)


def test_ineffective_by_fix_tries_though_rare_among_deliveries(store: Store, clock: Clock) -> None:
    """Delivered 100 times, its failure showed up 5 times and its fix failed on each retry: 5 of
    105 deliveries recurred (far below the rate), 5 of 5 fix tries failed — ineffective."""
    rule = learn(store)
    for _ in range(95):
        rule = attempt(store, rule, "succeeded", failed=False, answered=False)
    for _ in range(4):
        rule = attempt(store, rule, "failed", failed=True, answered=True)
    assert not is_ineffective(rule, store.policies)  # 4 fix tries: too few to tell
    rule = attempt(store, rule, "failed", failed=True, answered=True)
    assert (rule.deliveries, rule.recurrences, rule.fix_tries) == (100, 5, 5)
    found = ineffective_rule(AGENT, rule, store.policies)
    assert found is not None
    assert (found.fix_tries, found.fix_failures, found.recurrence_rate) == (5, 5, 1.0)
    assert found.reason == "its fix failed again in 5 of 5 tries right after its failure (100%)"


def test_a_fix_that_mostly_works_is_not_ineffective(store: Store, clock: Clock) -> None:
    """Each time its failure shows up (a first attempt that carried it), the retry fixes it 9
    times in 10: recurrences are half the deliveries facing the failure, fix failures 1 in 10."""
    rule = learn(store)
    for i in range(10):
        rule = attempt(store, rule, "failed", failed=True, answered=False)
        rule = attempt(
            store, rule, "failed" if i == 0 else "succeeded", failed=i == 0, answered=True
        )
    assert (rule.fix_tries, rule.fix_failures) == (10, 1)
    assert not is_ineffective(rule, store.policies)
    assert rule.verified_by == "later_runs"


def test_every_text_failed_makes_the_rule_ineffective(store: Store, clock: Clock) -> None:
    """Rewritten after each failed fix (the text was losing), no text ever worked: over its
    texts the fix failed 5 times in 5 — ineffective, though each text alone had too few tries.
    Once the current text works, it is not."""
    rule = learn(store, "Fix number 0")
    for n in range(1, 6):
        rule = attempt(store, rule, "failed", failed=True, answered=True)
        rule = learn(store, f"Fix number {n}")  # a differing diagnosis of a losing text
    assert len(rule.revisions) == 6 and rule.fix_tries == 5
    assert not is_ineffective(rule, store.policies)  # the current text is untried
    rule = attempt(store, rule, "failed", failed=True, answered=True)
    found = ineffective_rule(AGENT, rule, store.policies)
    assert found is not None and found.fix_tries == 6
    assert found.reason.endswith("over its 6 texts (100%)")
    rule = learn(store, "Fix number 7")
    rule = attempt(store, rule, "succeeded", failed=False, answered=True)
    assert not is_ineffective(rule, store.policies)


def test_a_retry_verified_fix_is_overturned_by_a_miss(store: Store, clock: Clock) -> None:
    """Verified by a retry, the fix is overturned when its failure comes back at a first attempt
    that carried it (the retry's success did not show it prevents it); history then skips it."""
    captured = []
    run_stage("v1", "assets", Scripted([ANGLE, None]), diagnose=lambda f: RIGHT)
    assert the_rule(store).verified_by == "retry"
    clock.advance(minutes=5)

    def spy(failure):  # type: ignore[no-untyped-def]
        captured.append(diagnose_from_history(failure))
        return RIGHT

    run_stage("v2", "assets", Scripted([ANGLE, None]), diagnose=spy)
    assert captured == [None]  # the overturned fix is not handed back
    rule = the_rule(store)
    # A retry's success does not restore it (that was the evidence found wanting): it stays
    # overturned, and the next diagnoser is asked again at its next occurrence.
    assert rule.verified_by == "overturned" and rule.overturned_at is not None


def test_a_fix_verified_by_later_runs_survives_a_miss(store: Store, clock: Clock) -> None:
    rule = learn(store)
    for _ in range(2):
        rule = attempt(store, rule, "succeeded", failed=False, answered=True)
    assert rule.verified_by == "later_runs"
    rule = attempt(store, rule, "failed", failed=True, answered=False)
    assert rule.verified_by == "later_runs" and rule.overturned_at is None
