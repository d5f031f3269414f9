"""The weekly revisit: stale and conflict flags at their edges, the promotion scan, the weekly
report field by field (JSON and HTML), same-day report names, the tombstone sweep, dry runs, and
corrupt files.

Runs on both stores (documents are set up and read back through ``tests/_raw``); tests about the
bytes of the file layout are marked ``files_only``."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from rayvault.learning import (
    CorruptFileError,
    InvalidIdentifierError,
    InvalidInputError,
    create_event,
    get_weekly_summary,
    resolve_event,
    tombstone_rule,
    update_event,
)
from rayvault.learning._report_html import duration_text
from rayvault.learning._time import format_ts
from rayvault.learning.models import LearningEvent
from rayvault.learning.revisit import revisit
from rayvault.learning.soul import promotion_section
from rayvault.learning.store import get_store
from rayvault.learning.store.transfer import (
    MEMORY,
    REPORT,
    REPORT_HTML,
    SNAPSHOT,
    TOMBSTONE_ARCHIVE,
    TOMBSTONES,
)

from . import _raw
from .conftest import Clock, event_kwargs, rules_worked

pytestmark = pytest.mark.both_stores

NOW = datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC)
SINCE = NOW - timedelta(days=7)
SEC = timedelta(seconds=1)
CONFIGURED = [
    "davinci_editor",
    "dzine_producer",
    "market_scout",
    "publisher",
    "researcher",
    "reviewer",
    "scriptwriter",
]


def at(clock: Clock, when: datetime, **overrides: object) -> LearningEvent:
    clock.set(when)
    return create_event(**event_kwargs(**overrides))  # type: ignore[arg-type]


def rule(rule_id: str, created: datetime, **more: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "rule_id": rule_id,
        "source_event_id": None,
        "created": format_ts(created),
        "severity": "WARN",
        "component": "assets",
        "rule": f"Avoid: failure {rule_id}.",
        "symptom": f"failure {rule_id}",
        "video_id": None,
        "applied_count": 1,
        "last_applied": format_ts(created),
    }
    data.update(more)
    return data


def write_memory(root: Path, agent: str, rules: list[dict[str, Any]]) -> None:
    """The agent's memory as an earlier writer left it (in the store of the test)."""
    text = json.dumps({"rules": rules, "updated": format_ts(NOW), "count": len(rules)})
    _raw.put(get_store(), MEMORY, (agent,), text)


def stored(kind: str, *key: str) -> str | None:
    """A document's text as stored."""
    return _raw.get(get_store(), kind, *key)


def tombstone(rule_id: str, when: datetime, kind: str = "tombstoned") -> dict[str, Any]:
    return {
        **rule(rule_id, when - timedelta(days=40)),
        "tombstoned_at": format_ts(when),
        "reason": "obsolete",
        "evidence_ids": [],
        "superseded_by": None,
        "kind": kind,
    }


def write_tombstones(root: Path, agent: str, stones: list[dict[str, Any]]) -> None:
    text = json.dumps({"tombstones": stones, "updated": None, "count": len(stones)})
    _raw.put(get_store(), TOMBSTONES, (agent,), text)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under the root (the derived index cache aside) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "state/cache" not in p.as_posix()
    }


def everything() -> dict[str, str]:
    """All the store holds: its files, and on PostgreSQL every row of its tables."""
    return _raw.everything(get_store())


# -- phase 1: revalidate -----------------------------------------------------------------------
def test_stale_rules_at_the_window_edges(root: Path, clock: Clock) -> None:
    archived = at(clock, NOW - timedelta(days=1), agent=None)
    update_event(archived.event_id, status="archived")
    clock.set(NOW)
    write_memory(
        root,
        "dzine_producer",
        [
            rule("r-out", SINCE - SEC),
            rule("r-edge", SINCE),
            rule("r-in", SINCE + SEC),
            rule("r-reapplied", NOW - timedelta(days=30), last_applied=format_ts(NOW - SEC)),
            rule("r-legacy", NOW - timedelta(days=10), last_applied=None),
            rule("r-archived", NOW, source_event_id=archived.event_id),
            rule(
                "r-source-live",
                NOW - timedelta(days=9),
                source_event_id=archived.event_id,
                last_applied=format_ts(NOW - timedelta(days=8)),
            ),
        ],
    )
    result = revisit("dzine_producer", 7, dry_run=True)
    stale = {s.rule_id: s for s in result.revalidation.stale}
    assert sorted(stale) == ["r-archived", "r-legacy", "r-out", "r-source-live"]
    assert stale["r-out"].reason == (
        "last applied 2026-02-12T11:59:59.000000Z, before the window starting "
        "2026-02-12T12:00:00.000000Z: older than the window and not re-applied within it"
    )
    assert stale["r-archived"].reason == f"its source event {archived.event_id} is archived"
    assert "; its source event" in stale["r-source-live"].reason  # both reasons, joined
    assert stale["r-legacy"].last_used == NOW - timedelta(days=10)
    assert stale["r-out"].agent == "dzine_producer" and stale["r-out"].applied_count == 1

    wider = revisit("dzine_producer", 11, dry_run=True)
    assert sorted(s.rule_id for s in wider.revalidation.stale) == ["r-archived", "r-source-live"]


