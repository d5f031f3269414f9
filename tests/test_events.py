"""create_event and the immediate loop: the records it writes, field by field.

Runs on both stores; tests about the bytes of the file layout are marked ``files_only``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from rayvault.learning import (
    CorruptFileError,
    EventNotFoundError,
    InvalidIdentifierError,
    InvalidInputError,
    create_event,
    get_event,
    list_events,
    load_active_memory,
    resolve_event,
    update_event,
)
from rayvault.learning.events import event_stats
from rayvault.learning.patterns import fingerprint
from rayvault.learning.store import EventQuery, open_store

from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores


def read_index(root: Path) -> list[dict[str, object]]:
    return json.loads((root / "data" / "learning_events.json").read_text())


def test_stored_event_reads_back_field_for_field(clock: Clock) -> None:
    """The latest version as stored equals what create_event returned, in every store."""
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    assert get_event(event.event_id).to_dict() == event.to_dict()
    assert [e.to_dict() for e in list_events()] == [event.to_dict()]
    assert event.rule_id is not None and event.status == "verified"


@pytest.mark.files_only("the bytes of the index and the per-video file")
def test_create_event_persists_every_field(root: Path, clock: Clock) -> None:
    """The spec's example: the returned event, the index entries and the per-video file."""
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    assert event.event_id.startswith("le-20260219T120000Z-")
    assert event.severity == "FAIL"
    assert event.status == "verified"  # verification text given: verified at once
    assert event.rule_id and event.rule_id.startswith("rule-")
    assert event.fingerprint == fingerprint("assets", event.symptom).key
    assert event.pattern == "Image hallucination in Product Background"
    assert event.soul_update is None  # a first FAIL: no SOUL suggestion
    assert event.loop_errors == []

    index = read_index(root)
    assert len(index) == 1  # one version: written once the loop's steps are done (issue 15)
    [last] = index
    assert not (root / "state/pending_events").exists() or not any(
        (root / "state/pending_events").iterdir()
    )  # the pending copy is gone once the final version is in the log
    expected = {
        "event_id": event.event_id,
        "run_id": "v042-run-001",
        "timestamp": "2026-02-19T12:00:00.000000Z",
        "severity": "FAIL",
        "component": "assets",
        "symptom": "Image hallucination in Product Background",
        "root_cause": "Changed reference angle from 3/4 to top-down",
        "fix_applied": "Reverted to original 3/4 angle",
        "verification": "Re-generated, product shape correct",
        "status": "verified",
        "video_id": "v042",
        "source_error_id": None,
        "promotion_rule": (
            "Avoid: Image hallucination in Product Background. Cause: Changed reference angle "
            "from 3/4 to top-down. Do: Reverted to original 3/4 angle."
        ),
        "soul_update": None,
        "obsolete_rules_removed": [],
        "agent": "dzine_producer",
        "fingerprint": event.fingerprint,
        "pattern": "Image hallucination in Product Background",
        "rule_id": event.rule_id,
        "skill_node": (
            "agents/skills/learnings/2026-02-19-fail-assets-image-hallucination-in-product-"
            "background.md"
        ),
        "loop_errors": [],
        "loop_steps": [],
        "updated": "2026-02-19T12:00:00.000000Z",
        "resolved_at": "2026-02-19T12:00:00.000000Z",
        "fingerprint_version": 2,  # grouping version 2 (version 1 records have none)
        "verified_by": "person",  # created with a verification: a person's word
    }
    assert last == expected

    per_video = root / "artifacts/videos/v042/learning/events" / f"{event.event_id}.json"
    assert json.loads(per_video.read_text()) == expected


