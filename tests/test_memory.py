"""Agent memory: rules, re-application, the cap and eviction, tombstones, snapshots, rendering.

Runs on both stores; tests about the bytes of the file layout are marked ``files_only``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayvault.learning import (
    CorruptFileError,
    InvalidIdentifierError,
    RuleNotFoundError,
    apply_to_memory,
    create_event,
    load_active_memory,
    load_tombstones,
    render_rules,
    tombstone_rule,
)
from rayvault.learning.memory import init_memory, mark_delivered, memory_status, prompt_rules
from rayvault.learning.store import get_store

from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores
AGENT = "dzine_producer"


def memory_file(root: Path, agent: str = AGENT) -> Path:
    return root / "state/agents" / agent / "memory_active.json"


def learn(severity: str, symptom: str, **more: object):  # type: ignore[no-untyped-def]
    return create_event(**event_kwargs(severity=severity, symptom=symptom, **more))  # type: ignore[arg-type]


def memory_doc(agent: str = AGENT) -> dict[str, object]:
    """The agent's memory document as stored (``memory_active.json`` in the file store)."""
    return load_active_memory(agent).to_dict()


def test_rule_written_with_every_field(root: Path, clock: Clock) -> None:
    event = learn("FAIL", "Image hallucination in Product Background")
    data = memory_doc()
    assert data["count"] == 1
    assert data["updated"] == "2026-02-19T12:00:00.000000Z"
    [rule] = data["rules"]
    assert rule == {
        "rule_id": event.rule_id,
        "source_event_id": event.event_id,
        "created": "2026-02-19T12:00:00.000000Z",
        "severity": "FAIL",
        "component": "assets",
        "rule": event.promotion_rule,
        "symptom": "Image hallucination in Product Background",
        "video_id": "v042",
        "applied_count": 1,
        "last_applied": "2026-02-19T12:00:00.000000Z",
        "fingerprint": event.fingerprint,
        "last_event_id": event.event_id,
        "occurrences": 1,  # the efficacy counters are written once they hold something
    }


def test_same_fingerprint_increments_instead_of_duplicating(root: Path, clock: Clock) -> None:
    first = learn("WARN", "Timeout after 30.2s on B0ABC")
    clock.advance(hours=2)
    second = learn("FAIL", "Timeout after 31.7s on B0XYZ", video_id="v043")
    memory = load_active_memory(AGENT)
    [rule] = memory.rules
    assert first.rule_id == second.rule_id == rule.rule_id
    assert rule.applied_count == 2
    assert rule.last_applied == clock.now
    assert rule.last_event_id == second.event_id
    assert rule.severity == "FAIL"  # escalated by the worse occurrence
    assert memory["count"] == 1


