"""Ineffective rules (issue 14, item 2): a rule delivered at least
``LEARNING_EFFICACY_MIN_DELIVERIES`` times whose failure recurred in at least
``LEARNING_EFFICACY_MAX_RECURRENCE_RATE`` of them is flagged, with its evidence, in
``memory show``, the revisit's revalidation, the weekly report and as a gate warning; it is never
removed.

Runs on both stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import create_event, load_active_memory, record_attempt
from rayvault.learning._report_html import render_html
from rayvault.learning.efficacy import ineffective_rule, ineffective_rules, is_ineffective
from rayvault.learning.gate import check_known_failures, learning_gate
from rayvault.learning.models import Rule
from rayvault.learning.revisit import revisit
from rayvault.learning.store import Store
from rayvault.policies import load_policies

from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores

AGENT = "dzine_producer"
OTHER_FP = "0" * 16


def learned_rule(store: Store, **overrides: object) -> Rule:
    """The agent's rule learned from the spec's example event (or ``overrides`` of it)."""
    result = create_event(**event_kwargs(**overrides), store=store)  # type: ignore[arg-type]
    rule_id = result.rule_id
    return next(r for r in load_active_memory(AGENT, store=store).rules if r.rule_id == rule_id)


def deliver(store: Store, rule: Rule, recurred: int, succeeded: int, other: int = 0) -> Rule:
    """Count attempts that carried ``rule``: ``recurred`` failed with its own pattern,
    ``succeeded`` succeeded, ``other`` failed with another pattern."""
    plan = ["recurred"] * recurred + ["succeeded"] * succeeded + ["other"] * other
    for n, kind in enumerate(plan, start=1):
        record_attempt(
            AGENT,
            [rule.rule_id],
            outcome="succeeded" if kind == "succeeded" else "failed",
            run_id=f"run-{n}",
            video_id=f"v{100 + n}",
            stage="assets",
            attempt=1,
            fingerprint=None
            if kind == "succeeded"
            else (rule.fingerprint if kind == "recurred" else OTHER_FP),
            error_id=None if kind == "succeeded" else f"err-{n}",
            store=store,
        )
    return next(
        r for r in load_active_memory(AGENT, store=store).rules if r.rule_id == rule.rule_id
    )


# -- the decision ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("deliveries", "recurrences", "flagged"),
    [
        (4, 4, False),  # one delivery below the minimum: never flagged, whatever the rate
        (5, 2, False),  # at the minimum, one recurrence below the rate (40 % < 50 %)
        (5, 3, True),  # at the minimum, above the rate
        (6, 3, True),  # exactly at the rate (50 %)
        (6, 2, False),
        (10, 5, True),
        (10, 4, False),
    ],
)
def test_thresholds_are_exact(
    store: Store, clock: Clock, deliveries: int, recurrences: int, flagged: bool
) -> None:
    rule = learned_rule(store)
    rule = deliver(store, rule, recurrences, deliveries - recurrences)
    assert (rule.deliveries, rule.recurrences) == (deliveries, recurrences)
    assert is_ineffective(rule, store.policies) is flagged
    found = ineffective_rule(AGENT, rule, store.policies)
    assert (found is not None) is flagged


def test_a_rate_that_does_not_round_well_is_met_exactly_at_it(root: Path) -> None:
    """3 of 10 at 0.3: ``0.3 × 10`` is 3.0000000000000004 in floats; the rule is flagged."""
    (root / "policies.py").write_text(
        "LEARNING_EFFICACY_MIN_DELIVERIES = 10\nLEARNING_EFFICACY_MAX_RECURRENCE_RATE = 0.3\n"
    )
    policies = load_policies(root)
    rule = Rule.model_validate(
        {"rule_id": "r1", "created": "2026-02-19T12:00:00Z", "severity": "FAIL",
         "component": "assets", "rule": "x", "deliveries": 10, "recurrences": 3}
    )  # fmt: skip
    assert is_ineffective(rule, policies)
    rule.recurrences = 2
    assert not is_ineffective(rule, policies)
    # Below the minimum: never, even at 100 %.
    rule.deliveries = rule.recurrences = 9
    assert not is_ineffective(rule, policies)


def test_few_deliveries_are_never_flagged(store: Store, clock: Clock) -> None:
    """A rule delivered fewer than the minimum times is not flagged anywhere, even when every
    delivery recurred."""
    rule = deliver(store, learned_rule(store), recurred=4, succeeded=0)
    assert (rule.deliveries, rule.recurrences) == (4, 4)
    assert ineffective_rules(AGENT, [rule], store.policies) == []
    report = revisit(dry_run=True, store=store)
    assert report.revalidation.ineffective == []
    known = check_known_failures("assets", store=store)
    assert "ineffective_rules" not in known.details
    assert main(["memory", "show", AGENT, "--json"]) == 0


def test_thresholds_follow_the_policies(root: Path, store: Store, clock: Clock) -> None:
    rule = deliver(store, learned_rule(store), recurred=2, succeeded=1)
    assert ineffective_rule(AGENT, rule, store.policies) is None
    (root / "policies.py").write_text(
        "LEARNING_EFFICACY_MIN_DELIVERIES = 3\nLEARNING_EFFICACY_MAX_RECURRENCE_RATE = 0.6\n"
    )
    policies = load_policies(root)
    found = ineffective_rule(AGENT, rule, policies)
    assert found is not None
    assert (found.min_deliveries, found.max_recurrence_rate) == (3, 0.6)
    assert found.recurrence_rate == 0.667


def test_evidence_and_nothing_removed(store: Store, clock: Clock) -> None:
    """The flag carries the counters, the rate and the recent attempts newest first; failures of
    another pattern count as deliveries, not recurrences; the rule stays active."""
    rule = deliver(store, learned_rule(store), recurred=3, succeeded=1, other=1)
    found = ineffective_rule(AGENT, rule, store.policies)
    assert found is not None
    assert (found.deliveries, found.recurrences, found.successes) == (5, 3, 1)
    assert found.recurrence_rate == 0.6 and found.proposal == "tombstone or rewrite"
    assert found.reason == "its failure recurred in 3 of 5 deliveries (60%)"
    assert [(a.run_id, a.outcome, a.recurred) for a in found.attempts] == [
        ("run-5", "failed", False),
        ("run-4", "succeeded", False),
        ("run-3", "failed", True),
        ("run-2", "failed", True),
        ("run-1", "failed", True),
    ]
    assert found.attempts[-1].error_id == "err-1"
    assert rule.rule_id in {r.rule_id for r in load_active_memory(AGENT, store=store).rules}


# -- where it is shown ---------------------------------------------------------------------------
def test_memory_show_marks_it(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = deliver(store, learned_rule(store), recurred=3, succeeded=2)
    good = learned_rule(
        store,
        symptom="Voiceover clipped at the end",
        root_cause="Silence trimmed too hard",
        fix_applied="Keep 300 ms of tail silence",
    )
    capsys.readouterr()
    assert main(["memory", "show", AGENT]) == 0
    out = capsys.readouterr().out
    [bad_line] = [line for line in out.splitlines() if bad.rule_id in line]
    assert "3/5 INEFFECTIVE" in bad_line
    [good_line] = [line for line in out.splitlines() if good.rule_id in line]
    assert "INEFFECTIVE" not in good_line
    assert "1 ineffective rule" in out and "Tombstone or rewrite" in out

    assert main(["memory", "show", AGENT, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    flags = {r["rule_id"]: r["ineffective"] for r in data["rules"]}
    assert flags == {bad.rule_id: True, good.rule_id: False}
    [entry] = data["ineffective"]
    assert entry["rule_id"] == bad.rule_id
    assert (entry["deliveries"], entry["recurrences"], entry["recurrence_rate"]) == (5, 3, 0.6)
    assert len(entry["attempts"]) == 5 and entry["proposal"] == "tombstone or rewrite"


def test_revisit_revalidation_carries_the_attempts(store: Store, clock: Clock) -> None:
    rule = deliver(store, learned_rule(store), recurred=4, succeeded=1)
    result = revisit(dry_run=True, store=store)
    [found] = result.revalidation.ineffective
    assert (found.agent, found.rule_id, found.proposal) == (
        AGENT,
        rule.rule_id,
        "tombstone or rewrite",
    )
    assert [a.recurred for a in found.attempts] == [False, True, True, True, True]
    assert result.report.agent_summaries[AGENT]["ineffective_rules"] == 1
    # Never removed: the rule is still active after the revisit.
    assert rule.rule_id in {r.rule_id for r in load_active_memory(AGENT, store=store).rules}


def test_weekly_report_json_and_html(store: Store, clock: Clock) -> None:
    """The report's JSON has the flag with its evidence; the HTML has a section for it, the
    rule's text escaped."""
    rule = learned_rule(store, fix_applied='Use <b>3/4</b> angle & "keep" it')
    rule = deliver(store, rule, recurred=5, succeeded=1)
    result = revisit(store=store)
    data = result.report.model_dump(mode="json")
    [entry] = data["revalidation"]["ineffective"]
    assert entry["rule_id"] == rule.rule_id and entry["recurrence_rate"] == 0.833
    assert entry["attempts"][0]["run_id"] == "run-6" and len(entry["attempts"]) == 6
    assert data["agent_summaries"][AGENT]["ineffective_rules"] == 1
    html = render_html(result.report)
    assert "Revalidation: ineffective rules" in html
    assert 'id="ineffective-rules"' in html
    assert f'data-rule-id="{rule.rule_id}"' in html
    assert 'data-field="ineffective_rules">1<' in html
    assert "83% (≥ 50%)" in html and "tombstone or rewrite" in html
    assert "<b>3/4</b>" not in html and "&lt;b&gt;3/4&lt;/b&gt;" in html


