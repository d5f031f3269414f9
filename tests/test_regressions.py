"""Regressions (issue 14, item 3): a failure back after every earlier occurrence of its pattern
was resolved records ``regression_of`` and the time since; the gate names it, the weekly report
lists it, and ``patterns`` shows each pattern's state. Runs on both stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning._report_html import render_html
from rayvault.learning.errors import log_error
from rayvault.learning.events import create_event, resolve_event, update_event
from rayvault.learning.gate import check_regressions
from rayvault.learning.models import LearningEvent
from rayvault.learning.registry import get_patterns
from rayvault.learning.revisit import revisit
from rayvault.learning.store import Store

from .conftest import Clock, event_kwargs

NOW = datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC)
TIMEOUT = "Timeout after 30s on B0AAA1"


def fail(store: Store, symptom: str = TIMEOUT, **fields: object) -> LearningEvent:
    args = event_kwargs(symptom=symptom, verification="", **fields)
    return create_event(**args, store=store)  # type: ignore[arg-type]


def test_a_fixed_failure_that_comes_back_records_what_it_regressed_from(
    store: Store, clock: Clock
) -> None:
    clock.set(NOW - timedelta(days=10))
    first = fail(store, video_id="v100")
    assert first.regression_of is None  # never seen before: not a regression
    clock.set(NOW - timedelta(days=9))
    resolve_event(first.event_id, "re-rendered, fine", store=store)
    clock.set(NOW - timedelta(days=2))
    back = fail(store, "Timeout after 12s on B0ZZZ9", video_id="v107")
    assert back.fingerprint == first.fingerprint
    assert back.regression_of == first.event_id
    assert back.regressed_after_seconds == 7 * 86400
    stored = store.get_event(back.event_id)
    assert stored is not None and stored.regression_of == first.event_id
    assert stored.to_dict()["regressed_after_seconds"] == 7 * 86400
    # While it is open, the next occurrence is an ongoing failure, not another regression.
    clock.set(NOW - timedelta(days=1))
    again = fail(store, video_id="v108")
    assert again.regression_of is None
    # An event without regression keeps its shape: no regression fields written.
    assert "regression_of" not in again.to_dict()


def test_an_unresolved_earlier_occurrence_is_no_regression(store: Store, clock: Clock) -> None:
    clock.set(NOW - timedelta(days=5))
    first = fail(store)
    second = fail(store)
    resolve_event(first.event_id, "fixed", store=store)
    third = fail(store)  # `second` is still open
    assert third.regression_of is None
    # Only archived (closed without a verified fix): no regression either.
    update_event(second.event_id, status="archived", store=store)
    resolve_event(third.event_id, "fixed", store=store)
    update_event(first.event_id, status="archived", store=store)
    update_event(third.event_id, status="archived", store=store)
    assert fail(store).regression_of is None


def test_a_failure_verified_at_creation_that_recurs_is_a_regression(
    store: Store, clock: Clock
) -> None:
    clock.set(NOW - timedelta(hours=3))
    fixed = create_event(**event_kwargs(symptom=TIMEOUT), store=store)  # type: ignore[arg-type]
    assert fixed.status == "verified"
    clock.set(NOW)
    back = fail(store)
    assert back.regression_of == fixed.event_id and back.regressed_after_seconds == 3 * 3600


def test_a_merged_pattern_regresses_across_the_merge(store: Store, clock: Clock) -> None:
    """Verified under one key, back under another key merged with it since."""
    family = [
        "user alice not found on host alpha",
        "user bob not found on host beta",
        "user carol not found on host gamma",
        "user dan not found on host delta",
    ]
    clock.set(NOW - timedelta(days=3))
    log_error("v1", "assets", family[0], store=store)
    fixed = create_event(**event_kwargs(symptom=family[1]), store=store)  # type: ignore[arg-type]
    assert fixed.status == "verified"
    for text in family[2:]:
        log_error("v1", "assets", text, store=store)  # the fourth value merges the family
    clock.set(NOW)
    back = fail(store, family[0])
    assert back.fingerprint != fixed.fingerprint
    assert store.resolve_pattern(str(fixed.fingerprint)) == back.fingerprint
    assert back.regression_of == fixed.event_id
    assert back.regressed_after_seconds == 3 * 86400
    [pattern] = get_patterns(1, store=store)
    assert pattern.state == "regressed"


def test_regression_events_store_query(store: Store, clock: Clock) -> None:
    clock.set(NOW - timedelta(days=2))
    first = fail(store)
    resolve_event(first.event_id, "fixed", store=store)
    clock.set(NOW - timedelta(days=1))
    back = fail(store)
    fail(store, "Image hallucination")
    from rayvault.learning.store import EventQuery

    assert [e.event_id for e in store.regression_events(EventQuery())] == [back.event_id]
    assert store.regression_events(EventQuery(date_from=NOW - timedelta(hours=1))) == []
    found = store.regression_events(EventQuery(fingerprint=str(first.fingerprint)))
    assert [e.event_id for e in found] == [back.event_id]


def test_the_gate_names_the_regression(store: Store, clock: Clock) -> None:
    clock.set(datetime(2026, 11, 18, 9, 0, tzinfo=UTC))
    first = fail(store, video_id="v100")
    clock.set(datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    resolve_event(first.event_id, "fixed", store=store)
    clock.set(datetime(2026, 11, 28, 8, 0, tzinfo=UTC))
    back = fail(store, "Timeout after 3s on <b>B0X</b>", video_id="v107")
    check = check_regressions("v107", "assets", store=store)
    assert not check.passed
    expected = f"regressed: fixed 2026-11-20 by {first.event_id}, back in v107"
    assert expected in check.reason
    assert check.reason.index(back.event_id) < check.reason.index("regressed:")
    [entry] = check.details["regressions"]
    assert entry["event_id"] == back.event_id and entry["regression_of"] == first.event_id
    assert entry["reason"] == expected
    # An open event that is no regression is listed as before.
    other = check_regressions("v100", "assets", store=store)
    assert other.passed


def test_the_gate_cli_prints_the_regression(
    root: Path, store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    clock.set(datetime(2026, 11, 18, 9, 0, tzinfo=UTC))
    first = fail(store, video_id="v100")
    clock.set(datetime(2026, 11, 20, 15, 0, tzinfo=UTC))
    resolve_event(first.event_id, "fixed", store=store)
    clock.set(datetime(2026, 11, 28, 8, 0, tzinfo=UTC))
    fail(store, video_id="v107")
    code = main(["gate", "v107", "assets"])
    out = capsys.readouterr().out
    assert code == 2
    assert f"regressed: fixed 2026-11-20 by {first.event_id}, back in v107" in out


def test_the_weekly_report_lists_regressions(store: Store, clock: Clock) -> None:
    clock.set(NOW - timedelta(days=20))
    first = fail(store, video_id="v1")
    resolve_event(first.event_id, "fixed", store=store)
    clock.set(NOW - timedelta(days=2))
    back = fail(store, "Timeout after 9s on B0CCC3", video_id="v2")
    clock.set(NOW - timedelta(days=1))
    later = fail(store, video_id="v3")
    # A pattern with a regression before the window is not listed.
    clock.set(NOW - timedelta(days=30))
    old = fail(store, "<script>alert(1)</script> failed", video_id="v4")
    resolve_event(old.event_id, "fixed", store=store)
    clock.set(NOW - timedelta(days=25))
    fail(store, "<script>alert(2)</script> failed", video_id="v5")
    clock.set(NOW)
    result = revisit(store=store)
    [section] = result.report.regressions
    assert section["fingerprint"] == store.resolve_pattern(str(first.fingerprint))
    assert section["pattern"] == "Timeout after <dur> on <id>"
    assert section["regression_of"] == first.event_id
    assert section["verified_at"] == "2026-01-30T12:00:00.000000Z"
    assert section["regressed_after_seconds"] == 18 * 86400
    assert section["occurrences_in_window"] == 2
    assert [e["event_id"] for e in section["events"]] == [back.event_id]
    assert later.regression_of is None
    saved = store.load_weekly_report()
    assert saved is not None and saved.regressions == result.report.regressions
    html = render_html(result.report)
    assert '<table id="regressions">' in html
    assert f'data-regression-of="{first.event_id}"' in html
    assert "Timeout after &lt;dur&gt; on &lt;id&gt;" in html
    assert 'data-field="regressions">1<' in html


def test_report_html_escapes_regression_text(store: Store, clock: Clock) -> None:
    clock.set(NOW - timedelta(days=3))
    first = fail(store, "<b>boom</b> in & out", video_id="v1")
    resolve_event(first.event_id, "fixed", store=store)
    clock.set(NOW - timedelta(days=1))
    fail(store, "<b>boom</b> in & out", video_id="v2")
    clock.set(NOW)
    html = render_html(revisit(store=store).report)
    section = html[html.index('<table id="regressions">') :]
    section = section[: section.index("</table>")]
    assert "<b>boom" not in section and "&lt;b&gt;boom&lt;/b&gt; in &amp; out" in section


def test_report_without_regressions_says_so(store: Store, clock: Clock) -> None:
    clock.set(NOW - timedelta(days=1))
    fail(store)
    clock.set(NOW)
    result = revisit(store=store)
    assert result.report.regressions == []
    assert '<p class="empty" id="regressions">' in render_html(result.report)


def test_patterns_state_for_each_state(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    # ongoing: open, first seen before the window (7 days).
    clock.set(NOW - timedelta(days=20))
    fail(store, "Price anomaly 12", component="research", agent="researcher")
    # resolved: every occurrence resolved.
    clock.set(NOW - timedelta(days=15))
    done = fail(store, "Voice clipped at 3 dB", component="tts", agent="publisher")
    resolve_event(done.event_id, "fixed", store=store)
    # regressed: fixed, then back and open.
    clock.set(NOW - timedelta(days=12))
    fixed = fail(store)
    resolve_event(fixed.event_id, "fixed", store=store)
    clock.set(NOW - timedelta(days=1))
    fail(store)
    # new: first seen in the window.
    fail(store, "Image hallucination")
    clock.set(NOW)
    states = {p.pattern: p.state for p in get_patterns(1, store=store)}
    assert states == {
        "Price anomaly <n>": "ongoing",
        "Voice clipped at <n> dB": "resolved",
        "Timeout after <dur> on <id>": "regressed",
        "Image hallucination": "new",
    }
    # A window given: first seen at or after it is new.
    since = {p.pattern: p.state for p in get_patterns(1, date_from=NOW - timedelta(days=30))}
    assert since == {**states, "Price anomaly <n>": "new"}
    # The CLI: --json and the table.
    assert main(["patterns", "--min-count", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {p["pattern"]: p["state"] for p in data} == states
    assert main(["patterns", "--min-count", "1"]) == 0
    out = capsys.readouterr().out
    assert "State" in out and "regressed" in out and "ongoing" in out


def test_the_cli_says_so_when_an_event_is_a_regression_and_the_report_lists_it(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    clock.set(NOW - timedelta(days=3))
    first = fail(store, video_id="v1")
    resolve_event(first.event_id, "fixed", store=store)
    clock.set(NOW - timedelta(days=1))
    args = ["events", "create", "--severity", "FAIL", "--component", "assets"]
    code = main([*args, "--symptom", TIMEOUT, "--video", "v9"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"regressed: fixed 2026-02-16 by {first.event_id}, back in v9" in out
    code = main([*args, "--symptom", "Image hallucination", "--json"])
    assert code == 0 and "regression_of" not in json.loads(capsys.readouterr().out)
    clock.set(NOW)
    assert main(["revisit"]) == 0
    capsys.readouterr()
    assert main(["report"]) == 0
    out = capsys.readouterr().out
    assert "Regressions" in out and f"by {first.event_id}, back in v9" in out
    assert main(["report", "--json"]) == 0
    [section] = json.loads(capsys.readouterr().out)["regressions"]
    assert section["regression_of"] == first.event_id
