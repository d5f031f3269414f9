"""SOUL (governance) text: suggested additions for severe events, and the ready-to-paste section
a rule becomes when it is promoted.

SOUL > SKILL: a rule that keeps being needed belongs in how the agent decides, not in a list of
fixes. Suggestions are only stored and shown; a SOUL file changes only on a person's command.
"""

from __future__ import annotations

from rayvault.learning.models import LearningEvent, Rule

LEARNED_RULES_HEADING = "## Learned rules"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def suggest_soul_update(event: LearningEvent, rule_text: str) -> str:
    """A ready-to-paste SOUL addition for a BLOCKER, or a FAIL that repeats a known failure."""
    why = "blocked the pipeline" if event.severity == "BLOCKER" else "failed again"
    lines = [
        f"### {event.component}: {_one_line(event.symptom)}",
        "",
        f"- Rule: {_one_line(rule_text)}",
        f"- Why: this {why} ({event.severity}, event {event.event_id}).",
    ]
    if event.root_cause:
        lines.append(f"- Root cause seen: {_one_line(event.root_cause)}")
    return "\n".join(lines) + "\n"


def promotion_section(rule: Rule, agent: str) -> str:
    """The SOUL section a promoted rule becomes, with its evidence; marked by its rule id so
    promoting twice never adds it twice."""
    applied = rule.applied_count
    last = (rule.last_applied or rule.created).strftime("%Y-%m-%d")
    lines = [
        f"<!-- rayvault:rule {rule.rule_id} -->",
        f"### [{rule.severity}] {rule.component}: {_one_line(rule.symptom or rule.rule)}",
        "",
        f"- {_one_line(rule.rule)}",
        f"- Evidence: applied {applied} time{'s' if applied != 1 else ''} for {agent}, "
        f"last on {last} (source event {rule.source_event_id or 'unknown'}).",
        f"<!-- /rayvault:rule {rule.rule_id} -->",
    ]
    return "\n".join(lines) + "\n"