def test_report_without_ineffective_rules_says_so(store: Store, clock: Clock) -> None:
    deliver(store, learned_rule(store), recurred=1, succeeded=5)
    result = revisit(dry_run=True, store=store)
    assert result.revalidation.ineffective == []
    assert "No ineffective rules." in render_html(result.report)


def test_gate_warns_for_the_agents_stage(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stage whose agent has an ineffective rule passes with a warning naming the rule;
    another agent's stage does not."""
    rule = deliver(store, learned_rule(store), recurred=3, succeeded=2)
    result = learning_gate("v9", "assets", store=store)
    assert not result.blocked and result.outcome == "warn"
    known = next(c for c in result.checks if c.name == "check_known_failures")
    assert known.outcome == "warn" and known.passed
    assert known.reason.startswith(f"1 ineffective rule of {AGENT}: {rule.rule_id} ")
    assert "recurred in 3 of 5 deliveries (60%)" in known.reason
    assert "tombstone or rewrite" in known.reason
    [flag] = known.details["ineffective_rules"]
    assert flag["rule_id"] == rule.rule_id and flag["recurrence_rate"] == 0.6
    assert flag["history"] == f"rayvault-learn rules history {AGENT} {rule.rule_id}"
    # Another stage (another agent): no warning.
    other = learning_gate("v9", "research", store=store)
    assert other.outcome == "pass"
    # The CLI: exit 0, a [WARN] line.
    capsys.readouterr()
    assert main(["gate", "v10", "assets"]) == 0
    out = capsys.readouterr().out
    assert "[WARN] check_known_failures: 1 ineffective rule" in out


def test_gate_warns_even_at_deny_level_and_beside_a_recurring_failure(
    store: Store, clock: Clock
) -> None:
    """With recurring failures of the pattern, the pattern's verdict says its rule is
    ineffective and the check still only warns (the rule is delivered)."""
    rule = learned_rule(store, verification="")
    for n in range(2):
        create_event(
            **event_kwargs(video_id=f"v{n}", run_id=f"r-{n}", verification=""),  # type: ignore[arg-type]
            store=store,
        )
    deliver(store, rule, recurred=3, succeeded=2)
    known = check_known_failures("assets", store=store)
    assert known.level == "deny" and known.outcome == "warn"
    [pattern] = known.details["patterns"]
    assert pattern["why"] == f"rule {rule.rule_id} of {AGENT} is being delivered but is ineffective"
    assert "1 ineffective rule" in known.reason


def test_cli_revisit_lists_them(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    rule = deliver(store, learned_rule(store), recurred=3, succeeded=2)
    capsys.readouterr()
    assert main(["revisit", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "Ineffective rules" in out and "tombstone or rewrite" in out
    assert f"rayvault-learn rules history {AGENT} {rule.rule_id}" in out
    assert "recurred in 3 of 5 deliveries (60%)" in out


def test_an_ineffective_rule_is_never_a_promotion_candidate(store: Store, clock: Clock) -> None:
    """Successes at the threshold make a candidate, unless the rule's failure also keeps
    recurring while it is delivered."""
    from rayvault.learning.registry import promotion_candidates

    threshold = store.policies.LEARNING_PROMOTION_THRESHOLD_OCCURRENCES
    rule = deliver(store, learned_rule(store), recurred=0, succeeded=threshold)
    memories = {AGENT: load_active_memory(AGENT, store=store)}
    assert [c.rule_id for c in promotion_candidates(memories, threshold, store)] == [rule.rule_id]
    rule = deliver(store, rule, recurred=threshold + 1, succeeded=0)
    assert is_ineffective(rule, store.policies) and rule.successes >= threshold
    memories = {AGENT: load_active_memory(AGENT, store=store)}
    assert promotion_candidates(memories, threshold, store) == []
