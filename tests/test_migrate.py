"""Migration of existing learnings: the real skill-graph notes (both shapes, broken front matter
included) and resolved error-log entries become events, note by note; dry runs write nothing;
a second run creates nothing.

Runs on both stores; tests about the bytes of the file layout are marked ``files_only``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.cli import main
from rayvault.learning import create_event, list_events
from rayvault.learning.errors import get_error, log_error, promote_to_learning, resolve_error
from rayvault.learning.gate import learning_gate
from rayvault.learning.migrate import draft_from_note as draft
from rayvault.learning.migrate import map_severity, migrate_learnings
from rayvault.learning.models import LearningEvent
from rayvault.learning.skill_graph import parse_front_matter, parse_note, render_note
from rayvault.learning.store import EventQuery, Store, get_store
from rayvault.policies import Policies

from . import _raw
from .conftest import Clock

pytestmark = pytest.mark.both_stores

REPO = Path(__file__).resolve().parents[1]
NOTES = "agents/skills/learnings"


@pytest.fixture
def notes(root: Path, shared_data: Path) -> Path:
    """A copy of the real skill-graph notes in the data root's skill-graph folder."""
    folder = root / NOTES
    shutil.copytree(shared_data / "skill-graph" / "learnings", folder)
    return folder


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def migrated_by_note(store: Store) -> dict[str, LearningEvent]:
    return {
        Path(e["source_note"]).name: e
        for e in store.query_events(EventQuery())
        if e.get("source_note")
    }


