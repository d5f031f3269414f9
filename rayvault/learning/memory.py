"""Agent memory: the active rules each agent's prompt is built from, and their tombstones.

Invariants:

- Every change happens under the agent's lock, and the previous ``memory_active.json`` is
  archived (timestamped snapshot) before its rules change (a delivery, which only counts, is not
  archived); snapshots older than
  ``LEARNING_ARCHIVE_RETENTION_DAYS`` are pruned (checked at most once a day per agent).
- One rule per failure fingerprint: learning the same failure again increments the rule's
  ``applied_count``, ``occurrences`` and ``last_applied`` instead of adding a duplicate (without
  that, promotion never fires). What each counter means: :class:`~rayvault.learning.models.Rule`.
- Rules follow the evidence. When a rule's current text is *losing* (its failure recurred while
  delivered at least as often as the text succeeded, or it is ineffective:
  ``efficacy.is_losing``), a new diagnosis of its pattern whose text differs revises it when it
  is learned, so the retry of the same run already carries the new text. A text that is not
  losing is not replaced by a differing diagnosis at learn time; when the event carrying that
  diagnosis is later verified by a person it revises the rule (a person's word wins), verified by
  a retry it is kept as an alternative not adopted (:func:`record_verification`). Every text is
  kept in ``Rule.revisions`` with the counters at its start; conflicts are re-checked for the
  new text and the previous memory is archived, as for any change of the rules.
- At most ``LEARNING_MAX_ACTIVE_RULES_PER_AGENT`` rules: over the cap the INFO/WARN rule used
  least recently is evicted (into the tombstones, kind ``evicted``, with the event
  that pushed it out). FAIL/BLOCKER rules are never evicted, even when they alone exceed the cap.
"""

from __future__ import annotations

import functools
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from rayvault.learning._conflicts import analyse, rules_conflict
from rayvault.learning._grouping import mask as grouping_mask
from rayvault.learning._grouping import pattern_key, signature
from rayvault.learning._ids import new_rule_id, validate_identifier
from rayvault.learning._time import format_ts, parse_ts, utcnow
from rayvault.learning._validate import TEXT_FIELDS, cap_fields, cap_text, checked, clean_actor
from rayvault.learning.efficacy import (
    COUNTER_NAMES,
    current_figures,
    is_ineffective,
    set_text_state,
    text_losing,
)
from rayvault.learning.exceptions import InvalidInputError, RuleNotFoundError
from rayvault.learning.grouping import failure_template
from rayvault.learning.models import (
    CRITICAL_SEVERITIES,
    SEVERITY_RANK,
    VERIFIED_BY,
    AgentMemory,
    ConflictResolution,
    ErrorEntry,
    LearningEvent,
    Rule,
    Tombstone,
    TombstoneFile,
)
from rayvault.learning.patterns import fingerprint
from rayvault.learning.stages import check_stage, configured_agents, fold_stage
from rayvault.learning.store import AgentState, Store, get_store
from rayvault.policies import Policies, load_policies

#: Longest rule text rendered into a prompt, in characters.
RULE_RENDER_LIMIT = 600
_PRUNE_EVERY = timedelta(days=1)


@dataclass
class ApplyResult:
    """What applying an event to an agent's memory did."""

    rule: Rule
    #: True when an existing rule for the same fingerprint was re-applied.
    reapplied: bool
    evicted: list[Rule] = field(default_factory=list)
    #: Active rules a new rule conflicts with (both are marked with each other's id).
    conflicts: list[str] = field(default_factory=list)
    #: The revision this event made (the re-applied rule's text was losing and its diagnosis
    #: differs), as stored in ``Rule.revisions``; None when the text stayed.
    revision: dict[str, Any] | None = None


def _sentence(label: str, text: str) -> str:
    """``Label: text.`` on one line, without doubling the text's own final punctuation."""
    body = " ".join(text.split())
    return f"{label}: {body}" if body.endswith((".", "!", "?", "…")) else f"{label}: {body}."


def rule_text(event: LearningEvent) -> str:
    """The instruction an event becomes in the agent's memory. It names the failure by its
    pattern's template (``Timeout after <dur>``), not by the first occurrence's numbers and ids:
    the rule stands for every occurrence. The event keeps its raw symptom."""
    parts = [_sentence("Avoid", failure_template(event.symptom))]
    if event.root_cause:
        parts.append(_sentence("Cause", event.root_cause))
    if event.fix_applied:
        parts.append(_sentence("Do", event.fix_applied))
    return " ".join(parts)


def diagnosis_text(root_cause: str, fix: str) -> str:
    """The part of a rule's text an event's diagnosis contributes: ``Cause: …. Do: ….`` (the
    text after ``Avoid: <template>.``). Two rule texts with the same diagnosis end with it, even
    when the failure's template was written differently."""
    parts = []
    if root_cause:
        parts.append(_sentence("Cause", root_cause))
    if fix:
        parts.append(_sentence("Do", fix))
    return " ".join(parts)


def same_fix(text: str, root_cause: str, fix: str, candidate: str | None = None) -> bool:
    """Whether rule text ``text`` carries the diagnosis ``root_cause``/``fix`` (or is exactly
    ``candidate``, the rule text learned from it)."""
    if candidate is not None and text == candidate:
        return True
    tail = diagnosis_text(root_cause, fix)
    return bool(tail) and (text == tail or text.endswith(" " + tail))


def rule_fingerprint(rule: Rule, store: Store) -> str:
    """The rule's fingerprint (computed for rules written before fingerprints existed)."""
    if rule.fingerprint:
        return rule.fingerprint
    stage = fold_stage(rule.component, store.policies)
    return fingerprint(stage, rule.symptom or rule.rule).key


