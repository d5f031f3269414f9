"""Registry queries: cross-video search with datetime bounds, recurring patterns, an agent's
learnings, promotion candidates and the latest weekly report.

Runs on both stores; tests about the bytes of the file layout are marked ``files_only``."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.learning import (
    CorruptFileError,
    InvalidIdentifierError,
    InvalidInputError,
    create_event,
    get_agent_learnings,
    get_patterns,
    get_promotion_candidates,
    get_weekly_summary,
    query_events,
    resolve_event,
    update_event,
)
from rayvault.learning.models import LearningEvent
from rayvault.learning.patterns import fingerprint
from rayvault.learning.soul import promote_rule, promotion_section
from rayvault.learning.store import FileStore, Store, get_store

from .conftest import Clock, event_kwargs, rules_worked

pytestmark = pytest.mark.both_stores
T0 = datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC)


def learn(clock: Clock, at: datetime, **overrides: object) -> LearningEvent:
    clock.set(at)
    return create_event(**event_kwargs(**overrides))  # type: ignore[arg-type]


def ids(events: list[LearningEvent]) -> list[str]:
    return [e.event_id for e in events]


def test_query_events_filters_and_folds_step_names(root: Path, clock: Clock) -> None:
    a = learn(clock, T0, component="assets", severity="FAIL", video_id="v1")
    b = learn(clock, T0 + timedelta(minutes=1), component="generate-images", severity="WARN")
    c = learn(clock, T0 + timedelta(minutes=2), component="research", agent="researcher")
    d = learn(clock, T0 + timedelta(minutes=3), component="dzine", severity="FAIL", video_id="v2")
    assert ids(query_events(component="assets")) == [a.event_id, b.event_id, d.event_id]
    assert ids(query_events(component="dzine")) == [a.event_id, b.event_id, d.event_id]
    assert ids(query_events(component="assets", severity="FAIL")) == [a.event_id, d.event_id]
    assert ids(query_events(component="assets", severity="fail", video_id="v2")) == [d.event_id]
    assert ids(query_events(agent="researcher")) == [c.event_id]
    assert ids(query_events(status="verified", newest_first=True, limit=2)) == [
        d.event_id,
        c.event_id,
    ]
    update_event(b.event_id, status="archived")
    assert ids(query_events(status="archived")) == [b.event_id]
    assert query_events(component="tts") == []
    with pytest.raises(InvalidInputError, match="severity must be one of"):
        query_events(severity="CRITICAL")


def test_query_events_date_bounds_are_inclusive_datetimes(root: Path, clock: Clock) -> None:
    """Bounds compare as datetimes (any accepted style), inclusive, to the microsecond."""
    early = learn(clock, T0 - timedelta(days=1))
    at = learn(clock, T0)
    late = learn(clock, T0 + timedelta(hours=23, minutes=59, seconds=59))
    next_day = learn(clock, T0 + timedelta(days=1))
    assert ids(query_events(date_from=T0)) == [at.event_id, late.event_id, next_day.event_id]
    assert ids(query_events(date_from=T0 + timedelta(microseconds=1))) == [
        late.event_id,
        next_day.event_id,
    ]
    assert ids(query_events(date_to=T0)) == [early.event_id, at.event_id]
    assert ids(query_events(date_to=T0 - timedelta(microseconds=1))) == [early.event_id]
    # The same instant written in the older +00:00 style, and in another time zone.
    assert ids(query_events(date_from="2026-02-19T12:00:00+00:00")) == ids(
        query_events(date_from="2026-02-19T13:00:00+01:00")
    )
    assert ids(query_events(date_from="2026-02-19T12:00:00.000001Z")) == [
        late.event_id,
        next_day.event_id,
    ]
    # A date alone: from the start of the day; as date_to, to the end of that day.
    assert ids(query_events(date_from="2026-02-19", date_to="2026-02-19")) == [at.event_id]
    day = query_events(date_from=date(2026, 2, 20), date_to=date(2026, 2, 20))
    assert ids(day) == [late.event_id, next_day.event_id]
    assert ids(query_events(date_from="2026-02-18", date_to="2026-02-18")) == [early.event_id]
    with pytest.raises(InvalidInputError, match="not a date or timestamp"):
        query_events(date_from="last tuesday")
    with pytest.raises(InvalidInputError, match="not a valid date"):
        query_events(date_to="2026-02-30")


def test_a_date_alone_covers_the_whole_day(root: Path, clock: Clock) -> None:
    start = datetime(2026, 2, 19, 0, 0, 0, tzinfo=UTC)
    first = learn(clock, start)
    last = learn(clock, start + timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))
    learn(clock, start + timedelta(days=1))
    learn(clock, start - timedelta(microseconds=1))
    assert ids(query_events(date_from="2026-02-19", date_to="2026-02-19")) == [
        first.event_id,
        last.event_id,
    ]


@pytest.fixture
def spread(root: Path, clock: Clock) -> list[LearningEvent]:
    """Twelve events at irregular times over four days."""
    offsets = [0, 5, 3600, 3601, 86399, 86400, 86401, 90000, 172800, 200000, 259199, 300000]
    return [
        learn(clock, T0 + timedelta(seconds=s), severity="FAIL" if i % 2 else "WARN")
        for i, s in enumerate(offsets)
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=st.integers(min_value=-10, max_value=310_000),
    length=st.integers(min_value=0, max_value=200_000),
    severity=st.sampled_from([None, "WARN", "FAIL"]),
)
def test_query_events_matches_a_brute_force_filter(
    spread: list[LearningEvent], start: int, length: int, severity: str | None
) -> None:
    lo = T0 + timedelta(seconds=start)
    hi = lo + timedelta(seconds=length)
    expected = [
        e.event_id
        for e in spread
        if lo <= e.timestamp <= hi and (severity is None or e.severity == severity)
    ]
    got = query_events(date_from=lo, date_to=hi.isoformat(), severity=severity)
    assert ids(got) == expected


def test_get_patterns_groups_by_fingerprint_with_every_aggregate(root: Path, clock: Clock) -> None:
    t1 = learn(clock, T0, severity="WARN", symptom="Timeout after 30.2s on B0ABC", video_id="v1",
               verification="")  # fmt: skip
    learn(clock, T0 + timedelta(hours=1), severity="FAIL", symptom="Timeout after 31.7s on B0XYZ",
          video_id="v2", component="dzine", verification="")  # fmt: skip
    t3 = learn(clock, T0 + timedelta(days=2), severity="FAIL",
               symptom="Timeout after 2s on B0QQQ", video_id="v1")  # fmt: skip
    learn(clock, T0, symptom="Image hallucination", video_id="v9")
    learn(clock, T0, symptom="Image hallucination", video_id="v8")
    learn(clock, T0, component="research", symptom="Timeout after 3s on B0ABC", agent="researcher")

    patterns = get_patterns(min_count=3)
    assert len(patterns) == 1
    [p] = patterns
    assert p.fingerprint == t1.fingerprint == fingerprint("assets", "Timeout after 1s on X1").key
    assert p.stage == "assets"
    assert p.pattern == "Timeout after <dur> on <id>"
    assert p.count == 3
    assert p.open_count == 2  # two without verification (applied), one verified
    assert p.severities == {"WARN": 1, "FAIL": 2}
    assert p.videos == ["v1", "v2"] and p.video_count == 2
    assert p.components == ["assets", "dzine"]
    assert p.agents == ["dzine_producer"]
    assert p.first_seen == T0
    assert p.last_seen == t3.timestamp == T0 + timedelta(days=2)
    assert p.recent_count is None

    two = get_patterns(min_count=2)
    assert [q.count for q in two] == [3, 2]
    assert two[1].pattern == "Image hallucination"
    assert len(get_patterns(min_count=1)) == 3
    assert get_patterns(3, component="research") == []
    assert [q.count for q in get_patterns(1, agent="researcher")] == [1]
    assert [q.count for q in get_patterns(2, date_from=T0 + timedelta(minutes=30))] == [2]
    assert get_patterns(3, date_from=T0 + timedelta(minutes=30)) == []
    assert [q.count for q in get_patterns(1, date_to=T0)] == [2, 1, 1]
    with pytest.raises(InvalidInputError):
        get_patterns(min_count=0)


def test_get_patterns_counts_open_as_unresolved(root: Path, clock: Clock) -> None:
    events = [learn(clock, T0 + timedelta(minutes=i), verification="") for i in range(3)]
    assert get_patterns()[0].open_count == 3
    resolve_event(events[0].event_id, "checked")
    update_event(events[1].event_id, status="archived")
    assert get_patterns()[0].open_count == 1


def test_events_of_an_older_system_are_grouped_by_a_computed_fingerprint(
    root: Path, store: Store
) -> None:
    """Events written by the older system carry no fingerprint: the index computes one from
    their component and symptom, so they group like new events."""
    store.append_events(
        [
            LearningEvent(
                event_id=f"evt-{i}",
                timestamp=T0,
                severity="FAIL",
                component="assets",
                symptom="same text",
            )
            for i in range(4)
        ]
    )
    [pattern] = get_patterns(min_count=1, store=store)
    assert pattern.count == 4
    assert pattern.fingerprint == fingerprint("assets", "same text").key
    assert len(query_events(component="assets", store=store)) == 4


def test_get_agent_learnings_by_agent_or_mapped_component(root: Path, clock: Clock) -> None:
    own = learn(clock, T0, component="research", agent="dzine_producer")
    mapped = learn(clock, T0 + timedelta(seconds=1), component="generate-images", agent=None)
    stage = learn(clock, T0 + timedelta(seconds=2), component="assets", agent=None)
    learn(clock, T0 + timedelta(seconds=3), component="research", agent="researcher")
    learn(clock, T0 + timedelta(seconds=4), component="tts", agent=None)
    assert ids(get_agent_learnings("dzine_producer")) == [own.event_id, mapped.event_id,
                                                         stage.event_id]  # fmt: skip
    # its own event, and the research event that dzine_producer learned from
    assert len(get_agent_learnings("researcher")) == 2
    assert ids(get_agent_learnings("dzine_producer", newest_first=True, limit=1)) == [
        stage.event_id
    ]
    assert len(get_agent_learnings("publisher")) == 1  # tts maps to publisher
    with pytest.raises(InvalidIdentifierError):
        get_agent_learnings("../x")


def test_researcher_learnings_include_research_events_of_any_agent(
    root: Path, clock: Clock
) -> None:
    a = learn(clock, T0, component="discover-products", agent=None)
    b = learn(clock, T0 + timedelta(seconds=1), component="research", agent="dzine_producer")
    assert ids(get_agent_learnings("researcher")) == [a.event_id, b.event_id]


def test_promotion_candidates_threshold_edges_across_agents(
    root: Path, clock: Clock, souls: Path
) -> None:
    once = learn(clock, T0, symptom="seen once")
    twice = learn(clock, T0, symptom="seen twice 1")
    learn(clock, T0 + timedelta(hours=1), symptom="seen twice 2")
    for i in range(3):
        learn(clock, T0 + timedelta(hours=i), symptom=f"price off by {i}", component="research",
              agent="researcher")  # fmt: skip
    rules_worked()  # promotion counts successes
    cands = get_promotion_candidates(threshold=2)
    assert [(c.agent, c.applied_count) for c in cands] == [("researcher", 3),
                                                          ("dzine_producer", 2)]  # fmt: skip
    dz = cands[1]
    assert dz.rule_id == twice.rule_id
    assert dz.soul_file == "agents/dzine_producer/SOUL.md"
    assert dz.promoted is False
    from rayvault.learning import load_active_memory

    rule = next(r for r in load_active_memory("dzine_producer").rules if r.rule_id == dz.rule_id)
    assert dz.soul_section == promotion_section(rule, "dzine_producer")
    assert dz.last_applied == T0 + timedelta(hours=1)
    assert [c.agent for c in get_promotion_candidates(threshold=3)] == ["researcher"]
    assert get_promotion_candidates(threshold=4) == []
    assert len(get_promotion_candidates(threshold=1)) == 3
    assert once.rule_id in {c.rule_id for c in get_promotion_candidates(1)}
    assert [c.agent for c in get_promotion_candidates(agent="dzine_producer")] == [
        "dzine_producer"
    ]  # default threshold: LEARNING_PROMOTION_THRESHOLD_OCCURRENCES (2)

    promote_rule("dzine_producer", str(dz.rule_id))
    assert [c.promoted for c in get_promotion_candidates(agent="dzine_producer")] == [True]


def test_promotion_threshold_follows_the_policy(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    learn(clock, T0, symptom="again")
    learn(clock, T0, symptom="again")
    rules_worked()  # promotion counts successes
    assert len(get_promotion_candidates()) == 1
    monkeypatch.setenv("RAYVAULT_LEARNING_PROMOTION_THRESHOLD_OCCURRENCES", "3")
    assert get_promotion_candidates() == []
    [c] = get_promotion_candidates(threshold=2)
    assert c.soul_file is None  # no SOUL file in this root


def write_report(root: Path, name: str, text: str | None = None, **fields: object) -> Path:
    """A report stored under ``name`` as an older writer left it (a file, or a table row)."""
    base = {"generated_at": "2026-02-19T12:00:00+00:00", "period_days": 7, "scope": "all"}
    text = json.dumps({**base, **fields}) if text is None else text
    store = get_store()
    path = root / "data/learning_reports" / f"{name}.json"
    if isinstance(store, FileStore):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path
    from rayvault.learning.store.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    store.init_schema()
    with store.connect() as conn:
        conn.execute(
            "INSERT INTO weekly_reports (name, day, n, data) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            (name, name[7:17], int(name[18:] or 1), text),
        )
    return Path(f"{store.schema}.weekly_reports[{name}].data")


def test_weekly_summary_is_the_latest_report(root: Path) -> None:
    assert get_weekly_summary() is None
    write_report(root, "weekly-2026-02-12", events_total=1)
    write_report(root, "weekly-2026-02-19", events_total=2)
    write_report(root, "weekly-2026-02-19-2", events_total=3)
    write_report(root, "weekly-2026-02-19-10", events_total=4)
    write_report(root, "weekly-2026-02-09", events_total=5)
    if isinstance(get_store(), FileStore):  # files in the folder that are not reports
        (root / "data/learning_reports/notes.json").write_text("{}")
        (root / "data/learning_reports/weekly-2026-13-45.json").write_text("{}")
    summary = get_weekly_summary()
    assert summary is not None
    assert summary.events_total == 4  # -10 comes after -2: numbers, not text
    assert summary["scope"] == "all" and summary.period_days == 7
    assert summary.generated_at == T0  # the older +00:00 style
    write_report(root, "weekly-2026-02-20", events_total=6)
    assert get_weekly_summary().events_total == 6  # type: ignore[union-attr]


def test_old_report_with_only_the_original_fields_loads(root: Path) -> None:
    write_report(
        root,
        "weekly-2026-02-19",
        events_total=10,
        events_recent=2,
        by_severity={"FAIL": 2},
        by_component={"assets": 2},
        by_status={"applied": 2},
        agent_summaries={"dzine_producer": {"active_rules": 3, "tombstones": 1}},
        custom="kept",
    )
    summary = get_weekly_summary()
    assert summary is not None
    assert summary.agent_summaries["dzine_producer"]["active_rules"] == 3
    assert summary.top_patterns == [] and summary["custom"] == "kept"


@pytest.mark.files_only("a report file that does not parse (a table holds only JSON)")
def test_corrupt_latest_report_is_named(root: Path) -> None:
    path = write_report(root, "weekly-2026-02-19")
    path.write_text("{nope")
    with pytest.raises(CorruptFileError) as info:
        get_weekly_summary()
    assert str(path) in str(info.value)
    assert path.read_text() == "{nope"


def test_a_latest_report_of_the_wrong_shape_is_named(root: Path) -> None:
    write_report(root, "weekly-2026-02-12")
    where = write_report(root, "weekly-2026-02-19", text='{"scope": "all"}')
    with pytest.raises(CorruptFileError, match="does not match the expected shape") as info:
        get_weekly_summary()
    assert str(where) in str(info.value)
    assert get_store().list_weekly_reports() == ["weekly-2026-02-12", "weekly-2026-02-19"]


@pytest.mark.files_only("edits the event index file (tests/test_postgres.py: the same in a table)")
def test_an_event_of_the_wrong_shape_is_reported_by_file(root: Path, clock: Clock) -> None:
    learn(clock, T0)
    index = root / "data/learning_events.json"
    data = index.read_bytes()
    bad = data.rstrip()[:-1].rstrip() + b',\n{"event_id": "le-bad", "severity": "LOUD"}\n]\n'
    index.write_bytes(bad)
    assert len(query_events(severity="FAIL")) == 1  # the bad event is not read by this query
    with pytest.raises(
        CorruptFileError, match="an event does not match the expected shape"
    ) as info:
        query_events()
    assert info.value.path == index
    assert index.read_bytes() == bad