# What each note becomes. Hand-written notes (severity critical/high/medium; sections What
# Happened/Incident, Root Cause, Fix, Prevention) and notes written from events ([SEVERITY]
# title; Symptom, Root Cause, Fix Applied, Verification), several with front matter that is not
# valid YAML (unquoted or unterminated multi-line values).
EXPECTED: dict[str, dict[str, Any]] = {
    "2026-02-19-fail-assets-image-hallucination.md": {
        "severity": "FAIL",
        "component": "assets",
        "symptom": "Image hallucination",
        "root_cause": "Changed reference angle",
        "fix_applied": "Reverted to original angle",
        "status": "open",
        "video_id": "v038",
    },
    "2026-02-19-fail-assets-dzine-phone-ghost-in-bg.md": {
        "severity": "FAIL",
        "component": "assets",
        "symptom": "Dzine phone ghost in BG",
        "root_cause": "Amazon ref had phone, BG Remove missed it",
        "fix_applied": "Added drawbox white-out before BG Remove",
        "verification": "Re-generated, no phone ghost",
        "status": "verified",
        "video_id": "test002",
    },
    "2026-02-20-warn-tts-audio-clipping.md": {
        "severity": "WARN",
        "component": "tts",
        "symptom": "Audio clipping",
        "root_cause": "Volume too high",
        "fix_applied": "Reduced volume by 3dB",
        "status": "open",
        "video_id": None,
        "date": "2026-02-20",
    },
    # Valid YAML that means something else: "After fix: …" parses as a key of its own.
    "2026-02-19-blocker-unknown-playwright-asyncio-crash.md": {
        "severity": "BLOCKER",
        "component": "dzine",  # "unknown" in the note; the hand-written twin names dzine
        "symptom": "Playwright Asyncio Crash",
        "root_cause": (
            "Each `generate_product_faithful()` call was creating a new "
            "`sync_playwright().start()`. The second call detected an existing event loop from "
            "the first Playwright instance."
        ),
        "fix_applied": (
            "Module-level shared session globals. See [[../dzine/shared-session]] for full "
            "pattern.\n\nAfter fix: all 18 images generated without crashes."
        ),
        "status": "open",
        "video_id": None,
        "tolerant": True,
    },
    # Not valid YAML: unterminated quoted description, multi-line unquoted fix.
    "2026-02-19-fail-unknown-product-background-generation-timed-out-at-43-progress-a-d.md": {
        "severity": "FAIL",
        "component": "dzine",
        "symptom": (
            "Product Background generation timed out at 43% progress. A dialog appeared: "
            '"Background is NOT empty. The background must be empty."'
        ),
        "root_cause": (
            "Product Background does NOT handle BG removal internally (contrary to initial "
            "assumption from Dzine marketing). It requires the image to already have a "
            "transparent/empty background before it will gene"
        ),
        "fix_applied": (
            "1. Updated `generate_product_faithful()` to run `_bg_remove()` before "
            "`_product_background()`\n"
            '2. Added "Done" to `close_all_dialogs()` dismiss texts to handle the error dialog\n'
            "3. After fix: 4 result i"
        ),
        "verification": (
            "Always run BG Remove before Product Background. Never assume a Dzine tool handles "
            "preprocessing internally."
        ),
        "status": "verified",
        "video_id": None,
        "tolerant": True,
    },
    "2026-02-19-warn-unknown-phone-removal-from-reference-images.md": {
        "severity": "WARN",
        "component": "unknown",
        "symptom": "Phone Removal from Reference Images",
        "root_cause": (
            'BG Remove classifies all foreground objects as "product" — it can\'t distinguish '
            "between the main product and accessories in the frame."
        ),
        "fix_applied": (
            "Two strategies, both successful:\n\n"
            "### Strategy 1: Crop reference (products 01, 04, 05)\n\n"
            "Used ffmpeg to crop the phone out before uploading:\n\n"
            "```bash\n"
            '/opt/homebrew/bin/ffmpeg -i original.jpg -vf "crop=\n\n'
            "```"
        ),
        "status": "open",
        "video_id": "vtest-qa",
        "tolerant": True,
    },
    "2026-02-19-fail-unknown-v038-asin-accessories-detected-by-price-anomaly.md": {
        "severity": "FAIL",
        "component": "research",
        "symptom": "v038 ASIN accessories detected by price anomaly",
        "root_cause": (
            "No price validation existed. The researcher accepted the ASIN without checking if "
            "the price was reasonable for the category."
        ),
        "fix_applied": (
            "- Added price anomaly detection: flag products with price <30% of category median\n"
            '- Added accessory keyword filter: detect "replacement", "kit", "pack of", etc. in '
            "product names\n- Added duplicate evid"
        ),
        "status": "open",
        "video_id": "v038",
        "tolerant": True,
    },
    "2026-02-19-blocker-unknown-identical-images-from-generative-expand.md": {
        "severity": "BLOCKER",
        "component": "unknown",
        "symptom": "Identical Images from Generative Expand",
        "root_cause": (
            "Generative Expand is a **canvas extension tool**, NOT a scene generator. It fills "
            "the expanded area by continuing the edge pixels of the existing image. The prompt "
            "field exists but has minimal influen"
        ),
        "fix_applied": (
            "Replace Generative Expand with **Product Background** tool in the pipeline:\n\n"
            "1. Product Background is designed specifically for scene generation\n"
            "2. It accepts and respects scene prompts\n"
            "3. It handles"
        ),
        "status": "open",
        "video_id": "vtest-qa",
        "tolerant": True,
    },
    # Hand-written notes.
    "2026-02-19-bg-remove-prerequisite.md": {
        "severity": "FAIL",  # high
        "component": "dzine",  # its first tag that names a stage alias
        "symptom": (
            "Product Background generation timed out at 43% progress. A dialog appeared: "
            '"Background is NOT empty. The background must be empty."'
        ),
        "root_cause": (
            "Product Background does NOT handle BG removal internally (contrary to initial "
            "assumption from Dzine marketing). It requires the image to already have a "
            "transparent/empty background before it will generate a new scene."
        ),
        "fix_applied": (
            "1. Updated `generate_product_faithful()` to run `_bg_remove()` before "
            "`_product_background()`\n"
            '2. Added "Done" to `close_all_dialogs()` dismiss texts to handle the error dialog\n'
            "3. After fix: 4 result images generated successfully in ~15-30s"
        ),
        "verification": "marked 'fixed' in the skill-graph note",  # status: fixed
        "status": "verified",
        "video_id": None,
        "prevention": (
            "Always run BG Remove before Product Background. Never assume a Dzine tool handles "
            "preprocessing internally."
        ),
    },
    "2026-02-19-identical-images.md": {
        "severity": "BLOCKER",  # critical
        "component": "unknown",
        "symptom": "Identical Images from Generative Expand",
        "root_cause": (
            "Generative Expand is a **canvas extension tool**, NOT a scene generator. It fills "
            "the expanded area by continuing the edge pixels of the existing image. The prompt "
            "field exists but has minimal influence on the output.\n\n"
            "When the input is a product with transparent background (from BG Remove), Expand "
            "just generates a uniform gradient matching the product's edge colors."
        ),
        "fix_applied": (
            "Replace Generative Expand with **Product Background** tool in the pipeline:\n\n"
            "1. Product Background is designed specifically for scene generation\n"
            "2. It accepts and respects scene prompts\n"
            "3. It handles BG removal internally\n"
            "4. Position: Image Editor > Product Background (92, 877), requires scrolling\n\n"
            "See [[../dzine/product-background]] for automation details.\n"
            "See [[../prompts/_index]] for variant-specific prompts."
        ),
        "status": "open",
        "video_id": "vtest-qa",
    },
    "2026-02-19-playwright-crash.md": {
        "severity": "BLOCKER",  # critical
        "component": "dzine",  # affected tool dzine-browser
        "symptom": "Playwright Asyncio Crash",
        "root_cause": (
            "Each `generate_product_faithful()` call was creating a new "
            "`sync_playwright().start()`. The second call detected an existing event loop from "
            "the first Playwright instance."
        ),
        "fix_applied": (
            "Module-level shared session globals. See [[../dzine/shared-session]] for full "
            "pattern.\n\nAfter fix: all 18 images generated without crashes."
        ),
        "status": "open",
        "video_id": None,
        "prevention": (
            "Never create multiple Playwright instances in the same process. Always use the "
            "shared session pattern for sequential browser automation calls."
        ),
    },
    "2026-02-19-phone-removal.md": {
        "severity": "WARN",  # medium
        "component": "unknown",
        "symptom": "Phone Removal from Reference Images",
        "root_cause": (
            'BG Remove classifies all foreground objects as "product" — it can\'t distinguish '
            "between the main product and accessories in the frame."
        ),
        "status": "open",
        "video_id": "vtest-qa",
    },
    "2026-02-19-v038-asin-accessories-detected-by-price-anomaly.md": {
        "severity": "FAIL",  # high
        "component": "research",  # tag
        "symptom": "v038 ASIN accessories detected by price anomaly",
        "root_cause": (
            "No price validation existed. The researcher accepted the ASIN without checking if "
            "the price was reasonable for the category."
        ),
        "fix_applied": (
            "- Added price anomaly detection: flag products with price <30% of category median\n"
            '- Added accessory keyword filter: detect "replacement", "kit", "pack of", etc. in '
            "product names\n"
            "- Added duplicate evidence detection: flag when same text is used for multiple "
            "products"
        ),
        "status": "open",
        "video_id": "v038",
    },
    # Front matter and a title only: the description says what went wrong, `fix` what was done.
    "2026-02-19-script-word-count-targets-differ-between-schema-and-template.md": {
        "severity": "WARN",  # medium
        "component": "script",  # affected tool script_schema
        "symptom": "Script word count targets differ between schema and template",
        "root_cause": (
            "script_schema.py: 230-280 per product. competitor_informed_script_template: "
            "120-220 per product. Template targets are based on real YouTube analysis and "
            "produce better pacing."
        ),
        "fix_applied": (
            "Use competitor template targets (120-220 per product, 1300-1750 total). schema "
            "targets produce padding."
        ),
        "status": "open",
        "video_id": "v038",
    },
    "2026-02-19-v038-products-json-copy-pasted-evidence-across-3-products.md": {
        "severity": "BLOCKER",  # critical
        "component": "research",  # affected tool amazon_research
        "symptom": "v038 products.json copy-pasted evidence across 3 products",
        "fix_applied": (
            "Used independent web research for REAL per-product evidence from multiple "
            "sources. Each product now has unique, source-attributed claims."
        ),
        "status": "open",
        "video_id": "v038",
    },
}


