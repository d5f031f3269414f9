"""The skill graph: nodes written by the immediate loop, and the real `_index.md` map kept
newest-first without ever dropping an entry."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from rayvault.learning import create_event
from rayvault.learning.models import LearningEvent
from rayvault.learning.skill_graph import (
    FIX_SECTIONS,
    RECENT_HEADING,
    ROOT_CAUSE_SECTIONS,
    SYMPTOM_SECTIONS,
    VERIFICATION_SECTIONS,
    add_to_index,
    parse_note,
    render_note,
    slugify,
    summary,
)

from .conftest import Clock, event_kwargs


def entries(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("- [[")]


def test_real_index_keeps_its_other_sections_and_archives_overflow(
    root: Path, shared_data: Path, clock: Clock
) -> None:
    """The production `_index.md` (1,700 entries, damaged lines in the middle of its list,
    Patterns and Statistics sections): a new event goes first, the recent list keeps the newest
    50, the rest of that list moves to `_index-archive.md` in order, and everything else in the
    file is kept as it was."""
    folder = root / "agents/skills/learnings"
    folder.mkdir(parents=True)
    original = (shared_data / "skill-graph/learnings/_index.md").read_text()
    shutil.copy(shared_data / "skill-graph/learnings/_index.md", folder / "_index.md")
    old_entries = entries(original)
    assert len(old_entries) > 1000

    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    text = (folder / "_index.md").read_text()
    new_entries = entries(text)
    first = new_entries[0]
    assert first.startswith(f"- [[{Path(str(event.skill_node)).stem}]] — ")
    assert new_entries[1:50] == old_entries[:49]
    archived = entries((folder / "_index-archive.md").read_text())
    assert len(archived) > 1000
    # nothing lost, nothing reordered: map head + archive + what followed the damaged lines
    assert new_entries[:50] + archived + new_entries[50:] == [first, *old_entries]
    assert "After fix: all 18 images generated without crashes." in text  # kept, not "fixed"
    for section in (
        "## Protocol",
        "## Patterns",
        "### Recurring Theme: Tool Mismatch",
        "## Statistics",
    ):
        assert section in text
    assert "updated: 2026-02-19" in text
    assert text.split("## Patterns", 1)[1] == original.split("## Patterns", 1)[1]


def test_index_is_created_when_missing(root: Path, clock: Clock) -> None:
    create_event(**event_kwargs())  # type: ignore[arg-type]
    text = (root / "agents/skills/learnings/_index.md").read_text()
    assert text.startswith("---\ndescription: Auto-recorded lessons")
    assert RECENT_HEADING in text
    assert len(entries(text)) == 1


def test_skill_graph_folder_is_configurable(root: Path) -> None:
    (root / "policies.py").write_text('LEARNING_SKILL_GRAPH_DIR = "kb/learned"\n')
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    assert str(event.skill_node).startswith("kb/learned/")
    assert (root / "kb/learned/_index.md").exists()


def test_skill_graph_folder_outside_the_root_is_refused(root: Path) -> None:
    (root / "policies.py").write_text('LEARNING_SKILL_GRAPH_DIR = "../elsewhere"\n')
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    assert event.skill_node is None
    assert event.loop_errors[0]["type"] == "ConfigError"
    assert "points outside the data root" in event.loop_errors[0]["message"]
    assert not (root.parent / "elsewhere").exists()


@given(
    existing=st.lists(
        st.from_regex(r"- \[\[[a-z0-9-]{1,20}\]\] — [a-z ]{0,20}", fullmatch=True), max_size=30
    ),
    limit=st.integers(min_value=1, max_value=12),
)
def test_add_to_index_never_loses_an_entry(existing: list[str], limit: int) -> None:
    """Property: map entries + overflow = the new entry followed by every earlier entry."""
    current = (
        "# Map\n\n" + RECENT_HEADING + "\n\n" + "\n".join(existing) + "\n\n## Patterns\n\nkeep\n"
    )
    text, overflow = add_to_index(current, "- [[new]] — x", "2026-02-19", limit)
    kept = entries(text)
    assert len(kept) == min(limit, len(existing) + 1)
    assert kept + overflow == ["- [[new]] — x", *existing]
    assert text.endswith("## Patterns\n\nkeep\n")


def test_slugify() -> None:
    assert slugify("Image hallucination in Product Background") == (
        "image-hallucination-in-product-background"
    )
    assert slugify("ASIN B0F8HM4PYL was accessories, not vacuum!") == (
        "asin-b0f8hm4pyl-was-accessories-not-vacuum"
    )
    assert slugify("???") == "event"


_LINE = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="#`~\r\u2028\u2029\x85"
    ),
    min_size=1,
    max_size=40,
).map(str.strip)
_TEXT = st.lists(_LINE, min_size=1, max_size=4).map(lambda lines: "\n".join(lines).strip())
_PLACEHOLDER_TEXTS = ("(not yet diagnosed)", "(none yet)")


@given(
    severity=st.sampled_from(["INFO", "WARN", "FAIL", "BLOCKER"]),
    component=st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
    symptom=_TEXT.filter(bool),
    root_cause=st.one_of(st.just(""), _TEXT.filter(lambda t: t not in _PLACEHOLDER_TEXTS)),
    fix=st.one_of(st.just(""), _TEXT.filter(lambda t: t not in _PLACEHOLDER_TEXTS)),
    verification=st.one_of(st.just(""), _TEXT),
    video=st.one_of(st.none(), st.from_regex(r"v[a-z0-9-]{1,12}", fullmatch=True)),
    agent=st.one_of(st.none(), st.sampled_from(["research-agent", "asset-agent"])),
    fingerprint=st.one_of(st.none(), _LINE.filter(bool)),
)
def test_a_written_note_parses_back_to_what_was_written(
    *,
    severity: str,
    component: str,
    symptom: str,
    root_cause: str,
    fix: str,
    verification: str,
    video: str | None,
    agent: str | None,
    fingerprint: str | None,
) -> None:
    """Property: the format's writer and reader agree: every field render_note writes,
    parse_note reads back (front matter, ``[SEVERITY] component: symptom`` title, sections)."""
    event = LearningEvent(
        event_id="le-20260219T120000Z-abcdef012345",
        timestamp=datetime(2026, 2, 19, 12, tzinfo=UTC),
        severity=severity,
        component=component,
        symptom=symptom,
        root_cause=root_cause,
        fix_applied=fix,
        verification=verification,
        video_id=video,
        agent=agent,
        fingerprint=fingerprint,
    )
    note = parse_note(render_note(event))
    assert note.strict_yaml and note.shape == "event"
    assert (note.title_severity, note.title_component) == (severity, component)
    assert note.title_symptom == symptom.splitlines()[0].strip()
    front = note.front
    assert front["description"] == summary(event)
    assert front["fix"] == fix and front["video_id"] == video
    assert front["event_id"] == event.event_id and str(front["created"]) == "2026-02-19"
    assert front["severity"] == severity.lower()
    assert front.get("agent") == agent and front.get("fingerprint") == fingerprint
    assert note.section(SYMPTOM_SECTIONS) == symptom
    assert note.section(ROOT_CAUSE_SECTIONS) == root_cause
    assert note.section(FIX_SECTIONS) == fix
    assert note.section(VERIFICATION_SECTIONS) == verification
