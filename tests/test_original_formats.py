"""Every file kind the original system wrote is read as it is (DESIGN.md §3), on both stores.

``tests/fixtures/original/`` is a small data root in the original's format: pretty-printed
JSON, ``+00:00`` timestamps with microseconds, no fingerprints, step names as components, the
original's archive names. On PostgreSQL it is brought in with ``store import``, as its owner
would. (The original's gate-state files are covered with the gate's tests.)
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning.doctor import check_root
from rayvault.learning.errors import get_lessons, get_patterns
from rayvault.learning.gate import learning_gate
from rayvault.learning.patterns import fingerprint
from rayvault.learning.registry import get_patterns as event_patterns
from rayvault.learning.revisit import revisit
from rayvault.learning.store import EventQuery, FileStore, Store
from rayvault.learning.store.transfer import import_root

from .conftest import Clock, PgSchemas

FIXTURE = Path(__file__).parent / "fixtures" / "original"


def load_original(store: Store, tmp_path: Path) -> Path:
    """Put the original root into ``store``: copied into the file store's root, imported into
    PostgreSQL. Returns the folder holding the original files."""
    if isinstance(store, FileStore):
        shutil.copytree(FIXTURE, store.root, dirs_exist_ok=True)
        return store.root
    source = tmp_path / "original"
    shutil.copytree(FIXTURE, source)
    import_root(store, source)
    return source


def test_resolved_entry_without_fingerprint_is_a_lesson(store: Store, tmp_path: Path) -> None:
    """get_lessons over an original error log (a resolved entry, no stored fingerprint) returns
    the lesson keyed as a new entry would be, instead of failing."""
    load_original(store, tmp_path)
    lessons = get_lessons(store=store)
    expected = fingerprint("tts", "ElevenLabs returned 429 for voice 21m00Tcm4TlvDq8ikWAM")
    assert [(x.fingerprint, x.stage, x.fix) for x in lessons] == [
        (expected.key, "generate-tts", "Back off 60 s and retry")
    ]
    assert lessons[0].pattern == expected.template
    assert lessons[0].error_id == "err-20260213-111500-5d20"
    assert lessons[0].occurrences == 1


def test_lessons_command_on_an_original_log(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``errors lessons --json`` on an original log exits 0 with the lesson."""
    load_original(store, tmp_path)
    code = main(["errors", "lessons", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    lessons = data["lessons"] if isinstance(data, dict) else data
    assert [x["fix"] for x in lessons] == ["Back off 60 s and retry"]


def test_step_names_fold_into_one_pattern(store: Store, tmp_path: Path) -> None:
    """One failure logged as discover-products, verify-products and research (no stored
    fingerprint, different numbers and ASINs) is one pattern of the research stage."""
    load_original(store, tmp_path)
    patterns = get_patterns(min_count=1, store=store)
    timeouts = [p for p in patterns if p.count == 3]
    assert len(timeouts) == 1
    key = fingerprint("research", "Timeout after 1s fetching https://example.com").key
    assert timeouts[0].fingerprint == key
    assert timeouts[0].stages == ["discover-products", "research", "verify-products"]
    assert timeouts[0].unresolved == 3


def test_gate_blocks_on_an_original_recurring_failure(store: Store, tmp_path: Path) -> None:
    """``gate v9 research`` blocks on the three timeouts logged under three step names (no rule
    answers them); ``assets`` sees its three hallucination events, logged as generate-images,
    dzine and assets, as one recurring failure, a warning since the agent's rule answers it."""
    load_original(store, tmp_path)
    result = learning_gate("v9", "research", store=store)
    known = {c.name: c for c in result.checks}["check_known_failures"]
    assert not known.passed, known.reason
    assert known.outcome == "deny"
    assert result.blocked
    assets = learning_gate("v9", "assets", store=store)
    known = {c.name: c for c in assets.checks}["check_known_failures"]
    assert known.outcome == "warn", known.reason
    assert "1 recurring failure" in known.reason
    assert "being delivered" in str(known.details)
    # The pattern shown is the masked text, not a bare key.
    assert "'Timeout after <dur> fetching <url>' seen 3×" in learning_gate("v9", "research").reason
    script = learning_gate("v9", "script", store=store)
    assert {c.name: c.passed for c in script.checks}["check_known_failures"]


def test_original_events_group_with_new_ones(store: Store, tmp_path: Path) -> None:
    """Original events without a fingerprint and a new event of the same failure are one
    pattern in the registry."""
    from rayvault.learning.events import create_event

    load_original(store, tmp_path)
    new = create_event(
        run_id="v043-run-001",
        severity="FAIL",
        component="assets",
        symptom="Image hallucination in Product Background (seed 55)",
        root_cause="Changed reference angle",
        fix_applied="Reverted to original 3/4 angle",
        video_id="v043",
        store=store,
    )
    [pattern] = [p for p in event_patterns(store=store) if p.fingerprint == new.fingerprint]
    assert pattern.count == 4
    assert pattern.components == ["assets", "dzine", "generate-images"]
    assert store.count_events(EventQuery(fingerprint=new.fingerprint)) == 4


def test_changed_aliases_rekey_original_records(store: Store, tmp_path: Path) -> None:
    """Fingerprints of records stored without one follow the alias map: an alias added in
    policies.py, or removed, folds the original step name anew (the file store's index rebuilds
    itself; PostgreSQL keys them when they are imported, and ``doctor --repair`` re-keys them)."""
    (store.root / "policies.py").write_text(
        'LEARNING_STAGE_ALIASES = {"render-video": "render", "davinci": "render",'
        ' "discover-products": "research", "verify-products": "research",'
        ' "generate-tts": "voice"}\n'
    )
    load_original(store, tmp_path)
    [lesson] = get_lessons(store=store)
    assert lesson.fingerprint.startswith("voice:")
    (store.root / "policies.py").unlink()
    if not isinstance(store, FileStore):
        # PostgreSQL keyed them at import: the doctor tells, and its repair re-keys them.
        findings = check_root(store=store).findings
        assert [f.code for f in findings] == [
            "events-table-inconsistent",  # generate-images and dzine: no alias in the file
            "errors-table-inconsistent",
        ]
        assert check_root(repair=True, store=store).remaining == 0
    [lesson] = get_lessons(store=store)
    assert lesson.fingerprint.startswith("tts:")
    assert get_patterns(min_count=1, store=store)[0].stage == "research"


def test_doctor_finds_nothing_wrong_in_an_original_root(store: Store, tmp_path: Path) -> None:
    """``doctor`` on an original root (or after importing one) reports no finding: no
    snapshot-corrupt for the bare-list tombstone archive, no stale index columns for records
    stored without a fingerprint."""
    load_original(store, tmp_path)
    report = check_root(store=store)
    assert [(f.code, f.message) for f in report.findings] == []


def test_original_snapshots_are_listed_and_pruned(
    store: Store, tmp_path: Path, clock: Clock
) -> None:
    """The original's memory_<local time>.json snapshots are listed with the new ones, by the
    time they were taken, and pruned by the same retention (90 days): the revisit removes the
    one from November and keeps February's. Its tombstone archive is not a snapshot: kept."""
    load_original(store, tmp_path)
    agent = "dzine_producer"
    listed = store.list_memory_snapshots(agent)
    assert [name for _, name in listed] == [
        "memory_20251101T080000.json",
        "memory_20260210T130000.json",
    ]
    local = datetime(2026, 2, 10, 13, 0, 0).astimezone(UTC)  # written in local time
    assert listed[1][0] == local
    clock.set(datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC))
    result = revisit(store=store)
    [sweep] = [s for s in result.tombstone_sweep if s.agent == agent]
    assert sweep.snapshots_pruned == ["memory_20251101T080000.json"]
    assert [name for _, name in store.list_memory_snapshots(agent)] == [
        "memory_20260210T130000.json"
    ]
    if isinstance(store, FileStore):
        archive = store.root / "state/agents" / agent / "memory_archive"
        assert sorted(p.name for p in archive.iterdir()) == [
            "memory_20260210T130000.json",
            "tombstones_archive_20251105.json",
        ]


def test_a_bare_list_tombstone_archive_is_checked(store: Store, tmp_path: Path) -> None:
    """The original's tombstones_archive_YYYYMMDD.json is checked as a list of tombstones: a
    valid one is clean (see above), one that is not a list of tombstones is reported by name."""
    name = "tombstones_archive_20251106.json"
    source = tmp_path / "bad"
    shutil.copytree(FIXTURE, source)
    (source / "state/agents/dzine_producer/memory_archive" / name).write_text('[{"rule": 1}]')
    if isinstance(store, FileStore):
        shutil.copytree(source, store.root, dirs_exist_ok=True)
    else:
        import_root(store, source)
    findings = check_root(store=store).findings
    assert [(f.code, name in f.path) for f in findings] == [("tombstone-archive-corrupt", True)]


@pytest.mark.postgres
def test_original_archives_survive_import_and_export(
    root: Path, tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    """``store import`` of an original root into PostgreSQL keeps its memory snapshots and
    bare-list tombstone archive (nothing skipped); ``store export`` writes them back under
    their original names, byte for byte the same JSON."""
    from rayvault.learning.store.postgres import PostgresStore
    from rayvault.learning.store.transfer import SNAPSHOT, TOMBSTONE_ARCHIVE, export_store

    source = tmp_path / "original"
    shutil.copytree(FIXTURE, source)
    pg = PostgresStore(root, pg_schemas.new_url())
    try:
        summary = import_root(pg, source)
        assert summary.skipped == []
        assert summary.counts[SNAPSHOT] == 2 and summary.counts[TOMBSTONE_ARCHIVE] == 1
        export_store(pg, tmp_path / "out")
    finally:
        pg.close()
    archive = "state/agents/dzine_producer/memory_archive"
    for path in sorted((source / archive).iterdir()):
        copy = tmp_path / "out" / archive / path.name
        assert json.loads(copy.read_text()) == json.loads(path.read_text()), path.name


def test_lone_error_codes_are_separate_patterns(store: Store, tmp_path: Path) -> None:
    """E404 and ERR_429 logged as whole error texts are two patterns (not one ``<id>``); an
    original record holding only E404 joins the new E404 entries. A key stored by an earlier
    version (``<id>`` for both) is kept as stored: stored keys are never rewritten."""
    from rayvault.learning.errors import log_error

    source = tmp_path / "codes"
    (source / "data").mkdir(parents=True)
    old_key = fingerprint("tts", "<id>").key  # what the previous version stored for both
    original = [
        {
            "id": "err-1",
            "timestamp": "2026-02-10T08:00:00.000001+00:00",
            "stage": "voiceover",
            "exit_code": 1,
            "error": "E404",
            "context": {},
            "resolved": False,
            "resolution": None,
        },
        {
            "id": "err-2",
            "timestamp": "2026-02-10T09:00:00.000001+00:00",
            "stage": "tts",
            "exit_code": 1,
            "error": "ERR_500",
            "context": {},
            "resolved": False,
            "resolution": None,
            "fingerprint": old_key,
            "pattern": "<id>",
        },
    ]
    (source / "data/error_log.json").write_text(json.dumps(original, indent=2))
    if isinstance(store, FileStore):
        shutil.copytree(source, store.root, dirs_exist_ok=True)
    else:
        import_root(store, source)
    for text in ("E404", "E404", "ERR_429"):
        log_error("v1", "generate-tts", text, store=store)
    counts = {p.pattern: (p.fingerprint, p.count) for p in get_patterns(1, store=store)}
    assert counts == {
        "E404": (fingerprint("tts", "E404").key, 3),
        "ERR_429": (fingerprint("tts", "ERR_429").key, 1),
        "<id>": (old_key, 1),
    }


# -- one test per remaining shape ------------------------------------------------------------


def test_original_events_and_timestamps(store: Store, tmp_path: Path) -> None:
    """Original events (``+00:00`` timestamps with microseconds, no agent, no fingerprint) are
    listed in time order and filtered by dates compared as datetimes, in any written style."""
    from rayvault.learning.registry import query_events

    load_original(store, tmp_path)
    events = query_events(store=store)
    assert [e.event_id for e in events] == [
        "evt-20260210-120000-ab10",
        "evt-20260211-120010-ab11",
        "evt-20260212-120020-ab12",
        "evt-20260213-120030-ab13",
    ]
    assert events[0].timestamp == datetime(2026, 2, 10, 12, 0, 0, 123450, tzinfo=UTC)
    later = query_events(date_from="2026-02-12T13:00:00+01:00", store=store)
    assert [e.event_id for e in later] == ["evt-20260212-120020-ab12", "evt-20260213-120030-ab13"]
    exact = query_events(date_from="2026-02-12T12:00:02.123452Z", store=store)
    assert exact[0].event_id == "evt-20260212-120020-ab12"  # the bound is inclusive
    after = query_events(date_from="2026-02-12T12:00:02.123453Z", store=store)
    assert after[0].event_id == "evt-20260213-120030-ab13"


def test_original_memory_and_tombstones(store: Store, tmp_path: Path) -> None:
    """The original's memory_active.json and memory_tombstones.json are read as they are, and a
    new rule is added to that memory without losing the original rule or its counts."""
    from rayvault.learning.events import create_event
    from rayvault.learning.memory import load_active_memory, load_tombstones, render_rules

    load_original(store, tmp_path)
    agent = "dzine_producer"
    [rule] = load_active_memory(agent, store=store).rules
    assert (rule.rule_id, rule.applied_count, rule.fingerprint) == (
        "rule-20260210-120000-ab10",
        2,
        None,
    )
    assert rule.last_applied == datetime(2026, 2, 11, 12, 0, 10, 123451, tzinfo=UTC)
    [tomb] = load_tombstones(agent, store=store).tombstones
    assert tomb.superseded_by == rule.rule_id and tomb.evidence_ids == [rule.source_event_id]
    assert "Reverted to original 3/4 angle" in render_rules(agent, store=store)
    create_event(
        run_id="v050-run",
        severity="WARN",
        component="assets",
        symptom="Product logo mirrored",
        root_cause="Flip augmentation",
        fix_applied="Disable horizontal flip",
        video_id="v050",
        agent=agent,
        store=store,
    )
    rules = {r.rule_id: r for r in load_active_memory(agent, store=store).rules}
    assert len(rules) == 2 and rules[rule.rule_id].applied_count == 2


def test_original_weekly_report(store: Store, tmp_path: Path) -> None:
    """The original's weekly report, with only its own fields, is the latest summary."""
    from rayvault.learning.registry import get_weekly_summary

    load_original(store, tmp_path)
    summary = get_weekly_summary(store=store)
    assert summary is not None
    assert summary.generated_at == datetime(2026, 2, 16, 6, 0, 0, 654321, tzinfo=UTC)
    assert (summary.period_days, summary.events_total, summary.by_status) == (
        7,
        4,
        {"applied": 1, "verified": 1},
    )
    assert summary.agent_summaries["dzine_producer"] == {"active_rules": 1, "tombstones": 1}


def test_original_root_migrates_with_real_notes(
    store: Store, tmp_path: Path, shared_data: Path
) -> None:
    """``migrate`` on an original root: the resolved error-log entry (no fingerprint) and real
    skill-graph notes become events; the error's event has the key its lesson has."""
    from rayvault.learning.migrate import migrate_learnings

    load_original(store, tmp_path)
    notes = store.root / "agents/skills/learnings"
    notes.mkdir(parents=True)
    for name in sorted(p.name for p in (shared_data / "skill-graph/learnings").glob("*.md"))[:3]:
        shutil.copy(shared_data / "skill-graph/learnings" / name, notes / name)
    report = migrate_learnings(apply=True, store=store)
    assert report.by_source["error_log"]["migrated"] == 1
    assert report.by_source["note"]["found"] == 3
    assert report.unresolved_errors == 4
    [lesson] = get_lessons(store=store)
    migrated = store.query_events(EventQuery(source_error_id=lesson.error_id))
    assert [e.fingerprint for e in migrated] == [lesson.fingerprint]