def _as_event(event: LearningEvent | Mapping[str, Any]) -> LearningEvent:
    if isinstance(event, LearningEvent):
        return event
    try:
        return LearningEvent.model_validate(dict(event))
    except ValueError as e:  # pydantic's ValidationError: name the argument, not the model
        raise InvalidInputError(f"event is not a learning event: {e}") from None


def rule_for_pattern(rules: list[Rule], key: str, store: Store) -> Rule | None:
    """The rule of failure pattern ``key`` among ``rules``: the one with that fingerprint, else
    the one whose fingerprint resolves (merges followed) to where ``key`` resolves, so a rule
    learned under a pattern that was merged since is found, not written twice."""
    keys = [rule_fingerprint(r, store) for r in rules]
    for rule, fp in zip(rules, keys, strict=True):
        if fp == key:
            return rule
    target = store.resolve_pattern(key)
    for rule, fp in zip(rules, keys, strict=True):
        if store.resolve_pattern(fp) == target:
            return rule
    return None


def apply_event(event: LearningEvent, agent: str, *, store: Store) -> ApplyResult:
    """Apply ``event`` as a rule in ``agent``'s memory; the detailed result."""
    validate_identifier(agent, "agent")
    policies = store.policies
    now = utcnow()
    key = event.fingerprint or fingerprint(fold_stage(event.component, policies), event.symptom).key
    with store.agent_state(agent) as state:
        existing = rule_for_pattern(state.memory.rules, key, store)
        if existing is not None:
            existing.applied_count += 1
            existing.occurrences += 1
            existing.last_applied = existing.last_learned = now
            existing.last_event_id = event.event_id
            if SEVERITY_RANK[event.severity] > SEVERITY_RANK[existing.severity]:
                existing.severity = event.severity  # the failure got worse: so does the rule
            result = ApplyResult(existing, reapplied=True)
            if _differs(existing, event) and text_losing(existing, policies):
                reason = f"{_losing_reason(existing)}; new diagnosis from {event.event_id}"
                result.revision = revise_rule(existing, event, reason, state, store)
        else:
            rule = Rule(
                rule_id=new_rule_id(now),
                source_event_id=event.event_id,
                created=now,
                severity=event.severity,
                component=event.component,
                rule=event.promotion_rule or rule_text(event),
                symptom=event.symptom,
                video_id=event.video_id,
                applied_count=1,
                occurrences=1,
                last_applied=now,
                fingerprint=key,
                last_event_id=event.event_id,
            )
            conflicts = conflicting_with(rule, state.memory.rules, store)
            for other in conflicts:
                other.conflicts_with.append(rule.rule_id)
                rule.conflicts_with.append(other.rule_id)
            state.memory.rules.append(rule)
            result = ApplyResult(rule, reapplied=False)
        state.memory_changed = True
        result.evicted = _evict_over_cap(state, policies.LEARNING_MAX_ACTIVE_RULES_PER_AGENT, event)
        gone = {r.rule_id for r in result.evicted}
        _clear_marks(state.memory.rules, gone)
        result.conflicts = [i for i in result.rule.conflicts_with if i not in gone]
        _prune_archive_if_due(state, store)
    return result


def _differs(rule: Rule, event: LearningEvent) -> bool:
    """Whether ``event`` carries a diagnosis (a root cause or fix) whose rule text differs from
    the rule's current text."""
    if not (event.root_cause or event.fix_applied):
        return False
    candidate = event.promotion_rule or rule_text(event)
    return not same_fix(rule.rule, event.root_cause, event.fix_applied, candidate)


def _losing_reason(rule: Rule) -> str:
    """``recurred in 2 of 2 deliveries`` (the current text's own figures)."""
    return f"the previous text {current_figures(rule).describe()}"


def revise_rule(
    rule: Rule, event: LearningEvent, reason: str, state: AgentState, store: Store
) -> dict[str, Any]:
    """Replace ``rule``'s text with the one ``event`` teaches, inside an ``agent_state`` block:
    the text history gains the new text (the first revision also records the original), with
    the lifetime counters at this moment, so the new text's figures — and the ineffective
    verdict — start from zero; conflicts are re-checked for the new text. Returns the revision
    as stored."""
    now = utcnow()
    limit = store.policies.LEARNING_MAX_TEXT_CHARS
    if not rule.revisions:
        rule.revisions.append(
            _revision_entry(
                rule.rule, rule.source_event_id, rule.created, "learned", rule, start=None
            )
        )
    entry = _revision_entry(
        cap_text(event.promotion_rule or rule_text(event), limit),
        event.event_id,
        now,
        cap_text(reason, limit),
        rule,
        start=rule,
    )
    rule.revisions.append(entry)
    rule.rule = entry["rule"]
    rule.verified_by = None
    rule.overturned_at = None
    _recheck_conflicts(rule, state, store)
    return dict(entry)


def _recheck_conflicts(rule: Rule, state: AgentState, store: Store) -> None:
    """After ``rule``'s text or pattern changed (inside an ``agent_state`` block): its conflict
    marks, and the others' marks of it, are worked out again; the memory is written (with a
    snapshot of the one before)."""
    _clear_marks(state.memory.rules, {rule.rule_id})
    rule.conflicts_with = []
    for other in conflicting_with(rule, state.memory.rules, store):
        other.conflicts_with.append(rule.rule_id)
        rule.conflicts_with.append(other.rule_id)
    state.memory_changed = True
    state.archive = True


