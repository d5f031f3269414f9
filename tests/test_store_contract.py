"""The ``Store`` contract (rayvault/learning/store/base.py): what every backend must do, stated
once, through the protocol only.

Every test here takes ``store_factory`` — a callable that opens a new store on the test's data
(each call a new instance over the same data, so persistence is checked too) — and nothing
backend-specific: no paths, no SQL. ``tests/conftest.py`` provides it for the file store and
PostgreSQL (``postgres``-marked); a third backend reuses this module unchanged by providing its
own ``store_factory`` fixture (in a conftest beside a module that does
``from tests.test_store_contract import *``). The detailed behaviour of each operation is tested
elsewhere (events, memory, gate, registry, revisit… all run on both stores); this is the
contract's core.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from rayvault.learning.exceptions import (
    ErrorEntryNotFoundError,
    EventNotFoundError,
    LearningError,
    StoreError,
)
from rayvault.learning.models import (
    AgentMemory,
    ErrorEntry,
    ErrorResolution,
    LearningEvent,
    Rule,
    Tombstone,
)
from rayvault.learning.store import EventQuery, Store
from rayvault.learning.store.base import ErrorQuery

StoreFactory = Callable[[], Store]
T0 = datetime(2026, 2, 19, 12, 0, tzinfo=UTC)


def event(n: int, **fields: object) -> LearningEvent:
    data: dict[str, object] = {
        "event_id": f"le-20260219T120000Z-{n:012x}",
        "run_id": f"run-{n}",
        "timestamp": T0 + timedelta(minutes=n),
        "severity": "FAIL",
        "component": "assets",
        "symptom": f"symptom {n}",
        "video_id": "v001",
        "fingerprint": f"fp{n % 2}",
        "pattern": f"pattern {n % 2}",
    }
    data.update(fields)
    return LearningEvent.model_validate(data)


def error(n: int, **fields: object) -> ErrorEntry:
    data: dict[str, object] = {
        "id": f"e-20260219T120000-{n:012x}",
        "timestamp": T0 + timedelta(minutes=n),
        "stage": "assets",
        "error": f"boom {n}",
        "video_id": "v001",
        "fingerprint": "efp",
        "pattern": "boom <n>",
    }
    data.update(fields)
    return ErrorEntry.model_validate(data)


def rule(n: int) -> Rule:
    return Rule(
        rule_id=f"rule-20260219T120000Z-{n:012x}",
        created=T0,
        severity="FAIL",
        component="assets",
        rule=f"rule text {n}",
    )


def ids(events: list[LearningEvent]) -> list[str]:
    return [e.event_id for e in events]


def test_a_store_satisfies_the_protocol(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert isinstance(store, Store)
    assert isinstance(store.read_only(), Store)
    assert store.describe()


# -- events ---------------------------------------------------------------------------------


def test_appended_events_are_read_back_by_a_new_store(store_factory: StoreFactory) -> None:
    writer = store_factory()
    assert writer.get_event(event(1).event_id) is None
    writer.append_events([event(1), event(2, component="script")])
    reader = store_factory()
    assert reader.get_event(event(1).event_id) == event(1)
    assert reader.get_event(event(2).event_id) == event(2, component="script")
    assert reader.get_event("le-20990101T000000Z-000000000000") is None


def test_the_last_version_of_an_event_wins(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_events([event(1)])
    store.append_events([event(1, status="verified", verification="checked")])
    assert store.get_event(event(1).event_id) == event(1, status="verified", verification="checked")
    assert ids(store.query_events(EventQuery())) == [event(1).event_id]
    assert store.count_events(EventQuery()) == 1
    assert store.event_statuses([event(1).event_id, "le-unknown"]) == {
        event(1).event_id: "verified"
    }


def test_update_event_appends_the_change_and_refuses_an_unknown_id(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    store.append_events([event(1)])
    updated = store.update_event(
        event(1).event_id, lambda e: e.model_copy(update={"root_cause": "found"})
    )
    assert updated.root_cause == "found"
    assert store_factory().get_event(event(1).event_id) == updated
    with pytest.raises(EventNotFoundError):
        store.update_event("le-20990101T000000Z-000000000000", lambda e: e)
    assert store.count_events(EventQuery()) == 1


def test_update_events_changes_many_in_order_or_nothing(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_events([event(1), event(2), event(3)])
    order = [event(3).event_id, event(1).event_id, event(2).event_id]
    changed = store.update_events(
        order,
        lambda e: None if e.event_id == event(2).event_id else e.model_copy(update={"agent": "a"}),
    )
    assert ids(changed) == [event(3).event_id, event(1).event_id]
    assert store.get_event(event(2).event_id) == event(2)  # None: left as it was
    with pytest.raises(EventNotFoundError):
        store.update_events(
            [event(2).event_id, "le-20990101T000000Z-000000000000"],
            lambda e: e.model_copy(update={"agent": "b"}),
        )
    assert store.get_event(event(2).event_id) == event(2)  # nothing written


def test_queries_filter_order_limit_and_count(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_events(
        [
            event(1),
            event(2, severity="WARN", video_id="v002"),
            event(3, status="verified", component="script", agent="scriptwriter"),
            event(4, severity="BLOCKER"),
        ]
    )
    cases = {
        EventQuery(): [1, 2, 3, 4],
        EventQuery(newest_first=True, limit=2): [4, 3],
        EventQuery(video_id="v001"): [1, 3, 4],
        EventQuery(components=("script",)): [3],
        EventQuery(severities=("FAIL", "BLOCKER")): [1, 3, 4],
        EventQuery(statuses=("verified",)): [3],
        EventQuery(unresolved=True): [1, 2, 4],
        EventQuery(unresolved=False): [3],
        EventQuery(agent="scriptwriter"): [3],
        EventQuery(fingerprint="fp0"): [2, 4],
        EventQuery(date_from=T0 + timedelta(minutes=2), date_to=T0 + timedelta(minutes=3)): [2, 3],
        EventQuery(exclude_event_id=event(1).event_id): [2, 3, 4],
    }
    for query, expected in cases.items():
        assert ids(store.query_events(query)) == [event(n).event_id for n in expected], query
        unlimited = EventQuery(**{**query.__dict__, "limit": None})
        assert store.count_events(unlimited) == len(store.query_events(unlimited)), query
    facets = store.event_facets(EventQuery())
    assert facets["severity"] == {"FAIL": 2, "WARN": 1, "BLOCKER": 1}
    assert facets["status"] == {"open": 3, "verified": 1}
    assert facets["component"] == {"assets": 3, "script": 1}
    assert store.event_timeline(EventQuery()) == {date(2026, 2, 19): {"FAIL": 2, "WARN": 1,
                                                                     "BLOCKER": 1}}  # fmt: skip


def test_events_group_into_patterns_by_fingerprint(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_events([event(n) for n in range(1, 6)] + [event(9, fingerprint="single")])
    patterns = store.event_patterns(EventQuery(), min_count=1)
    assert [(p.fingerprint, p.count) for p in patterns] == [("fp1", 3), ("fp0", 2), ("single", 1)]
    assert patterns[0].pattern == "pattern 1"
    assert [p.fingerprint for p in store.event_patterns(EventQuery(video_id="none"))] == []
    assert [p.fingerprint for p in store.event_patterns(EventQuery(), min_count=3)] == ["fp1"]


def test_regression_events_are_those_recording_regression_of(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    back = event(3, regression_of=event(1).event_id, regressed_after_seconds=120)
    later = event(5, regression_of=event(1).event_id, regressed_after_seconds=240, video_id="v2")
    store.append_events([event(1, status="verified"), event(2), later, back, event(4)])
    store = store_factory()  # persisted
    found = store.regression_events(EventQuery())
    assert [e.event_id for e in found] == [back.event_id, later.event_id]  # oldest first
    assert found[0].regression_of == event(1).event_id and found[0].regressed_after_seconds == 120
    assert [e.event_id for e in store.regression_events(EventQuery(video_id="v2"))] == [
        later.event_id
    ]
    assert store.regression_events(EventQuery(fingerprint="fp0")) == []
    assert store.regression_events(EventQuery(date_from=T0 + timedelta(minutes=6))) == []
    assert event(2).regression_of is None


def test_a_read_only_view_reads_and_never_writes(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_events([event(1)])
    view = store.read_only()
    assert view.get_event(event(1).event_id) == event(1)
    writes: list[Callable[[], object]] = [
        lambda: view.append_events([event(2)]),
        lambda: view.append_errors([error(1)]),
        lambda: view.init_agent("researcher"),
        lambda: view.save_weekly_report(date(2026, 2, 19), {}, ""),
        lambda: view.save_soul_snapshot("a" * 64, "text"),
        lambda: view.update_event(event(1).event_id, lambda e: e),
    ]
    for write in writes:
        with pytest.raises(StoreError):
            write()
    assert store.count_events(EventQuery()) == 1
    assert store.get_error(error(1).id) is None
    assert store.list_agents() == [] and store.list_weekly_reports() == []
    assert store.load_soul_snapshot("a" * 64) is None


# -- the error log ----------------------------------------------------------------------------


def test_error_entries_append_update_and_query(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_errors([error(1), error(2, stage="tts", fingerprint="other")])
    assert store_factory().get_error(error(1).id) == error(1)
    resolved = store.update_error(
        error(1).id,
        lambda e: e.model_copy(
            update={"resolved": True, "resolution": ErrorResolution(resolved_at=T0, fix="x")}
        ),
    )
    assert resolved.resolved and store.get_error(error(1).id) == resolved
    assert [e.id for e in store.query_errors(ErrorQuery(unresolved=True))] == [error(2).id]
    assert [e.id for e in store.query_errors(ErrorQuery(stages=("assets",)))] == [error(1).id]
    assert store.latest_resolution("efp") == resolved
    assert store.latest_resolution("other") is None
    with pytest.raises(ErrorEntryNotFoundError):
        store.update_error("e-20990101T000000-000000000000", lambda e: e)
    with pytest.raises(ErrorEntryNotFoundError):
        store.update_errors([error(2).id, "e-20990101T000000-000000000000"], lambda e: e)
    assert store.get_error(error(2).id) == error(2, stage="tts", fingerprint="other")


# -- agent memory ----------------------------------------------------------------------------


def test_agent_state_writes_on_a_clean_exit_only(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.init_agent("researcher") is True
    assert store.init_agent("researcher") is False
    assert store.list_agents() == ["researcher"]
    assert store.load_memory("researcher").rules == []
    with store.agent_state("researcher") as state:
        state.memory = AgentMemory(rules=[rule(1)])
        state.memory_changed = True
    assert store_factory().load_memory("researcher").rules == [rule(1)]
    with pytest.raises(RuntimeError), store.agent_state("researcher") as state:
        state.memory = AgentMemory(rules=[])
        state.memory_changed = True
        raise RuntimeError("the change failed")
    assert store.load_memory("researcher").rules == [rule(1)]  # nothing written
    assert store.memory_location("researcher")


def test_tombstones_are_kept_and_archived(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.init_agent("researcher")
    stone = Tombstone(**rule(1).model_dump(), tombstoned_at=T0, reason="obsolete")
    with store.agent_state("researcher") as state:
        state.add_tombstone(stone)
        assert state.tombstones() == [stone]
    assert store.load_tombstones("researcher").tombstones == [stone]
    assert store.archive_tombstones("researcher", T0).tombstones == []  # not older than T0
    archived = store.archive_tombstones("researcher", T0 + timedelta(days=1))
    assert archived.tombstones == [stone] and archived.location
    assert store.load_tombstones("researcher").tombstones == []


# -- the gate ---------------------------------------------------------------------------------


def test_gate_state_and_soul_snapshots(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.load_gate_state("v001") is None
    with store.gate_state("v001") as state:
        state.runs.append({"stage": "assets", "outcome": "pass"})
    assert store_factory().load_gate_state("v001").runs == [  # type: ignore[union-attr]
        {"stage": "assets", "outcome": "pass"}
    ]
    assert store.load_soul_snapshot("0" * 64) is None
    store.save_soul_snapshot("a" * 64, "# SOUL\nrules\n")
    assert store_factory().load_soul_snapshot("a" * 64) == "# SOUL\nrules\n"
    with store.exclusive("contract"):
        pass


def test_known_failures_count_events_and_error_entries(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_events([event(1, fingerprint="efp"), event(3, fingerprint="efp")])
    store.append_errors([error(1)])
    [known] = store.known_failures(("assets",), 3)
    assert (known.fingerprint, known.occurrences, known.unresolved) == ("efp", 3, 3)
    assert store.known_failures(("assets",), 4) == []
    assert store.known_failures(("tts",), 1) == []
    assert store.failing_fingerprints(["efp", "nope"], ("assets",)) == {"efp"}
    events, errors = store.open_occurrences("efp", ("assets",), 10)
    assert sorted(events) == sorted([event(1).event_id, event(3).event_id])
    assert errors == [error(1).id]


# -- weekly reports ---------------------------------------------------------------------------


def test_weekly_reports_of_one_day_never_replace_each_other(store_factory: StoreFactory) -> None:
    store = store_factory()
    assert store.list_weekly_reports() == [] and store.load_weekly_report() is None
    report = {"generated_at": "2026-02-19T12:00:00Z", "period_days": 7, "scope": "all"}
    first = store.save_weekly_report(date(2026, 2, 19), {**report, "events_total": 1}, "<p>1</p>")
    second = store.save_weekly_report(date(2026, 2, 19), {**report, "events_total": 2}, "<p>2</p>")
    assert first.name == "weekly-2026-02-19" and second.name == "weekly-2026-02-19-2"
    assert store_factory().list_weekly_reports() == [first.name, second.name]
    latest = store.load_weekly_report()
    assert latest is not None and latest.events_total == 2
    earlier = store.load_weekly_report(first.name)
    assert earlier is not None and earlier.events_total == 1
    with pytest.raises(LearningError):
        store.load_weekly_report("../outside")


# -- failure patterns (grouping version 2) ----------------------------------------------------
def test_the_pattern_book_saves_finds_merges_and_commits_on_a_clean_exit(
    store_factory: StoreFactory,
) -> None:
    from rayvault.learning._grouping import GROUPING_VERSION, Cluster

    store = store_factory()
    a = Cluster("assets:a", "assets", ("user", "alice", "failed"), {"seen": 1})
    b = Cluster("assets:b", "assets", ("user", "bob", "failed"))
    with store.pattern_book("assets") as book:
        assert book.find("assets", "sig-a") is None
        book.save(a, "sig-a")
        book.save(b, "sig-b")
        assert [c.key for c in book.clusters("assets", 3)] == ["assets:a", "assets:b"]
        assert book.clusters("assets", 2) == [] and book.clusters("tts", 3) == []
    with pytest.raises(RuntimeError), store.pattern_book("assets") as book:
        book.save(Cluster("assets:c", "assets", ("x",)), "sig-c")
        raise RuntimeError("rolled back")
    other = store_factory()  # committed: seen by another store on the same data
    with other.pattern_book("assets") as book:
        found = book.find("assets", "sig-a")
        assert found is not None and found.tokens == a.tokens and found.data == {"seen": 1}
        assert book.find("assets", "sig-c") is None
        a.tokens = ("user", "<*>", "failed")
        book.save(a, "sig-a2")  # generalised, and a second signature
        book.merge(b, a)
    assert other.resolve_pattern("assets:b") == "assets:a"
    assert other.resolve_pattern("assets:a") == "assets:a"
    assert other.resolve_pattern("never:merged") == "never:merged"
    with store_factory().pattern_book("assets") as book:
        for sig in ("sig-a", "sig-a2", "sig-b"):  # merges followed
            found = book.find("assets", sig)
            assert found is not None and found.key == "assets:a"
            assert found.tokens == ("user", "<*>", "failed")
        assert [c.key for c in book.clusters("assets", 3)] == ["assets:a"]  # live ones only
    [merge] = store_factory().pattern_merges()
    assert (merge.source, merge.target, merge.stage) == ("assets:b", "assets:a", "assets")
    assert merge.version == GROUPING_VERSION and merge.reason == "clusters"
    assert merge.at.tzinfo is not None
    assert store_factory().pattern_merges("tts") == []


def test_links_of_old_keys_follow_and_never_cycle(store_factory: StoreFactory) -> None:
    store = store_factory()
    store.append_errors([error(1, fingerprint="assets:old"), error(2, fingerprint="assets:new")])
    with store.pattern_book("assets") as book:
        assert book.in_history("assets:old") and not book.in_history("assets:none")
        assert book.link("assets:old", "assets:new", "version")
        assert not book.link("assets:old", "assets:other", "version")  # merged already
        assert not book.link("assets:new", "assets:old", "version")  # would be a cycle
        assert not book.link("assets:new", "assets:new", "version")
    reader = store_factory()
    assert reader.resolve_pattern("assets:old") == "assets:new"
    assert [m.reason for m in reader.pattern_merges()] == ["version"]
    found = reader.query_errors(ErrorQuery(fingerprint="assets:old"))
    assert sorted(e.fingerprint or "" for e in found) == ["assets:new", "assets:old"]
    [pattern] = reader.error_patterns(1)
    assert pattern.fingerprint == "assets:new" and pattern.count == 2


def test_a_read_only_store_refuses_a_pattern_book(store_factory: StoreFactory) -> None:
    view = store_factory().read_only()
    with pytest.raises(StoreError), view.pattern_book("assets"):
        pass