def test_eviction_order_at_the_cap(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the cap the least recently applied INFO/WARN rule goes first, into the tombstones;
    FAIL/BLOCKER rules are never evicted."""
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "3")
    warn_old = learn("WARN", "Audio clipping at the start")
    clock.advance(minutes=1)
    fail = learn("FAIL", "Image hallucination in background")
    clock.advance(minutes=1)
    info = learn("INFO", "Slow upload of thumbnails")
    clock.advance(minutes=1)
    learn("WARN", "Audio clipping at the start")  # re-applied: now the most recently used
    clock.advance(minutes=1)
    blocker = learn(
        "BLOCKER", "Render farm unreachable"
    )  # 4 rules > 3: the INFO is the least recent
    memory = load_active_memory(AGENT)
    assert {r.rule_id for r in memory.rules} == {warn_old.rule_id, fail.rule_id, blocker.rule_id}
    assert blocker.obsolete_rules_removed == [info.rule_id]
    [evicted] = load_tombstones(AGENT).tombstones
    assert evicted.rule_id == info.rule_id
    assert evicted.kind == "evicted"
    assert evicted.reason == "evicted: over LEARNING_MAX_ACTIVE_RULES_PER_AGENT=3"
    assert evicted.evidence_ids == [blocker.event_id]
    assert evicted.tombstoned_at == clock.now

    clock.advance(minutes=1)
    learn("FAIL", "Subtitle track missing entirely")  # evicts the WARN, the last INFO/WARN rule
    clock.advance(minutes=1)
    learn("FAIL", "Voiceover out of sync")  # only FAIL/BLOCKER left: all kept, over the cap
    memory = load_active_memory(AGENT)
    assert len(memory.rules) == 4
    assert {r.severity for r in memory.rules} == {"FAIL", "BLOCKER"}
    assert [t.rule_id for t in load_tombstones(AGENT).tombstones] == [
        info.rule_id,
        warn_old.rule_id,
    ]
    status = memory_status(AGENT)
    assert status["critical_over_cap"] is True
    assert status["cap"] == 3


def test_snapshots_are_listed_one_per_change(clock: Clock) -> None:
    """Every change after the first archives the memory as it was, with a distinct name."""
    learn("FAIL", "one")
    assert get_store().list_memory_snapshots(AGENT) == []
    learn("FAIL", "two")
    learn("FAIL", "three")
    snapshots = get_store().list_memory_snapshots(AGENT)
    assert [stamp for stamp, _ in snapshots] == [clock.now, clock.now]
    assert len({name for _, name in snapshots}) == 2
    assert all(name.startswith("memory_active-20260219T120000Z-") for _, name in snapshots)


@pytest.mark.files_only("the bytes of the memory_archive/ files")
def test_archive_snapshot_before_every_change(root: Path, clock: Clock) -> None:
    learn("FAIL", "one")
    archive = memory_file(root).parent / "memory_archive"
    assert not archive.exists() or not list(archive.iterdir())  # nothing to snapshot at first
    before = memory_file(root).read_bytes()
    learn("FAIL", "two")  # same second: still a separate snapshot
    learn("FAIL", "three")
    snapshots = sorted(archive.iterdir())
    assert len(snapshots) == 2
    assert all(p.name.startswith("memory_active-20260219T120000Z-") for p in snapshots)
    assert before in {p.read_bytes() for p in snapshots}
    assert {len(json.loads(p.read_text())["rules"]) for p in snapshots} == {1, 2}


def test_snapshots_older_than_retention_are_pruned(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYVAULT_LEARNING_ARCHIVE_RETENTION_DAYS", "10")
    learn("FAIL", "one")
    learn("FAIL", "two")  # snapshot at day 0

    def names() -> list[str]:
        return [name for _, name in get_store().list_memory_snapshots(AGENT)]

    assert len(names()) == 1
    clock.advance(days=9, hours=23)
    learn("FAIL", "three")  # day 9: kept (inside retention), plus a new snapshot
    assert len(names()) == 2
    clock.advance(days=1, hours=2)
    learn("FAIL", "four")  # day 11: the day-0 snapshot is older than 10 days
    assert len(names()) == 2
    assert not any(n.startswith("memory_active-20260219T") for n in names())


def test_tombstone_rule_keeps_evidence(root: Path, clock: Clock) -> None:
    event = learn("FAIL", "one")
    other = learn("WARN", "two")
    clock.advance(days=1)
    tomb = tombstone_rule(
        AGENT,
        str(event.rule_id),
        "Superseded by new approach",
        evidence_ids=[other.event_id],
        superseded_by=other.rule_id,
    )
    assert tomb.rule_id == event.rule_id
    assert [r.rule_id for r in load_active_memory(AGENT).rules] == [other.rule_id]
    data = load_tombstones(AGENT).to_dict()
    assert data["count"] == 1
    [stone] = data["tombstones"]
    assert stone["reason"] == "Superseded by new approach"
    assert stone["evidence_ids"] == [other.event_id]
    assert stone["superseded_by"] == other.rule_id
    assert stone["tombstoned_at"] == "2026-02-20T12:00:00.000000Z"
    assert stone["kind"] == "tombstoned"
    assert stone["rule"] == event.promotion_rule
    with pytest.raises(RuleNotFoundError, match="has no active rule"):
        tombstone_rule(AGENT, str(event.rule_id), "again")


def test_apply_to_memory_accepts_the_old_dict_api(root: Path) -> None:
    """``apply_to_memory(event_dict, agent)`` and ``rule['rule_id']`` as the spec shows."""
    event = learn("WARN", "phone ghost", agent=None)
    rule = apply_to_memory(event.to_dict(), "researcher")
    memory = load_active_memory("researcher")
    assert [r["rule_id"] for r in memory.get("rules", [])] == [rule["rule_id"]]
    assert memory.get("rules", [])[0]["severity"] == "WARN"


@pytest.mark.files_only("a corrupt memory file")
def test_corrupt_memory_is_refused_by_name_and_unchanged(root: Path) -> None:
    path = memory_file(root)
    path.parent.mkdir(parents=True)
    for content in (b"", b"{not json", b'{"rules": "nope"}'):
        path.write_bytes(content)
        with pytest.raises(CorruptFileError) as info:
            apply_to_memory(learn("FAIL", "x", agent=None), AGENT)
        assert str(path) in str(info.value)
        assert path.read_bytes() == content
        with pytest.raises(CorruptFileError):
            tombstone_rule(AGENT, "rule-x", "reason")
        assert path.read_bytes() == content


def test_unsafe_agent_names(root: Path) -> None:
    for bad in ("../x", "a/b", "", ".."):
        with pytest.raises(InvalidIdentifierError):
            load_active_memory(bad)
        with pytest.raises(InvalidIdentifierError):
            apply_to_memory(learn("FAIL", "x", agent=None), bad)
    assert not (root / "state/x").exists()


def test_init_creates_configured_agents_and_keeps_existing(root: Path) -> None:
    learn("FAIL", "one")
    before = memory_doc()
    result = init_memory()
    assert result[AGENT] is True  # its tombstone file was missing
    assert result["researcher"] is True
    assert set(result) == {
        "researcher",
        "scriptwriter",
        "reviewer",
        "dzine_producer",
        "publisher",
        "davinci_editor",
        "market_scout",
    }
    assert memory_doc() == before
    assert memory_doc("researcher")["rules"] == []
    assert memory_doc("researcher")["updated"] is not None
    assert load_tombstones(AGENT).to_dict()["tombstones"] == []
    assert init_memory() == dict.fromkeys(result, False)


def test_render_rules_orders_by_severity_then_recency_within_budget(
    root: Path, clock: Clock
) -> None:
    learn("INFO", "info rule")
    clock.advance(minutes=1)
    learn("FAIL", "older fail")
    clock.advance(minutes=1)
    learn("WARN", "warn rule")
    clock.advance(minutes=1)
    learn("FAIL", "newer fail")
    clock.advance(minutes=1)
    learn("BLOCKER", "blocker stops the render")
    text = render_rules(AGENT, budget=10_000)
    lines = text.splitlines()
    assert lines[0] == "Learned rules for dzine_producer (follow them; most severe first):"
    order = [line.split("Avoid: ")[1].split(".")[0] for line in lines[1:]]
    assert order == [
        "blocker stops the render",
        "newer fail",
        "older fail",
        "warn rule",
        "info rule",
    ]
    assert lines[1].startswith("- [BLOCKER] assets: Avoid: blocker stops the render.")

    short = render_rules(AGENT, budget=400)
    assert len(short) <= 400
    assert short.splitlines()[-1].startswith("(and ")
    assert "blocker stops the render" in short and "info rule" not in short
    assert render_rules("researcher") == ""


def test_prompt_rules_names_the_rules_its_text_shows(root: Path, clock: Clock) -> None:
    """The block and the rules it shows agree, also when the budget cuts some off."""
    # Four different failures (variants of one text would be one pattern, one rule).
    for symptom in (
        "Image hallucination in background",
        "Audio clipping at the start",
        "Subtitle track missing entirely",
        "Voiceover out of sync",
    ):
        clock.advance(minutes=1)
        learn("FAIL", symptom)
    full = prompt_rules(AGENT, budget=10_000)
    assert full.total == 4 and len(full.rules) == 4
    assert full.text == render_rules(AGENT, budget=10_000)
    cut = prompt_rules(AGENT, budget=300)
    assert 0 < len(cut.rules) < 4 and cut.total == 4
    assert all(r.rule in cut.text for r in cut.rules)
    assert cut.text == render_rules(AGENT, budget=300)
    assert prompt_rules("researcher").rules == []


def test_mark_delivered_counts_a_delivery_without_a_snapshot(clock: Clock) -> None:
    """applied_count and last_applied grow; unknown ids are skipped; no archive snapshot."""
    event = learn("FAIL", "Image hallucination")
    learn("FAIL", "Audio clipping")  # a rule change: one snapshot
    before = get_store().list_memory_snapshots(AGENT)
    assert len(before) == 1
    clock.advance(hours=2)
    [rule] = mark_delivered(AGENT, [str(event.rule_id), "rule-gone"])
    assert rule.applied_count == 2 and rule.last_applied == clock.now
    stored = next(r for r in load_active_memory(AGENT).rules if r.rule_id == event.rule_id)
    assert stored.applied_count == 2 and stored.last_applied == clock.now
    assert get_store().list_memory_snapshots(AGENT) == before  # counters are not versioned
    written = load_active_memory(AGENT)
    clock.advance(minutes=1)  # a rewrite would change "updated"
    assert mark_delivered(AGENT, []) == []
    assert mark_delivered(AGENT, ["rule-gone"]) == []
    assert load_active_memory(AGENT) == written  # nothing to count: nothing written
    with pytest.raises(InvalidIdentifierError):
        mark_delivered("../x", [str(event.rule_id)])


@pytest.mark.files_only("a memory file written by the old system")
def test_memory_show_reads_old_files_with_unknown_fields(root: Path) -> None:
    path = memory_file(root)
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "rule_id": "r-old",
                        "source_event_id": "evt-1",
                        "created": "2026-02-19T12:00:00+00:00",
                        "severity": "WARN",
                        "component": "dzine",
                        "rule": "Crop the phone",
                        "symptom": "phone ghost",
                        "video_id": "v038",
                        "applied_count": 1,
                        "last_applied": None,
                        "custom": "kept",
                    }
                ],
                "updated": "2026-02-19T12:00:00+00:00",
                "count": 1,
            }
        )
    )
    learn("WARN", "phone ghost", component="dzine")  # same fingerprint as the old rule
    [rule] = load_active_memory(AGENT).rules
    assert rule.rule_id == "r-old"
    assert rule.applied_count == 2
    assert rule["custom"] == "kept"
    assert json.loads(path.read_text())["rules"][0]["custom"] == "kept"


def test_prune_is_checked_at_most_daily(root: Path, clock: Clock) -> None:
    """The archive folder is listed once a day per agent, not on every change."""
    learn("FAIL", "one")
    first = memory_doc()["archive_pruned_at"]
    clock.advance(hours=5)
    learn("FAIL", "two")
    assert memory_doc()["archive_pruned_at"] == first
    clock.advance(hours=20)
    learn("FAIL", "three")
    assert memory_doc()["archive_pruned_at"] == ("2026-02-20T13:00:00.000000Z")
    assert first == "2026-02-19T12:00:00.000000Z"


def test_rule_text_keeps_the_texts_own_punctuation() -> None:
    """Ellipses and the fix's paths survive; a final period is not doubled. The symptom reads as
    its pattern's template, so its link's path is masked."""
    from rayvault.learning.memory import rule_text
    from rayvault.learning.models import LearningEvent

    event = LearningEvent(
        event_id="le-x",
        timestamp="2026-02-19T12:00:00Z",
        severity="WARN",
        component="assets",
        symptom="Ghost edges, see [[../dzine/bg-remove]]...",
        root_cause="Phone in the reference.",
        fix_applied="Crop   with ../tools/crop.sh",
    )
    assert rule_text(event) == (
        "Avoid: Ghost edges, see [[<path>]]... Cause: Phone in the reference. "
        "Do: Crop with ../tools/crop.sh."
    )