def _revision_entry(
    text: str, event_id: str | None, at: Any, reason: str, rule: Rule, *, start: Rule | None
) -> dict[str, Any]:
    """One ``Rule.revisions`` entry; ``start`` gives the lifetime counters at its start (None:
    the original text, which started with the counters at zero)."""
    entry: dict[str, Any] = {
        "rule": text,
        "source_event_id": event_id,
        "at": format_ts(at),
        "reason": reason,
        "verified_by": None if start is not None else rule.verified_by,
        **{name: getattr(start, name) if start else 0 for name in COUNTER_NAMES},
    }
    if start is None and rule.overturned_at is not None:
        entry["overturned_at"] = format_ts(rule.overturned_at)
    return entry


#: Alternatives (differing diagnoses verified by a retry, not adopted) kept on a rule.
ALTERNATIVES_KEPT = 5


@checked
def record_verification(
    event: LearningEvent, verified_by: str, *, store: Store | None = None
) -> Rule | None:
    """What a verified event's fix means for the rule it was learned into (its agent's rule
    ``event.rule_id``), under the agent's lock:

    - the event carries the rule's current text: the text is verified by ``verified_by`` (a
      person's word replaces any other state; a retry verifies a text not yet verified);
    - it carries a different diagnosis, verified by a ``person``: the rule is revised to it;
    - a different diagnosis verified by a ``retry`` (evidence, not proof): kept on the rule as an
      alternative not adopted.

    Returns the rule as updated; None when the event has no agent or rule, or its rule left
    active memory. Raises :class:`InvalidInputError` for a ``verified_by`` outside
    :data:`~rayvault.learning.models.VERIFIED_BY`."""
    if verified_by not in VERIFIED_BY:
        raise InvalidInputError(
            f"verified_by must be one of {', '.join(VERIFIED_BY)} (got {verified_by!r})"
        )
    if not event.agent or not event.rule_id:
        return None
    store = store or get_store()
    with store.agent_state(event.agent) as state:
        rule = next((r for r in state.memory.rules if r.rule_id == event.rule_id), None)
        if rule is None:
            return None
        if not _differs(rule, event):
            if verified_by == "person" or rule.verified_by is None:
                set_text_state(rule, verified_by)
                state.memory_changed = True
                state.archive = False
        elif verified_by == "person":
            revise_rule(rule, event, f"verified by a person ({event.event_id})", state, store)
            set_text_state(rule, verified_by)
        elif not any(a.get("source_event_id") == event.event_id for a in rule.alternatives):
            rule.alternatives.append(
                {
                    "rule": cap_text(
                        event.promotion_rule or rule_text(event),
                        store.policies.LEARNING_MAX_TEXT_CHARS,
                    ),
                    "source_event_id": event.event_id,
                    "at": format_ts(utcnow()),
                    "verified_by": verified_by,
                    "reason": "verified by a retry while the current text was not losing: "
                    "not adopted",
                }
            )
            del rule.alternatives[:-ALTERNATIVES_KEPT]
            state.memory_changed = True
            state.archive = False
        return rule.model_copy(deep=True)


def follow_event(event: LearningEvent, *, store: Store) -> Rule | None:
    """After ``update_event`` moved ``event`` to another component: the rule learned from it
    (its agent's rule ``event.rule_id``, whose source is this event) takes the event's
    component and failure pattern, so it is delivered to the stage where the failure happened
    and matched by that stage's failures; its conflicts are checked again. A rule the event
    only matched (learned from another event) stays as it is. Returns the rule as updated, or
    None when nothing moved."""
    if not event.agent or not event.rule_id:
        return None
    with store.agent_state(event.agent) as state:
        rule = next((r for r in state.memory.rules if r.rule_id == event.rule_id), None)
        if rule is None or rule.source_event_id != event.event_id:
            return None
        if rule.component == event.component and rule.fingerprint == event.fingerprint:
            return None
        rule.component = event.component
        rule.fingerprint = event.fingerprint
        _recheck_conflicts(rule, state, store)
        return rule.model_copy(deep=True)


def conflicting_with(rule: Rule, others: list[Rule], store: Store) -> list[Rule]:
    """The rules of ``others`` that ``rule`` conflicts with, by the revisit's own analysis
    (``revisit.conflicting_rules``): the same failure pattern (merges followed) or the same
    stage, and incompatible actions (:mod:`rayvault.learning._conflicts`). Run when a rule is
    created, so a contradiction is caught then rather than at the next weekly revisit."""
    clauses = analyse(rule.rule)
    if not clauses:
        return []
    policies = store.policies
    stage = fold_stage(rule.component, policies)
    key: str | None = None
    found = []
    for other in others:
        if other.rule_id == rule.rule_id or compatible(rule, other):
            continue
        if fold_stage(other.component, policies) != stage:  # cheap first; patterns cost a lookup
            if key is None:
                key = store.resolve_pattern(rule_fingerprint(rule, store))
            if store.resolve_pattern(rule_fingerprint(other, store)) != key:
                continue
        if rules_conflict(clauses, analyse(other.rule)) is not None:
            found.append(other)
    return found


def compatible(a: Rule, b: Rule) -> bool:
    """Whether a person judged ``a`` and ``b`` compatible (``resolve_conflict(keep_both=True)``):
    such a pair is never marked or flagged as conflicting again."""
    return b.rule_id in a.compatible_with or a.rule_id in b.compatible_with


def _clear_marks(rules: Iterable[Rule], gone: set[str]) -> None:
    """Forget conflicts with rules that left active memory: the pair is resolved (and a
    judgement of compatibility with them is moot)."""
    if not gone:
        return
    for rule in rules:
        if any(i in gone for i in rule.conflicts_with):
            rule.conflicts_with = [i for i in rule.conflicts_with if i not in gone]
        if any(i in gone for i in rule.compatible_with):
            rule.compatible_with = [i for i in rule.compatible_with if i not in gone]