def test_real_notes_become_events_note_by_note(root: Path, notes: Path, store: Store) -> None:
    """Severity, component, symptom, root cause, fix, status, video and date of each note."""
    report = migrate_learnings(apply=True, store=store)
    events = migrated_by_note(store)
    for name, want in EXPECTED.items():
        event = events[name]
        for field in ("severity", "component", "symptom", "root_cause", "fix_applied"):
            if field in want:
                assert event[field] == want[field], f"{name}: {field}"
        assert event.verification == want.get("verification", ""), name
        assert event.status == want["status"], name
        assert event.video_id == want["video_id"], name
        day = want.get("date", "2026-02-19")
        assert event.timestamp == datetime.fromisoformat(day).replace(tzinfo=UTC), name
        assert event.event_id.startswith(f"le-{day.replace('-', '')}T000000Z-"), name
        assert event.get("prevention") == want.get("prevention", event.get("prevention"))
        assert (event.get("note_front_matter") == "tolerant") is want.get("tolerant", False)
        # Grouped by version 2 in the folded stage (the same failure in several notes: one key).
        stage = {"dzine": "assets"}.get(event.component, event.component)
        assert event.fingerprint_version == 2, name
        assert event.fingerprint and event.fingerprint.startswith(f"{stage}:"), name
        assert event["source_note"] == f"{NOTES}/{name}"
        assert event.agent is None and event.rule_id is None and event.skill_node is None
    assert report.found == 29
    assert report.migrated == 26
    assert report.skipped_by_reason == {"not a failure note": 2, "map of content": 1}
    skipped = {Path(i.ref).name for i in report.items if i.outcome == "skipped"}
    assert skipped == {
        "_index.md",
        "2026-02-19-image-qa-rules.md",
        "2026-02-19-script-quality-rules.md",
    }


