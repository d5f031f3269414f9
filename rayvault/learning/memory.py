"""Agent memory: the active rules each agent's prompt is built from, and their tombstones.

Invariants:

- Every change happens under the agent's lock, and the previous ``memory_active.json`` is
  archived (timestamped snapshot) before its rules change (a delivery, which only counts, is not
  archived); snapshots older than
  ``LEARNING_ARCHIVE_RETENTION_DAYS`` are pruned (checked at most once a day per agent).
- One rule per failure fingerprint: learning the same failure again increments the rule's
  ``applied_count``, ``occurrences`` and ``last_applied`` instead of adding a duplicate (without
  that, promotion never fires). What each counter means: :class:`~rayvault.learning.models.Rule`.
- At most ``LEARNING_MAX_ACTIVE_RULES_PER_AGENT`` rules: over the cap the INFO/WARN rule used
  least recently is evicted (into the tombstones, kind ``evicted``, with the event
  that pushed it out). FAIL/BLOCKER rules are never evicted, even when they alone exceed the cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from rayvault.learning._ids import new_rule_id, validate_identifier
from rayvault.learning._time import format_ts, parse_ts, utcnow
from rayvault.learning._validate import TEXT_FIELDS, cap_fields, cap_text, checked
from rayvault.learning.exceptions import InvalidInputError, RuleNotFoundError
from rayvault.learning.grouping import failure_template
from rayvault.learning.models import (
    CRITICAL_SEVERITIES,
    SEVERITY_RANK,
    AgentMemory,
    LearningEvent,
    Rule,
    Tombstone,
    TombstoneFile,
)
from rayvault.learning.patterns import fingerprint
from rayvault.learning.stages import configured_agents, fold_stage
from rayvault.learning.store import AgentState, Store, get_store

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
            existing.last_applied = now
            existing.last_event_id = event.event_id
            if SEVERITY_RANK[event.severity] > SEVERITY_RANK[existing.severity]:
                existing.severity = event.severity  # the failure got worse: so does the rule
            result = ApplyResult(existing, reapplied=True)
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
            state.memory.rules.append(rule)
            result = ApplyResult(rule, reapplied=False)
        state.memory_changed = True
        result.evicted = _evict_over_cap(state, policies.LEARNING_MAX_ACTIVE_RULES_PER_AGENT, event)
        _prune_archive_if_due(state, store)
    return result


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
        state.tombstones_changed = True
        state.tombstones.tombstones.append(
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
    store: Store | None = None,
) -> Tombstone:
    """Remove an active rule, keeping it in the tombstones with ``reason`` and evidence."""
    validate_identifier(agent, "agent")
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
        state.memory_changed = state.tombstones_changed = True
        tombstone = Tombstone(
            **rule.model_dump(),
            tombstoned_at=utcnow(),
            reason=reason.strip(),
            evidence_ids=evidence,
            superseded_by=superseded_by,
        )
        state.tombstones.tombstones.append(tombstone)
    return tombstone


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


def sorted_rules(memory: AgentMemory) -> list[Rule]:
    """Rules in prompt order: most severe first, then most recently applied."""
    return sorted(
        memory.rules,
        key=lambda r: (-SEVERITY_RANK[r.severity], -r.last_used.timestamp(), r.rule_id),
    )


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


@checked
def prompt_rules(
    agent: str, *, budget: int | None = None, store: Store | None = None
) -> PromptRules:
    """The agent's active rules as a prompt-ready block (see :func:`render_rules`), with the
    rules it shows: what a delivery into the agent's run counts."""
    store = store or get_store()
    memory = load_active_memory(agent, store=store)
    if not memory.rules:
        return PromptRules(agent, "", [], 0)
    limit = budget if budget is not None else store.policies.LEARNING_RULES_RENDER_BUDGET
    rules = sorted_rules(memory)
    header = f"Learned rules for {agent} (follow them; most severe first):"
    lines = [header]
    used = len(header)
    # Room for the "(and N more …)" line, so the block never exceeds the budget.
    reserve = len(f"\n(and {len(rules)} more rules not shown)")
    shown: list[Rule] = []
    for rule in rules:
        text = " ".join(rule.rule.split())
        if len(text) > RULE_RENDER_LIMIT:
            text = text[: RULE_RENDER_LIMIT - 1] + "…"
        line = f"- [{rule.severity}] {rule.component}: {text}"
        more = len(shown) + 1 < len(rules)
        if used + 1 + len(line) + (reserve if more else 0) > limit:
            break
        lines.append(line)
        used += 1 + len(line)
        shown.append(rule)
    if len(shown) < len(rules):
        lines.append(f"(and {len(rules) - len(shown)} more rules not shown)")
    return PromptRules(agent, "\n".join(lines), shown, len(rules))


@checked
def render_rules(agent: str, *, budget: int | None = None, store: Store | None = None) -> str:
    """The agent's active rules as a prompt-ready block, most severe and recent first, within
    ``budget`` characters (default ``LEARNING_RULES_RENDER_BUDGET``). Empty when there are none."""
    return prompt_rules(agent, budget=budget, store=store).text


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