def test_skill_graph_node_and_index(root: Path, clock: Clock) -> None:
    """The node has the pipeline's shape (front matter, title, sections) and is listed first."""
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    node = root / str(event.skill_node)
    text = node.read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta == {
        "description": "Changed reference angle from 3/4 to top-down → Reverted to original 3/4 angle",
        "tags": ["learning", "learning-event", "fail", "assets"],
        "created": date(2026, 2, 19),
        "severity": "fail",
        "video_id": "v042",
        "affected_tools": [],
        "fix": "Reverted to original 3/4 angle",
        "event_id": event.event_id,
        "agent": "dzine_producer",
        "fingerprint": event.fingerprint,
    }
    assert "# [FAIL] assets: Image hallucination in Product Background" in body
    assert "## Symptom\n\nImage hallucination in Product Background" in body
    assert "## Root Cause\n\nChanged reference angle from 3/4 to top-down" in body
    assert "## Fix Applied\n\nReverted to original 3/4 angle" in body
    assert "## Verification\n\nRe-generated, product shape correct" in body

    clock.advance(hours=1)
    second = create_event(**event_kwargs(symptom="TTS audio clipping", component="tts", agent=None))  # type: ignore[arg-type]
    index = (root / "agents/skills/learnings/_index.md").read_text()
    lines = [line for line in index.splitlines() if line.startswith("- [[")]
    assert lines == [
        f"- [[{Path(str(second.skill_node)).stem}]] — Changed reference angle from 3/4 to "
        "top-down → Reverted to original 3/4 angle",
        f"- [[{node.stem}]] — Changed reference angle from 3/4 to top-down → Reverted to "
        "original 3/4 angle",
    ]


def test_same_symptom_twice_in_one_second_gets_distinct_ids_and_nodes(
    root: Path, clock: Clock
) -> None:
    """No timestamp+hash collisions: two identical failures in the same second stay two."""
    a = create_event(**event_kwargs())  # type: ignore[arg-type]
    b = create_event(**event_kwargs())  # type: ignore[arg-type]
    assert a.event_id != b.event_id
    assert a.skill_node != b.skill_node
    assert (root / str(a.skill_node)).exists() and (root / str(b.skill_node)).exists()
    assert {e.event_id for e in list_events()} == {a.event_id, b.event_id}


def test_event_without_verification_stays_unresolved_after_apply(clock: Clock) -> None:
    """A rule in memory is not proof the failure is gone: status applied, not verified."""
    event = create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]
    assert event.status == "applied"
    assert event.resolved_at is None
    assert not event.resolved
    no_agent = create_event(**event_kwargs(verification="", agent=None))  # type: ignore[arg-type]
    assert no_agent.status == "open"
    assert no_agent.rule_id is None


def test_blocker_and_repeated_fail_get_a_soul_suggestion(clock: Clock) -> None:
    blocker = create_event(**event_kwargs(severity="BLOCKER", symptom="Playwright crash"))  # type: ignore[arg-type]
    assert blocker.soul_update is not None
    assert blocker.soul_update.startswith("### assets: Playwright crash")
    assert "blocked the pipeline" in blocker.soul_update
    first = create_event(**event_kwargs(symptom="Timeout after 30.2s on B0ABC"))  # type: ignore[arg-type]
    assert first.soul_update is None
    again = create_event(**event_kwargs(symptom="Timeout after 31.7s on B0XYZ"))  # type: ignore[arg-type]
    assert again.fingerprint == first.fingerprint
    assert again.soul_update is not None and "failed again" in again.soul_update
    warn = create_event(**event_kwargs(severity="WARN", symptom="Timeout after 9s on B0QQQ"))  # type: ignore[arg-type]
    assert warn.soul_update is None


@pytest.mark.parametrize(
    ("severity", "message"),
    [
        ("CRITICAL", "severity must be one of INFO, WARN, FAIL, BLOCKER"),
        ("", "severity must be one of INFO, WARN, FAIL, BLOCKER"),
        ("fatal", "severity must be one of INFO, WARN, FAIL, BLOCKER"),
        (None, "severity must be text, got NoneType"),
        (3, "severity must be text, got int"),
    ],
)
def test_invalid_severity_is_refused_and_nothing_written(
    root: Path, severity: object, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        create_event(**event_kwargs(severity=severity))  # type: ignore[arg-type]
    assert not (root / "data").exists()
    assert list_events() == []


def test_lowercase_severity_is_normalised() -> None:
    assert create_event(**event_kwargs(severity="warn")).severity == "WARN"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("video_id", "../x", "video id"),
        ("video_id", "a/b", "video id"),
        ("agent", "../../etc", "agent"),
        ("agent", ".hidden", "agent"),
        ("component", "assets/../../x", "component"),
        ("video_id", "v..1", "video id"),
    ],
)
def test_unsafe_identifiers_are_refused(root: Path, field: str, value: str, kind: str) -> None:
    with pytest.raises(InvalidIdentifierError, match=f"invalid {kind}"):
        create_event(**event_kwargs(**{field: value}))  # type: ignore[arg-type]
    assert not (root / "data").exists()
    assert list_events() == []
    assert not any(p.name == "x" for p in root.parent.rglob("x"))