def _evict_over_cap(state: AgentState, cap: int, event: LearningEvent) -> list[Rule]:
    rules = state.memory.rules
    evicted: list[Rule] = []
    while len(rules) > cap:
        candidates = [r for r in rules if r.severity not in CRITICAL_SEVERITIES]
        if not candidates:
            break  # FAIL/BLOCKER rules alone exceed the cap: they are never evicted
        victim = min(candidates, key=lambda r: (r.last_used, r.created, r.rule_id))
        rules.remove(victim)
        evicted.append(victim)
        state.add_tombstone(
            Tombstone(
                **victim.model_dump(),
                tombstoned_at=utcnow(),
                reason=f"evicted: over LEARNING_MAX_ACTIVE_RULES_PER_AGENT={cap}",
                evidence_ids=[event.event_id],
                kind="evicted",
            )
        )
    return evicted


def _prune_archive_if_due(state: AgentState, store: Store) -> None:
    now = utcnow()
    extra = state.memory.__pydantic_extra__
    assert extra is not None  # records keep unknown fields
    last = extra.get("archive_pruned_at")
    try:
        due = last is None or now - parse_ts(last) >= _PRUNE_EVERY
    except (TypeError, ValueError):
        due = True
    if due:
        days = store.policies.LEARNING_ARCHIVE_RETENTION_DAYS
        store.prune_memory_snapshots(state.agent, now - timedelta(days=days))
        extra["archive_pruned_at"] = format_ts(now)


@checked
def apply_to_memory(
    event: LearningEvent | Mapping[str, Any], agent: str, *, store: Store | None = None
) -> Rule:
    """Apply ``event`` as a rule in ``agent``'s memory now; returns the new or re-applied rule."""
    store = store or get_store()
    limit = store.policies.LEARNING_MAX_TEXT_CHARS
    return apply_event(cap_fields(_as_event(event), TEXT_FIELDS, limit), agent, store=store).rule


@checked
def load_active_memory(agent: str, *, store: Store | None = None) -> AgentMemory:
    """The agent's ``memory_active.json`` (empty when the agent has none yet)."""
    validate_identifier(agent, "agent")
    return (store or get_store()).load_memory(agent)


@checked
def load_tombstones(agent: str, *, store: Store | None = None) -> TombstoneFile:
    """The agent's removed rules, with reasons and evidence."""
    validate_identifier(agent, "agent")
    return (store or get_store()).load_tombstones(agent)


@checked
def tombstone_rule(
    agent: str,
    rule_id: str,
    reason: str,
    *,
    evidence_ids: Iterable[str] = (),
    superseded_by: str | None = None,
    actor: str | None = None,
    store: Store | None = None,
) -> Tombstone:
    """Remove an active rule, keeping it in the tombstones with ``reason`` and evidence, and
    ``actor`` (who did it, when known) as ``tombstoned_by`` beside ``tombstoned_at``."""
    validate_identifier(agent, "agent")
    who = clean_actor(actor)
    if not reason or not reason.strip():
        raise InvalidInputError("a tombstone needs a reason")
    evidence = [validate_identifier(e, "evidence id") for e in evidence_ids]
    if superseded_by is not None:
        validate_identifier(superseded_by, "superseded_by rule id")
    store = store or get_store()
    reason = cap_text(reason.strip(), store.policies.LEARNING_MAX_TEXT_CHARS)
    with store.agent_state(agent) as state:
        rule = next((r for r in state.memory.rules if r.rule_id == rule_id), None)
        if rule is None:
            raise RuleNotFoundError(agent, rule_id)
        state.memory.rules.remove(rule)
        _clear_marks(state.memory.rules, {rule_id})
        state.memory_changed = True
        tombstone = Tombstone(
            **rule.model_dump(),
            tombstoned_at=utcnow(),
            reason=reason.strip(),
            evidence_ids=evidence,
            superseded_by=superseded_by,
            **({"tombstoned_by": who} if who else {}),
        )
        state.add_tombstone(tombstone)
    return tombstone


def _unknown_agent(agent: str, store: Store) -> None:
    known = sorted(set(store.list_agents()) | set(configured_agents(store.policies)))
    if agent not in known:
        raise InvalidInputError(
            f"unknown agent {agent!r}",
            hint=f"agents with memory or in the stage map: {', '.join(known) or 'none'}",
        )