def test_stale_follows_the_moving_clock(root: Path, clock: Clock) -> None:
    """A rule learned now turns stale one second after the window has passed over it."""
    event = at(clock, NOW)
    clock.set(NOW + timedelta(days=7))
    assert revisit(days=7, dry_run=True).revalidation.stale == []
    clock.set(NOW + timedelta(days=7) + SEC)
    [flag] = revisit(days=7, dry_run=True).revalidation.stale
    assert flag.rule_id == event.rule_id
    at(clock, NOW + timedelta(days=7, seconds=2))  # the same failure again: re-applied
    assert revisit(days=7, dry_run=True).revalidation.stale == []


def test_conflicting_rules_are_flagged_with_their_reason(root: Path, clock: Clock) -> None:
    changed = at(clock, NOW - timedelta(hours=3), symptom="Product looks wrong",
                 fix_applied="Changed reference angle from 3/4 to top-down")  # fmt: skip
    reverted = at(clock, NOW - timedelta(hours=2), symptom="Image hallucination",
                  component="dzine", fix_applied="Reverted to original 3/4 angle")  # fmt: skip
    # Same action, different severities: not a conflict.
    for severity in ("WARN", "BLOCKER"):
        at(clock, NOW - timedelta(hours=1), symptom=f"Link missing ({severity})", severity=severity,
           component="research", agent="researcher",
           fix_applied="Use the SiteStripe Get link button")  # fmt: skip
    # Opposite actions, but different stages of the same agent: not compared.
    at(clock, NOW, component="research", symptom="Slow page", fix_applied="Increase the timeout")
    at(clock, NOW, component="tts", symptom="Cut audio", fix_applied="Decrease the timeout")
    clock.set(NOW)
    result = revisit(dry_run=True)
    [conflict] = result.revalidation.conflicts
    assert conflict.agent == "dzine_producer"
    assert conflict.rule_ids == [changed.rule_id, reverted.rule_id]
    assert conflict.kind == "revert"
    assert conflict.scope == "same stage assets"
    assert conflict.reason == (
        f"{changed.rule_id} and {reverted.rule_id} (same stage assets): "
        '"Reverted to original 3/4 angle" goes back to what '
        '"Changed reference angle from 3/4 to top-down" changes away from'
        f"; marked: {changed.rule_id} is held back from prompts until resolved"
    )
    assert conflict.held_back == changed.rule_id  # marked at creation; the newer is delivered
    assert result.report.agent_summaries["dzine_producer"]["conflicts"] == 1
    assert result.report.agent_summaries["researcher"]["conflicts"] == 0


def test_rules_of_one_fingerprint_are_compared(root: Path, clock: Clock) -> None:
    """Two rules for one fingerprint (left by an older system) that contradict each other."""
    clock.set(NOW)
    write_memory(
        root,
        "researcher",
        [
            rule("r-a", NOW, component="research", symptom="Captcha", rule="Do: Use the browser."),
            rule(
                "r-b",
                NOW,
                component="discover-products",
                symptom="Captcha",
                rule="Do: Never use the browser.",
            ),
        ],
    )
    [conflict] = revisit("researcher", dry_run=True).revalidation.conflicts
    assert conflict.scope == "same fingerprint" and conflict.kind == "negation"


