"""The error log: entries, resolutions, patterns, lessons, and promotion to learning events.

Runs on both stores; tests about the bytes of the file layout are marked ``files_only``."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rayvault.learning import (
    CorruptFileError,
    ErrorEntryNotFoundError,
    InvalidIdentifierError,
    InvalidInputError,
    list_events,
)
from rayvault.learning.errors import (
    get_error,
    get_lessons,
    get_patterns,
    get_unresolved,
    log_error,
    promote_to_learning,
    resolve_error,
)
from rayvault.learning.patterns import fingerprint

from . import _workers
from .conftest import Clock

pytestmark = pytest.mark.both_stores


def read_log(root: Path) -> list[dict[str, object]]:
    return json.loads((root / "data/error_log.json").read_text())


def test_logged_error_reads_back_field_for_field(clock: Clock) -> None:
    """The entry as stored equals what log_error returned, in every store."""
    entry = log_error("v042", "discover-products", "Timeout after 30.2s on B0ABC", exit_code=3)
    assert get_error(entry.id).to_dict() == entry.to_dict()
    assert [e.to_dict() for e in get_unresolved()] == [entry.to_dict()]


@pytest.mark.files_only("the bytes of data/error_log.json")
def test_log_error_writes_every_field(root: Path, clock: Clock) -> None:
    entry = log_error(
        "v042",
        "discover-products",
        "Timeout after 30.2s on B0ABC",
        exit_code=3,
        context={"run_id": "v042-run-001"},
    )
    [raw] = read_log(root)
    assert raw == {
        "id": entry.id,
        "video_id": "v042",
        "timestamp": "2026-02-19T12:00:00.000000Z",
        "stage": "discover-products",
        "exit_code": 3,
        "error": "Timeout after 30.2s on B0ABC",
        "context": {"run_id": "v042-run-001"},
        "resolved": False,
        "resolution": None,
        "fingerprint": fingerprint("research", "Timeout after 30.2s on B0ABC").key,
        "pattern": "Timeout after <dur> on <id>",
        "learning_event_id": None,
        "fingerprint_version": 2,  # grouping version 2 (version 1 records have none)
    }
    assert entry.id.startswith("e-20260219T120000-")
    assert entry.fingerprint is not None and entry.fingerprint.startswith("research:")


def test_log_an_exception_keeps_the_traceback_and_fingerprints_its_last_line(root: Path) -> None:
    def fail(n: int) -> None:
        raise KeyError(f"price-{n}")

    entries = []
    for n in (1, 2):
        try:
            fail(n)
        except KeyError as e:
            entries.append(log_error("v1", "research", e))
    assert "Traceback (most recent call last)" in entries[0].error
    assert entries[0].error.rstrip().endswith("KeyError: 'price-1'")
    assert entries[0].fingerprint == entries[1].fingerprint
    assert entries[0].pattern == "KeyError: '<id>'"  # quotes stay, their variable part masked
    assert entries[0].fingerprint_version == 2


def test_resolve_appends_a_version_and_last_wins(root: Path, clock: Clock) -> None:
    """The resolution is a new version; the entry reads as resolved from then on."""
    entry = log_error("v1", "research", "Price anomaly on B0F8HM4PYL")
    clock.advance(hours=1)
    resolved = resolve_error(entry.id, "No price validation", "Added price anomaly check")
    assert resolved.resolved is True
    assert resolved.resolution is not None
    assert resolved.resolution.root_cause == "No price validation"
    assert resolved.resolution.resolved_at == clock.now
    assert get_error(entry.id).resolved is True
    assert get_unresolved() == []


@pytest.mark.files_only("the versions in data/error_log.json")
def test_resolution_and_promotion_are_appended_to_the_log_file(root: Path) -> None:
    """Each change is a new version at the end of the log; earlier versions stay."""
    entry = log_error("v1", "research", "Price anomaly on B0F8HM4PYL")
    resolve_error(entry.id, "No price validation", "Added price anomaly check")
    event = promote_to_learning(entry.id, root_cause="c", fix="f").event
    versions = [e for e in read_log(root) if e["id"] == entry.id]
    assert [v["resolved"] for v in versions] == [False, True, True]
    assert [v["learning_event_id"] for v in versions] == [None, None, event.event_id]


def test_unknown_error_id() -> None:
    with pytest.raises(ErrorEntryNotFoundError, match="no error-log entry with id 'e-nope'"):
        resolve_error("e-nope", "cause", "fix")
    with pytest.raises(ErrorEntryNotFoundError):
        promote_to_learning("e-nope", root_cause="cause", fix="fix")


def test_bad_input_is_refused_and_nothing_written(root: Path) -> None:
    with pytest.raises(InvalidIdentifierError, match="invalid stage"):
        log_error("v1", "../research", "boom")
    with pytest.raises(InvalidIdentifierError, match="invalid video id"):
        log_error("../v1", "research", "boom")
    with pytest.raises(InvalidInputError, match="error text must not be empty"):
        log_error("v1", "research", "   ")
    with pytest.raises(InvalidInputError, match="JSON-serialisable"):
        log_error("v1", "research", "boom", context={"x": object()})
    assert not (root / "data/error_log.json").exists()
    assert get_unresolved() == []
    entry = log_error("v1", "research", "boom")
    with pytest.raises(InvalidInputError, match="needs a root cause or a fix"):
        resolve_error(entry.id, "", "")


def test_get_unresolved_folds_step_names_into_stages(clock: Clock) -> None:
    a = log_error("v1", "discover-products", "Timeout after 30s")
    b = log_error("v2", "research", "Timeout after 31s")
    c = log_error("v1", "assets", "Image hallucination")
    assert [e.id for e in get_unresolved(stage="research")] == [a.id, b.id]
    assert [e.id for e in get_unresolved(stage="discover-products")] == [a.id, b.id]
    assert [e.id for e in get_unresolved(video_id="v1")] == [a.id, c.id]
    assert [e.id for e in get_unresolved(stage="research", video_id="v2")] == [b.id]


def test_patterns_group_variants_and_count_open_ones(clock: Clock) -> None:
    ids = [
        log_error(
            f"v{i}",
            "research",
            f"Timeout after {30 + i}.{i}s fetching https://amazon.com/dp/B0{i}XYZ",
        ).id
        for i in range(4)
    ]
    log_error("v9", "research", "Price anomaly on B0F8HM4PYL")
    log_error("v9", "assets", "Timeout after 3s fetching https://amazon.com/dp/B0QQQ")
    resolve_error(ids[0], "slow proxy", "switched proxy")
    [pattern] = get_patterns(min_count=2)
    assert pattern.count == 4
    assert pattern.unresolved == 3
    assert pattern.videos == ["v0", "v1", "v2", "v3"]
    assert pattern.stage == "research"
    assert pattern.pattern == "Timeout after <dur> fetching <url>"
    assert len(get_patterns(min_count=1)) == 3
    with pytest.raises(InvalidInputError):
        get_patterns(min_count=0)


def test_lessons_are_the_latest_resolution_per_pattern(clock: Clock) -> None:
    first = log_error("v1", "research", "Timeout after 30s")
    second = log_error("v2", "research", "Timeout after 45s")
    log_error("v3", "research", "Timeout after 50s")
    resolve_error(first.id, "slow proxy", "retry")
    clock.advance(days=1)
    resolve_error(second.id, "rate limited", "backoff with jitter")
    other = log_error("v4", "tts", "Audio clipping")
    clock.advance(hours=1)
    resolve_error(other.id, "too loud", "-3dB")
    lessons = get_lessons()
    assert [(lesson.stage, lesson.fix, lesson.occurrences) for lesson in lessons] == [
        ("tts", "-3dB", 1),
        ("research", "backoff with jitter", 3),
    ]
    assert lessons[1].error_id == second.id


def test_promote_resolves_and_creates_the_event_once(root: Path, clock: Clock) -> None:
    entry = log_error("v038", "discover-products", "ASIN B0F8HM4PYL was accessories at $26.59")
    result = promote_to_learning(
        entry.id,
        root_cause="No price validation",
        fix="Added price anomaly check",
        severity="FAIL",
        component="research",
        agent="researcher",
    )
    assert result.created is True
    event = result.event
    assert event.source_error_id == entry.id
    assert event.component == "research"
    assert event.symptom == "ASIN B0F8HM4PYL was accessories at $26.59"
    assert event.root_cause == "No price validation"
    assert event.fix_applied == "Added price anomaly check"
    assert event.video_id == "v038"
    assert event.rule_id is not None  # the rule is in the researcher's memory
    assert event.status == "applied"  # not verified: it still holds the gate
    assert result.error.resolved is True
    assert result.error.learning_event_id == event.event_id
    assert result.error.resolution is not None
    assert result.error.resolution.fix == "Added price anomaly check"

    again = promote_to_learning(entry.id, root_cause="other", fix="other")
    assert again.created is False
    assert again.event.event_id == event.event_id
    assert len(list_events()) == 1
    assert get_error(entry.id).learning_event_id == event.event_id


def test_promote_finishes_a_promotion_interrupted_after_the_event(root: Path) -> None:
    """If a crash left the event but not the error's resolution, promoting again completes it
    without a second event."""
    from rayvault.learning import create_event

    entry = log_error("v1", "research", "Price anomaly")
    event = create_event(
        run_id="", severity="FAIL", component="research", symptom="Price anomaly",
        source_error_id=entry.id,
    )  # fmt: skip
    result = promote_to_learning(entry.id, root_cause="cause", fix="fix")
    assert result.created is False
    assert result.event.event_id == event.event_id
    assert get_error(entry.id).learning_event_id == event.event_id
    assert len(list_events()) == 1


@pytest.mark.slow
def test_concurrent_promotions_create_one_event(root: Path, backend: str | None) -> None:
    entry = log_error("v1", "research", "Price anomaly on B0F8HM4PYL")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        results = list(pool.map(_workers.promote, [str(root)] * 8, [entry.id] * 8, [backend] * 8))
    assert sum(created for created, _ in results) == 1
    assert len({event_id for _, event_id in results}) == 1
    assert len(list_events()) == 1


@pytest.mark.files_only("a corrupt error-log file")
def test_corrupt_error_log_is_refused_and_unchanged(root: Path) -> None:
    path = root / "data/error_log.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'[{"id": "e-1", "stage": ')
    with pytest.raises(CorruptFileError, match="error_log.json is corrupt"):
        log_error("v1", "research", "boom")
    with pytest.raises(CorruptFileError):
        get_unresolved()
    assert path.read_bytes() == b'[{"id": "e-1", "stage": '


@pytest.mark.files_only("an error-log file written by the old system")
def test_reads_a_legacy_error_log(root: Path) -> None:
    """Entries written by the old system (pretty JSON, no fingerprint) are read and grouped."""
    path = root / "data/error_log.json"
    path.parent.mkdir(parents=True)
    legacy = [
        {
            "id": f"e-20260219T12000{i}-abc1{i}",
            "video_id": "v038",
            "timestamp": f"2026-02-19T12:00:0{i}.000001+00:00",
            "stage": "research",
            "exit_code": 1,
            "error": f"Timeout after {30 + i}s",
            "context": {},
            "resolved": False,
            "resolution": None,
        }
        for i in range(3)
    ]
    path.write_text(json.dumps(legacy, indent=2))
    assert [e.id for e in get_unresolved(stage="research")] == [e["id"] for e in legacy]
    [pattern] = get_patterns(min_count=3)
    assert pattern.count == 3
    log_error("v1", "research", "new one")
    assert read_log(root)[:3] == legacy