def test_notes_of_the_same_failure_stay_separate_but_share_a_fingerprint(
    notes: Path, store: Store
) -> None:
    """The same failure on two days, and a hand-written note and the event note made from it."""
    migrate_learnings(apply=True, store=store)
    events = migrated_by_note(store)
    pairs = [
        ("2026-02-19-fail-assets-image-hallucination", "2026-02-20-fail-assets-image-hallucination"),
        ("2026-02-19-fail-research-asin-is-accessories", "2026-02-20-fail-research-asin-is-accessories"),
        ("2026-02-19-warn-tts-audio-clipping", "2026-02-20-warn-tts-audio-clipping"),
        ("2026-02-19-identical-images", "2026-02-19-blocker-unknown-identical-images-from-generative-expand"),
        ("2026-02-19-playwright-crash", "2026-02-19-blocker-unknown-playwright-asyncio-crash"),
        ("2026-02-19-phone-removal", "2026-02-19-warn-unknown-phone-removal-from-reference-images"),
        ("2026-02-19-duplicate-dock", "2026-02-19-fail-unknown-generated-image-added-a-second-charging-dock-that-did-not-ex"),
        ("2026-02-19-bg-remove-prerequisite", "2026-02-19-fail-unknown-product-background-generation-timed-out-at-43-progress-a-d"),
        ("2026-02-19-v038-asin-accessories-detected-by-price-anomaly", "2026-02-19-fail-unknown-v038-asin-accessories-detected-by-price-anomaly"),
    ]  # fmt: skip
    fingerprints = set()
    for a, b in pairs:
        first, second = events[f"{a}.md"], events[f"{b}.md"]
        assert first.event_id != second.event_id
        assert first.fingerprint == second.fingerprint, (a, b)
        fingerprints.add(first.fingerprint)
    assert len(fingerprints) == len(pairs)
    assert (
        events["2026-02-19-fail-assets-image-hallucination.md"].fingerprint
        != events["2026-02-19-fail-assets-product-image-hallucinated.md"].fingerprint
    )
    twin = events["2026-02-19-fail-unknown-v038-asin-accessories-detected-by-price-anomaly.md"]
    assert twin["component_inferred_from"] == (
        f"{NOTES}/2026-02-19-v038-asin-accessories-detected-by-price-anomaly.md"
    )