@checked
def resolve_conflict(
    agent: str,
    rule_id: str,
    *,
    keep: str | None = None,
    keep_both: bool = False,
    store: Store | None = None,
) -> ConflictResolution:
    """Resolve a conflicting pair marked at creation: a person's decision, never automatic.

    - ``keep=rule_id``: ``rule_id`` stays; its one conflicting partner is tombstoned (when it
      has several, name the pair: ``resolve_conflict(agent, other, keep=rule_id)``).
    - ``keep=other`` (a rule marked as conflicting with ``rule_id``): ``rule_id`` is tombstoned,
      superseded by ``other``.
    - ``keep_both=True``: both stay and the marks between ``rule_id`` and its partner (``keep``
      when given, else every partner) are cleared; both are delivered from then on, and the
      pair is remembered as compatible (``Rule.compatible_with``): neither a later rule check
      nor the weekly revisit flags it again.

    Tombstoning either rule with :func:`tombstone_rule` resolves the pair as well. Raises
    :class:`InvalidInputError` for an unknown agent, a rule with no unresolved conflict (or not
    with ``keep``), :class:`RuleNotFoundError` for an id the agent has no active rule for.
    """
    validate_identifier(agent, "agent")
    validate_identifier(rule_id, "rule id")
    if keep is not None:
        validate_identifier(keep, "kept rule id")
    if keep is None and not keep_both:
        raise InvalidInputError("say which rule to keep (keep=RULE_ID) or keep_both=True")
    store = store or get_store()
    if agent not in store.list_agents():
        _unknown_agent(agent, store)
        raise RuleNotFoundError(agent, rule_id)
    with store.agent_state(agent) as state:
        by_id = {r.rule_id: r for r in state.memory.rules}
        for wanted in (rule_id, keep):
            if wanted is not None and wanted not in by_id:
                if any(t.rule_id == wanted for t in state.tombstones()):
                    raise InvalidInputError(
                        f"rule {wanted} of {agent} is tombstoned: it conflicts with nothing",
                        hint="its conflicts were resolved when it was tombstoned",
                    )
                raise RuleNotFoundError(agent, wanted)
        rule = by_id[rule_id]
        partners = [i for i in rule.conflicts_with if i in by_id]
        if not partners:
            raise InvalidInputError(
                f"rule {rule_id} of {agent} has no unresolved conflict",
                hint="resolved already, or never marked (rules memory shows the marks)",
            )
        if keep is not None and keep != rule_id and keep not in partners:
            raise InvalidInputError(
                f"rules {rule_id} and {keep} of {agent} are not an unresolved conflicting pair",
                hint=f"{rule_id} conflicts with {', '.join(partners)}",
            )
        if keep_both:
            pair = partners if keep in (None, rule_id) else [keep]
            rule.conflicts_with = [i for i in rule.conflicts_with if i not in pair]
            rule.compatible_with.extend(i for i in pair if i not in rule.compatible_with)
            for other in pair:
                partner = by_id[other]
                partner.conflicts_with = [i for i in partner.conflicts_with if i != rule_id]
                if rule_id not in partner.compatible_with:
                    partner.compatible_with.append(rule_id)
            state.memory_changed = True
            return ConflictResolution(
                agent=agent,
                rule_ids=[rule_id, *pair],
                kept=[rule_id, *pair],
                reason="both kept: a person judged they do not conflict",
            )
        if keep == rule_id:
            if len(partners) > 1:
                raise InvalidInputError(
                    f"rule {rule_id} of {agent} conflicts with {len(partners)} rules "
                    f"({', '.join(partners)}): name the pair",
                    hint=f"resolve-conflict {agent} OTHER_ID --keep {rule_id}",
                )
            kept, loser = rule, by_id[partners[0]]
        else:
            assert keep is not None
            kept, loser = by_id[keep], rule
        reason = cap_text(
            f"conflict with {kept.rule_id} resolved by a person: kept {kept.rule_id}",
            store.policies.LEARNING_MAX_TEXT_CHARS,
        )
        state.memory.rules.remove(loser)
        _clear_marks(state.memory.rules, {loser.rule_id})
        state.memory_changed = True
        state.add_tombstone(
            Tombstone(
                **loser.model_dump(),
                tombstoned_at=utcnow(),
                reason=reason,
                superseded_by=kept.rule_id,
            )
        )
        return ConflictResolution(
            agent=agent,
            rule_ids=[rule_id, loser.rule_id if loser is not rule else kept.rule_id],
            kept=[kept.rule_id],
            tombstoned=loser.rule_id,
            reason=reason,
        )


@checked
def init_memory(
    agents: Iterable[str] | None = None, *, store: Store | None = None
) -> dict[str, bool]:
    """Create empty memory for ``agents`` (default: every agent of the stage map).

    Returns ``{agent: created}``; existing memory is never touched.
    """
    store = store or get_store()
    names = list(agents) if agents is not None else configured_agents(store.policies)
    for name in names:
        validate_identifier(name, "agent")
    return {name: store.init_agent(name) for name in names}


#: A pattern key as the stores write it (``stage:`` and 16 hex digits): a ``failure`` given as
#: text of this shape names the pattern itself.
_PATTERN_KEY = re.compile(r"\S+:[0-9a-f]{16}")
#: Fewest characters of the failure's own rule's line the block keeps when the budget is too
#: small for it: the rule is delivered cut rather than not at all, so a block may exceed a budget
#: smaller than its header plus this.
MIN_TRUNCATED = 80
#: What ends the failure's own rule when it was cut to fit the budget (the block says so).
TRUNCATED_MARK = " [cut to fit the budget]"
#: Decimals relevance is compared at: a word every rule shares scores all but 0 under BM25, no
#: reason to rank one rule above another.
_RELEVANCE_DIGITS = 2
#: What ``failure`` may be: the exception, its error text, its error-log entry, a pattern key.
FailureRef = BaseException | str | ErrorEntry


def _base_key(rule: Rule, policies: Policies) -> tuple[Any, ...]:
    """Order without context: severity, then efficacy (a rule flagged ineffective after the
    others, then by the share of its deliveries its failure recurred in), then the most recently
    learned. Efficacy counts failures only: a success rate would lift delivered rules over the
    ones the budget left out, which would then sink for good (the starvation this avoids); a
    rule never delivered ranks as one whose deliveries never recurred."""
    rate = rule.recurrences / rule.deliveries if rule.deliveries > 0 else 0.0
    return (
        -SEVERITY_RANK[rule.severity],
        is_ineffective(rule, policies),
        rate,
        -rule.learned_at.timestamp(),
        rule.rule_id,
    )


def sorted_rules(memory: AgentMemory, policies: Policies | None = None) -> list[Rule]:
    """Rules in prompt order without context: most severe first, then ineffective and often
    recurring rules after the others, then most recently learned (never by delivery: a delivery
    must not move a rule, or the rules a budget leaves out age out for good)."""
    known = policies if policies is not None else load_policies()
    return sorted(memory.rules, key=lambda r: _base_key(r, known))


