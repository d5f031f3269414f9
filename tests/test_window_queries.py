"""Queries over a window of time read the window, not the history (issue 15 item 2, in part): the
file store's index walks ``events (ts, seq)`` for the weekly report's window facets, timeline and
regressions, and for the newest open failures, and ``events (resolved_ts)`` for the resolutions
of the window. Pinned in SQLite virtual-machine steps between two histories that hold the same
last week: 1k events over 9 days and 10k over 90."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from benchmarks._common import synthetic_events, write_index
from rayvault.learning.store import EventQuery, FileStore

pytestmark = pytest.mark.files_only("counts the work of the file store's SQLite index")


def _steps(root: Path, call: Callable[[FileStore], object]) -> tuple[int, object]:
    """SQLite steps (in hundreds) ``call`` takes on an index already caught up, and its answer."""
    store = FileStore(root)
    conn: sqlite3.Connection = store.index.sync("events")
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        answer = call(store)
    finally:
        conn.set_progress_handler(None, 0)
        store.close()
    return steps[0], answer


def test_window_queries_do_not_grow_with_the_history_before_the_window(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    week = EventQuery(date_from=now - timedelta(days=7), date_to=now)
    newest_open = EventQuery(
        severities=("BLOCKER", "FAIL"), unresolved=True, limit=5, newest_first=True
    )
    calls: dict[str, Callable[[FileStore], object]] = {
        "facets": lambda s: s.event_facets(week),
        "timeline": lambda s: s.event_timeline(week),
        "regressions": lambda s: s.regression_events(week),
        "newest open failures": lambda s: [e.event_id for e in s.query_events(newest_open)],
        "resolutions": lambda s: s.resolution_times(EventQuery(), resolved_since=week.date_from),
    }
    roots = {}
    for size in (1_000, 10_000):
        roots[size] = tmp_path / str(size)
        write_index(roots[size], synthetic_events(size, days=size * 90 // 10_000))
    for name, call in calls.items():
        (small, small_answer), (large, large_answer) = (_steps(roots[n], call) for n in roots)
        if name == "facets":  # the same week of events in both
            assert sum(small_answer["severity"].values()) > 700  # type: ignore[index]
            assert (
                abs(
                    sum(small_answer["severity"].values())  # type: ignore[index]
                    - sum(large_answer["severity"].values())  # type: ignore[index]
                )
                < 10
            )
        if name == "resolutions":  # about half the week's events, resolved within hours
            assert 300 < len(small_answer) < 500 and 300 < len(large_answer) < 500  # type: ignore[arg-type]
        # A scan of the history would take about ten times the steps at ten times the events.
        assert large <= small * 1.3 + 10, (name, small, large)


def test_resolution_times_read_the_resolved_at_each_event_has(tmp_path: Path) -> None:
    """Only events resolved with a readable ``resolved_at`` have a resolution time; the window
    keeps those resolved since its start (records of the original system may lack the field)."""
    base = synthetic_events(5, days=1)
    for event in base:
        event.pop("resolved_at", None)
        event["status"] = "verified"
    base[0]["resolved_at"] = "2026-02-10T12:00:00Z"
    base[1]["resolved_at"] = "2026-02-01T12:00:00Z"
    base[2]["resolved_at"] = "soon"  # unreadable: no time to report
    base[3]["status"] = "open"  # not resolved, whatever it says
    base[3]["resolved_at"] = "2026-02-10T12:00:00Z"
    write_index(tmp_path, base)  # base[4]: resolved, with no resolved_at at all
    store = FileStore(tmp_path)
    assert sorted(r for _, r in store.resolution_times(EventQuery())) == [
        datetime(2026, 2, 1, 12, tzinfo=UTC),
        datetime(2026, 2, 10, 12, tzinfo=UTC),
    ]
    since = datetime(2026, 2, 5, tzinfo=UTC)
    [(created, resolved)] = store.resolution_times(EventQuery(), resolved_since=since)
    assert resolved == datetime(2026, 2, 10, 12, tzinfo=UTC)
    assert created.isoformat()[:10] == str(base[0]["timestamp"])[:10]
    store.close()