def test_dry_run_writes_nothing(
    root: Path, notes: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole data root is byte for byte the same after a dry run, even with existing
    events and error log (no derived index is written either); on PostgreSQL no row changes."""
    create_event(run_id="r", severity="FAIL", component="research", symptom="Price anomaly")
    entry = log_error("v1", "research", "Timeout after 30s")
    resolve_error(entry.id, "slow proxy", "retry with backoff")
    store = get_store()
    if not _raw.is_pg(store):
        shutil.rmtree(root / "state")  # the derived index and locks the writes above left
        for lock in root.rglob("*.lock"):
            lock.unlink()
    before = tree_bytes(root), _raw.everything(store)
    report = migrate_learnings(store=store)
    assert report.applied is False
    assert report.migrated == 27 and report.by_source["error_log"]["migrated"] == 1
    assert all(i.event_id is None for i in report.items if i.outcome == "migrated")
    assert main(["migrate", "--dry-run", "--verbose"]) == 0
    assert main(["migrate"]) == 0
    assert main(["migrate", "--json"]) == 0
    capsys.readouterr()
    assert (tree_bytes(root), _raw.everything(store)) == before


def test_apply_twice_creates_nothing_the_second_time(root: Path, notes: Path, clock: Clock) -> None:
    """Second run: every note and error is 'already present'; the index is unchanged."""
    entry = log_error("v1", "research", "Timeout after 30s")
    resolve_error(entry.id, "slow proxy", "retry with backoff")
    first = migrate_learnings(apply=True)
    assert first.migrated == 27
    store = get_store()
    stored = _raw.everything(store)
    clock.advance(days=1)
    second = migrate_learnings(apply=True)
    assert second.migrated == 0
    assert second.present == 27
    assert {i.reason for i in second.items if i.outcome == "present"} == {
        "already migrated",
        "already an event",
    }
    assert {i.event_id for i in second.items if i.outcome == "present"} == {
        i.event_id for i in first.items if i.outcome == "migrated"
    }
    assert _raw.everything(store) == stored  # the index and the error log as they were
    assert len(list_events()) == 27
    assert not (root / "state/locks").exists() or not list((root / "state/locks").iterdir())


def test_migration_writes_no_rule_and_no_note(root: Path, notes: Path) -> None:
    """Migrated events are history: agent memories and the notes folder stay as they were."""
    before = tree_bytes(notes)
    migrate_learnings(apply=True)
    assert tree_bytes(notes) == before
    assert get_store().list_agents() == []
    assert len(list_events(video_id="v038")) == 7
    if not _raw.is_pg(get_store()):
        per_video = root / "artifacts/videos/v038/learning/events"
        assert len(list(per_video.glob("*.json"))) == 7  # the per-video copies are written


def test_migrated_unverified_failures_hold_the_gate_for_their_video(
    root: Path, notes: Path, souls: Path
) -> None:
    """A documented fix is not proof: an unverified FAIL note still holds its video's stage."""
    migrate_learnings(apply=True)
    result = learning_gate("v038", "assets")
    regressions = next(c for c in result.checks if c.name == "check_regressions")
    assert regressions.passed is False
    assert learning_gate("test002", "assets").blocked is False  # its note has a Verification


def test_resolved_errors_become_verified_events_with_their_dates(root: Path, clock: Clock) -> None:
    """Severity from the context (or FAIL), component = stage, source_error_id, the error's own
    timestamp, the entry linked back; unresolved entries are left alone."""
    critical = log_error("v7", "discover-products", "Timeout after 31.7s on B0XYZ12345",
                         context={"severity": "critical", "run_id": "v7-run-2"})  # fmt: skip
    plain = log_error(None, "tts", "ffmpeg exited with code 1")
    open_entry = log_error("v7", "assets", "Image hallucination")
    clock.advance(hours=2)
    resolve_error(critical.id, "slow proxy", "retry with backoff")
    resolve_error(plain.id, "", "re-encoded at 48 kHz")
    clock.advance(days=30)
    report = migrate_learnings(apply=True)
    assert report.unresolved_errors == 1
    assert report.by_source["error_log"] == {"found": 2, "migrated": 2, "present": 0, "skipped": 0}
    by_error = {e.source_error_id: e for e in list_events()}
    assert set(by_error) == {critical.id, plain.id}
    event = by_error[critical.id]
    assert event.severity == "BLOCKER"
    assert event.component == "discover-products"
    assert event.symptom == "Timeout after 31.7s on B0XYZ12345"
    assert event.root_cause == "slow proxy" and event.fix_applied == "retry with backoff"
    assert event.run_id == "v7-run-2" and event.video_id == "v7"
    assert event.timestamp == critical.timestamp
    assert event.status == "verified"
    assert event.resolved_at == datetime(2026, 2, 19, 14, tzinfo=UTC)  # when it was resolved
    assert event.verification == f"resolved in the error log ({critical.id}) on 2026-02-19"
    assert event.fingerprint == critical.fingerprint  # folded into research, like the entry
    assert by_error[plain.id].severity == "FAIL"
    assert get_error(critical.id).learning_event_id == event.event_id
    assert get_error(open_entry.id).learning_event_id is None


def test_promoted_errors_are_already_present(root: Path) -> None:
    entry = log_error("v1", "research", "Price anomaly")
    promoted = promote_to_learning(entry.id, root_cause="cause", fix="fix")
    report = migrate_learnings(apply=True, notes=False)
    [item] = report.items
    assert (item.outcome, item.reason, item.event_id) == (
        "present",
        "already an event",
        promoted.event.event_id,
    )
    assert len(list_events()) == 1


def test_notes_written_from_events_in_the_index_are_not_duplicated(
    root: Path, clock: Clock
) -> None:
    """A note written by this library names its event; an older note is matched by day,
    component, severity and symptom to an event the index already has."""
    event = create_event(
        run_id="r", severity="FAIL", component="assets", symptom="Image hallucination",
        root_cause="cause", fix_applied="fix",
    )  # fmt: skip
    legacy = root / NOTES / "2026-02-19-warn-tts-audio-clipping.md"
    legacy.write_text(
        "---\nseverity: warn\nvideo_id:\n---\n\n# [WARN] tts: Audio clipping\n\n"
        "## Symptom\n\nAudio clipping\n\n## Root Cause\n\nVolume too high\n"
    )
    old = create_event(run_id="r", severity="WARN", component="tts", symptom="Audio clipping")
    report = migrate_learnings(apply=True)
    present = {Path(i.ref).name: i.event_id for i in report.items if i.outcome == "present"}
    assert present == {
        Path(str(event.skill_node)).name: event.event_id,
        legacy.name: old.event_id,
        Path(str(old.skill_node)).name: old.event_id,
    }
    assert report.migrated == 0
    assert len(list_events()) == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty note"),
        ("---\nseverity: high\n# no closing line\n", "cannot be understood"),
        ("---\nseverity: urgent\n---\n# X\n\n## Root Cause\n\nc\n", "unknown severity"),
        ("# Just a title\n\n## Root Cause\n\nc\n", "no severity"),
        ("---\nseverity: low\n---\n# Rules\n\n## Checklist\n\n1. a\n", "not a failure note"),
        ("---\nseverity: low\n---\n# Observed\n\n## Symptom\n\ns\n", "no root cause or fix"),
        ("---\nseverity: high\nvideo_id: ../x\n---\n# T\n\n## Fix\n\nf\n", "invalid video id"),
    ],
)
def test_notes_that_cannot_be_understood_are_skipped_with_the_reason(
    root: Path, text: str, reason: str
) -> None:
    folder = root / NOTES
    folder.mkdir(parents=True)
    (folder / "2026-02-19-odd.md").write_text(text)
    (folder / "2026-02-19-good.md").write_text(
        "---\nseverity: low\n---\n# Fine\n\n## Root Cause\n\nc\n\n## Fix\n\nf\n"
    )
    report = migrate_learnings(apply=True)
    outcome = {Path(i.ref).name: (i.outcome, i.reason) for i in report.items}
    assert outcome["2026-02-19-odd.md"] == ("skipped", reason)
    assert outcome["2026-02-19-good.md"] == ("migrated", None)