@dataclass(frozen=True)
class RuleSelection:
    """Why one active rule is where it is in a prompt's rules block, or not in it."""

    rule_id: str
    #: Whether the block shows it.
    delivered: bool
    #: Its rank among the rules that could be shown (1 = first); None when held back.
    position: int | None
    #: "failure's own rule", "stage rule (assets)", "relevance 0.42 to the task", "severity
    #: FAIL", "over budget (…)", "held back: conflicts with …".
    why: str
    #: Its relevance to the task (0.0 when it shares no word; None without a task).
    relevance: float | None = None
    #: The failure's own rule, cut to fit the budget.
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "delivered": self.delivered,
            "position": self.position,
            "why": self.why,
            "relevance": self.relevance,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class PromptRules:
    """The rules block an agent's prompt receives, and the rules it shows."""

    agent: str
    #: The prompt-ready block (empty when the agent has no active rules).
    text: str
    #: The rules the block shows, in its order (those that fit the budget).
    rules: list[Rule]
    #: Active rules of the agent, shown or not.
    total: int
    #: Rules held back because they conflict with a delivered rule (an unresolved pair):
    #: held-back id → the id delivered in its place.
    held_back: dict[str, str] = field(default_factory=dict)
    #: The failure's own rule (``failure=``), when the agent has one.
    failure_rule_id: str | None = None
    #: Whether that rule was cut to fit the budget (it is never left out).
    truncated: bool = False
    #: The rules that could be shown (not held back), in rank order: ``rules`` is its head.
    ranked: list[Rule] = field(default_factory=list)
    #: The stage ranked for (folded), and each rule's relevance to the task (None: no task).
    stage: str | None = None
    relevance: dict[str, float] | None = None
    policies: Policies | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def selection(self) -> list[RuleSelection]:
        """Per active rule, why it is in or out: the ranked rules in rank order, then the held
        back ones. Worked out when asked for (``memory render --explain``): an attempt records
        :meth:`compact_selection`, which needs none of the sentences."""
        policies = self.policies or load_policies()
        delivered = {r.rule_id for r in self.rules}
        cut = self.failure_rule_id if self.truncated else None
        out = []
        for position, rule in enumerate(self.ranked, start=1):
            rid = rule.rule_id
            score = None if self.relevance is None else self.relevance.get(rid, 0.0)
            why = _reasons(rule, self.failure_rule_id, self.stage, score, policies)
            if rid == cut:
                why += "; cut to fit the budget"
            elif rid not in delivered:
                why = f"over budget ({why})"
            out.append(RuleSelection(rid, rid in delivered, position, why, score, rid == cut))
        for rid, winner in self.held_back.items():
            score = None if self.relevance is None else self.relevance.get(rid, 0.0)
            out.append(
                RuleSelection(rid, False, None, f"held back: conflicts with {winner}", score)
            )
        return out

    def compact_selection(self) -> dict[str, Any]:
        """The selection as an attempt records it: ids grouped by why, only what applies (the
        delivered ids and the held-back pairs are recorded beside it)."""
        out: dict[str, Any] = {}
        first = self.failure_rule_id
        if first is not None:
            out["failure_rule"] = first
            if self.truncated:
                out["truncated"] = True
        if self.stage is not None:
            policies = self.policies or load_policies()
            stage = [
                r.rule_id
                for r in self.rules
                if r.rule_id != first and fold_stage(r.component, policies) == self.stage
            ]
            if stage:
                out["stage_rules"] = stage
        scores = self.relevance or {}
        relevant = {r.rule_id: scores[r.rule_id] for r in self.rules if scores.get(r.rule_id)}
        if relevant:
            out["relevance"] = relevant
        over = [r.rule_id for r in self.ranked[len(self.rules) :]]
        if over:
            out["over_budget"] = over
        return out


def held_back_rules(
    rules: Iterable[Rule], preference: str, *, first: str | None = None
) -> dict[str, str]:
    """Which rule of each unresolved conflicting pair is not delivered: held-back id → the id
    delivered instead. The preferred rule (``newer``: learned last; ``severe``: most severe,
    then newer) wins; taken greedily in preference order, so no two marked rules are ever both
    delivered, even in a chain of conflicts. ``first`` (the rule of the failure being retried)
    wins over every preference: its partner is held back instead."""
    marked = [r for r in rules if r.conflicts_with]
    if not marked:
        return {}

    def rank(r: Rule) -> tuple[Any, ...]:
        newer = (r.created.timestamp(), r.rule_id)
        order = (SEVERITY_RANK[r.severity], *newer) if preference == "severe" else newer
        return (r.rule_id == first, *order)

    kept: set[str] = set()
    held: dict[str, str] = {}
    for rule in sorted(marked, key=rank, reverse=True):
        winner = next((i for i in rule.conflicts_with if i in kept), None)
        if winner is None:
            kept.add(rule.rule_id)
        else:
            held[rule.rule_id] = winner
    return held


def _failure_text(failure: FailureRef) -> str:
    if isinstance(failure, BaseException):
        return "".join(traceback.format_exception(failure)).strip()
    if isinstance(failure, ErrorEntry):
        return failure.error
    if isinstance(failure, str):
        if not failure.strip():
            raise InvalidInputError("failure must not be empty text")
        return failure.strip()
    raise InvalidInputError(
        "failure must be an exception, an error text, an error-log entry or a pattern key, "
        f"got {type(failure).__name__}"
    )


