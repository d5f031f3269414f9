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

A rule is *ineffective* (:func:`ineffective_rule`, with its evidence) when its failure keeps
coming back while it is delivered: its fix was tried (``fix_tries``: the retry right after its
own failure carried it) at least ``LEARNING_EFFICACY_MIN_DELIVERIES`` times and failed again in
at least ``LEARNING_EFFICACY_MAX_RECURRENCE_RATE`` of them — or, whatever the fix tries, it was
delivered at least that many times and its failure recurred in at least that share of them.
The fix tries carry the verdict because a rule is delivered to every run of its agent and its
failure shows up in few: counted over all deliveries, a rule that cannot work recurs only at its
failure's base rate, a few per cent, and would never be flagged (measured:
``benchmarks/bench_efficacy.py``). ``memory show``, the revisit, the weekly report and the gate
(a warning) show it; nothing removes it, a person tombstones or rewrites it.

Rules follow the evidence: a rule's text can be revised (``memory.apply_event``,
``memory.record_verification``), and each text keeps its own figures (:func:`text_counters`):
the *ineffective* verdict and whether a text is *losing* (:func:`is_losing`: its fix, tried
right after its failure, failed at least as often as it worked; or its failure recurred while
delivered at least as often as the attempts carrying it succeeded) judge the current text alone,
so a rewritten rule starts clean. How the current text was verified (``verified_by``) moves with
the counting here: ``later_runs`` once its fix worked in two fix tries (the retry that verified
it and a later one) and it is not losing; a retry-verified text is ``overturned`` (with the
time) when its failure recurs at an attempt that carried it *before* the failure showed up in
that run (the retry's success did not mean the fix prevents it: a transient failure goes away on
retry whatever the fix) or when it becomes losing, and history-based diagnosis no longer hands
it back.

An attempt that ends in an exception the loop does not learn from (a ``LearningError`` raised
inside the stage, a type in ``ignore=``) is not counted, as it is not logged: it says nothing
about the rules.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
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


#: The counters a rule keeps per text (lifetime on the rule, at its start on each revision).
COUNTER_NAMES = ("deliveries", "recurrences", "successes", "fix_tries", "fix_failures")


@dataclass(frozen=True)
class Figures:
    """One text's own counters (see :class:`Rule`) and the verdicts they support."""

    deliveries: int = 0
    recurrences: int = 0
    successes: int = 0
    fix_tries: int = 0
    fix_failures: int = 0

    @property
    def fix_successes(self) -> int:
        return max(0, self.fix_tries - self.fix_failures)

    def by_fix_tries(self, policies: Policies) -> bool:
        """Whether the verdicts rest on the fix tries: there are enough of them."""
        return self.fix_tries >= max(1, policies.LEARNING_EFFICACY_MIN_DELIVERIES)

    def ineffective(self, policies: Policies) -> bool:
        """Its fix failed again in at least ``LEARNING_EFFICACY_MAX_RECURRENCE_RATE`` of at least
        ``LEARNING_EFFICACY_MIN_DELIVERIES`` fix tries; or, while it has fewer fix tries than
        that, its failure recurred in that share of at least that many deliveries. Compared as
        ``part / whole >= rate``: a correctly rounded division meets the threshold exactly at it
        (3 of 10 at 0.3), where ``rate × whole`` would overshoot it."""
        rate = policies.LEARNING_EFFICACY_MAX_RECURRENCE_RATE
        if self.by_fix_tries(policies):  # the better evidence, once there is enough of it
            return self.fix_failures / self.fix_tries >= rate
        least = max(1, policies.LEARNING_EFFICACY_MIN_DELIVERIES)
        return self.deliveries >= least and self.recurrences / self.deliveries >= rate

    def losing(self, policies: Policies) -> bool:
        """Its fix, tried right after its failure, failed at least once and at least as often
        as it worked; or — never tried so — its failure recurred while delivered at least once
        and at least as often as the attempts carrying it succeeded; or it is ineffective. (A
        text overturned is losing too: :func:`text_losing`.)"""
        if self.fix_tries:
            failed = self.fix_failures >= 1 and self.fix_failures >= self.fix_successes
        else:
            failed = self.recurrences >= 1 and self.recurrences >= self.successes
        return failed or self.ineffective(policies)

    def rate(self, policies: Policies) -> float:
        """The recurrence rate the ineffective verdict rests on."""
        if self.by_fix_tries(policies):
            return self.fix_failures / self.fix_tries
        return self.recurrences / self.deliveries if self.deliveries else 0.0

    def describe(self) -> str:
        """``recurred in 2 of 9 deliveries (7 succeeded); its fix failed in 1 of 2 tries``."""
        text = (
            f"recurred in {self.recurrences} of {self.deliveries} deliveries "
            f"({self.successes} succeeded)"
        )
        if self.fix_tries:
            text += f"; its fix failed again in {self.fix_failures} of {self.fix_tries} tries"
        return text


def _lifetime(rule: Rule) -> tuple[int, ...]:
    return tuple(getattr(rule, name) for name in COUNTER_NAMES)