def test_a_note_that_is_not_utf8_is_skipped(root: Path) -> None:
    folder = root / NOTES
    folder.mkdir(parents=True)
    (folder / "2026-02-19-latin1.md").write_bytes(
        "---\nseverity: high\n---\n# Caf\xe9\n".encode("latin-1")
    )
    [item] = migrate_learnings().items
    assert (item.outcome, item.reason) == ("skipped", "unreadable")
    assert "is not UTF-8 text" in str(item.detail)


def test_tolerant_front_matter() -> None:
    """Unquoted and unterminated multi-line values are read whole; valid YAML is YAML."""
    block = (
        'description: "Cause one.\n→ fix: step\n\n2. second "quoted" step\n3. tail"\n'
        "tags: [learning, fail, assets]\nseverity: fail\nvideo_id: \nfix: 1. first\n"
        "2. second\n\nAfter fix: it works"
    )
    front, strict = parse_front_matter(block)
    assert strict is False
    assert front == {
        "description": 'Cause one.\n→ fix: step\n\n2. second "quoted" step\n3. tail',
        "tags": ["learning", "fail", "assets"],
        "severity": "fail",
        "video_id": None,
        "fix": "1. first\n2. second\n\nAfter fix: it works",
    }
    front, strict = parse_front_matter("severity: high\ncreated: 2026-02-19\ntags: [a, b]")
    assert strict is True and front["tags"] == ["a", "b"]


