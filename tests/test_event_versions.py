"""event_versions (issue 18): every version of an event the store still holds, oldest first.

Runs on both stores; the log-scan details of the file store are marked ``files_only``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rayvault.learning import (
    InvalidIdentifierError,
    create_event,
    event_versions,
    resolve_event,
    update_event,
)
from rayvault.learning.events import changed_fields
from rayvault.learning.models import LearningEvent
from rayvault.learning.store import FileStore, Store

from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores


def test_versions_in_order_with_their_fields(store: Store, clock: Clock) -> None:
    kwargs = event_kwargs()
    del kwargs["verification"]
    event = create_event(**kwargs, store=store)  # type: ignore[arg-type]
    assert event.status == "applied"
    clock.advance(minutes=1)
    update_event(event.event_id, status="open", store=store)
    clock.advance(minutes=1)
    update_event(event.event_id, verification="re-ran it, shape correct", store=store)
    clock.advance(minutes=1)
    resolve_event(event.event_id, "checked 5/5 renders", store=store)

    versions = event_versions(event.event_id, store=store)
    assert store.event_versions(event.event_id) == versions
    # One as recorded (PostgreSQL also keeps the first version stored before the loop ran),
    # then one per change.
    assert len(versions) == (4 if isinstance(store, FileStore) else 5)
    assert {v.event_id for v in versions} == {event.event_id}
    last_four = versions[-4:]
    assert [v.status for v in last_four] == ["applied", "open", "open", "verified"]
    assert [v.verification for v in last_four] == [
        "",
        "",
        "re-ran it, shape correct",
        "checked 5/5 renders",
    ]
    assert versions[-1].resolved_at is not None
    assert versions[0].timestamp == event.timestamp
    stamps = [v.updated or v.timestamp for v in last_four]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    changes = changed_fields(versions)
    assert changes[0] == []
    assert changes[-3] == ["status"]
    assert changes[-2] == ["verification"]
    assert {"status", "verification", "resolved_at"} <= set(changes[-1])


def test_unknown_id_has_no_versions(store: Store, clock: Clock) -> None:
    assert event_versions("le-20260101T000000Z-000000000000", store=store) == []
    create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    assert event_versions("le-20260101T000000Z-000000000000", store=store) == []


@pytest.mark.parametrize("bad", ["../x", "", "a b", "x/../../etc"])
def test_unsafe_id_is_refused(store: Store, bad: str) -> None:
    with pytest.raises(InvalidIdentifierError):
        event_versions(bad, store=store)
    with pytest.raises(InvalidIdentifierError):
        store.event_versions(bad)


def test_an_id_quoted_in_another_event_is_not_a_version(store: Store, clock: Clock) -> None:
    """The file store finds candidates by the id's quoted bytes: an event whose text holds them
    (even as a whole JSON string value) must not count."""
    first = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    other = create_event(
        **event_kwargs(symptom=first.event_id, root_cause=f'"{first.event_id}" again'),  # type: ignore[arg-type]
        store=store,
    )
    update_event(other.event_id, fix_applied=first.event_id, store=store)
    mine = event_versions(first.event_id, store=store)
    assert mine and {v.event_id for v in mine} == {first.event_id}
    assert [v.event_id for v in event_versions(other.event_id, store=store)] == [
        other.event_id
    ] * len(event_versions(other.event_id, store=store))
    assert event_versions(other.event_id, store=store)[-1].fix_applied == first.event_id


@pytest.mark.files_only("the bytes of the event log")
def test_file_log_scan_matches_a_full_read(root: Path, store: Store, clock: Clock) -> None:
    ids = []
    for i in range(5):
        e = create_event(**event_kwargs(symptom=f"failure {i}"), store=store)  # type: ignore[arg-type]
        ids.append(e.event_id)
        update_event(e.event_id, root_cause=f"cause {i}", store=store)
    log = json.loads((root / "data" / "learning_events.json").read_bytes())
    for event_id in ids:
        expected = [item for item in log if item["event_id"] == event_id]
        assert len(expected) == 2
        assert event_versions(event_id, store=store) == [
            LearningEvent.model_validate(x) for x in expected
        ]


@pytest.mark.files_only("a log in the legacy multi-line layout")
def test_legacy_pretty_printed_log_is_read_whole(root: Path, store: Store, clock: Clock) -> None:
    e = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    update_event(e.event_id, root_cause="another cause", store=store)
    path = root / "data" / "learning_events.json"
    before = [v.to_dict() for v in event_versions(e.event_id, store=store)]
    path.write_text(json.dumps(json.loads(path.read_bytes()), indent=2))
    assert [v.to_dict() for v in event_versions(e.event_id, store=store)] == before
    assert [v.root_cause for v in event_versions(e.event_id, store=store)][-1] == "another cause"


@pytest.mark.files_only("a torn tail in the event log")
def test_torn_tail_is_ignored(root: Path, store: Store, clock: Clock) -> None:
    e = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    path = root / "data" / "learning_events.json"
    count = len(event_versions(e.event_id, store=store))
    data = path.read_bytes().rstrip().removesuffix(b"]")
    path.write_bytes(data + b',\n{"event_id": "' + e.event_id.encode() + b'", "sev')
    assert len(event_versions(e.event_id, store=store)) == count


def test_compaction_keeps_the_latest_version(store: Store, clock: Clock) -> None:
    e = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    update_event(e.event_id, root_cause="second cause", store=store)
    assert len(event_versions(e.event_id, store=store)) >= 2
    store.compact_events()
    after = event_versions(e.event_id, store=store)
    assert len(after) == 1 and after[0].root_cause == "second cause"
