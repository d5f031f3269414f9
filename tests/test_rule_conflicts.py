"""Conflicts at creation (issue 14, item 4): a new rule that contradicts an active rule of the
same agent is marked (both ways) when it is learned; ``render_rules`` delivers one of the pair
(newer or more severe); ``run_stage`` records the held-back rule; a person resolves the pair
(``rules resolve-conflict`` or tombstoning one). Promotion counts successes.

Runs on both stores."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import (
    InvalidInputError,
    RuleNotFoundError,
    create_event,
    get_promotion_candidates,
    load_active_memory,
    load_tombstones,
    record_attempt,
    render_rules,
    resolve_conflict,
    tombstone_rule,
)
from rayvault.learning.loop import Diagnosis, Failure, StageContext, run_stage
from rayvault.learning.memory import prompt_rules
from rayvault.learning.models import LearningEvent, Rule

# From its module: once ``rayvault.learning.revisit`` is imported (the demo's tests import it),
# ``from rayvault.learning import revisit`` names the module, not the function.
from rayvault.learning.revisit import revisit
from rayvault.learning.soul import promote_rule
from rayvault.learning.store import Store

from .conftest import Clock

pytestmark = pytest.mark.both_stores

AGENT = "scriptwriter"
NEVER = "Never use superlatives like 'best ever'"
USE = "Use superlatives like 'best ever' in the intro"


def learn(store: Store, fix: str, symptom: str, severity: str = "WARN") -> LearningEvent:
    return create_event(
        run_id="run-1",
        severity=severity,
        component="script",
        symptom=symptom,
        root_cause="tone",
        fix_applied=fix,
        agent=AGENT,
        store=store,
    )


def pair(
    store: Store, clock: Clock, first_severity: str = "FAIL"
) -> tuple[LearningEvent, LearningEvent]:
    old = learn(store, NEVER, "Reviewer flagged hype wording in the script", first_severity)
    clock.advance(minutes=5)
    new = learn(store, USE, "Intro judged flat by the reviewer")
    return old, new


def rules(store: Store) -> dict[str, Rule]:
    return {r.rule_id: r for r in load_active_memory(AGENT, store=store).rules}


def test_conflict_marked_at_creation_both_ways(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)
    assert old.rule_conflicts_with == []
    assert new.rule_conflicts_with == [old.rule_id]
    active = rules(store)
    assert active[old.rule_id].conflicts_with == [new.rule_id]
    assert active[new.rule_id].conflicts_with == [old.rule_id]
    # An unrelated rule of the same agent is not marked, and memory keeps its old shape.
    other = learn(store, "Keep the script under 90 seconds", "Script runs too long for a short")
    assert other.rule_conflicts_with == []
    data = store.load_memory(AGENT).model_dump(mode="json")
    shapes = {r["rule_id"]: r for r in data["rules"]}
    assert "conflicts_with" not in shapes[other.rule_id]
    assert shapes[new.rule_id]["conflicts_with"] == [old.rule_id]


def test_cli_events_create_says_so(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    learn(store, NEVER, "Reviewer flagged hype wording in the script")
    clock.advance(minutes=5)
    capsys.readouterr()
    args = ["events", "create", "--severity", "WARN", "--component", "script"]
    args += ["--symptom", "Intro judged flat", "--fix", USE, "--agent", AGENT]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "conflicts with active rule" in out and "resolve-conflict" in out
    assert main([*args[:-4], "--symptom", "Intro flat again", "--fix", USE, "--json"]) == 0


def test_render_delivers_the_newer_by_default(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)
    text = render_rules(AGENT, store=store)
    assert "in the intro" in text and "Never use superlatives" not in text
    block = prompt_rules(AGENT, store=store)
    assert [r.rule_id for r in block.rules] == [new.rule_id]
    assert block.held_back == {old.rule_id: new.rule_id}
    assert block.total == 2


def test_render_delivers_the_more_severe_when_configured(
    store_factory: Callable[[], Store], root: Path, clock: Clock
) -> None:
    (root / "policies.py").write_text('LEARNING_CONFLICT_PREFERENCE = "severe"\n')
    store = store_factory()
    assert store.policies.LEARNING_CONFLICT_PREFERENCE == "severe"
    old, new = pair(store, clock, first_severity="FAIL")  # the older is the more severe
    text = render_rules(AGENT, store=store)
    assert "Never use superlatives" in text and "in the intro" not in text
    assert prompt_rules(AGENT, store=store).held_back == {new.rule_id: old.rule_id}


def test_conflict_preference_is_validated(
    store_factory: Callable[[], Store], root: Path, clock: Clock
) -> None:
    (root / "policies.py").write_text('LEARNING_CONFLICT_PREFERENCE = "oldest"\n')
    with pytest.raises(Exception, match="LEARNING_CONFLICT_PREFERENCE.*newer, severe"):
        store_factory().policies  # noqa: B018 (resolving the policies is the test)


def test_run_stage_records_the_held_back_rule(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)
    seen: list[StageContext] = []

    def stage(ctx: StageContext) -> str:
        seen.append(ctx)
        return "ok"

    run = run_stage("v1", "script", stage, store=store)
    assert run.ok
    assert [r.rule_id for r in seen[0].rules] == [new.rule_id]
    execute = next(s for s in run.steps if s.step == "execute")
    assert execute.data["held_back_rule_ids"] == {old.rule_id: new.rule_id}
    assert f"held back (unresolved conflict): {old.rule_id} (in favour of {new.rule_id})" in (
        execute.detail
    )
    active = rules(store)
    assert active[new.rule_id].deliveries == 1 and active[old.rule_id].deliveries == 0


def test_tombstoning_one_clears_the_mark(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)
    tombstone_rule(AGENT, old.rule_id, "superseded by the intro rule", store=store)
    assert rules(store)[new.rule_id].conflicts_with == []
    assert "in the intro" in render_rules(AGENT, store=store)
    with pytest.raises(InvalidInputError, match="tombstoned"):
        resolve_conflict(AGENT, old.rule_id, keep=new.rule_id, store=store)
    with pytest.raises(InvalidInputError, match="no unresolved conflict"):
        resolve_conflict(AGENT, new.rule_id, keep=new.rule_id, store=store)


def test_resolve_conflict_keeps_one(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)
    result = resolve_conflict(AGENT, new.rule_id, keep=old.rule_id, store=store)
    assert (result.kept, result.tombstoned) == ([old.rule_id], new.rule_id)
    assert list(rules(store)) == [old.rule_id]
    assert rules(store)[old.rule_id].conflicts_with == []
    gone = load_tombstones(AGENT, store=store).tombstones[-1]
    assert gone.rule_id == new.rule_id and gone.superseded_by == old.rule_id
    assert "resolved by a person" in gone.reason
    with pytest.raises(InvalidInputError, match="no unresolved conflict"):
        resolve_conflict(AGENT, old.rule_id, keep=old.rule_id, store=store)


def test_resolve_conflict_keep_both(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)
    result = resolve_conflict(AGENT, old.rule_id, keep_both=True, store=store)
    assert result.tombstoned is None and sorted(result.kept) == sorted([old.rule_id, new.rule_id])
    assert all(not r.conflicts_with for r in rules(store).values())
    assert len(prompt_rules(AGENT, store=store).rules) == 2
    with pytest.raises(InvalidInputError, match="no unresolved conflict"):
        resolve_conflict(AGENT, old.rule_id, keep_both=True, store=store)


def test_keep_both_is_remembered(store: Store, clock: Clock) -> None:
    """A pair a person kept both of is never flagged again: not by the weekly revisit, not when
    another rule is learned; a third rule that contradicts one of them is still marked."""
    old, new = pair(store, clock)
    assert [c.rule_ids for c in revisit(dry_run=True, store=store).revalidation.conflicts] == [
        [old.rule_id, new.rule_id]
    ]
    resolve_conflict(AGENT, old.rule_id, keep_both=True, store=store)
    active = rules(store)
    assert active[old.rule_id].compatible_with == [new.rule_id]
    assert active[new.rule_id].compatible_with == [old.rule_id]
    assert revisit(dry_run=True, store=store).revalidation.conflicts == []
    clock.advance(minutes=5)
    third = learn(store, NEVER, "Hype wording flagged again in the outro")
    assert third.rule_conflicts_with == [new.rule_id]  # a new pair is judged afresh
    [conflict] = revisit(dry_run=True, store=store).revalidation.conflicts
    assert set(conflict.rule_ids) == {new.rule_id, third.rule_id}
    assert conflict.held_back == new.rule_id and "held back from prompts" in conflict.reason
    # Tombstoning one of the compatible pair drops the judgement with it.
    tombstone_rule(AGENT, old.rule_id, reason="obsolete", store=store)
    assert rules(store)[new.rule_id].compatible_with == []


def test_soul_promote_says_whether_the_rule_earned_it(store: Store, clock: Clock) -> None:
    """``promote_rule`` (a person's command) works on any rule, and says whether the rule had
    earned its promotion: successes at the threshold, not flagged ineffective."""
    event = learn(store, "Keep the script under 90 seconds", "Script runs too long for a short")
    soul = store.docs.create_soul(AGENT, "# scriptwriter\n")
    assert soul is not None
    common = {"run_id": "r", "video_id": "v1", "stage": "script", "store": store}
    for attempt in range(1, 6):  # 5 deliveries, 5 recurrences: ineffective
        record_attempt(
            AGENT,
            [event.rule_id],
            outcome="failed",
            attempt=attempt,
            fingerprint=event.fingerprint,
            **common,
        )
    result = promote_rule(AGENT, str(event.rule_id), store=store)
    assert (result.earned, result.deliveries, result.successes) == (False, 5, 0)
    assert result.not_earned_reason == (
        "flagged ineffective: its failure recurred in 5 of 5 deliveries (100%)"
    )
    assert "succeeded in 0 of 5 runs that carried it" in result.section
    with store.agent_state(AGENT) as state:
        [rule] = state.memory.rules
        rule.successes, rule.recurrences = 2, 0
        state.memory_changed = True
    result = promote_rule(AGENT, str(event.rule_id), store=store)
    assert (result.earned, result.not_earned_reason, result.action) == (True, "", "updated")
    assert "succeeded in 2 of 5 runs that carried it" in soul.read_text(encoding="utf-8")


def test_cli_resolve_conflict(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = pair(store, clock)
    capsys.readouterr()
    # Bad input: unknown agent, unknown rule, a rule that is not the other's partner, no choice.
    assert main(["rules", "resolve-conflict", "nobody", old.rule_id, "--keep", new.rule_id]) == 1
    assert "unknown agent" in capsys.readouterr().err
    assert main(["rules", "resolve-conflict", AGENT, "rule-nope", "--keep", new.rule_id]) == 1
    assert "rule-nope" in capsys.readouterr().err
    assert main(["rules", "resolve-conflict", AGENT, old.rule_id]) == 1
    assert "keep" in capsys.readouterr().err
    # Human: keep the newer.
    assert main(["rules", "resolve-conflict", AGENT, old.rule_id, "--keep", new.rule_id]) == 0
    out = capsys.readouterr().out
    assert f"kept {new.rule_id}, tombstoned {old.rule_id}" in out
    # Already resolved: a clear error, exit 1 (human and --json).
    assert main(["rules", "resolve-conflict", AGENT, new.rule_id, "--keep", new.rule_id]) == 1
    assert "no unresolved conflict" in capsys.readouterr().err
    # --json on a fresh pair.
    clock.advance(minutes=5)
    third = learn(store, NEVER, "Hype wording flagged again in the outro")
    assert third.rule_conflicts_with == [new.rule_id]
    capsys.readouterr()
    argv = ["rules", "resolve-conflict", AGENT, new.rule_id, "--keep-both", "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tombstoned"] is None and sorted(data["kept"]) == sorted(
        [new.rule_id, third.rule_id]
    )


def test_resolve_conflict_rule_errors(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)
    with pytest.raises(RuleNotFoundError):
        resolve_conflict(AGENT, "rule-nope", keep=new.rule_id, store=store)
    with pytest.raises(RuleNotFoundError):
        resolve_conflict(AGENT, old.rule_id, keep="rule-nope", store=store)
    with pytest.raises(InvalidInputError, match="unknown agent"):
        resolve_conflict("nobody", old.rule_id, keep=new.rule_id, store=store)
    other = learn(store, "Keep the script under 90 seconds", "Script runs too long for a short")
    with pytest.raises(InvalidInputError, match="not an unresolved conflicting pair"):
        resolve_conflict(AGENT, old.rule_id, keep=other.rule_id, store=store)


def test_promotion_candidates_need_successes(store: Store, clock: Clock) -> None:
    """Deliveries and re-learning no longer make a candidate: successes at the threshold do."""
    event = learn(store, "Keep the script under 90 seconds", "Script runs too long for a short")
    clock.advance(minutes=1)
    learn(store, "Keep the script under 90 seconds", "Script runs too long for a short")
    rule = rules(store)[event.rule_id]
    assert rule.applied_count == 2  # the old test would have proposed it
    assert get_promotion_candidates(2, store=store) == []
    common = {"run_id": "r", "video_id": "v1", "stage": "script", "store": store}
    record_attempt(AGENT, [rule.rule_id], outcome="failed", attempt=1, **common)
    record_attempt(AGENT, [rule.rule_id], outcome="succeeded", attempt=2, **common)
    assert get_promotion_candidates(2, store=store) == []
    record_attempt(AGENT, [rule.rule_id], outcome="succeeded", attempt=3, **common)
    [candidate] = get_promotion_candidates(2, store=store)
    assert (candidate.rule_id, candidate.successes) == (rule.rule_id, 2)


def test_promotion_of_rules_without_counters_keeps_the_old_test(store: Store, clock: Clock) -> None:
    """A rule the original system wrote (no efficacy counters) is judged by applied_count."""
    event = learn(store, "Keep the script under 90 seconds", "Script runs too long for a short")
    with store.agent_state(AGENT) as state:
        [rule] = state.memory.rules
        rule.occurrences = 0
        rule.applied_count = 3
        state.memory_changed = True
    [candidate] = get_promotion_candidates(2, store=store)
    assert candidate.rule_id == event.rule_id and candidate.successes == 0


def test_cli_memory_show_names_the_held_back_rule(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = pair(store, clock)
    capsys.readouterr()
    assert main(["memory", "show", AGENT]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"conflict: {old.rule_id} is held back in favour of {new.rule_id}" in out
    assert main(["memory", "show", AGENT, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    marks = {r["rule_id"]: r.get("conflicts_with") for r in data["rules"]}
    assert marks == {old.rule_id: [new.rule_id], new.rule_id: [old.rule_id]}


def test_failed_attempt_error_context_names_the_held_back_rule(store: Store, clock: Clock) -> None:
    old, new = pair(store, clock)

    def stage(ctx: StageContext) -> str:
        raise RuntimeError("script generator crashed on the outro")

    run = run_stage("v2", "script", stage, retries=0, on_failure="return", store=store)
    assert not run.ok
    from rayvault.learning.errors import get_error

    entry = get_error(run.error_ids[0], store=store)
    assert entry.context["rule_ids"] == [new.rule_id]
    assert entry.context["held_back_rule_ids"] == {old.rule_id: new.rule_id}


def test_run_stage_apply_step_says_so_and_the_retry_gets_the_newer(
    store: Store, clock: Clock
) -> None:
    old = learn(store, NEVER, "Reviewer flagged hype wording in the script")
    clock.advance(minutes=5)
    seen: list[StageContext] = []

    def stage(ctx: StageContext) -> str:
        seen.append(ctx)
        if len(seen) == 1:
            raise ValueError("intro judged flat by the reviewer")
        return "ok"

    def diagnose(failure: Failure) -> Diagnosis:
        return Diagnosis(root_cause="tone", fix=USE)

    run = run_stage("v3", "script", stage, diagnose=diagnose, store=store)
    assert run.ok
    apply = next(s for s in run.steps if s.step == "apply")
    assert f"conflicts with active rule {old.rule_id}" in apply.detail
    new_id = apply.data["rule_id"]
    assert [r.rule_id for r in seen[0].rules] == [old.rule_id]
    assert [r.rule_id for r in seen[1].rules] == [new_id]  # the newer, the old held back
    execute = [s for s in run.steps if s.step == "execute"][1]
    assert execute.data["held_back_rule_ids"] == {old.rule_id: new_id}


def test_eviction_clears_the_mark(
    store_factory: Callable[[], Store], root: Path, clock: Clock
) -> None:
    (root / "policies.py").write_text("LEARNING_MAX_ACTIVE_RULES_PER_AGENT = 2\n")
    store = store_factory()
    old, new = pair(store, clock, first_severity="WARN")
    clock.advance(minutes=5)
    learn(store, "Keep the script under 90 seconds", "Script runs too long for a short")
    active = rules(store)
    assert old.rule_id not in active  # least recently used: evicted
    assert active[new.rule_id].conflicts_with == []
