"""Whether a rule works: what each ``run_stage`` attempt delivered, and how it ended.

A rule's ``applied_count`` mixes "learned again" and "shown to the agent" (its seed meaning,
kept for promotion). The counters here keep them apart, per rule (:class:`Rule`):
``deliveries`` (attempts whose prompt carried it), ``recurrences`` (of those, attempts that still
failed with the rule's own pattern) and ``successes`` (attempts that succeeded);
``occurrences`` is counted where rules are learned (``memory.apply_event``).

Each attempt is counted once, when its outcome is known, in one read-modify-write of the agent's
memory under its lock (:meth:`Store.agent_state`), so concurrent stage runs of one agent never
lose a count. The rule also keeps the most recent attempts themselves (run, video, stage,
attempt, outcome, time, the sha256 of the rendered block): ``rules history`` shows them, and the
error-log entry of a failed attempt carries the same ids and hash, so "which rules did the agent
see when it failed?" has an answer from either side.

A rule delivered at least ``LEARNING_EFFICACY_MIN_DELIVERIES`` times whose failure recurred in
at least ``LEARNING_EFFICACY_MAX_RECURRENCE_RATE`` of them is *ineffective*
(:func:`ineffective_rule`, with its evidence): ``memory show``, the revisit, the weekly report and
the gate (a warning) show it; nothing removes it, a person tombstones or rewrites it.

Rules follow the evidence: a rule's text can be revised (``memory.apply_event``,
``memory.record_verification``), and each text keeps its own figures (:func:`text_counters`):
the *ineffective* verdict and whether a text is *losing* (:func:`is_losing`: its failure
recurred while delivered at least as often as it succeeded) judge the current text alone, so a
rewritten rule starts clean. How the current text was verified (``verified_by``) moves with the
counting here: ``later_runs`` once ``LEARNING_EFFICACY_MIN_DELIVERIES`` attempts that carried it
succeeded (and it is not ineffective); a retry-verified text that becomes losing is
``overturned`` (with the time), and history-based diagnosis no longer hands it back.

An attempt that ends in an exception the loop does not learn from (a ``LearningError`` raised
inside the stage, a type in ``ignore=``) is not counted, as it is not logged: it says nothing
about the rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rayvault.learning._ids import validate_identifier
from rayvault.learning._time import format_ts, utcnow
from rayvault.learning._validate import checked
from rayvault.learning.exceptions import InvalidInputError, RuleNotFoundError
from rayvault.learning.models import (
    IneffectiveRule,
    Rule,
    RuleAttempt,
    RuleAttemptOutcome,
    RuleHistory,
    RuleRevision,
)
from rayvault.learning.stages import configured_agents
from rayvault.learning.store import Store, get_store
from rayvault.policies import Policies

#: Attempts kept on each rule as evidence (the counters count them all): the rule's recent
#: record. A small bound because memory is read (and parsed) for every prompt and written for
#: every attempt: with 10 rules, a succeeding ``run_stage`` on the file store took p50 3.9 ms
#: before counters, 5.6–6.0 ms keeping 10 attempts per rule, 15.7 ms keeping 50.
RULE_ATTEMPTS_KEPT = 10


def rules_block_sha256(text: str) -> str | None:
    """The sha256 (hex) of a rendered rules block; None for an empty block (nothing delivered)."""
    if not text:
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@checked
def text_counters(rule: Rule) -> tuple[int, int, int]:
    """``(deliveries, recurrences, successes)`` of the rule's current text: the lifetime
    counters less those recorded when the text became current (its last revision)."""
    return current_counters(rule)


def current_counters(rule: Rule) -> tuple[int, int, int]:
    """:func:`text_counters` without the argument checks, for the counting's own hot path."""
    if not rule.revisions:
        return rule.deliveries, rule.recurrences, rule.successes
    start = rule.revisions[-1]
    return (
        max(0, rule.deliveries - _count(start, "deliveries")),
        max(0, rule.recurrences - _count(start, "recurrences")),
        max(0, rule.successes - _count(start, "successes")),
    )


