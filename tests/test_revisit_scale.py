"""The weekly revisit reads the window, not the history (issue 15 item 2): the event pattern
aggregates and open counts kept on write equal a GROUP BY over every event after creates, status
changes, merges and rebuilds, on both stores; the report built from them is the report built by
the GROUP BY; and the work of a revisit does not grow with the history behind a fixed window."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.learning._fingerprint import fingerprint
from rayvault.learning._ids import new_event_id
from rayvault.learning._time import format_ts, to_micros, utcnow
from rayvault.learning.doctor import check_root
from rayvault.learning.models import LearningEvent, Pattern
from rayvault.learning.revisit import revisit
from rayvault.learning.store import FileStore, Store, _sql
from rayvault.learning.store.base import EventQuery
from rayvault.learning.store.files import store as file_store_module
from rayvault.learning.store.files._sqlindex import event_pattern_problems
from rayvault.learning.store.files.layout import Layout
from rayvault.learning.store.postgres import PostgresStore
from rayvault.learning.store.postgres import schema as schema_sql
from rayvault.learning.store.postgres.queries import EVENT_FACETS as PG_EVENT_FACETS
from rayvault.learning.store.transfer import EVENT, Item

from ._raw import append_events_before_m012
from .conftest import Clock, PgSchemas

STAGES = ["assets", "tts", "render"]
TEXTS = [
    "Timeout after 3s fetching https://amazon.com/dp/B0ABC",
    "KeyError: 'price'",
    "HTTP 503 from dzine.ai after 4 retries",
    "ffmpeg exited with code 1 on /tmp/v1/render.mp4",
]
SEVERITIES = ["INFO", "WARN", "FAIL", "BLOCKER"]
STATUSES = ["open", "applied", "verified", "archived"]


# -- oracles --------------------------------------------------------------------------------------
def grouped(store: Store, **kwargs: Any) -> list[Pattern]:
    """``event_patterns`` by one GROUP BY over every event (never the aggregates)."""
    return store.grouped_event_patterns(EventQuery(), **kwargs)  # type: ignore[attr-defined]


def aggregate_problems(store: Store) -> list[str]:
    """How the kept aggregates and open counts differ from a recount (empty: they agree)."""
    if isinstance(store, FileStore):
        return event_pattern_problems(store.index.sync("events"))
    return store.event_aggregate_problems()  # type: ignore[attr-defined, no-any-return]


def open_facets_by_hand(store: Store, query: EventQuery) -> dict[str, dict[str, int]]:
    """The facets of the unresolved events matching ``query``, counted in Python."""
    events = store.query_events(replace(query, unresolved=True))
    facets = {}
    for facet in ("severity", "status", "component", "agent"):
        counts = Counter(str(getattr(e, facet)) for e in events if getattr(e, facet) is not None)
        facets[facet] = dict(counts)
    return facets


def assert_agrees(store: Store, since: datetime, min_count: int = 1) -> None:
    for active_since in (None, since):
        kept = store.event_patterns(EventQuery(), min_count=min_count, active_since=active_since)
        assert kept == grouped(store, min_count=min_count, active_since=active_since)
        limited = store.event_patterns(
            EventQuery(), min_count=min_count, active_since=active_since, videos_limit=2
        )
        assert [p.videos for p in limited] == [p.videos[:2] for p in kept]
        assert [p.video_count for p in limited] == [p.video_count for p in kept]
    assert aggregate_problems(store) == []
    everything = store.query_events(EventQuery())
    assert store.count_events(EventQuery()) == len(everything)
    critical = EventQuery(severities=("BLOCKER", "FAIL"), unresolved=True)
    for query in (
        critical,
        EventQuery(unresolved=True),
        replace(critical, agent_or_components=("agent-a", ("tts",))),
    ):
        assert store.event_facets(query) == open_facets_by_hand(store, query)


# -- writing events ---------------------------------------------------------------------------------
def event(
    when: datetime,
    *,
    stage: str = "assets",
    text: int = 0,
    video: str | None = "v1",
    severity: str = "FAIL",
    status: str = "open",
    agent: str | None = "agent-a",
) -> LearningEvent:
    fp = fingerprint(stage, TEXTS[text])
    return LearningEvent(
        event_id=new_event_id(when),
        timestamp=when,
        severity=severity,  # type: ignore[arg-type]
        component=stage,
        symptom=TEXTS[text],
        status=status,  # type: ignore[arg-type]
        video_id=video,
        agent=agent,
        fingerprint=fp.key,
        pattern=fp.template,
    )


def set_status(store: Store, event_id: str, status: str) -> None:
    store.update_event(event_id, lambda e: e.model_copy(update={"status": status}))


def merge(store: Store, source: str, target: str) -> bool:
    with store.pattern_book(source.split(":", 1)[0]) as book:
        return book.link(source, target, "regroup")


def test_creates_status_changes_and_merges_keep_the_aggregates_exact(
    store: Store, clock: Clock
) -> None:
    start = clock.now - timedelta(days=30)
    events = [
        event(
            start + timedelta(days=i * 2, minutes=i),
            stage=STAGES[i % 2],
            text=i % 3,
            video=[f"v{i % 4}", None][i % 5 == 4],
            severity=SEVERITIES[i % 4],
            agent=[None, "agent-a", "agent-b"][i % 3],
        )
        for i in range(15)
    ]
    store.append_events(events)
    since = clock.now - timedelta(days=7)
    assert_agrees(store, since)
    for e in events[::2]:
        set_status(store, e.event_id, "verified")
    set_status(store, events[1].event_id, "applied")  # open to open: moves the open counts only
    assert_agrees(store, since)
    set_status(store, events[0].event_id, "open")  # reopened
    assert_agrees(store, since, min_count=2)

    before = {p.fingerprint: p for p in grouped(store)}
    keys = sorted(k for k in before if k.startswith("assets:"))
    assert len(keys) >= 2
    assert merge(store, keys[0], keys[1])
    after = {p.fingerprint: p for p in store.event_patterns(EventQuery())}
    assert keys[0] not in after
    assert after[keys[1]].count == before[keys[0]].count + before[keys[1]].count
    assert after[keys[1]].open_count == before[keys[0]].open_count + before[keys[1]].open_count
    assert_agrees(store, since)
    # Events written later under the merged key land in the target.
    source_text = next(i for i, t in enumerate(TEXTS) if fingerprint("assets", t).key == keys[0])
    store.append_events([event(clock.now, text=source_text, video="v9")])
    later = {p.fingerprint: p for p in store.event_patterns(EventQuery())}
    assert later[keys[1]].count == after[keys[1]].count + 1
    assert "v9" in later[keys[1]].videos
    assert_agrees(store, since)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("create"),
                st.integers(0, 40),  # days ago
                st.sampled_from(STAGES),
                st.integers(0, len(TEXTS) - 1),
                st.sampled_from(["v1", "v2", "v3", None]),
                st.sampled_from(SEVERITIES),
                st.sampled_from(["agent-a", "agent-b", None]),
            ),
            st.tuples(st.just("status"), st.integers(0, 1000), st.sampled_from(STATUSES)),
            st.tuples(st.just("merge"), st.integers(0, 1000), st.integers(0, 1000)),
            st.tuples(st.just("rebuild")),
        ),
        max_size=25,
    ),
    min_count=st.integers(1, 3),
)
def test_random_sequences_agree_with_the_group_by(
    store: Store, clock: Clock, ops: list[tuple[Any, ...]], min_count: int
) -> None:
    """Creates, status changes, merges and index rebuilds in any order (the store keeps what
    earlier examples wrote: the comparison is over all of it)."""
    for op in ops:
        if op[0] == "create":
            _, ago, stage, text, video, severity, agent = op
            when = clock.now - timedelta(days=ago, seconds=len(ops))
            store.append_events(
                [
                    event(
                        when,
                        stage=stage,
                        text=text,
                        video=video,
                        severity=severity,
                        agent=agent,
                    )
                ]
            )
            continue
        events = store.query_events(EventQuery())
        if op[0] == "status" and events:
            set_status(store, events[op[1] % len(events)].event_id, op[2])
        elif op[0] == "merge" and events:
            keys = sorted({store.resolve_pattern(str(e.fingerprint)) for e in events})
            source, target = keys[op[1] % len(keys)], keys[op[2] % len(keys)]
            if source.split(":", 1)[0] == target.split(":", 1)[0]:
                merge(store, source, target)
        elif op[0] == "rebuild" and isinstance(store, FileStore):
            store.index.rebuild()
    assert_agrees(store, clock.now - timedelta(days=7), min_count)


# -- the report ----------------------------------------------------------------------------------
def _without_aggregates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make both stores answer every query by scanning the events, as before the aggregates."""

    def never(query: EventQuery) -> bool:
        return False

    for module in [file_store_module, *_pg_modules()]:
        for name in ("answered_by_pattern_aggregates", "answered_by_open_counts"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, never)


