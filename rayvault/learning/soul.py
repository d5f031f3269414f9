"""SOUL (governance) text: suggested additions for severe events, and the ready-to-paste section
a rule becomes when it is promoted.

SOUL > SKILL: a rule that keeps being needed belongs in how the agent decides, not in a list of
fixes. Suggestions are only stored and shown; a SOUL file changes only on a person's command
(:func:`promote_rule`, ``rayvault-learn soul promote``).

A promoted rule lives in the SOUL file's ``## Learned rules`` section (created at the end of the
file the first time), between ``<!-- rayvault:rule ID -->`` and ``<!-- /rayvault:rule ID -->``
markers. Promoting the same rule again replaces that block (its evidence may have grown), so a
rule is never in the file twice; everything outside the block is left byte for byte.
"""

from __future__ import annotations

from rayvault.learning._ids import validate_identifier
from rayvault.learning._time import format_ts, utcnow
from rayvault.learning._validate import checked, clean_actor
from rayvault.learning.efficacy import ineffective_reason, is_ineffective
from rayvault.learning.exceptions import (
    InvalidInputError,
    RuleNotFoundError,
    SoulFileNotFoundError,
)
from rayvault.learning.grouping import failure_template
from rayvault.learning.models import LearningEvent, Rule, SoulPromotion
from rayvault.learning.store import Store, get_store
from rayvault.policies import Policies

LEARNED_RULES_HEADING = "## Learned rules"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _heading(rule: Rule) -> str:
    """A promoted rule's heading: its failure's template (the pattern, not the first occurrence's
    numbers and ids), or the rule's text for a rule stored without a symptom."""
    return _one_line(failure_template(rule.symptom) if rule.symptom else rule.rule)


def suggest_soul_update(event: LearningEvent, rule_text: str) -> str:
    """A ready-to-paste SOUL addition for a BLOCKER, or a FAIL that repeats a known failure,
    headed by the failure's template (the event itself keeps its raw symptom)."""
    why = "blocked the pipeline" if event.severity == "BLOCKER" else "failed again"
    lines = [
        f"### {event.component}: {_one_line(failure_template(event.symptom))}",
        "",
        f"- Rule: {_one_line(rule_text)}",
        f"- Why: this {why} ({event.severity}, event {event.event_id}).",
    ]
    if event.root_cause:
        lines.append(f"- Root cause seen: {_one_line(event.root_cause)}")
    return "\n".join(lines) + "\n"


def counted(rule: Rule) -> bool:
    """Whether the loop has counted ``rule``'s efficacy (a rule written before the counters,
    e.g. by the original system, has neither occurrences nor deliveries)."""
    return rule.occurrences > 0 or rule.deliveries > 0


def promotion_shortfall(rule: Rule, threshold: int, policies: Policies | None = None) -> str:
    """Why ``rule`` has not earned a SOUL promotion, or ``""`` when it has: ``successes``
    (attempts that carried it and succeeded) at ``threshold``, and not flagged ineffective.
    A rule the loop never counted keeps the old test, ``applied_count`` at the threshold
    (see ``registry.promotable``)."""
    if not counted(rule):
        if rule.applied_count >= threshold:
            return ""
        return f"applied {rule.applied_count}× only, below the threshold of {threshold}"
    if policies is not None and is_ineffective(rule, policies):
        return f"flagged ineffective: {ineffective_reason(rule, policies)}"
    if rule.successes >= threshold:
        return ""
    return (
        f"succeeded {rule.successes}× only (in {rule.deliveries} deliveries), below the "
        f"threshold of {threshold}"
    )


def promotion_section(rule: Rule, agent: str) -> str:
    """The SOUL section a promoted rule becomes, with its evidence (how often it was applied
    and, once the loop has counted it, how often the attempts that carried it succeeded);
    marked by its rule id so promoting twice never adds it twice."""
    applied = rule.applied_count
    last = (rule.last_applied or rule.created).strftime("%Y-%m-%d")
    worked = (
        f"succeeded in {rule.successes} of {rule.deliveries} runs that carried it, "
        if counted(rule)
        else ""
    )
    lines = [
        f"<!-- rayvault:rule {rule.rule_id} -->",
        f"### [{rule.severity}] {rule.component}: {_heading(rule)}",
        "",
        f"- {_one_line(rule.rule)}",
        f"- Evidence: {worked}applied {applied} time{'s' if applied != 1 else ''} for {agent}, "
        f"last on {last} (source event {rule.source_event_id or 'unknown'}).",
        f"<!-- /rayvault:rule {rule.rule_id} -->",
    ]
    return "\n".join(lines) + "\n"


def rule_markers(rule_id: str) -> tuple[str, str]:
    """The start and end markers around a promoted rule's section."""
    return f"<!-- rayvault:rule {rule_id} -->", f"<!-- /rayvault:rule {rule_id} -->"


