"""SOUL promotion: one marked section per rule under "Learned rules", idempotent, every other byte
of the SOUL file kept."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayvault.cli import main
from rayvault.learning import (
    CorruptFileError,
    InvalidInputError,
    RuleNotFoundError,
    SoulFileNotFoundError,
    create_event,
    load_active_memory,
)
from rayvault.learning.models import LearningEvent
from rayvault.learning.soul import (
    LEARNED_RULES_HEADING,
    insert_section,
    promote_rule,
    promotion_section,
)

from .conftest import Clock, event_kwargs, rules_worked

AGENTS = ["dzine_producer", "researcher", "scriptwriter"]


def learn(agent: str, symptom: str = "Image hallucination in Product Background") -> LearningEvent:
    component = {"researcher": "research", "scriptwriter": "script"}.get(agent, "assets")
    return create_event(**event_kwargs(agent=agent, symptom=symptom, component=component))  # type: ignore[arg-type]


@pytest.mark.parametrize("agent", AGENTS)
def test_promote_twice_into_a_real_soul_file_leaves_one_section(
    souls: Path, clock: Clock, agent: str
) -> None:
    soul = souls / agent / "SOUL.md"
    original = soul.read_bytes()
    event = learn(agent)
    learn(agent)  # applied twice: a candidate
    first = promote_rule(agent, str(event.rule_id))
    after_first = soul.read_bytes()
    second = promote_rule(agent, str(event.rule_id))
    assert first.action == "added" and second.action == "unchanged"
    assert first.soul_file == f"agents/{agent}/SOUL.md"
    assert soul.read_bytes() == after_first

    text = after_first.decode()
    rule = load_active_memory(agent).rules[0]
    section = promotion_section(rule, agent)
    assert text.count(f"<!-- rayvault:rule {rule.rule_id} -->") == 1
    assert text.count(f"<!-- /rayvault:rule {rule.rule_id} -->") == 1
    assert text.count(LEARNED_RULES_HEADING) == 1
    # Every byte of the original is still there, in front; only the new section follows it.
    assert after_first.startswith(original)
    added = text[len(original.decode()) :]
    assert added == ("\n" if original.endswith(b"\n") else "\n\n") + (
        f"{LEARNED_RULES_HEADING}\n\n{section}"
    )
    assert first.section == section
    assert "applied 2 times for " + agent in section


def test_second_rule_joins_the_section_and_evidence_is_refreshed(souls: Path, clock: Clock) -> None:
    agent = "dzine_producer"
    soul = souls / agent / "SOUL.md"
    original = soul.read_text()
    a = learn(agent, "first failure")
    learn(agent, "first failure")
    b = learn(agent, "second failure")
    promote_rule(agent, str(a.rule_id))
    promote_rule(agent, str(b.rule_id))
    text = soul.read_text()
    assert text.count(LEARNED_RULES_HEADING) == 1
    assert text.index(f"rule {a.rule_id} -->") < text.index(f"rule {b.rule_id} -->")
    block_b = text[text.index(f"<!-- rayvault:rule {b.rule_id}") :]

    clock.advance(days=1)
    learn(agent, "first failure")  # applied a third time: the evidence line changes
    result = promote_rule(agent, str(a.rule_id))
    assert result.action == "updated" and result.applied_count == 3
    text = soul.read_text()
    assert text.count(f"<!-- rayvault:rule {a.rule_id} -->") == 1
    assert "applied 3 times" in text and "applied 2 times" not in text
    assert text.startswith(original)
    assert text.endswith(block_b)  # the other rule's block is untouched


def test_existing_heading_in_the_middle_keeps_the_sections_after_it(root: Path) -> None:
    soul = root / "agents/dzine_producer/SOUL.md"
    soul.parent.mkdir(parents=True)
    before = "# SOUL\n\n## Learned rules\n\n- a hand-written rule\n\n## Estilo\n\n- Curto.\n"
    soul.write_text(before)
    event = learn("dzine_producer")
    promote_rule("dzine_producer", str(event.rule_id))
    text = soul.read_text()
    head, tail = (
        "# SOUL\n\n## Learned rules\n\n- a hand-written rule\n\n",
        "## Estilo\n\n- Curto.\n",
    )
    assert text.startswith(head) and text.endswith(tail)
    section = text[len(head) : -len(tail)]
    assert section.startswith(f"<!-- rayvault:rule {event.rule_id} -->\n")
    assert section.endswith(f"<!-- /rayvault:rule {event.rule_id} -->\n\n")


def test_crlf_soul_file_keeps_its_line_endings(root: Path) -> None:
    soul = root / "agents/team/SOUL_researcher.md"  # the other layout
    soul.parent.mkdir(parents=True)
    soul.write_bytes(b"# SOUL\r\n\r\n- rule\r\n")
    event = learn("researcher")
    result = promote_rule("researcher", str(event.rule_id))
    assert result.soul_file == "agents/team/SOUL_researcher.md"
    data = soul.read_bytes()
    assert data.startswith(b"# SOUL\r\n\r\n- rule\r\n\r\n## Learned rules\r\n\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_missing_soul_and_unknown_rule(root: Path) -> None:
    event = learn("dzine_producer")
    with pytest.raises(SoulFileNotFoundError) as info:
        promote_rule("dzine_producer", str(event.rule_id))
    message = str(info.value)
    assert "agents/dzine_producer/SOUL.md" in message
    assert "agents/team/SOUL_dzine_producer.md" in message
    with pytest.raises(RuleNotFoundError):
        promote_rule("dzine_producer", "rule-nope")


def test_soul_file_that_is_not_utf8_is_refused_and_untouched(root: Path) -> None:
    event = learn("dzine_producer")
    soul = root / "agents/dzine_producer/SOUL.md"
    soul.parent.mkdir(parents=True)
    soul.write_bytes(b"# SOUL \xe9t\xe9\n")
    with pytest.raises(CorruptFileError, match="is not UTF-8 text") as info:
        promote_rule("dzine_producer", str(event.rule_id))
    assert info.value.path == soul
    assert soul.read_bytes() == b"# SOUL \xe9t\xe9\n"


def test_start_marker_without_end_is_refused_and_file_untouched(root: Path) -> None:
    event = learn("dzine_producer")
    soul = root / "agents/dzine_producer/SOUL.md"
    soul.parent.mkdir(parents=True)
    content = f"# SOUL\n\n## Learned rules\n\n<!-- rayvault:rule {event.rule_id} -->\nedited\n"
    soul.write_text(content)
    with pytest.raises(InvalidInputError, match="has no end marker") as info:
        promote_rule("dzine_producer", str(event.rule_id))
    assert str(soul) in str(info.value)
    assert soul.read_text() == content


_LINE = st.one_of(
    st.sampled_from(["# Title", "## Missao", "## Learned rules", "### sub", "- item", "", "text"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30),
)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_LINE, max_size=12), end_newline=st.booleans())
def test_insert_is_idempotent_and_keeps_every_other_byte(
    lines: list[str], end_newline: bool
) -> None:
    text = "\n".join(lines) + ("\n" if end_newline and lines else "")
    if "\r" in text or "rayvault:rule" in text:
        return
    section = "<!-- rayvault:rule r1 -->\n### x\n\n- do y\n<!-- /rayvault:rule r1 -->\n"
    once = insert_section(text, "r1", section)
    assert insert_section(once, "r1", section) == once
    assert once.count("<!-- rayvault:rule r1 -->") == 1
    # Inserted at one point: the original is a prefix plus a suffix of the result.
    cut = next((i for i, (a, b) in enumerate(zip(text, once, strict=False)) if a != b), len(text))
    assert once.endswith(text[cut:])
    assert len(once) > len(text)
    assert LEARNED_RULES_HEADING in once


def test_soul_cli_candidates_and_promote(
    souls: Path, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    event = learn("researcher", "price anomaly")
    clock.advance(hours=1)
    learn("researcher", "price anomaly")
    rules_worked()  # promotion counts successes
    assert main(["soul", "candidates", "--json"]) == 0
    [cand] = json.loads(capsys.readouterr().out)
    assert cand["rule_id"] == event.rule_id and cand["promoted"] is False
    assert main(["soul", "candidates", "--threshold", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["soul", "candidates"]) == 0
    out = capsys.readouterr().out
    assert "SOUL promotion candidates (1)" in out and str(event.rule_id) in out

    assert main(["soul", "promote", "researcher", str(event.rule_id)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Promoted {event.rule_id} in agents/researcher/SOUL.md")
    assert main(["soul", "promote", "researcher", str(event.rule_id), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["action"] == "unchanged" and result["applied_count"] == 2
    assert (souls / "researcher/SOUL.md").read_text().count(str(event.rule_id)) == 2  # 2 markers
    assert main(["soul", "candidates", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["promoted"] is True

    code = main(["soul", "promote", "scriptwriter", "rule-missing"])
    err = capsys.readouterr().err
    assert code == 1 and "Error: agent 'scriptwriter' has no active rule 'rule-missing'" in err


def test_promote_below_threshold_says_so(souls: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = learn("dzine_producer")
    assert main(["soul", "promote", "dzine_producer", str(event.rule_id)]) == 0
    out = capsys.readouterr().out
    assert (
        "note: not earned yet: succeeded 0× only (in 0 deliveries), below the threshold of 2 "
        "(LEARNING_PROMOTION_THRESHOLD_OCCURRENCES)" in out
    )
    assert main(["soul", "promote", "dzine_producer", str(event.rule_id), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["earned"] is False and result["successes"] == 0 and result["deliveries"] == 0
    assert result["not_earned_reason"].startswith("succeeded 0× only")


def test_promotion_section_evidence(root: Path, clock: Clock) -> None:
    event = learn("dzine_producer")
    clock.advance(days=2)
    learn("dzine_producer")
    rule = load_active_memory("dzine_producer").rules[0]
    section = promotion_section(rule, "dzine_producer")
    assert section.splitlines() == [
        f"<!-- rayvault:rule {rule.rule_id} -->",
        "### [FAIL] assets: Image hallucination in Product Background",
        "",
        f"- {rule.rule}",
        f"- Evidence: succeeded in 0 of 0 runs that carried it, applied 2 times for "
        f"dzine_producer, last on "
        f"{(clock.now).strftime('%Y-%m-%d')} (source event {event.event_id}).",
        f"<!-- /rayvault:rule {rule.rule_id} -->",
    ]
    assert clock.now - timedelta(days=2) == event.timestamp