def _pg_modules() -> list[Any]:
    from rayvault.learning.store.postgres import store as pg_store

    return [pg_store]


def test_the_report_is_the_report_the_group_by_builds(store: Store, clock: Clock) -> None:
    start = clock.now - timedelta(days=60)
    events = [
        event(
            start + timedelta(hours=i * 29),
            stage=STAGES[i % 3],
            text=i % 4,
            video=f"v{i % 31:02d}",
            severity=SEVERITIES[i % 4],
            status=STATUSES[(i // 3) % 4],
            agent=["agent-a", "agent-b", None][i % 3],
        )
        for i in range(50)
    ]
    store.append_events(events)
    fast = revisit("all", 7, dry_run=True, store=store).report
    with pytest.MonkeyPatch.context() as mp:
        _without_aggregates(mp)
        slow = revisit("all", 7, dry_run=True, store=store).report
    assert fast.model_dump() == slow.model_dump()
    assert fast.events_total == 50 and fast.events_recent > 0
    assert fast.top_patterns and all(len(p.videos) <= 20 for p in fast.top_patterns)
    assert fast.open_failures["total"] == sum(
        1 for e in events if e.severity in ("FAIL", "BLOCKER") and not e.resolved
    )


# -- the work does not grow with the history ------------------------------------------------------
def _write_history(root: Path, count: int, days: int, now: datetime) -> None:
    """:func:`_history` written as the event log of ``root``."""
    path = Layout(root).events_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(_history(count, days, now)))


def _history(count: int, days: int, now: datetime) -> list[dict[str, Any]]:
    """``count`` event records at one rate whatever the size (the last 7 days hold the same
    events), ending ``now``: 3 stages, 12 patterns, 150 videos, a quarter resolved."""
    rate = timedelta(days=days) / count
    records = []
    for i in range(count):
        when = now - rate * (count - i)
        stage, text = STAGES[i % 3], (i // 3) % 4
        fp = fingerprint(stage, TEXTS[text])
        status = STATUSES[i % 4]
        record = {
            "event_id": new_event_id(when),
            "timestamp": format_ts(when),
            "severity": SEVERITIES[(i // 2) % 4],
            "component": stage,
            "symptom": TEXTS[text],
            "status": status,
            "video_id": f"v{(i * 7) % 150:03d}",
            "agent": f"agent-{stage}",
            "fingerprint": fp.key,
            "pattern": fp.template,
        }
        if status in ("verified", "archived"):
            record["resolved_at"] = format_ts(when + timedelta(hours=i % 24))
        records.append(record)
    return records


def _work(root: Path) -> tuple[int, int, dict[str, Any]]:
    """SQLite virtual-machine steps (in hundreds) and statements run by one dry-run revisit on
    an index already caught up, and its report."""
    store = FileStore(root)
    conn: sqlite3.Connection = store.index.sync("events")
    revisit("all", 7, dry_run=True, store=store)  # every log caught up, caches warm
    steps, statements = [0], []

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    conn.set_trace_callback(statements.append)
    try:
        report = revisit("all", 7, dry_run=True, store=store).report.model_dump(mode="json")
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_trace_callback(None)
        store.close()
    return steps[0], len(statements), report


@pytest.mark.files_only("counts the work of the file store's SQLite index")
def test_the_work_of_a_revisit_does_not_grow_with_history(tmp_path: Path, clock: Clock) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    _write_history(small, 2_000, 20, clock.now)
    _write_history(large, 20_000, 200, clock.now)
    small_steps, small_statements, small_report = _work(small)
    large_steps, large_statements, large_report = _work(large)
    assert small_report["events_total"] == 2_000 and large_report["events_total"] == 20_000
    assert small_report["events_recent"] == large_report["events_recent"] == 700
    assert large_report["open_failures"]["total"] == 10 * small_report["open_failures"]["total"]
    # Ten times the history, the same statements and (within a few pages' walk) the same steps:
    # a GROUP BY over the events takes about ten times as many.
    assert large_statements == small_statements
    assert large_steps <= small_steps * 1.3 + 5, (small_steps, large_steps)


def _pg_buffers(pg: PostgresStore, since: datetime) -> tuple[int, list[Any]]:
    """Shared buffers the server touched for the revisit's reads of all history (the window's
    patterns with their totals and videos, the event total, the open failures' facets, the
    window's resolution times; each statement run under EXPLAIN ANALYZE), and the patterns."""
    touched = [0]
    with pg.connect() as conn:

        def execute(statement: str, params: list[Any]) -> list[Any]:
            explain = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement
            [(plan,)] = conn.execute(explain, params).fetchall()
            top = plan[0]["Plan"]
            touched[0] += int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])
            return conn.execute(statement, params).fetchall()

        rows = _sql.aggregate_pattern_rows(
            execute, min_count=1, active_since=since, videos_limit=20, dialect="postgresql", ph="%s"
        )
        execute(_sql.COUNT_ALL_EVENTS_SQL, [])
        where, params = _sql.event_where(
            EventQuery(severities=("BLOCKER", "FAIL"), unresolved=True), "%s"
        )
        execute(
            PG_EVENT_FACETS.format(
                source=_sql.OPEN_EVENT_COUNTS_AS_EVENTS, count="sum(n)", where=where
            ),
            params,
        )
        execute(
            "SELECT ts, resolved_ts FROM events WHERE resolved = 1 AND resolved_ts IS NOT NULL"
            " AND resolved_ts >= %s ORDER BY seq",
            [to_micros(since)],
        )
    return touched[0], rows


def test_the_work_of_a_revisit_on_postgresql_does_not_grow_with_history(
    root: Path, pg_schemas: PgSchemas, clock: Clock
) -> None:
    touched, found = [], []
    since = clock.now - timedelta(days=7)
    for count, days in ((2_000, 20), (20_000, 200)):
        pg = PostgresStore(root, pg_schemas.new_url())
        records = _history(count, days, clock.now)
        pg.load_items([Item(EVENT, (r["event_id"],), orjson.dumps(r).decode()) for r in records])
        with pg.connect() as conn:  # as autovacuum soon does after a bulk load
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
        assert pg.event_patterns(EventQuery(), active_since=since) == grouped(
            pg, active_since=since
        )
        buffers, rows = _pg_buffers(pg, since)
        touched.append(buffers)
        found.append(rows)
        pg.close()
    small, large = touched
    assert [row[3] for row in found[0]] == [row[3] for row in found[1]]  # the same window
    assert sum(row[1] for row in found[1]) == 20_000
    # Ten times the history: the same pages within a level of the B-trees (a GROUP BY over the
    # events, or a scan of the resolved ones, touches about ten times as many).
    assert large <= small * 1.3 + 20, touched


def test_aggregate_queries_need_an_unfiltered_query() -> None:
    assert _sql.answered_by_pattern_aggregates(EventQuery())
    assert _sql.answered_by_pattern_aggregates(EventQuery(limit=3, newest_first=True))
    for narrowed in (
        EventQuery(agent="a"),
        EventQuery(date_from=utcnow()),
        EventQuery(fingerprint="x:1"),
        EventQuery(unresolved=True),
    ):
        assert not _sql.answered_by_pattern_aggregates(narrowed)
    assert _sql.answered_by_open_counts(
        EventQuery(unresolved=True, severities=("FAIL",), agent_or_components=("a", ("tts",)))
    )
    for other in (
        EventQuery(),
        EventQuery(unresolved=False),
        EventQuery(unresolved=True, video_id="v1"),
        EventQuery(unresolved=True, date_from=datetime(2026, 1, 1, tzinfo=UTC)),
    ):
        assert not _sql.answered_by_open_counts(other)


# -- repairs and upgrades ---------------------------------------------------------------------------
@pytest.mark.files_only("the derived index is the file layout's")
def test_the_doctor_finds_and_repairs_wrong_event_aggregates(root: Path, clock: Clock) -> None:
    store = FileStore(root)
    store.append_events([event(clock.now, text=i % 2, video=f"v{i}") for i in range(6)])
    conn = store.index.sync("events")
    conn.execute("UPDATE event_patterns SET total = total + 5")
    conn.execute("UPDATE open_event_counts SET n = n + 1")
    found = [f for f in store.check() if f.code == "index-inconsistent"]
    assert any("(event_patterns) differ" in f.message for f in found), found
    assert any("(open_event_counts) differ" in f.message for f in found), found
    store.check(repair=True)
    assert aggregate_problems(store) == []
    assert_agrees(store, clock.now - timedelta(days=7))
    store.close()


@pytest.fixture
def pg(root: Path, pg_schemas: PgSchemas) -> Iterator[PostgresStore]:
    store = PostgresStore(root, pg_schemas.new_url())
    yield store
    store.close()


def test_the_migration_fills_the_aggregates_of_a_schema_with_events(
    root: Path, pg_schemas: PgSchemas, clock: Clock
) -> None:
    url = pg_schemas.new_url()
    old = PostgresStore(root, url, migrate=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema_sql, "MIGRATIONS", schema_sql.MIGRATIONS[:11])
        assert old.init_schema()[-1] == "m011_error_patterns"
    start = clock.now - timedelta(days=20)
    events = [
        event(start + timedelta(hours=i * 7), stage=STAGES[i % 3], text=i % 4, video=f"v{i}")
        for i in range(40)
    ]
    for i, e in enumerate(events[::3]):  # resolved, and when (the backfill parses it)
        e.status = "verified"
        e.resolved_at = e.timestamp + timedelta(hours=i, microseconds=i)
    append_events_before_m012(old, events)  # no resolved_ts column yet
    assert old.upgrade_schema() == [m.name for m in schema_sql.MIGRATIONS[11:]]
    assert schema_sql.MIGRATIONS[11].name == "m012_event_patterns"
    old.close()
    pg = PostgresStore(root, url)
    assert aggregate_problems(pg) == []
    expected = [(e.timestamp, e.resolved_at) for e in events if e.resolved_at is not None]
    assert pg.resolution_times(EventQuery()) == expected
    since = events[30].timestamp
    assert pg.resolution_times(EventQuery(), resolved_since=since) == [
        pair for pair in expected if pair[1] >= since
    ]
    findings = {f.code for f in check_root(store=pg).findings}
    assert not {"events-table-inconsistent", "failure-counts-wrong"} & findings
    assert_agrees(pg, clock.now - timedelta(days=7))
    assert sum(p.count for p in pg.event_patterns(EventQuery())) == 40
    pg.append_events([event(clock.now, video="v99")])  # the triggers take over from there
    assert_agrees(pg, clock.now - timedelta(days=7))
    pg.close()


def test_the_doctor_finds_and_repairs_wrong_event_aggregates_on_postgresql(
    pg: PostgresStore, clock: Clock
) -> None:
    pg.append_events([event(clock.now, text=i % 2, video=f"v{i}") for i in range(6)])
    with pg.connect() as conn:
        conn.execute("UPDATE event_patterns SET videos = videos + 1")
        conn.execute("DELETE FROM open_event_counts")
    found = {f.code: f for f in check_root(store=pg).findings}
    message = found["failure-counts-wrong"].message
    assert "event_patterns/assets:" in message and "open_event_counts/FAIL" in message
    check_root(store=pg, repair=True)
    assert aggregate_problems(pg) == []