def _failure_rule(
    rules: list[Rule],
    failure: BaseException | str | ErrorEntry,
    store: Store,
    *,
    stage: str | None = None,
) -> Rule | None:
    """The rule of ``rules`` learned from ``failure``, or None. An error-log entry is found by
    its pattern key (what ``run_stage`` passes: exact), a pattern key by itself, both with
    merges followed (``rule_for_pattern``). An exception or an error text is matched by its
    failure's template in ``stage`` first, then in each other stage the rules belong to: the
    rule whose symptom has that template, else the rule of the key that template starts a
    pattern under."""
    text = _failure_text(failure)
    if not rules:
        return None
    policies = store.policies
    if isinstance(failure, ErrorEntry):
        folded = fold_stage(failure.stage, policies)
        key = failure.fingerprint or fingerprint(folded, text).key
        return rule_for_pattern(rules, key, store) or _by_template(rules, text, [folded], store)
    if isinstance(failure, str) and _PATTERN_KEY.fullmatch(text):
        return rule_for_pattern(rules, text, store)
    given = [fold_stage(stage, policies)] if stage else []
    stages = dict.fromkeys([*given, *(fold_stage(r.component, policies) for r in rules)])
    return _by_template(rules, text, list(stages), store)


def _by_template(rules: list[Rule], text: str, stages: list[str], store: Store) -> Rule | None:
    policies = store.policies
    masked = grouping_mask(text)
    keys = []
    for stage in stages:
        sig = signature(stage, masked)
        for rule in rules:
            if (
                rule.symptom
                and fold_stage(rule.component, policies) == stage
                and signature(stage, grouping_mask(rule.symptom)) == sig
            ):
                return rule
        keys += [pattern_key(stage, sig), fingerprint(stage, text).key]
    for key in keys:
        found = rule_for_pattern(rules, key, store)
        if found is not None:
            return found
    return None


def _reasons(
    rule: Rule, first: str | None, stage: str | None, relevance: float | None, policies: Policies
) -> str:
    if rule.rule_id == first:
        return "failure's own rule"
    parts = []
    if stage is not None and fold_stage(rule.component, policies) == stage:
        parts.append(f"stage rule ({stage})")
    if relevance:
        parts.append(f"relevance {relevance:.2f} to the task")
    if not parts:
        parts.append(f"severity {rule.severity}")
        if is_ineffective(rule, policies):
            parts.append("flagged ineffective")
    return "; ".join(parts)


def _relevance(rules: list[Rule], task: str | None, store: Store) -> dict[str, float] | None:
    """Each rule's relevance to ``task`` (rounded), by the store's full-text ranking; None
    without a task."""
    if task is None or not task.strip():
        return None
    scores = store.rank_texts(task, [f"{r.component} {r.rule}" for r in rules]) if rules else []
    return {r.rule_id: round(s, _RELEVANCE_DIGITS) for r, s in zip(rules, scores, strict=True)}


def _rank(
    rules: list[Rule],
    policies: Policies,
    *,
    first: str | None,
    stage: str | None,
    relevance: dict[str, float] | None,
) -> list[Rule]:
    """Rules in prompt order: the failure's own rule, the stage's rules, the task's most
    relevant rules, then :func:`_base_key`. Nothing a delivery changes takes part."""
    scores = relevance or {}

    def key(rule: Rule) -> tuple[Any, ...]:
        in_stage = stage is not None and fold_stage(rule.component, policies) == stage
        return (
            rule.rule_id != first,
            not in_stage,
            -scores.get(rule.rule_id, 0.0),
            *_base_key(rule, policies),
        )

    return sorted(rules, key=key)


def _line(rule: Rule) -> str:
    text = " ".join(rule.rule.split())
    if len(text) > RULE_RENDER_LIMIT:
        text = text[: RULE_RENDER_LIMIT - 1] + "…"
    return f"- [{rule.severity}] {rule.component}: {text}"


def _cut(line: str, room: int) -> str:
    """``line`` in ``room`` characters (at least :data:`MIN_TRUNCATED`), ending with
    :data:`TRUNCATED_MARK`."""
    room = max(room, MIN_TRUNCATED)
    return line[: room - len(TRUNCATED_MARK) - 1].rstrip() + "…" + TRUNCATED_MARK


def _fill(
    header: str, ordered: list[Rule], limit: int, first: str | None
) -> tuple[list[str], list[Rule], bool]:
    """The block's lines and the rules they show, in order, within ``limit`` characters; the
    failure's own rule (``first``, ranked first) is cut to fit rather than left out."""
    lines = [header]
    used = len(header)
    # Room for the "(and N more …)" line, so the block never exceeds the budget.
    reserve = len(f"\n(and {len(ordered)} more rules not shown)")
    shown: list[Rule] = []
    truncated = False
    for rule in ordered:
        line = _line(rule)
        more = reserve if len(shown) + 1 < len(ordered) else 0
        if used + 1 + len(line) + more > limit:
            if not shown and rule.rule_id == first:
                line = _cut(line, limit - used - 1 - more)
                lines.append(line)
                shown.append(rule)
                truncated = True
            break
        lines.append(line)
        used += 1 + len(line)
        shown.append(rule)
    if len(shown) < len(ordered):
        lines.append(f"(and {len(ordered) - len(shown)} more rules not shown)")
    return lines, shown, truncated