# -- phase 2: promotion scan --------------------------------------------------------------------
def test_promotion_scan_uses_the_policy_threshold(
    root: Path, clock: Clock, souls: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    once = at(clock, NOW, symptom="once")
    twice = at(clock, NOW, symptom="twice")
    at(clock, NOW, symptom="twice")
    thrice = at(clock, NOW, symptom="thrice", component="research", agent="researcher")
    at(clock, NOW, symptom="thrice", component="research", agent="researcher")
    at(clock, NOW, symptom="thrice", component="research", agent="researcher")
    rules_worked()  # promotion counts successes
    result = revisit(dry_run=True)
    assert [(c.rule_id, c.applied_count) for c in result.promotions] == [
        (thrice.rule_id, 3),
        (twice.rule_id, 2),
    ]
    assert once.rule_id not in {c.rule_id for c in result.promotions}
    cand = result.promotions[1]
    assert cand.soul_file == "agents/dzine_producer/SOUL.md" and cand.promoted is False
    from rayvault.learning import load_active_memory

    [r] = [r for r in load_active_memory("dzine_producer").rules if r.rule_id == twice.rule_id]
    assert cand.soul_section == promotion_section(r, "dzine_producer")
    souls_before = tree(souls.parent)
    monkeypatch.setenv("RAYVAULT_LEARNING_PROMOTION_THRESHOLD_OCCURRENCES", "3")
    result = revisit()
    assert [c.rule_id for c in result.promotions] == [thrice.rule_id]
    assert result.report.agent_summaries["researcher"]["promotion_candidates"] == 1
    # The revisit only suggests: no SOUL file changed.
    assert {k: v for k, v in tree(souls.parent).items() if k.startswith("agents/")} == {
        k: v for k, v in souls_before.items() if k.startswith("agents/")
    }


# -- phase 3: the weekly report -----------------------------------------------------------------
@pytest.fixture
def week(root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A week of history with known counts (see test_weekly_report_field_by_field)."""
    ev: dict[str, Any] = {}
    ev["o1"] = at(clock, NOW - timedelta(days=20), symptom="Timeout after 30s on B0AAA1",
                  video_id="v1")  # fmt: skip
    ev["o2"] = at(clock, SINCE - SEC, severity="WARN", component="research", agent="researcher",
                  symptom="Price anomaly 12", verification="", video_id="v2")  # fmt: skip
    ev["i1"] = at(clock, SINCE + SEC, symptom="Timeout after 31s on B0BBB2", verification="",
                  video_id="v3")  # fmt: skip
    ev["i2"] = at(clock, NOW - timedelta(days=3), severity="BLOCKER",
                  component="generate-images", symptom="Timeout after 5s on B0CCC3",
                  verification="", video_id="v4", agent=None)  # fmt: skip
    ev["i3"] = at(clock, NOW - timedelta(days=2), severity="INFO", component="tts",
                  agent="publisher", symptom="Voice clipped at 3 dB", video_id="v5")  # fmt: skip
    ev["i4"] = at(clock, NOW - timedelta(days=1), component="research", agent="researcher",
                  symptom="Price anomaly 99", verification="", video_id="v2")  # fmt: skip
    clock.set(NOW - timedelta(hours=23))
    tombstone_rule("publisher", str(ev["i3"].rule_id), "Voice fixed upstream")
    clock.set(NOW - timedelta(hours=12))
    resolve_event(ev["i4"].event_id, "prices checked")
    clock.set(NOW - timedelta(hours=2))
    resolve_event(ev["o2"].event_id, "prices checked")
    ev["i5"] = at(clock, NOW - timedelta(hours=1), severity="WARN", symptom="Image hallucination",
                  video_id="v6")  # fmt: skip
    ev["i6"] = at(clock, NOW - timedelta(hours=1), severity="WARN", symptom="Image hallucination",
                  verification="", video_id="v7")  # fmt: skip
    write_tombstones(
        root,
        "market_scout",
        [tombstone("r-ev", NOW - timedelta(days=3), "evicted"), tombstone("r-old", SINCE - SEC)],
    )
    rules_worked()  # promotion counts successes
    clock.set(NOW)
    return ev


def test_weekly_report_field_by_field(root: Path, week: dict[str, Any]) -> None:
    result = revisit()
    report = result.report
    ev = week
    assert result.report_name == "weekly-2026-02-19"
    store = get_store()
    assert result.report_files == {
        "json": _raw.where(store, REPORT, "weekly-2026-02-19"),
        "html": _raw.where(store, REPORT_HTML, "weekly-2026-02-19"),
    }
    if not _raw.is_pg(store):
        assert result.report_files["json"] == str(
            root / "data/learning_reports/weekly-2026-02-19.json"
        )
    data = json.loads(str(stored(REPORT, "weekly-2026-02-19")))
    assert data == report.model_dump(mode="json")

    assert data["generated_at"] == "2026-02-19T12:00:00.000000Z"
    assert data["window_start"] == "2026-02-12T12:00:00.000000Z"
    assert data["period_days"] == 7 and data["scope"] == "all"
    assert data["events_total"] == 8
    assert data["events_recent"] == 6
    assert data["by_severity"] == {"INFO": 1, "WARN": 2, "FAIL": 2, "BLOCKER": 1}
    assert data["by_component"] == {"assets": 3, "generate-images": 1, "tts": 1, "research": 1}
    assert data["by_status"] == {"open": 1, "applied": 2, "verified": 3, "archived": 0}
    days = {d["date"]: d for d in data["events_by_day"]}
    assert list(days) == [f"2026-02-{d}" for d in range(12, 20)]
    assert days["2026-02-12"] == {"date": "2026-02-12", "INFO": 0, "WARN": 0, "FAIL": 1,
                                  "BLOCKER": 0, "total": 1}  # fmt: skip
    assert days["2026-02-16"]["BLOCKER"] == 1 and days["2026-02-17"]["INFO"] == 1
    assert days["2026-02-18"]["FAIL"] == 1 and days["2026-02-19"]["WARN"] == 2
    assert sum(d["total"] for d in data["events_by_day"]) == data["events_recent"]

    timeout, hallucination, price = data["top_patterns"]
    assert timeout["fingerprint"] == ev["o1"].fingerprint == ev["i2"].fingerprint
    assert (timeout["count"], timeout["recent_count"], timeout["open_count"]) == (3, 2, 2)
    assert timeout["videos"] == ["v1", "v3", "v4"]
    assert timeout["components"] == ["assets", "generate-images"]
    assert timeout["severities"] == {"FAIL": 2, "BLOCKER": 1}
    assert timeout["first_seen"] == "2026-01-30T12:00:00.000000Z"
    assert (hallucination["count"], hallucination["recent_count"]) == (2, 2)
    assert (price["count"], price["recent_count"], price["open_count"]) == (2, 1, 0)
    assert price["first_seen"] == "2026-02-12T11:59:59.000000Z"  # one second before: recurring

    assert data["failures"] == {
        "new_patterns": 2,
        "recurring_patterns": 2,
        "new_events": 3,
        "recurring_events": 3,
        "events_without_fingerprint": 0,
        "new": [
            {
                "fingerprint": ev["i5"].fingerprint,
                "stage": "assets",
                "pattern": "Image hallucination",
                "recent_count": 2,
                "count": 2,
            },
            {
                "fingerprint": ev["i3"].fingerprint,
                "stage": "tts",
                "pattern": "Voice clipped at <n> dB",
                "recent_count": 1,
                "count": 1,
            },
        ],
    }
    open_failures = data["open_failures"]
    assert open_failures["total"] == 2
    assert open_failures["by_severity"] == {"FAIL": 1, "BLOCKER": 1}
    assert open_failures["by_component"] == {"assets": 1, "generate-images": 1}
    assert [e["event_id"] for e in open_failures["newest"]] == [ev["i2"].event_id,
                                                                ev["i1"].event_id]  # fmt: skip

    assert data["resolution"] == {
        "resolved": 4,  # o2 and i4 later, i3 and i5 at creation; o1 was resolved before
        "median_seconds": 21600.0,
        "median_hours": 6.0,
        "resolved_at_creation": 2,
        "median_seconds_after_creation": (43200 + 597601) / 2,
    }

    rules = data["rules"]
    assert [(r["agent"], r["rule_id"]) for r in rules["added"]] == [
        ("publisher", ev["i3"].rule_id),
        ("dzine_producer", ev["i5"].rule_id),
    ]
    assert [(r["agent"], r["rule_id"], r["reason"]) for r in rules["evicted"]] == [
        ("market_scout", "r-ev", "obsolete")
    ]
    assert [(r["agent"], r["rule_id"], r["at"]) for r in rules["tombstoned"]] == [
        ("publisher", ev["i3"].rule_id, "2026-02-18T13:00:00.000000Z")
    ]

    summaries = data["agent_summaries"]
    assert list(summaries) == CONFIGURED
    zero = dict.fromkeys(
        ["active_rules", "tombstones", "critical_rules", "rules_added", "rules_evicted",
         "rules_tombstoned", "stale_rules", "conflicts", "ineffective_rules",
         "promotion_candidates"], 0,
    )  # fmt: skip
    assert summaries["dzine_producer"] == {**zero, "active_rules": 2, "critical_rules": 1,
                                           "rules_added": 1, "promotion_candidates": 2}  # fmt: skip
    assert summaries["researcher"] == {**zero, "active_rules": 1, "critical_rules": 1,
                                       "promotion_candidates": 1}  # fmt: skip
    assert summaries["publisher"] == {**zero, "tombstones": 1, "rules_added": 1,
                                      "rules_tombstoned": 1}  # fmt: skip
    assert summaries["market_scout"] == {**zero, "tombstones": 2, "rules_evicted": 1}
    assert summaries["reviewer"] == zero
    assert data["revalidation"] == {"stale": [], "conflicts": [], "ineffective": []}
    assert [c["applied_count"] for c in data["promotions"]] == [2, 2, 2]


class _Page(HTMLParser):
    """Collects what the report's page says: fields, chart bars and table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.field_attrs: dict[str, dict[str, str]] = {}
        self.bars: list[dict[str, str]] = []
        self.days: list[dict[str, str]] = []
        self.rows: dict[str, list[dict[str, str]]] = {}
        self.tags: set[str] = set()
        self._field: str | None = None
        self._table: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if "data-field" in a:
            self._field = a["data-field"]
            self.fields[self._field] = ""
            self.field_attrs[self._field] = a
        if tag == "g" and "data-date" in a:
            self.days.append(a)
        if tag == "rect" and "data-severity" in a:
            self.bars.append({**a, "day": self.days[-1]["data-date"]})
        if tag == "table":
            self._table = a.get("id")
            self.rows[self._table or ""] = []
        if tag == "tr" and self._table and any(k.startswith("data-") for k in a):
            self.rows[self._table].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("dd", "span", "strong"):
            self._field = None
        if tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._field is not None:
            self.fields[self._field] += data


def test_html_report_says_what_the_json_says(root: Path, week: dict[str, Any]) -> None:
    result = revisit()
    assert result.report_files is not None and result.report_name is not None
    html = str(stored(REPORT_HTML, result.report_name))
    data = json.loads(str(stored(REPORT, result.report_name)))
    page = _Page()
    page.feed(html)

    assert html.startswith("<!DOCTYPE html>")
    # Self-contained: nothing to fetch, nothing to run.
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    for needle in ("src=", "href=", "@import", "url("):
        assert needle not in html

    assert page.fields["events_total"] == str(data["events_total"]) == "8"
    assert page.fields["events_recent"] == str(data["events_recent"]) == "6"
    assert page.fields["open_failures"] == str(data["open_failures"]["total"])
    assert page.fields["new_patterns"] == str(data["failures"]["new_patterns"])
    assert page.fields["recurring_patterns"] == str(data["failures"]["recurring_patterns"])
    assert page.fields["new_events"] == str(data["failures"]["new_events"])
    assert page.fields["resolved"] == str(data["resolution"]["resolved"])
    # The card's median leaves out the events created already verified (0 s each), and says
    # how many it left out (issue 16 item 9); the JSON keeps both medians.
    resolution = data["resolution"]
    assert resolution["median_seconds"] == 21600.0 and resolution["resolved_at_creation"] >= 1
    later = resolution["median_seconds_after_creation"]
    assert later is not None and later > resolution["median_seconds"]
    assert page.fields["median_resolution"] == duration_text(later) == "3 d 17 h"
    assert float(page.field_attrs["median_resolution"]["data-seconds"]) == later
    assert page.field_attrs["resolved_at_creation"]["data-count"] == str(
        resolution["resolved_at_creation"]
    )
    assert f"excludes {resolution['resolved_at_creation']} created already verified" in html
    assert page.fields["promotion_candidates"] == str(len(data["promotions"]))
    assert page.fields["scope"] == "all" and page.fields["period_days"] == "7"

    # The chart: one group per day of the JSON, bars adding up to its counts.
    assert [d["data-date"] for d in page.days] == [d["date"] for d in data["events_by_day"]]
    for day in data["events_by_day"]:
        bars = {
            b["data-severity"]: int(b["data-count"]) for b in page.bars if b["day"] == day["date"]
        }
        assert bars == {s: n for s, n in day.items() if s in SEVS and n}
    assert sum(int(b["data-count"]) for b in page.bars) == data["events_recent"]

    rows = page.rows["top-patterns"]
    assert [r["data-fingerprint"] for r in rows] == [p["fingerprint"] for p in data["top_patterns"]]
    assert [(int(r["data-count"]), int(r["data-recent"]), int(r["data-open"])) for r in rows] == [
        (p["count"], p["recent_count"], p["open_count"]) for p in data["top_patterns"]
    ]
    agents = {r["data-agent"]: r for r in page.rows["agents"]}
    for name, summary in data["agent_summaries"].items():
        assert int(agents[name]["data-active-rules"]) == summary["active_rules"]
        assert int(agents[name]["data-tombstones"]) == summary["tombstones"]
    assert [r["data-event-id"] for r in page.rows["open-failures"]] == [
        e["event_id"] for e in data["open_failures"]["newest"]
    ]
    severities = {r["data-key"]: int(r["data-count"]) for r in page.rows["by-severity"]}
    assert severities == data["by_severity"]


SEVS = ("INFO", "WARN", "FAIL", "BLOCKER")


def test_reports_of_the_same_day_never_overwrite_one_another(root: Path, clock: Clock) -> None:
    at(clock, NOW)
    assert revisit().report_name == "weekly-2026-02-19"
    first = stored(REPORT, "weekly-2026-02-19")
    first_html = stored(REPORT_HTML, "weekly-2026-02-19")
    clock.set(NOW + timedelta(hours=11, minutes=59, seconds=59))
    second = revisit()
    assert second.report_name == "weekly-2026-02-19-2"
    assert stored(REPORT, "weekly-2026-02-19") == first
    assert stored(REPORT_HTML, "weekly-2026-02-19") == first_html
    assert revisit().report_name == "weekly-2026-02-19-3"
    clock.set(NOW + timedelta(hours=12))
    assert revisit().report_name == "weekly-2026-02-20"
    names = ["weekly-2026-02-19", "weekly-2026-02-19-2", "weekly-2026-02-19-3", "weekly-2026-02-20"]
    assert get_store().list_weekly_reports() == names
    assert _raw.names(get_store(), REPORT) == sorted(names)
    for name in names:
        assert str(stored(REPORT_HTML, name)).startswith("<!DOCTYPE html>")
    summary = get_weekly_summary()
    assert summary is not None and summary.generated_at == NOW + timedelta(hours=12)


@pytest.mark.files_only("the files of data/learning_reports/")
def test_report_files_are_named_by_day(root: Path, clock: Clock) -> None:
    at(clock, NOW)
    revisit()
    revisit()
    folder = root / "data/learning_reports"
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == [
        "weekly-2026-02-19-2.html",
        "weekly-2026-02-19-2.json",
        "weekly-2026-02-19.html",
        "weekly-2026-02-19.json",
    ]


def test_an_orphan_html_is_never_replaced(root: Path, clock: Clock) -> None:
    """An HTML page left without its JSON (an interrupted run) keeps its name taken."""
    clock.set(NOW)
    _raw.put(get_store(), REPORT_HTML, ("weekly-2026-02-19",), "left over")
    assert revisit().report_name == "weekly-2026-02-19-2"
    assert stored(REPORT_HTML, "weekly-2026-02-19") == "left over"
    assert get_store().list_weekly_reports() == ["weekly-2026-02-19-2"]


# -- phase 4: the tombstone sweep ---------------------------------------------------------------
def test_tombstone_sweep_at_the_grace_edge(root: Path, clock: Clock) -> None:
    clock.set(NOW)
    grace = NOW - timedelta(days=30)
    write_memory(root, "researcher", [rule("r-live", NOW, component="research")])
    memory_text = stored(MEMORY, "researcher")
    write_tombstones(
        root,
        "researcher",
        [
            tombstone("t-old", NOW - timedelta(days=100)),
            tombstone("t-out", grace - SEC, "evicted"),
            tombstone("t-edge", grace),
            tombstone("t-in", grace + SEC),
        ],
    )
    result = revisit("researcher", 7)
    [sweep] = result.tombstone_sweep
    store = get_store()
    archive = ("researcher", "tombstones-2026-02-19.json")
    assert sweep.tombstones_archived == 2 and sweep.tombstones_kept == 2
    assert sweep.tombstone_archive == _raw.where(store, TOMBSTONE_ARCHIVE, *archive)
    kept = json.loads(str(stored(TOMBSTONES, "researcher")))
    assert [t["rule_id"] for t in kept["tombstones"]] == ["t-edge", "t-in"]
    assert kept["count"] == 2
    archived = json.loads(str(stored(TOMBSTONE_ARCHIVE, *archive)))
    assert [t["rule_id"] for t in archived["tombstones"]] == ["t-old", "t-out"]
    assert archived["tombstones"][1]["kind"] == "evicted"
    assert archived["count"] == 2 and archived["agent"] == "researcher"
    assert archived["archived_at"] == "2026-02-19T12:00:00.000000Z"
    assert archived["older_than"] == "2026-01-20T12:00:00.000000Z"
    assert stored(MEMORY, "researcher") == memory_text  # the sweep never touches active rules
    # The report counted the tombstones as they were before the sweep.
    assert result.report.agent_summaries["researcher"]["tombstones"] == 4

    # A second sweep the same day gets its own archive; the first is left as it was.
    first_archive = stored(TOMBSTONE_ARCHIVE, *archive)
    clock.set(NOW + SEC * 2)
    [again] = revisit("researcher", 7).tombstone_sweep
    second = ("researcher", "tombstones-2026-02-19-2.json")
    assert again.tombstone_archive == _raw.where(store, TOMBSTONE_ARCHIVE, *second)
    assert [
        t["rule_id"] for t in json.loads(str(stored(TOMBSTONE_ARCHIVE, *second)))["tombstones"]
    ] == [
        "t-edge",
        "t-in",
    ]
    assert stored(TOMBSTONE_ARCHIVE, *archive) == first_archive
    assert _raw.names(store, TOMBSTONE_ARCHIVE, "researcher") == sorted([archive[1], second[1]])
    [none] = revisit("researcher", 7).tombstone_sweep
    assert none.tombstones_archived == 0 and none.tombstone_archive is None


def test_sweep_uses_the_grace_period_not_the_window(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(NOW)
    write_tombstones(root, "reviewer", [tombstone("t", NOW - timedelta(days=20))])
    assert revisit("reviewer", 7).tombstone_sweep[0].tombstones_archived == 0
    assert revisit("reviewer", 60).tombstone_sweep[0].tombstones_archived == 0
    monkeypatch.setenv("RAYVAULT_LEARNING_TOMBSTONE_GRACE_DAYS", "10")
    assert revisit("reviewer", 7).tombstone_sweep[0].tombstones_archived == 1


def test_snapshots_past_retention_are_pruned(root: Path, clock: Clock) -> None:
    clock.set(NOW)
    store = get_store()
    cutoff = NOW - timedelta(days=90)
    names = {
        "out": f"memory_active-{(cutoff - SEC).strftime('%Y%m%dT%H%M%SZ')}-aa.json",
        "edge": f"memory_active-{cutoff.strftime('%Y%m%dT%H%M%SZ')}-bb.json",
        "in": f"memory_active-{(cutoff + SEC).strftime('%Y%m%dT%H%M%SZ')}-cc.json",
    }
    for name in names.values():
        _raw.put(store, SNAPSHOT, ("scriptwriter", name), "{}")
    [dry] = revisit("scriptwriter", dry_run=True).tombstone_sweep
    assert dry.snapshots_pruned == [names["out"]]
    assert len(_raw.names(store, SNAPSHOT, "scriptwriter")) == 3
    [sweep] = revisit("scriptwriter").tombstone_sweep
    assert sweep.snapshots_pruned == [names["out"]]
    assert _raw.names(store, SNAPSHOT, "scriptwriter") == sorted([names["edge"], names["in"]])


# -- invariants ---------------------------------------------------------------------------------
def test_dry_run_writes_nothing(root: Path, week: dict[str, Any], clock: Clock) -> None:
    write_tombstones(root, "reviewer", [tombstone("t-due", NOW - timedelta(days=31))])
    snapshot = "memory_active-20251001T000000Z-a.json"
    _raw.put(get_store(), SNAPSHOT, ("reviewer", snapshot), "{}")
    write_memory(
        root, "reviewer", [rule("r-stale", NOW - timedelta(days=20), component="script-review")]
    )
    before = everything()
    result = revisit(dry_run=True)
    assert everything() == before
    assert result.dry_run is True
    assert result.report_name is None and result.report_files is None
    assert get_store().list_weekly_reports() == []
    reviewer = next(s for s in result.tombstone_sweep if s.agent == "reviewer")
    assert reviewer.tombstones_archived == 1 and reviewer.tombstone_archive is None
    assert reviewer.snapshots_pruned == [snapshot]
    assert [s.rule_id for s in result.revalidation.stale] == ["r-stale"]
    assert result.report.events_total == 8  # everything reported, as for a real run


def test_revisit_never_changes_active_rules(root: Path, week: dict[str, Any]) -> None:
    write_memory(root, "reviewer", [rule("r-stale", NOW - timedelta(days=20))])
    agents = get_store().list_agents()
    memories = {agent: stored(MEMORY, agent) for agent in agents}
    assert len([m for m in memories.values() if m]) == 4
    result = revisit()
    assert result.revalidation.stale  # flagged ...
    assert {agent: stored(MEMORY, agent) for agent in agents} == memories  # ... not removed


@pytest.mark.parametrize("kind", [MEMORY, TOMBSTONES])
def test_corrupt_record_stops_the_revisit_before_any_write(
    root: Path, week: dict[str, Any], kind: str
) -> None:
    write_tombstones(root, "reviewer", [tombstone("t-due", NOW - timedelta(days=31))])
    store = get_store()
    _raw.put(store, kind, ("researcher",), '{"rules": "nope", "tombstones": "nope"}')
    before = everything()
    with pytest.raises(CorruptFileError, match="does not match the expected shape") as info:
        revisit()
    where = _raw.where(store, kind, "researcher")
    assert info.value.path == Path(where)
    assert where in str(info.value)
    assert everything() == before  # nothing written: no report, no sweep of another agent


@pytest.mark.files_only("a file that does not parse (a table holds only JSON)")
@pytest.mark.parametrize("name", ["memory_active.json", "memory_tombstones.json"])
def test_corrupt_file_stops_the_revisit_before_any_write(
    root: Path, week: dict[str, Any], name: str
) -> None:
    write_tombstones(root, "reviewer", [tombstone("t-due", NOW - timedelta(days=31))])
    path = root / "state/agents/researcher" / name
    path.write_text('{"rules": [')
    before = tree(root)
    with pytest.raises(CorruptFileError) as info:
        revisit()
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert tree(root) == before  # nothing written: no report, no sweep of another agent


def test_scope_one_agent(root: Path, week: dict[str, Any]) -> None:
    result = revisit("researcher", dry_run=True)
    assert result.agents == ["researcher"]
    report = result.report
    assert report.scope == "researcher"
    assert list(report.agent_summaries) == ["researcher"]
    assert report.events_total == 2 and report.events_recent == 1  # its learnings only
    assert report.by_component == {"research": 1}
    assert [c.agent for c in result.promotions] == ["researcher"]
    assert [s.agent for s in result.tombstone_sweep] == ["researcher"]
    with pytest.raises(InvalidInputError, match="unknown agent 'nobody'") as info:
        revisit("nobody")
    assert "dzine_producer" in str(info.value.hint)
    with pytest.raises(InvalidIdentifierError):
        revisit("../etc")


def test_days_default_to_the_policy_and_must_be_positive(
    root: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock.set(NOW)
    assert revisit(dry_run=True).days == 7
    monkeypatch.setenv("RAYVAULT_LEARNING_REVISIT_INTERVAL_DAYS", "14")
    result = revisit(dry_run=True)
    assert result.days == 14 and result.report.period_days == 14
    assert result.window_start == NOW - timedelta(days=14)
    assert len(result.report.events_by_day) == 15
    for bad in (0, -1):
        with pytest.raises(InvalidInputError, match="days must be"):
            revisit(days=bad)


def test_progress_is_reported_step_by_step(root: Path, clock: Clock) -> None:
    clock.set(NOW)
    calls: list[tuple[str, int, int]] = []
    revisit(progress=lambda step, done, total: calls.append((step, done, total)), dry_run=True)
    total = 3 * len(CONFIGURED) + 7
    assert [done for _, done, _ in calls] == list(range(1, total + 1))
    assert {t for _, _, t in calls} == {total}
    steps = [s for s, _, _ in calls]
    assert steps[0] == "load davinci_editor"
    assert "revalidate researcher" in steps and "promotion scan" in steps
    assert steps[-1] == "sweep scriptwriter"


def test_events_of_an_older_system_count_as_new_patterns(
    root: Path, store: Any, clock: Clock
) -> None:
    clock.set(NOW)
    store.append_events(
        [
            LearningEvent(
                event_id="evt-old",
                timestamp=NOW - timedelta(days=1),
                severity="WARN",
                component="assets",
                symptom="legacy",
            )
        ]
    )
    report = revisit(dry_run=True, store=store).report
    assert report.events_recent == 1
    assert report.failures["events_without_fingerprint"] == 0  # one is computed by the index
    assert report.failures["new_patterns"] == 1