@pytest.mark.parametrize(
    ("word", "severity"),
    [("critical", "BLOCKER"), ("High", "FAIL"), ("medium", "WARN"), ("low", "INFO"),
     ("fail", "FAIL"), ("WARN", "WARN"), ("info", "INFO"), ("blocker", "BLOCKER"),
     ("urgent", None), (None, None)],
)  # fmt: skip
def test_severity_words(word: str | None, severity: str | None) -> None:
    assert map_severity(word) == severity


_TEXT = st.text(
    alphabet=st.characters(
        codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="#`~\r\u2028\u2029\x85"
    )
    | st.just("\n"),
    min_size=1,
    max_size=80,
).map(lambda s: "\n".join(line.strip() for line in s.strip().split("\n")).strip())
_TEXT = _TEXT.filter(lambda s: s not in ("(not yet diagnosed)", "(none yet)"))  # placeholders


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    severity=st.sampled_from(["INFO", "WARN", "FAIL", "BLOCKER"]),
    component=st.sampled_from(["assets", "research", "tts", "generate-images", "custom_step"]),
    symptom=_TEXT.filter(bool),
    root_cause=_TEXT,
    fix=_TEXT,
    verification=st.one_of(st.just(""), _TEXT),
    video=st.one_of(st.none(), st.sampled_from(["v042", "vtest-qa"])),
)
def test_notes_written_from_events_migrate_back_to_the_same_event(
    *,
    severity: str,
    component: str,
    symptom: str,
    root_cause: str,
    fix: str,
    verification: str,
    video: str | None,
) -> None:
    """Whatever the texts, a node rendered from an event reads back as that event."""
    if not (root_cause or fix):
        fix = "fix"
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
    )
    text = render_note(event)
    got = draft(Path("2026-02-19-x.md"), "x", text, Policies())
    assert (got.severity, got.component, got.symptom) == (severity, component, symptom)
    assert (got.root_cause, got.fix_applied, got.verification) == (root_cause, fix, verification)
    assert got.video_id == video and got.note_event_id == event.event_id
    assert got.timestamp == datetime(2026, 2, 19, tzinfo=UTC)
    assert parse_note(text).strict_yaml


