"""Rules and SOUL sections name a failure by its pattern's template (``Timeout after <dur> on
<id>``), not by the first occurrence's numbers and ids; the event keeps its raw symptom."""

from __future__ import annotations

from pathlib import Path

from rayvault.learning import create_event, get_event, load_active_memory, promote_rule
from rayvault.learning.grouping import failure_template
from rayvault.learning.store import Store

from .conftest import event_kwargs

AGENT = "dzine_producer"
FIRST = "Timeout after 12s on B0ABC12345"
AGAIN = "Timeout after 30s on B0XYZ99999"
#: What the rule names: the template (the ASIN's placeholder type is the masks' business).
TEMPLATE = failure_template(FIRST)


def test_rule_and_soul_texts_read_as_the_template(store: Store, souls: Path) -> None:
    assert TEMPLATE.startswith("Timeout after <dur> on <")
    kw = event_kwargs(agent=AGENT, severity="BLOCKER", store=store)
    event = create_event(**{**kw, "symptom": FIRST})  # type: ignore[arg-type]

    # The event keeps what happened, as it was reported.
    assert event.symptom == FIRST
    assert get_event(event.event_id, store=store).symptom == FIRST
    # What it teaches names the pattern.
    assert event.promotion_rule is not None
    assert event.promotion_rule.startswith(f"Avoid: {TEMPLATE}. Cause: Changed reference angle")
    assert event.soul_update is not None
    assert event.soul_update.splitlines()[0] == f"### assets: {TEMPLATE}"
    assert "12s" not in event.soul_update and "B0ABC12345" not in event.soul_update

    [rule] = load_active_memory(AGENT, store=store).rules
    assert rule.rule == (
        f"Avoid: {TEMPLATE}. Cause: Changed reference angle from 3/4 to top-down. "
        "Do: Reverted to original 3/4 angle."
    )
    assert rule.symptom == FIRST  # the rule's evidence: its first occurrence, raw

    again = create_event(**{**kw, "symptom": AGAIN})  # type: ignore[arg-type]
    assert again.symptom == AGAIN
    [rule] = load_active_memory(AGENT, store=store).rules
    assert rule.applied_count == 2

    promote_rule(AGENT, rule.rule_id, store=store)
    soul = (souls / AGENT / "SOUL.md").read_text(encoding="utf-8")
    section = soul[soul.index(f"<!-- rayvault:rule {rule.rule_id} -->") :]
    assert section.splitlines()[1] == f"### [BLOCKER] assets: {TEMPLATE}"
    assert f"- Avoid: {TEMPLATE}." in section
    assert "12s" not in section and "30s" not in section and "B0ABC12345" not in section


def test_a_traceback_symptom_teaches_its_last_exception(store: Store) -> None:
    symptom = (
        "Traceback (most recent call last):\n"
        '  File "/srv/pipeline/assets.py", line 88, in fetch\n'
        "    data = cache[key]\n"
        "KeyError: 'B0ABC12345_front.png'\n"
    )
    event = create_event(**event_kwargs(agent=AGENT, symptom=symptom, store=store))  # type: ignore[arg-type]
    assert event.symptom == symptom.strip()
    [rule] = load_active_memory(AGENT, store=store).rules
    assert rule.rule.startswith("Avoid: KeyError: '<id>'. Cause:")