def _at_start(entry: Mapping[str, Any]) -> tuple[int, ...]:
    return tuple(_count(entry, name) for name in COUNTER_NAMES)


def _between(start: tuple[int, ...], end: tuple[int, ...]) -> Figures:
    return Figures(*(max(0, e - s) for s, e in zip(start, end, strict=True)))


@checked
def text_counters(rule: Rule) -> tuple[int, int, int]:
    """``(deliveries, recurrences, successes)`` of the rule's current text: the lifetime
    counters less those recorded when the text became current (its last revision). All its
    figures, fix tries included: :func:`text_figures`."""
    own = current_figures(rule)
    return own.deliveries, own.recurrences, own.successes


@checked
def text_figures(rule: Rule) -> Figures:
    """The current text's own :class:`Figures` (since its last revision)."""
    return current_figures(rule)


def current_figures(rule: Rule) -> Figures:
    """:func:`text_figures` without the argument checks, for the counting's own hot path."""
    if not rule.revisions:
        return Figures(*_lifetime(rule))
    return _between(_at_start(rule.revisions[-1]), _lifetime(rule))


def _count(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def revision_figures(rule: Rule) -> list[Figures]:
    """Per text of ``rule.revisions`` (oldest first): its own figures, the differences between
    the counters at consecutive revisions (the current text's up to the rule's lifetime
    counters)."""
    starts = [_at_start(r) for r in rule.revisions]
    ends = [*starts[1:], _lifetime(rule)]
    return [_between(s, e) for s, e in zip(starts, ends, strict=True)]


@checked
def is_losing(rule: Rule, policies: Policies) -> bool:
    """Whether the rule's current text is losing (:meth:`Figures.losing` on
    :func:`text_figures`, or overturned): a differing diagnosis of its pattern then revises it at
    learn time."""
    return text_losing(rule, policies)


def text_losing(rule: Rule, policies: Policies) -> bool:
    """:func:`is_losing` without the argument checks (used under the agent's lock). An
    overturned text is losing: the retry that verified it was not evidence it works."""
    return rule.verified_by == "overturned" or current_figures(rule).losing(policies)


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


#: Fix tries that worked after which a text is verified by ``later_runs``: the retry that
#: verified it, and at least one later run's.
LATER_RUNS_FIX_SUCCESSES = 2


def _judge_text(rule: Rule, recurred: bool, answered: bool, policies: Policies, now: Any) -> None:
    """After one counted attempt: a retry-verified text is overturned when its failure came back
    at an attempt that carried it before the failure showed in that run (the retry's success
    did not show the fix prevents it), or when it is now losing; a text whose fix worked in
    later runs' fix tries (and that is not losing) is verified by them."""
    state = rule.verified_by
    if recurred and state == "retry" and (not answered or text_losing(rule, policies)):
        set_text_state(rule, "overturned", now)
    elif state in (None, "retry") and answered and not recurred:
        own = current_figures(rule)
        if own.fix_successes >= LATER_RUNS_FIX_SUCCESSES and not own.losing(policies):
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
    answering: str | None = None,
    store: Store | None = None,
) -> list[Rule]:
    """Count one stage attempt that delivered ``rule_ids`` to ``agent`` and ended in
    ``outcome``: every rule still active gets a delivery, and a success, or — when the attempt
    failed with the rule's own pattern (``fingerprint`` and the rule's key compared after
    following merges) — a recurrence. ``answering``: the pattern key of the failure of the
    previous attempt of the same run (None for a first attempt): each rule of that pattern gets
    a fix try, and a fix failure when this attempt failed with it again. The attempt is kept on
    the rule (the newest :data:`RULE_ATTEMPTS_KEPT`). One read-modify-write under the agent's
    lock; not archived (a count, not a new version of the rules). Ids no longer active are
    skipped. Returns the rules as updated. ``run_stage`` calls this for every attempt."""
    validate_identifier(agent, "agent")
    wanted = list(dict.fromkeys(rule_ids))
    if not wanted:
        return []
    # Imported here: the gate reads this module's verdict (``ineffective_rules``) on its cold
    # path, and memory (with its grouping) costs ~30 ms to import there.
    from rayvault.learning.memory import rule_fingerprint

    store = store or get_store()
    failed_with = fingerprint if outcome == "failed" else None
    targets = {
        key: store.resolve_pattern(key) for key in (failed_with, answering) if key is not None
    }
    resolved: dict[str, str] = {}

    def of_pattern(rule: Rule, key: str | None) -> bool:
        if key is None:
            return False
        own = rule_fingerprint(rule, store)
        if own in (key, targets[key]):
            return True
        if own not in resolved:
            resolved[own] = store.resolve_pattern(own)
        return resolved[own] == targets[key]

    now = utcnow()
    policies = store.policies
    with store.agent_state(agent) as state:
        by_id = {r.rule_id: r for r in state.memory.rules}
        counted: list[Rule] = []
        for rule_id in wanted:
            rule = by_id.get(rule_id)
            if rule is None:
                continue
            recurred = of_pattern(rule, failed_with)
            answered = of_pattern(rule, answering)
            rule.deliveries += 1
            if outcome == "succeeded":
                rule.successes += 1
            elif recurred:
                rule.recurrences += 1
            if answered:
                rule.fix_tries += 1
                rule.fix_failures += recurred
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
                    answered=answered,
                    error_id=error_id,
                    fingerprint=fingerprint,
                ).to_dict()
            )
            if len(rule.attempts) > RULE_ATTEMPTS_KEPT:
                del rule.attempts[: len(rule.attempts) - RULE_ATTEMPTS_KEPT]
            _judge_text(rule, recurred, answered, policies, now)
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
        fix_tries=rule.fix_tries,
        fix_failures=rule.fix_failures,
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
                fix_tries=rule.fix_tries,
                fix_failures=rule.fix_failures,
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
            deliveries=own.deliveries,
            recurrences=own.recurrences,
            successes=own.successes,
            fix_tries=own.fix_tries,
            fix_failures=own.fix_failures,
            current=i == last,
        )
        for i, (entry, own) in enumerate(zip(rule.revisions, revision_figures(rule), strict=True))
    ]