def test_empty_symptom_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="symptom must not be empty"):
        create_event(**event_kwargs(symptom="  "))  # type: ignore[arg-type]


@pytest.mark.files_only("the versions in the index file")
def test_update_and_resolve_append_versions_and_last_wins(root: Path, clock: Clock) -> None:
    event = create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]
    clock.advance(minutes=5)
    resolved = resolve_event(event.event_id, "Re-ran: 5/5 images correct")
    assert resolved.status == "verified"
    assert resolved.verification == "Re-ran: 5/5 images correct"
    assert resolved.resolved_at is not None and resolved.resolved_at == clock.now
    versions = [e for e in read_index(root) if e["event_id"] == event.event_id]
    assert [v["status"] for v in versions] == ["applied", "verified"]
    assert get_event(event.event_id).status == "verified"
    per_video = root / "artifacts/videos/v042/learning/events" / f"{event.event_id}.json"
    assert json.loads(per_video.read_text())["status"] == "verified"

    reopened = update_event(event.event_id, status="open")
    assert reopened.resolved_at is None
    assert get_event(event.event_id).status == "open"


def test_update_unknown_event_and_bad_status() -> None:
    with pytest.raises(EventNotFoundError, match="no learning event with id 'le-nope'"):
        update_event("le-nope", status="verified")
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="status must be one of"):
        update_event(event.event_id, status="done")
    with pytest.raises(InvalidInputError, match="nothing to update"):
        update_event(event.event_id)


def test_get_event_unknown() -> None:
    with pytest.raises(EventNotFoundError):
        get_event("le-missing")


def test_list_filters_and_stage_aliases(clock: Clock) -> None:
    """Filters combine; a stage filter also matches step names that fold into it."""
    a = create_event(**event_kwargs(component="research", video_id="v1", agent="researcher"))  # type: ignore[arg-type]
    b = create_event(
        **event_kwargs(component="discover-products", video_id="v2", agent=None, severity="WARN")
    )  # type: ignore[arg-type]
    c = create_event(**event_kwargs(component="assets", video_id="v1", verification=""))  # type: ignore[arg-type]
    assert [e.event_id for e in list_events(component="research")] == [a.event_id, b.event_id]
    assert [e.event_id for e in list_events(video_id="v1")] == [a.event_id, c.event_id]
    assert [e.event_id for e in list_events(severity="warn")] == [b.event_id]
    assert [e.event_id for e in list_events(status="applied")] == [c.event_id]
    assert [e.event_id for e in list_events(agent="researcher")] == [a.event_id]
    assert [e.event_id for e in list_events(newest_first=True, limit=1)] == [c.event_id]
    with pytest.raises(InvalidInputError, match="severity must be one of"):
        list_events(severity="bad")
    stats = event_stats()
    assert stats["total"] == 3
    assert stats["unresolved"] == 1
    assert stats["by_severity"] == {"INFO": 0, "WARN": 1, "FAIL": 2, "BLOCKER": 0}
    assert stats["by_component"] == {"research": 1, "discover-products": 1, "assets": 1}


