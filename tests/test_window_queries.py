"""Queries over a window of time read the window, not the history (issue 15 item 2, in part): the
file store's index walks ``events (ts, seq)`` for the weekly report's window facets, timeline and
regressions, and for the newest open failures. Pinned in SQLite virtual-machine steps between two
histories that hold the same last week: 1k events over 9 days and 10k over 90."""

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
    }
    roots = {}
    for size in (1_000, 10_000):
        roots[size] = tmp_path / str(size)
        write_index(roots[size], synthetic_events(size, days=size * 90 // 10_000))
    for name, call in calls.items():
        (small, small_answer), (large, large_answer) = (_steps(roots[n], call) for n in roots)
        if name == "facets":  # the same week of events in both
            assert sum(small_answer["severity"].values()) > 700  # type: ignore[index]
            assert abs(
                sum(small_answer["severity"].values())  # type: ignore[index]
                - sum(large_answer["severity"].values())  # type: ignore[index]
            ) < 10
        # A scan of the history would take about ten times the steps at ten times the events.
        assert large <= small * 1.3 + 10, (name, small, large)