def is_promoted(soul_text: str, rule_id: str) -> bool:
    """True when the SOUL text already holds the marked section of ``rule_id``."""
    return rule_markers(rule_id)[0] in soul_text


def _heading_line(line: str) -> bool:
    return line.startswith(("# ", "## ")) or line.rstrip() in {"#", "##"}


def insert_section(soul_text: str, rule_id: str, section: str) -> str:
    """``soul_text`` with ``section`` (a :func:`promotion_section`) as the rule's one block of
    the Learned rules section; bytes outside that block are kept as they are.

    Raises ``ValueError`` when the rule's start marker is there without its end marker (a
    hand edit that makes the block's extent unknown).
    """
    nl = "\r\n" if "\r\n" in soul_text else "\n"
    body = section.replace("\n", nl) if nl != "\n" else section
    start, end = rule_markers(rule_id)
    at = soul_text.find(start)
    if at >= 0:
        stop = soul_text.find(end, at)
        if stop < 0:
            raise ValueError(f"the start marker of rule {rule_id} has no end marker {end!r}")
        stop += len(end)
        if soul_text.startswith(nl, stop):
            stop += len(nl)
        return soul_text[:at] + body + soul_text[stop:]

    offset = 0
    in_section = False
    for line in soul_text.splitlines(keepends=True):
        if not in_section:
            in_section = line.rstrip() == LEARNED_RULES_HEADING
        elif _heading_line(line):
            # The next heading of level 1 or 2 ends the Learned rules section.
            before, after = soul_text[:offset], soul_text[offset:]
            return before + _separator(before, nl) + body + nl + after
        offset += len(line)
    if in_section:
        return soul_text + _separator(soul_text, nl) + body
    return soul_text + _separator(soul_text, nl) + LEARNED_RULES_HEADING + nl + nl + body


def _separator(before: str, nl: str) -> str:
    """What to add after ``before`` so that what follows starts after one blank line."""
    if not before or before.endswith(nl + nl):
        return ""
    return nl if before.endswith(nl) else nl + nl


@checked
def promote_rule(
    agent: str, rule_id: str, *, actor: str | None = None, store: Store | None = None
) -> SoulPromotion:
    """Write the promotion section of ``agent``'s active rule ``rule_id`` into the agent's SOUL
    file (idempotent: promoting again leaves one section, refreshed). Only on a person's command.
    ``actor`` (who, when known) is recorded on the rule in memory, as ``promoted_by`` and
    ``promoted_at``, when the SOUL file changed (the SOUL section itself names no one).

    Raises :class:`RuleNotFoundError` and :class:`SoulFileNotFoundError`.
    """
    store = store or get_store()
    validate_identifier(agent, "agent")
    who = clean_actor(actor)
    rule = next((r for r in store.load_memory(agent).rules if r.rule_id == rule_id), None)
    if rule is None:
        raise RuleNotFoundError(agent, rule_id)
    validate_identifier(rule.rule_id, "rule id")  # it goes into an HTML comment marker
    path = store.docs.find_soul(agent)
    if path is None:
        raise SoulFileNotFoundError(agent, store.docs.soul_candidates(agent))
    section = promotion_section(rule, agent)
    present = False

    def update(text: str) -> str:
        nonlocal present
        present = is_promoted(text, rule.rule_id)
        try:
            return insert_section(text, rule.rule_id, section)
        except ValueError as e:
            raise InvalidInputError(
                f"{path}: {e}", hint="restore or remove the marker by hand, then promote again"
            ) from e

    changed = store.docs.write_soul(path, update)
    if changed and who:
        _record_promotion(agent, rule.rule_id, who, store)
    action = "unchanged" if not changed else ("updated" if present else "added")
    threshold = store.policies.LEARNING_PROMOTION_THRESHOLD_OCCURRENCES
    shortfall = promotion_shortfall(rule, threshold, store.policies)
    return SoulPromotion(
        agent=agent,
        rule_id=rule.rule_id,
        soul_file=store.docs.relative(path),
        action=action,
        section=section,
        applied_count=rule.applied_count,
        threshold=threshold,
        deliveries=rule.deliveries,
        successes=rule.successes,
        earned=not shortfall,
        not_earned_reason=shortfall,
    )


def _record_promotion(agent: str, rule_id: str, actor: str, store: Store) -> None:
    """Note who promoted the rule, and when, on the active rule (extra fields)."""
    with store.agent_state(agent) as state:
        for i, current in enumerate(state.memory.rules):
            if current.rule_id == rule_id:
                state.memory.rules[i] = current.model_copy(
                    update={"promoted_by": actor, "promoted_at": format_ts(utcnow())}
                )
                state.memory_changed = True
                return