@pytest.mark.files_only("a corrupt memory file")
def test_corrupt_memory_keeps_the_event_and_records_the_failure(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """(c) fails on a corrupt memory file: the event is persisted, the failure is logged and
    recorded on it, and the memory file is left byte for byte."""
    memory = root / "state/agents/dzine_producer/memory_active.json"
    memory.parent.mkdir(parents=True)
    memory.write_bytes(b'{"rules": [ {"rule_id": ')
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    assert memory.read_bytes() == b'{"rules": [ {"rule_id": '
    assert event.rule_id is None
    assert event.status == "verified"
    [problem] = event.loop_errors
    assert problem["step"] == "apply"
    assert problem["type"] == "CorruptFileError"
    assert problem["path"] == str(memory)
    assert get_event(event.event_id).loop_errors == event.loop_errors
    assert any("rule not applied to dzine_producer" in r.getMessage() for r in caplog.records)
    with pytest.raises(CorruptFileError, match="memory_active.json is corrupt"):
        load_active_memory("dzine_producer")


def test_skill_graph_failure_keeps_the_event(root: Path) -> None:
    """(b) fails (the skill-graph folder is a file): the event and the rule still land."""
    folder = root / "agents/skills/learnings"
    folder.parent.mkdir(parents=True)
    folder.write_text("not a folder")
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    assert event.skill_node is None
    assert [p["step"] for p in event.loop_errors] == ["skill_graph"]
    assert event.rule_id is not None
    assert load_active_memory("dzine_producer").rules[0].rule_id == event.rule_id


@pytest.mark.files_only("a corrupt index file")
def test_corrupt_index_is_refused_and_left_unchanged(root: Path) -> None:
    index = root / "data/learning_events.json"
    index.parent.mkdir(parents=True)
    index.write_bytes(b'[{"event_id": "le-1", "oops"')
    with pytest.raises(CorruptFileError, match="learning_events.json is corrupt"):
        create_event(**event_kwargs())  # type: ignore[arg-type]
    with pytest.raises(CorruptFileError):
        list_events()
    assert index.read_bytes() == b'[{"event_id": "le-1", "oops"'
    assert not (root / "state/agents/dzine_producer/memory_active.json").exists()


@pytest.mark.files_only("an index file written by the old system")
def test_reads_legacy_index_with_old_timestamps(root: Path) -> None:
    """An index written by the old system (pretty JSON, +00:00 timestamps, no new fields)."""
    index = root / "data/learning_events.json"
    index.parent.mkdir(parents=True)
    legacy = {
        "event_id": "evt-20260219-120000-ab12",
        "run_id": "v038-run",
        "timestamp": "2026-02-19T12:00:00.123456+00:00",
        "severity": "FAIL",
        "component": "research",
        "symptom": "ASIN B0F8HM4PYL was accessories",
        "root_cause": "No price validation",
        "fix_applied": "Added price anomaly check",
        "verification": "",
        "status": "applied",
        "video_id": "v038",
        "source_error_id": None,
        "promotion_rule": None,
        "soul_update": None,
        "obsolete_rules_removed": [],
        "legacy_field": {"kept": True},
    }
    index.write_text(json.dumps([legacy], indent=2))
    [event] = list_events()
    assert event.timestamp.isoformat() == "2026-02-19T12:00:00.123456+00:00"
    assert event["legacy_field"] == {"kept": True}
    create_event(**event_kwargs())  # type: ignore[arg-type]
    assert len(list_events()) == 2
    assert read_index(root)[0] == legacy  # untouched by the append


def test_index_is_caught_up_across_store_instances(root: Path) -> None:
    """A store that already read the events sees events written by another store (process)."""
    reader = open_store(root)
    writer = open_store(root)
    create_event(**event_kwargs(), store=writer)  # type: ignore[arg-type]
    assert len(reader.query_events(EventQuery())) == 1
    create_event(**event_kwargs(symptom="Other failure"), store=writer)  # type: ignore[arg-type]
    assert {e.symptom for e in list_events(store=reader)} == {
        "Image hallucination in Product Background",
        "Other failure",
    }
    reader.close()
    writer.close()


def test_a_rule_follows_its_event_to_the_corrected_component() -> None:
    """``update_event(component=…)`` moves the failure to another stage: the rule learned from
    the event takes its new component and pattern; a rule the event only matched stays."""
    first = create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]
    (rule,) = load_active_memory("dzine_producer").rules
    assert rule.source_event_id == first.event_id and rule.component == "assets"
    # A second occurrence of the same failure: it matches the rule, learned from the first.
    second = create_event(**event_kwargs(video_id="v043", verification=""))  # type: ignore[arg-type]
    assert second.rule_id == rule.rule_id

    moved = update_event(second.event_id, component="render")
    assert moved.component == "render" and moved.fingerprint != first.fingerprint
    (kept,) = load_active_memory("dzine_producer").rules
    assert (kept.component, kept.fingerprint) == ("assets", first.fingerprint)

    moved = update_event(first.event_id, component="render")
    (followed,) = load_active_memory("dzine_producer").rules
    assert followed.rule_id == rule.rule_id and followed.rule == rule.rule
    assert (followed.component, followed.fingerprint) == ("render", moved.fingerprint)
    assert get_event(first.event_id).component == "render"