#: What the revisit proposes for an ineffective rule (a person decides; nothing is removed).
INEFFECTIVE_PROPOSAL = "tombstone or rewrite"


@checked
def is_ineffective(rule: Rule, policies: Policies) -> bool:
    """Whether ``rule``'s fix was tried at least ``LEARNING_EFFICACY_MIN_DELIVERIES`` times right
    after its failure and failed again in at least ``LEARNING_EFFICACY_MAX_RECURRENCE_RATE`` of
    them, or it was delivered at least that many times and its failure recurred in at least that
    share (:meth:`Figures.ineffective`).

    Judged on the current text's figures (:func:`text_figures`): a revised rule starts clean —
    unless every text it has had failed: a rule rewritten again and again whose fix tries, over
    all its texts, meet the verdict, and whose current text was tried and has not worked once,
    is ineffective too (its failure goes on whatever the rule says)."""
    return _verdict(rule, policies) is not None


def _verdict(rule: Rule, policies: Policies) -> tuple[Figures, int] | None:
    """The figures the ineffective verdict rests on and how many texts they cover, or None."""
    own = current_figures(rule)
    if own.ineffective(policies):
        return own, 1
    if not rule.revisions or not own.fix_tries or own.fix_successes:
        return None  # never revised, or the current text is untried or has worked
    lifetime = Figures(*_lifetime(rule))
    if lifetime.by_fix_tries(policies) and (
        lifetime.fix_failures / lifetime.fix_tries >= policies.LEARNING_EFFICACY_MAX_RECURRENCE_RATE
    ):
        return lifetime, len(rule.revisions)
    return None


@checked
def ineffective_rule(agent: str, rule: Rule, policies: Policies) -> IneffectiveRule | None:
    """The evidence that ``rule`` (of ``agent``) is ineffective — its counters, the rate, the
    thresholds and its recent attempts, newest first — or None when it is not (too few
    deliveries to tell, or a rate below the threshold). A flag for a person: the rule is never
    removed automatically, so a wrong threshold costs a warning, not a lost rule."""
    found = _verdict(rule, policies)
    if found is None:
        return None
    figures, texts = found
    return IneffectiveRule(
        agent=agent,
        rule_id=rule.rule_id,
        severity=rule.severity,
        component=rule.component,
        rule=rule.rule,
        deliveries=figures.deliveries,
        recurrences=figures.recurrences,
        successes=figures.successes,
        fix_tries=figures.fix_tries,
        fix_failures=figures.fix_failures,
        recurrence_rate=round(figures.rate(policies), 3),
        min_deliveries=policies.LEARNING_EFFICACY_MIN_DELIVERIES,
        max_recurrence_rate=policies.LEARNING_EFFICACY_MAX_RECURRENCE_RATE,
        attempts=[RuleAttempt.model_validate(a) for a in reversed(rule.attempts)],
        proposal=INEFFECTIVE_PROPOSAL,
        reason=_reason(figures, texts, policies),
    )


def ineffective_reason(rule: Rule, policies: Policies | None = None) -> str:
    """One line: ``its fix failed again in 5 of 5 tries right after its failure (100%)`` when
    the verdict rests on fix tries (``… over its 3 texts`` when on every text it has had), else
    ``its failure recurred in 4 of 5 deliveries (80%)``."""
    found = _verdict(rule, policies) if policies is not None else None
    figures, texts = found if found is not None else (current_figures(rule), 1)
    return _reason(figures, texts, policies)


def _reason(figures: Figures, texts: int, policies: Policies | None) -> str:
    if policies is not None and figures.by_fix_tries(policies):
        rate = figures.fix_failures / figures.fix_tries
        over = f" over its {texts} texts" if texts > 1 else ""
        return (
            f"its fix failed again in {figures.fix_failures} of {figures.fix_tries} tries right "
            f"after its failure{over} ({rate:.0%})"
        )
    rate = figures.recurrences / figures.deliveries if figures.deliveries else 0.0
    return (
        f"its failure recurred in {figures.recurrences} of {figures.deliveries} deliveries "
        f"({rate:.0%})"
    )


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