def test_progress_is_reported(notes: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    migrate_learnings(progress=lambda what, done, total: calls.append((what, done, total)))
    assert ("notes", 29, 29) in calls and ("events", 26, 26) in calls
    assert ("error log", 0, 0) in calls


def test_notes_from_another_folder(root: Path, tmp_path: Path, shared_data: Path) -> None:
    """--notes reads any folder (it is only read); the source is remembered by its path."""
    outside = tmp_path / "elsewhere"
    shutil.copytree(shared_data / "skill-graph" / "learnings", outside)
    report = migrate_learnings(apply=True, notes_folder=outside)
    assert report.migrated == 26
    assert report.notes_folder == str(outside.resolve())
    assert all(e["source_note"].startswith(str(outside.resolve())) for e in list_events())
    assert migrate_learnings(apply=True, notes_folder=outside).migrated == 0


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_summary_verbose_and_json(notes: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "migrate", "--verbose")
    assert code == 0
    assert out.startswith(f"  migrate   {NOTES}/2026-02-19-bg-remove-prerequisite.md: [FAIL] dzine")
    assert (
        f"  skip      {NOTES}/2026-02-19-image-qa-rules.md: not a failure note (no Symptom"
    ) in out
    assert f"  skip      {NOTES}/_index.md: map of content" in out
    assert (
        f"  migrate   {NOTES}/2026-02-19-fail-assets-image-hallucination.md: [FAIL] assets: "
        "Image hallucination\n"
    ) in out
    assert "Dry run: 26 learnings would be migrated; nothing was written" in out
    lines = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    assert lines["skill-graph"] == ["notes", "29", "26", "0", "3"]
    assert lines["total"] == ["29", "26", "0", "3"]
    assert "not a failure note       2" in out

    code, out, _ = run(capsys, "migrate", "--apply")
    assert code == 0 and out.startswith("Migrated 26 learnings into learning events.")
    assert "  migrate" not in out  # one line per item only with --verbose
    code, out, _ = run(capsys, "migrate", "--apply", "--json")
    data = json.loads(out)
    assert code == 0
    assert (data["applied"], data["found"], data["migrated"], data["present"]) == (True, 29, 0, 26)
    assert data["by_source"]["note"]["present"] == 26
    assert data["items"][0]["ref"] == f"{NOTES}/2026-02-19-bg-remove-prerequisite.md"


def test_cli_errors(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "migrate", "--notes", str(root / "nope"))
    assert code == 1 and out == ""
    assert err.startswith(f"Error: notes folder {root / 'nope'} does not exist")
    code, _, err = run(capsys, "migrate", "--only", "bogus")
    assert code == 1 and "Invalid value for '--only'" in err
    code, out, _ = run(capsys, "migrate", "--only", "errors", "--json")
    assert code == 0 and json.loads(out)["notes_folder"] is None


@pytest.mark.slow
def test_the_spec_script_runs_from_the_repo_root(notes: Path, root: Path) -> None:
    """``python3 tools/migrate_errors_to_learning.py --dry-run --verbose`` from a checkout."""
    env = {**os.environ, "RAYVAULT_ROOT": str(root), "COLUMNS": "200"}
    before = _raw.everything(get_store())
    done = subprocess.run(
        [sys.executable, "tools/migrate_errors_to_learning.py", "--dry-run", "--verbose"],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Dry run: 26 learnings would be migrated" in done.stdout
    assert f"  migrate   {NOTES}/2026-02-20-warn-tts-audio-clipping.md" in done.stdout
    assert not (root / "data").exists()
    assert _raw.everything(get_store()) == before
    done = subprocess.run(
        [sys.executable, "tools/migrate_errors_to_learning.py", "--apply"],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "Migrated 26 learnings" in done.stdout