def _count(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def revision_counters(rule: Rule) -> list[tuple[int, int, int]]:
    """Per text of ``rule.revisions`` (oldest first): its own deliveries, recurrences and
    successes, the differences between the counters at consecutive revisions (the current text's
    up to the rule's lifetime counters)."""
    names = ("deliveries", "recurrences", "successes")
    ends = [
        *(tuple(_count(r, n) for n in names) for r in rule.revisions[1:]),
        (rule.deliveries, rule.recurrences, rule.successes),
    ]
    starts = [tuple(_count(r, n) for n in names) for r in rule.revisions]
    return [
        (max(0, e[0] - s[0]), max(0, e[1] - s[1]), max(0, e[2] - s[2]))
        for s, e in zip(starts, ends, strict=True)
    ]


def counts_ineffective(deliveries: int, recurrences: int, policies: Policies) -> bool:
    """The ineffective verdict on one text's counters (see :func:`is_ineffective`)."""
    if deliveries < policies.LEARNING_EFFICACY_MIN_DELIVERIES or deliveries <= 0:
        return False
    return recurrences / deliveries >= policies.LEARNING_EFFICACY_MAX_RECURRENCE_RATE


def counts_losing(deliveries: int, recurrences: int, successes: int, policies: Policies) -> bool:
    """Whether a text with these counters is losing: its failure recurred while delivered at
    least once and at least as often as it succeeded, or it is ineffective."""
    return (recurrences >= 1 and recurrences >= successes) or counts_ineffective(
        deliveries, recurrences, policies
    )


@checked
def is_losing(rule: Rule, policies: Policies) -> bool:
    """Whether the rule's current text is losing (:func:`counts_losing` on
    :func:`text_counters`): a differing diagnosis of its pattern then revises it at learn time."""
    return text_losing(rule, policies)


def text_losing(rule: Rule, policies: Policies) -> bool:
    """:func:`is_losing` without the argument checks (used under the agent's lock)."""
    return counts_losing(*current_counters(rule), policies)


def set_text_state(rule: Rule, verified_by: str | None, overturned_at: Any = None) -> None:
    """Record how the rule's current text was verified, on the rule and on its current revision
    (when it has revisions), so the two never disagree."""
    rule.verified_by = verified_by
    rule.overturned_at = overturned_at
    if rule.revisions:
        entry = rule.revisions[-1]
        entry["verified_by"] = verified_by
        if overturned_at is not None:
            entry["overturned_at"] = format_ts(overturned_at)
        else:
            entry.pop("overturned_at", None)


def _judge_text(rule: Rule, recurred: bool, policies: Policies, now: Any) -> None:
    """After one counted attempt: a retry-verified text that is now losing is overturned; a text
    whose later runs succeeded often enough (and not ineffective) is verified by them."""
    state = rule.verified_by
    if recurred and state == "retry" and text_losing(rule, policies):
        set_text_state(rule, "overturned", now)
    elif state in (None, "retry") and not recurred:
        deliveries, recurrences, successes = current_counters(rule)
        if successes >= policies.LEARNING_EFFICACY_MIN_DELIVERIES and not counts_ineffective(
            deliveries, recurrences, policies
        ):
            set_text_state(rule, "later_runs")


@checked
def record_attempt(
    agent: str,
    rule_ids: Sequence[str],
    *,
    outcome: RuleAttemptOutcome,
    run_id: str,
    video_id: str,
    stage: str,
    attempt: int,
    rules_sha256: str | None = None,
    fingerprint: str | None = None,
    error_id: str | None = None,
    store: Store | None = None,
) -> list[Rule]:
    """Count one stage attempt that delivered ``rule_ids`` to ``agent`` and ended in
    ``outcome``: every rule still active gets a delivery, and a success, or — when the attempt
    failed with the rule's own pattern (``fingerprint`` and the rule's key compared after
    following merges) — a recurrence; the attempt is kept on the rule (the newest
    :data:`RULE_ATTEMPTS_KEPT`). One read-modify-write under the agent's lock; not archived (a
    count, not a new version of the rules). Ids no longer active are skipped. Returns the rules
    as updated. ``run_stage`` calls this for every attempt."""
    validate_identifier(agent, "agent")
    wanted = list(dict.fromkeys(rule_ids))
    if not wanted:
        return []
    # Imported here: the gate reads this module's verdict (``ineffective_rules``) on its cold
    # path, and memory (with its grouping) costs ~30 ms to import there.
    from rayvault.learning.memory import rule_fingerprint

    store = store or get_store()
    target = store.resolve_pattern(fingerprint) if outcome == "failed" and fingerprint else None
    resolved: dict[str, str] = {}

    def same_pattern(rule: Rule) -> bool:
        if target is None:
            return False
        key = rule_fingerprint(rule, store)
        if key in (fingerprint, target):
            return True
        if key not in resolved:
            resolved[key] = store.resolve_pattern(key)
        return resolved[key] == target

    now = utcnow()
    policies = store.policies
    with store.agent_state(agent) as state:
        by_id = {r.rule_id: r for r in state.memory.rules}
        counted: list[Rule] = []
        for rule_id in wanted:
            rule = by_id.get(rule_id)
            if rule is None:
                continue
            recurred = same_pattern(rule)
            rule.deliveries += 1
            if outcome == "succeeded":
                rule.successes += 1
            elif recurred:
                rule.recurrences += 1
            rule.attempts.append(
                RuleAttempt(
                    run_id=run_id,
                    video_id=video_id,
                    stage=stage,
                    attempt=attempt,
                    outcome=outcome,
                    at=now,
                    rules_sha256=rules_sha256,
                    recurred=recurred,
                    error_id=error_id,
                    fingerprint=fingerprint,
                ).to_dict()
            )
            if len(rule.attempts) > RULE_ATTEMPTS_KEPT:
                del rule.attempts[: len(rule.attempts) - RULE_ATTEMPTS_KEPT]
            _judge_text(rule, recurred, policies, now)
            counted.append(rule)
        if counted:
            state.memory_changed = True
            state.archive = False
    return [r.model_copy(deep=True) for r in counted]


@checked
def rule_history(agent: str, rule_id: str, *, store: Store | None = None) -> RuleHistory:
    """A rule's counters and the attempts that carried it, newest first: an active rule, or a
    tombstoned (or evicted) one, whose evidence is kept with it.

    Raises :class:`InvalidInputError` for an agent the store has no state for and the stage map
    does not name, :class:`RuleNotFoundError` for an id the agent has neither active nor
    tombstoned.
    """
    validate_identifier(agent, "agent")
    validate_identifier(rule_id, "rule id")
    store = store or get_store()
    memory = store.load_memory(agent)
    rule: Rule | None = next((r for r in memory.rules if r.rule_id == rule_id), None)
    state = "active"
    if rule is None:
        tombstone = next(
            (t for t in store.load_tombstones(agent).tombstones if t.rule_id == rule_id), None
        )
        if tombstone is not None:
            rule, state = tombstone, tombstone.kind
    if rule is None:
        known = sorted(set(store.list_agents()) | set(configured_agents(store.policies)))
        if agent not in known:
            raise InvalidInputError(
                f"unknown agent {agent!r}",
                hint=f"agents with memory or in the stage map: {', '.join(known) or 'none'}",
            )
        raise RuleNotFoundError(agent, rule_id)
    return RuleHistory(
        agent=agent,
        rule_id=rule.rule_id,
        state=state,
        severity=rule.severity,
        component=rule.component,
        rule=rule.rule,
        created=rule.created,
        fingerprint=rule.fingerprint,
        source_event_id=rule.source_event_id,
        last_event_id=rule.last_event_id,
        applied_count=rule.applied_count,
        occurrences=rule.occurrences,
        deliveries=rule.deliveries,
        recurrences=rule.recurrences,
        successes=rule.successes,
        attempts=[RuleAttempt.model_validate(a) for a in reversed(rule.attempts)],
        attempts_dropped=max(0, rule.deliveries - len(rule.attempts)),
        verified_by=rule.verified_by,
        overturned_at=rule.overturned_at,
        revisions=rule_revisions(rule),
        alternatives=list(rule.alternatives),
    )


def rule_revisions(rule: Rule) -> list[RuleRevision]:
    """The texts the rule has had, oldest first, each with its own counters; a rule never
    revised has one, its current text (learned from its source event)."""
    if not rule.revisions:
        return [
            RuleRevision(
                rule=rule.rule,
                source_event_id=rule.source_event_id,
                at=rule.created,
                reason="learned",
                verified_by=rule.verified_by,
                overturned_at=rule.overturned_at,
                deliveries=rule.deliveries,
                recurrences=rule.recurrences,
                successes=rule.successes,
                current=True,
            )
        ]
    last = len(rule.revisions) - 1
    return [
        RuleRevision(
            rule=entry.get("rule") or "",
            source_event_id=entry.get("source_event_id"),
            at=entry.get("at") or rule.created,
            reason=entry.get("reason") or "",
            verified_by=entry.get("verified_by"),
            overturned_at=entry.get("overturned_at"),
            deliveries=own[0],
            recurrences=own[1],
            successes=own[2],
            current=i == last,
        )
        for i, (entry, own) in enumerate(zip(rule.revisions, revision_counters(rule), strict=True))
    ]


#: What the revisit proposes for an ineffective rule (a person decides; nothing is removed).
INEFFECTIVE_PROPOSAL = "tombstone or rewrite"


def is_ineffective(rule: Rule, policies: Policies) -> bool:
    """Whether ``rule`` was delivered at least ``LEARNING_EFFICACY_MIN_DELIVERIES`` times and
    its failure recurred in at least ``LEARNING_EFFICACY_MAX_RECURRENCE_RATE`` of them. Compared
    as ``recurrences / deliveries >= rate``: a correctly rounded division meets the threshold
    exactly at it (3 of 10 at 0.3), where ``rate × deliveries`` would overshoot it.

    Judged on the current text's counters (:func:`text_counters`): a revised rule starts clean."""
    deliveries, recurrences, _ = current_counters(rule)
    return counts_ineffective(deliveries, recurrences, policies)


@checked
def ineffective_rule(agent: str, rule: Rule, policies: Policies) -> IneffectiveRule | None:
    """The evidence that ``rule`` (of ``agent``) is ineffective — its counters, the rate, the
    thresholds and its recent attempts, newest first — or None when it is not (too few
    deliveries to tell, or a rate below the threshold). A flag for a person: the rule is never
    removed automatically, so a wrong threshold costs a warning, not a lost rule."""
    if not is_ineffective(rule, policies):
        return None
    deliveries, recurrences, successes = current_counters(rule)
    rate = recurrences / deliveries
    return IneffectiveRule(
        agent=agent,
        rule_id=rule.rule_id,
        severity=rule.severity,
        component=rule.component,
        rule=rule.rule,
        deliveries=deliveries,
        recurrences=recurrences,
        successes=successes,
        recurrence_rate=round(rate, 3),
        min_deliveries=policies.LEARNING_EFFICACY_MIN_DELIVERIES,
        max_recurrence_rate=policies.LEARNING_EFFICACY_MAX_RECURRENCE_RATE,
        attempts=[RuleAttempt.model_validate(a) for a in reversed(rule.attempts)],
        proposal=INEFFECTIVE_PROPOSAL,
        reason=ineffective_reason(rule),
    )


def ineffective_reason(rule: Rule) -> str:
    """One line: ``recurred in 4 of 5 deliveries (80 %)`` (of its current text)."""
    deliveries, recurrences, _ = current_counters(rule)
    rate = recurrences / deliveries if deliveries else 0.0
    return f"its failure recurred in {recurrences} of {deliveries} deliveries ({rate:.0%})"


@checked
def ineffective_rules(
    agent: str, rules: Sequence[Rule], policies: Policies
) -> list[IneffectiveRule]:
    """The ineffective rules among ``rules`` of ``agent``, highest recurrence rate first."""
    found = [f for r in rules if (f := ineffective_rule(agent, r, policies)) is not None]
    return sorted(found, key=lambda f: (-f.recurrence_rate, -f.deliveries, f.rule_id))


def attempt_deliveries(steps: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per attempt of a closed-loop run, from the steps recorded on its events
    (``loop_steps``): the rule ids delivered, the sha256 of the rendered block, and how the
    attempt ended (``failed`` with its error id, ``succeeded``, or None when the record stops
    before the outcome). Oldest attempt first."""
    found: dict[int, dict[str, Any]] = {}
    for step in steps:
        attempt = step.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            continue
        name = step.get("step")
        if name == "execute":
            found[attempt] = {
                "attempt": attempt,
                "at": step.get("at"),
                "rule_ids": list(step.get("rule_ids") or []),
                "rules_sha256": step.get("rules_sha256"),
                "outcome": None,
                "error_id": None,
            }
        elif name == "fail" and attempt in found:
            found[attempt].update(outcome="failed", error_id=step.get("error_id"))
            if step.get("recurred_rule_ids"):
                found[attempt]["recurred_rule_ids"] = list(step["recurred_rule_ids"])
        elif name == "succeed" and attempt in found:
            found[attempt]["outcome"] = "succeeded"
    return [found[a] for a in sorted(found)]
