"""Bulk resolution (issue 10, item 5): ``resolve_events`` / ``rayvault-learn events resolve`` by
ids or filters, a dry run first, one verification text on each event, and events resolved
together with their error-log entries (both ways). Runs on both stores."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rayvault.cli import main
from rayvault.learning import (
    EventNotFoundError,
    InvalidInputError,
    create_event,
    get_event,
    list_events,
    resolve_event,
    resolve_events,
)
from rayvault.learning.errors import get_error, link_to_event, log_error, resolve_error
from rayvault.learning.gate import learning_gate
from rayvault.learning.loop import StageContext, run_stage
from rayvault.learning.migrate import migrate_learnings
from rayvault.learning.store import Store, get_store

from . import _raw
from .conftest import Clock

pytestmark = pytest.mark.both_stores


def _event(video: str, component: str = "assets", severity: str = "FAIL", n: int = 1) -> str:
    return create_event(
        run_id="r",
        severity=severity,
        component=component,
        symptom=f"Product shape wrong in {n} of 5 images",
        video_id=video,
    ).event_id


def _statuses(*ids: str) -> list[str]:
    return [get_event(i).status for i in ids]


def test_a_dry_run_lists_what_the_filters_select_and_writes_nothing(root: Path) -> None:
    a1, a2 = _event("v001", n=1), _event("v002", n=2)
    tts = _event("v001", component="tts", severity="WARN")
    store = get_store()
    before = _raw.everything(store)
    result = resolve_events(component="assets")
    assert not result.applied
    assert sorted(result.event_ids) == sorted([a1, a2])
    assert result.selection == {"component": "assets"}
    assert _raw.everything(store) == before
    # Filters combine: all must match.
    assert resolve_events(component="assets", video_id="v002").event_ids == [a2]
    assert resolve_events(severity="warn").event_ids == [tts]
    assert resolve_events(severity="info").event_ids == []
    assert _statuses(a1, a2, tts) == ["open", "open", "open"]


def test_apply_resolves_each_selected_event_with_the_verification(root: Path) -> None:
    a1, a2 = _event("v001", n=1), _event("v002", n=2)
    tts = _event("v001", component="tts")
    result = resolve_events(component="assets", verification="re-ran 5/5", apply=True)
    assert result.applied and sorted(result.event_ids) == sorted([a1, a2])
    for event_id in (a1, a2):
        event = get_event(event_id)
        assert event.status == "verified"
        assert event.verification == "re-ran 5/5"
        assert event.resolved_at is not None
    assert get_event(tts).status == "open"
    # Resolved events are no longer selected: running it again resolves nothing.
    again = resolve_events(component="assets", verification="re-ran 5/5", apply=True)
    assert again.events == []


def test_pattern_and_before_filters(root: Path, clock: Clock) -> None:
    clock.set(datetime(2026, 1, 10, 12, tzinfo=UTC))
    old = _event("v001", n=1)
    other = _event("v001", component="tts", severity="WARN")
    clock.set(datetime(2026, 2, 1, 0, 0, tzinfo=UTC))
    on_the_day = _event("v002", n=2)
    clock.set(datetime(2026, 2, 19, tzinfo=UTC))
    fp = get_event(old).fingerprint
    assert fp is not None and get_event(on_the_day).fingerprint == fp
    assert sorted(resolve_events(pattern=fp).event_ids) == sorted([old, on_the_day])
    # "before" is exclusive: an event at midnight of that day is not before it.
    assert resolve_events(pattern=fp, before="2026-02-01").event_ids == [old]
    assert sorted(resolve_events(before="2026-02-01").event_ids) == sorted([old, other])
    assert resolve_events(before="2026-02-01T00:00:01Z", pattern=fp).event_ids == [
        old,
        on_the_day,
    ]
    assert resolve_events(before="2026-01-01").event_ids == []


def test_migrated_filter_selects_only_migrated_events(root: Path, shared_data: Path) -> None:
    shutil.copytree(shared_data / "skill-graph" / "learnings", root / "agents/skills/learnings")
    report = migrate_learnings(apply=True)
    assert report.migrated > 0
    live = _event("v900")
    open_migrated = [e.event_id for e in list_events() if e.get("migrated_at") and not e.resolved]
    assert open_migrated, "the real notes hold unverified fixes"
    result = resolve_events(migrated=True)
    assert sorted(result.event_ids) == sorted(open_migrated)
    assert live not in result.event_ids
    assert all(row["migrated"] for row in result.to_dict()["events"])
    resolve_events(migrated=True, verification="old notes, fixed long ago", apply=True)
    assert [e.event_id for e in list_events() if not e.resolved] == [live]
    assert resolve_events(migrated=False).event_ids == [live]


def test_resolving_an_event_resolves_its_error_log_entries(root: Path) -> None:
    """An undiagnosed loop failure: an open event and its open, linked error; resolving the
    event (one or many) resolves the error, and the gate lets the stage run again."""

    def fails(ctx: StageContext) -> str:
        raise ValueError("Product shape wrong in 3 of 5 images")

    run = run_stage("v042", "assets", fails, diagnose=lambda f: None, on_failure="return")
    run2 = run_stage("v043", "assets", fails, diagnose=lambda f: None, on_failure="return")
    assert learning_gate("v042", "assets").blocked
    # A second error of the same failure, linked by hand as the loop does within a run.
    extra = log_error("v042", "assets", "ValueError: Product shape wrong in 4 of 5 images")
    link_to_event(extra.id, run.event_ids[0])

    resolved = resolve_event(run.event_ids[0], "re-ran, 5/5 correct")
    assert resolved.status == "verified"
    for error_id in (run.error_ids[0], extra.id):
        entry = get_error(error_id)
        assert entry.resolved and entry.resolution is not None
        assert entry.learning_event_id == run.event_ids[0]
        assert "re-ran, 5/5 correct" in entry.resolution.fix
    assert not get_error(run2.error_ids[0]).resolved

    result = resolve_events(video_id="v043", verification="checked", apply=True)
    assert result.event_ids == run2.event_ids
    assert result.error_ids == run2.error_ids
    assert get_error(run2.error_ids[0]).resolved
    assert not learning_gate("v044", "assets").blocked


def test_resolving_a_linked_error_resolves_its_event(root: Path) -> None:
    def fails(ctx: StageContext) -> str:
        raise ValueError("Product shape wrong in 3 of 5 images")

    run = run_stage("v042", "assets", fails, diagnose=lambda f: None, on_failure="return")
    other = log_error("v042", "assets", "ValueError: Product shape wrong in 2 of 5 images")
    link_to_event(other.id, run.event_ids[0])
    resolve_error(run.error_ids[0], "reference photo was top-down", "use the 3/4 angle")
    event = get_event(run.event_ids[0])
    assert event.status == "verified"
    assert event.verification == f"error {run.error_ids[0]} resolved: use the 3/4 angle"
    # The event's other error-log entry is resolved with it.
    assert get_error(other.id).resolved
    # cascade=False resolves the error alone (the loop verifies its events itself).
    run2 = run_stage("v043", "assets", fails, diagnose=lambda f: None, on_failure="return")
    resolve_error(run2.error_ids[0], "cause", "fix", cascade=False)
    assert get_event(run2.event_ids[0]).status == "open"


def test_explicit_ids_resolve_at_once_and_already_resolved_ones_are_left_alone(
    root: Path,
) -> None:
    a1, a2 = _event("v001", n=1), _event("v002", n=2)
    resolve_event(a1, "first check")
    result = resolve_events([a1, a2], verification="second check", apply=True)
    assert result.event_ids == [a2] and result.already_resolved == [a1]
    assert get_event(a1).verification == "first check"
    assert get_event(a2).verification == "second check"


def test_a_bulk_resolution_is_one_batch_write_per_log(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No per-event read-modify-write: one locked batch for the errors, one for the events."""
    for i in range(30):
        event_id = _event(f"v{i:03d}", n=i)
        entry = log_error(f"v{i:03d}", "assets", f"ValueError: Product shape wrong in {i} of 5")
        link_to_event(entry.id, event_id)
    store = get_store()
    calls: dict[str, int] = {}

    def count(name: str) -> Any:
        original = getattr(store, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] = calls.get(name, 0) + 1
            return original(*args, **kwargs)

        return wrapper

    for name in ("update_event", "update_error", "get_event", "update_events", "update_errors"):
        monkeypatch.setattr(store, name, count(name))
    result = resolve_events(component="assets", verification="batch", apply=True, store=store)
    assert len(result.events) == 30 and len(result.errors) == 30
    assert calls == {"update_events": 1, "update_errors": 1}
    assert all(e.status == "verified" for e in list_events(store=store))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"severity": "FATAL"}, "severity must be one of"),
        ({"before": "2026-02-30"}, "before '2026-02-30' is not a valid date"),
        ({"before": "last week"}, "is not a date or timestamp"),
        ({}, "nothing selected: give event ids, or at least one filter"),
        ({"event_ids": ["le-nope"]}, "no learning event with id 'le-nope'"),
        ({"event_ids": ["../x"]}, "invalid event id"),
        ({"event_ids": "le-a"}, "event_ids must be a list"),
        ({"component": "assets", "event_ids": ["le-a"]}, "give event ids or filters, not both"),
        ({"component": "assets", "verification": None}, "needs a verification text"),
        ({"component": "assets", "verification": "  "}, "verification must be non-empty"),
        ({"pattern": ""}, "pattern must be non-empty"),
        ({"video_id": "../v"}, "invalid video id"),
    ],
)
def test_bad_input_is_a_clear_error_and_nothing_changes(
    root: Path, kwargs: dict[str, Any], message: str
) -> None:
    keep = _event("v001")
    store: Store = get_store()
    before = _raw.everything(store)
    args = dict(kwargs)
    ids = args.pop("event_ids", [])
    if ids == ["le-nope"]:
        ids = [keep, "le-nope"]  # a known id first: still nothing written
    args.setdefault("verification", "checked")
    with pytest.raises(InvalidInputError if "no learning event" not in message else Exception) as e:
        resolve_events(ids, apply=True, **args)
    assert message in str(e.value)
    if "no learning event" in message:
        assert isinstance(e.value, EventNotFoundError)
    assert _raw.everything(store) == before


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_dry_run_by_default_then_yes(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    a1, a2 = _event("v001", n=1), _event("v002", n=2)
    store = get_store()
    before = _raw.everything(store)
    code, out, _ = _cli(capsys, "events", "resolve", "--component", "assets")
    assert code == 0
    assert "Would resolve 2 learning events and 0 linked error-log entries" in out
    assert a1 in out and a2 in out and "Dry run: nothing written" in out
    assert _raw.everything(store) == before

    code, out, err = _cli(capsys, "events", "resolve", "--component", "assets", "--yes")
    assert code == 1 and err.startswith("Error: resolving needs a verification text")
    assert _raw.everything(store) == before

    code, out, _ = _cli(capsys, "events", "resolve", "--component", "assets", "--json")
    data = json.loads(out)
    assert data["applied"] is False and data["count"] == 2
    assert sorted(r["event_id"] for r in data["events"]) == sorted([a1, a2])

    code, out, _ = _cli(
        capsys,
        "events",
        "resolve",
        "--component",
        "assets",
        "--yes",
        "--verification",
        "re-ran all",
        "--json",
    )
    data = json.loads(out)
    assert code == 0 and data["applied"] is True and data["count"] == 2
    assert _statuses(a1, a2) == ["verified", "verified"]


def test_cli_ids_resolve_at_once_and_bad_input_exits_1(
    capsys: pytest.CaptureFixture[str], root: Path
) -> None:
    a1 = _event("v001")
    store = get_store()
    before = _raw.everything(store)
    for args, first_line in [
        ((), "Error: nothing selected"),
        (("--severity", "FATAL"), "Error: severity must be one of"),
        (("--before", "2026-13-01"), "Error: before '2026-13-01' is not a valid date"),
        (("le-nope", "--verification", "x"), "Error: no learning event with id 'le-nope'"),
        ((a1, "--component", "assets"), "Error: give event ids or filters, not both"),
        ((a1,), "Error: resolving needs a verification text"),
    ]:
        code, out, err = _cli(capsys, "events", "resolve", *args)
        assert code == 1, args
        assert err.splitlines()[0].startswith(first_line), (args, err)
        assert "Traceback" not in err
    assert _raw.everything(store) == before

    code, out, _ = _cli(capsys, "events", "resolve", a1, "--dry-run")
    assert code == 0 and "Would resolve 1 learning event" in out
    assert _raw.everything(store) == before
    code, out, _ = _cli(capsys, "events", "resolve", a1, "--verification", "checked")
    assert code == 0 and f"{a1} is now verified" in out
    code, out, _ = _cli(capsys, "events", "resolve", a1, "--verification", "again")
    assert code == 0 and f"{a1} was resolved already" in out