def _select_rules(
    memory: AgentMemory,
    agent: str,
    store: Store,
    *,
    budget: int | None = None,
    stage: str | None = None,
    task: str | None = None,
    failure: BaseException | str | ErrorEntry | None = None,
) -> PromptRules:
    """:func:`prompt_rules` over a memory already loaded, its arguments already checked."""
    if failure is not None:
        _failure_text(failure)  # an unsupported failure is refused even without rules
    if not memory.rules:
        return PromptRules(agent, "", [], 0)
    policies = store.policies
    limit = budget if budget is not None else policies.LEARNING_RULES_RENDER_BUDGET
    folded = fold_stage(stage, policies) if stage else None
    own = _failure_rule(memory.rules, failure, store, stage=stage) if failure is not None else None
    first = own.rule_id if own is not None else None
    held = held_back_rules(memory.rules, policies.LEARNING_CONFLICT_PREFERENCE, first=first)
    candidates = [r for r in memory.rules if r.rule_id not in held]
    relevance = _relevance(memory.rules, task, store)
    ordered = _rank(candidates, policies, first=first, stage=folded, relevance=relevance)
    context = stage is not None or relevance is not None or failure is not None
    order = "most relevant first" if context else "most severe first"
    header = f"Learned rules for {agent} (follow them; {order}):"
    lines, shown, truncated = _fill(header, ordered, limit, first)
    return PromptRules(
        agent,
        "\n".join(lines),
        shown,
        len(memory.rules),
        held,
        failure_rule_id=first,
        truncated=truncated,
        ranked=ordered,
        stage=folded,
        relevance=relevance,
        policies=policies,
    )


@checked
def prompt_rules(
    agent: str,
    budget: int | None = None,
    *,
    stage: str | None = None,
    task: str | None = None,
    failure: BaseException | str | ErrorEntry | None = None,
    store: Store | None = None,
) -> PromptRules:
    """The agent's active rules as a prompt-ready block (see :func:`render_rules`), with the
    rules it shows and why each active rule is in or out (``selection``): what ``run_stage``
    delivers on every attempt, counts and records. A ``stage`` no map knows is refused
    (:class:`InvalidInputError`); an agent without rules gets an empty block (see
    :func:`check_agent`)."""
    validate_identifier(agent, "agent")
    store = store or get_store()
    if stage is not None:
        check_stage(validate_identifier(stage, "stage"), store.policies)
    if budget is not None and budget < 1:
        raise InvalidInputError(f"budget must be a positive number of characters, got {budget}")
    return _select_rules(
        store.load_memory(agent),
        agent,
        store,
        budget=budget,
        stage=stage,
        task=task,
        failure=failure,
    )


@checked
def check_agent(agent: str, *, store: Store | None = None) -> str:
    """``agent`` when it has memory or is in the stage map; :class:`InvalidInputError` (naming
    the agents there are) otherwise: a misspelt agent is an error, not an empty rules block."""
    validate_identifier(agent, "agent")
    _unknown_agent(agent, store or get_store())
    return agent


@checked
def render_rules(
    agent: str,
    budget: int | None = None,
    *,
    stage: str | None = None,
    task: str | None = None,
    failure: BaseException | str | ErrorEntry | None = None,
    store: Store | None = None,
) -> str:
    """The agent's active rules as a prompt-ready block within ``budget`` characters (default
    ``LEARNING_RULES_RENDER_BUDGET``); empty when there are none. Ranked:

    1. the rule learned from ``failure`` (the retry's previous error: the exception, its text,
       its error-log entry or its pattern key) — always first, and when the budget cannot hold
       it whole, delivered cut, ending with ``[cut to fit the budget]``, never left out;
    2. the rules of ``stage`` (a rule's component folded to its stage);
    3. the rules most relevant to ``task`` (the work item's description, e.g. the video title),
       by the store's full-text ranking (``Store.rank_texts``);
    4. then by severity, efficacy (rules flagged ineffective, then rules whose failure recurred
       while delivered, after the others) and the most recently learned.

    Nothing a delivery changes takes part, so a rule the budget leaves out is not thereby
    ranked lower next time. Of two rules marked as conflicting, only one is rendered
    (``LEARNING_CONFLICT_PREFERENCE``; the failure's own rule wins) until a person resolves the
    pair: an agent told both "never X" and "X" follows neither. :func:`prompt_rules` says why
    each rule is in or out. An agent with no rules that is in no stage map is refused
    (:func:`check_agent`)."""
    store = store or get_store()
    block = prompt_rules(agent, budget, stage=stage, task=task, failure=failure, store=store)
    if not block.total:
        check_agent(agent, store=store)
    return block.text


@checked
def mark_delivered(
    agent: str, rule_ids: Iterable[str], *, store: Store | None = None
) -> list[Rule]:
    """Count one delivery of these rules into a run of ``agent``: each rule's ``applied_count``
    grows by one and ``last_applied`` becomes now (DESIGN.md §6, "Applied count").

    Done under the agent's lock, like every memory change. Ids that are no longer active (a rule
    tombstoned since it was rendered) are skipped. A counter change is not archived: snapshots
    keep the versions of the rules themselves. Returns the rules as updated.
    """
    validate_identifier(agent, "agent")
    wanted = set(rule_ids)
    if not wanted:
        return []
    store = store or get_store()
    now = utcnow()
    with store.agent_state(agent) as state:
        marked = [r for r in state.memory.rules if r.rule_id in wanted]
        for rule in marked:
            rule.applied_count += 1
            rule.last_applied = now
        if marked:
            state.memory_changed = True
            state.archive = False
    return [r.model_copy() for r in marked]


def memory_status(agent: str, *, store: Store | None = None) -> dict[str, Any]:
    """Counts an operator needs: rules, cap, critical rules, and whether those alone exceed it."""
    store = store or get_store()
    memory = load_active_memory(agent, store=store)
    cap = store.policies.LEARNING_MAX_ACTIVE_RULES_PER_AGENT
    critical = sum(1 for r in memory.rules if r.severity in CRITICAL_SEVERITIES)
    return {
        "agent": agent,
        "rules": len(memory.rules),
        "cap": cap,
        "critical": critical,
        "critical_over_cap": critical > cap,
        "updated": memory.updated,
    }
