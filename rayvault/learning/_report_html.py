"""The weekly report as one self-contained HTML page: inline CSS, an inline SVG chart of events
per day by severity, and tables (top patterns, open failures, agents, flags, promotions).

Nothing is fetched when the page is viewed (no script, font, stylesheet or image from
elsewhere), so it can be mailed, archived or opened offline. Every number is also carried in a
``data-*`` attribute, so tests and tools can read the page back and compare it with the JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from rayvault.learning.models import SEVERITIES, WeeklyReport

SEVERITY_COLORS = {"INFO": "#4e79a7", "WARN": "#e8a33d", "FAIL": "#e15759", "BLOCKER": "#7b1e1e"}

_CSS = """
:root { color-scheme: light; --muted: #5f6b7a; --line: #dde3ea; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2733;
  margin: 0 auto; padding: 24px; max-width: 1100px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; border-bottom: 1px solid var(--line);
  padding-bottom: 4px; }
.sub { color: var(--muted); margin: 0 0 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px;
  margin: 0; }
.cards div { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.cards dt { color: var(--muted); font-size: .85em; }
.cards dd { margin: 2px 0 0; font-size: 1.5em; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: .92em; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: .88em ui-monospace, SFMono-Regular, Menlo, monospace; }
.sev { display: inline-block; padding: 0 6px; border-radius: 4px; color: #fff;
  font-size: .8em; font-weight: 600; }
.legend span { margin-right: 14px; font-size: .9em; }
.legend i { display: inline-block; width: 11px; height: 11px; margin-right: 4px;
  border-radius: 2px; vertical-align: -1px; }
.empty { color: var(--muted); font-style: italic; }
pre { background: #f6f8fa; padding: 10px; border-radius: 6px; overflow-x: auto;
  white-space: pre-wrap; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(300px, 1fr)); gap: 16px; }
svg text { font: 11px system-ui, sans-serif; fill: #5f6b7a; }
"""


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _sev(severity: str) -> str:
    color = SEVERITY_COLORS.get(severity, "#777")
    return f'<span class="sev" style="background:{color}">{_e(severity)}</span>'


def duration_text(seconds: float | None) -> str:
    """``3 h 12 min``, ``45 s``, ``2 d 4 h``; ``–`` for None."""
    if seconds is None:
        return "–"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, _ = divmod(total, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"


def _table(
    table_id: str,
    headers: Sequence[tuple[str, bool]],
    rows: Iterable[tuple[dict[str, Any], Sequence[str]]],
    empty: str,
) -> str:
    """A table; ``headers`` are ``(title, numeric)``; each row is ``(data attributes, cells)``
    with the cells already escaped HTML."""
    body = []
    for attrs, cells in rows:
        data = "".join(f' data-{k}="{_e(v)}"' for k, v in attrs.items())
        tds = "".join(
            f'<td class="num">{c}</td>' if numeric else f"<td>{c}</td>"
            for c, (_, numeric) in zip(cells, headers, strict=True)
        )
        body.append(f"<tr{data}>{tds}</tr>")
    if not body:
        return f'<p class="empty" id="{_e(table_id)}">{_e(empty)}</p>'
    head = "".join(
        f'<th class="num">{_e(title)}</th>' if numeric else f"<th>{_e(title)}</th>"
        for title, numeric in headers
    )
    return (
        f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _counts_table(table_id: str, title: str, counts: dict[str, int]) -> str:
    rows = [({"key": k, "count": v}, [_e(k), _e(v)]) for k, v in counts.items()]
    return _table(table_id, [(title, False), ("Events", True)], rows, "No events.")


def render_chart(days: Sequence[dict[str, Any]]) -> str:
    """An inline SVG stacked bar chart of events per day by severity."""
    height, top, bottom, left, right = 220, 16, 34, 40, 10
    width = max(360, min(1060, left + right + 34 * max(1, len(days))))
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([int(d.get("total", 0)) for d in days] + [1])
    slot = plot_w / max(1, len(days))
    bar = max(2.0, slot * 0.7)
    every = max(1, round(len(days) / 12))  # at most about 12 date labels
    parts = [
        f'<svg id="events-by-day" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Events per day by severity">',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" '
        'stroke="#c9d1da"/>',
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end">0</text>',
    ]
    for i, day in enumerate(days):
        x = left + i * slot + (slot - bar) / 2
        y = float(top + plot_h)
        parts.append(f'<g data-date="{_e(day["date"])}" data-total="{_e(day.get("total", 0))}">')
        for severity in SEVERITIES:
            count = int(day.get(severity, 0))
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{SEVERITY_COLORS[severity]}" data-severity="{severity}" '
                f'data-count="{count}"><title>{_e(day["date"])} {severity}: {count}</title></rect>'
            )
        parts.append("</g>")
        if i % every == 0 or i == len(days) - 1:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{_e(str(day["date"])[5:])}</text>'
            )
    parts.append("</svg>")
    legend = "".join(
        f'<span><i style="background:{SEVERITY_COLORS[s]}"></i>{s}</span>' for s in SEVERITIES
    )
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _regressions_table(report: WeeklyReport) -> str:
    """One row per regressed pattern: its template, the verified event it came back after and
    when that was verified, and the regression events of the window."""
    return _table(
        "regressions",
        [
            ("Pattern", False),
            ("Stage", False),
            ("Fixed by", False),
            ("Verified", False),
            ("Back after", False),
            ("Back in", False),
            ("This window", True),
        ],
        (
            (
                {"fingerprint": r["fingerprint"], "regression-of": r["regression_of"]},
                [
                    f"{_e(r['pattern'])}<br><code>{_e(r['fingerprint'])}</code>",
                    _e(r["stage"]),
                    f"<code>{_e(r['regression_of'])}</code>",
                    _e(str(r["verified_at"])[:16].replace("T", " ")),
                    _e(duration_text(r.get("regressed_after_seconds"))),
                    "<br>".join(
                        f"<code>{_e(e['event_id'])}</code> {_sev(e['severity'])} "
                        f"{_e(e.get('video_id') or '–')} ({_e(e['status'])})"
                        for e in r["events"]
                    ),
                    _e(r.get("occurrences_in_window", 0)),
                ],
            )
            for r in report.regressions
        ),
        "No failure came back after its fix was verified in this window.",
    )


def _ineffective_table(report: WeeklyReport) -> str:
    """Rules whose failure recurs while delivered: the counters, the rate against the threshold,
    the recent attempts (the evidence) and the proposal."""
    return _table(
        "ineffective-rules",
        [
            ("Agent", False),
            ("Rule", False),
            ("Sev", False),
            ("Delivered", True),
            ("Recurred", True),
            ("Rate", True),
            ("Recent attempts", False),
            ("Proposal", False),
        ],
        (
            (
                {
                    "agent": r.agent,
                    "rule-id": r.rule_id,
                    "deliveries": r.deliveries,
                    "recurrences": r.recurrences,
                    "rate": r.recurrence_rate,
                },
                [
                    _e(r.agent),
                    f"<code>{_e(r.rule_id)}</code><br>{_e(r.rule)}",
                    _sev(r.severity),
                    _e(r.deliveries),
                    _e(r.recurrences),
                    _e(f"{r.recurrence_rate:.0%} (≥ {r.max_recurrence_rate:.0%})"),
                    "<br>".join(
                        _e(
                            f"{a.at.strftime('%Y-%m-%d %H:%M')} {a.video_id} {a.stage} "
                            f"#{a.attempt}: {a.outcome}{' (recurred)' if a.recurred else ''}"
                        )
                        for a in r.attempts[:_ATTEMPTS_SHOWN]
                    ),
                    _e(r.proposal),
                ],
            )
            for r in report.revalidation.ineffective
        ),
        "No ineffective rules.",
    )


#: Recent attempts shown per ineffective rule in the HTML report (the JSON has them all).
_ATTEMPTS_SHOWN = 5


def render_html(report: WeeklyReport) -> str:
    """The report as a complete HTML document (see the module doc)."""
    generated = report.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    start = report.window_start.strftime("%Y-%m-%d %H:%M UTC") if report.window_start else "?"
    failures = report.failures
    open_failures = report.open_failures
    resolution = report.resolution
    reval = report.revalidation
    median = resolution.get("median_seconds")
    cards = [
        ("events_total", "Events (all time)", report.events_total, None),
        ("events_recent", f"Events (last {report.period_days} days)", report.events_recent, None),
        ("open_failures", "Open FAIL/BLOCKER", open_failures.get("total", 0), None),
        ("regressions", "Regressed patterns", len(report.regressions), None),
        ("new_patterns", "New failure patterns", failures.get("new_patterns", 0), None),
        (
            "recurring_patterns",
            "Recurring failure patterns",
            failures.get("recurring_patterns", 0),
            None,
        ),
        ("resolved", "Resolved in the window", resolution.get("resolved", 0), None),
        ("median_resolution", "Median time to resolution", duration_text(median), median),
        ("stale_rules", "Stale rules", len(reval.stale), None),
        ("conflicts", "Conflicting rule pairs", len(reval.conflicts), None),
        ("ineffective_rules", "Ineffective rules", len(reval.ineffective), None),
        ("promotion_candidates", "SOUL promotion candidates", len(report.promotions), None),
    ]
    card_html = "".join(
        f'<div><dt>{_e(title)}</dt><dd data-field="{key}"'
        + (f' data-seconds="{_e(raw)}"' if key == "median_resolution" else "")
        + f">{_e(value)}</dd></div>"
        for key, title, value, raw in cards
    )

    patterns = _table(
        "top-patterns",
        [
            ("Pattern", False),
            ("Stage", False),
            ("This window", True),
            ("Total", True),
            ("Open", True),
            ("Videos", True),
            ("Severities", False),
            ("First seen", False),
            ("Last seen", False),
        ],
        (
            (
                {
                    "fingerprint": p.fingerprint,
                    "recent": p.recent_count or 0,
                    "count": p.count,
                    "open": p.open_count,
                    "videos": p.video_count,
                },
                [
                    f"{_e(p.pattern)}<br><code>{_e(p.fingerprint)}</code>",
                    _e(p.stage),
                    _e(p.recent_count or 0),
                    _e(p.count),
                    _e(p.open_count),
                    _e(p.video_count),
                    " ".join(f"{_sev(s)} {n}" for s, n in p.severities.items()),
                    _e(p.first_seen.strftime("%Y-%m-%d")),
                    _e(p.last_seen.strftime("%Y-%m-%d")),
                ],
            )
            for p in report.top_patterns
        ),
        "No pattern occurred more than once.",
    )
    new_patterns = _table(
        "new-patterns",
        [("Pattern", False), ("Stage", False), ("This window", True)],
        (
            (
                {"fingerprint": p["fingerprint"], "recent": p["recent_count"]},
                [_e(p["pattern"]), _e(p["stage"]), _e(p["recent_count"])],
            )
            for p in failures.get("new", [])
        ),
        "No new failure pattern in this window.",
    )
    open_list = _table(
        "open-failures",
        [
            ("Event", False),
            ("When", False),
            ("Sev", False),
            ("Component", False),
            ("Video", False),
            ("Symptom", False),
        ],
        (
            (
                {"event-id": e["event_id"], "severity": e["severity"]},
                [
                    f"<code>{_e(e['event_id'])}</code>",
                    _e(str(e["timestamp"])[:16].replace("T", " ")),
                    _sev(e["severity"]),
                    _e(e["component"]),
                    _e(e.get("video_id") or "–"),
                    _e(e["symptom"]),
                ],
            )
            for e in open_failures.get("newest", [])
        ),
        "No open FAIL or BLOCKER event.",
    )
    agent_keys = [
        ("active_rules", "Active rules"),
        ("critical_rules", "FAIL/BLOCKER"),
        ("tombstones", "Tombstones"),
        ("rules_added", "Added"),
        ("rules_evicted", "Evicted"),
        ("rules_tombstoned", "Tombstoned"),
        ("stale_rules", "Stale"),
        ("conflicts", "Conflicts"),
        ("ineffective_rules", "Ineffective"),
        ("promotion_candidates", "Promotable"),
    ]
    agents = _table(
        "agents",
        [("Agent", False), *((title, True) for _, title in agent_keys)],
        (
            (
                {"agent": name, **{k.replace("_", "-"): s.get(k, 0) for k, _ in agent_keys}},
                [_e(name), *(_e(s.get(k, 0)) for k, _ in agent_keys)],
            )
            for name, s in report.agent_summaries.items()
        ),
        "No agents.",
    )
    stale = _table(
        "stale-rules",
        [("Agent", False), ("Rule", False), ("Sev", False), ("Applied", True), ("Why", False)],
        (
            (
                {"agent": r.agent, "rule-id": r.rule_id},
                [
                    _e(r.agent),
                    f"<code>{_e(r.rule_id)}</code><br>{_e(r.rule)}",
                    _sev(r.severity),
                    _e(r.applied_count),
                    _e(r.reason),
                ],
            )
            for r in reval.stale
        ),
        "No stale rules.",
    )
    conflicts = _table(
        "conflicts",
        [("Agent", False), ("Rules", False), ("Kind", False), ("Why", False)],
        (
            (
                {"agent": c.agent, "rule-ids": " ".join(c.rule_ids), "kind": c.kind},
                [
                    _e(c.agent),
                    "<br>".join(f"<code>{_e(i)}</code>" for i in c.rule_ids),
                    _e(c.kind),
                    _e(c.reason),
                ],
            )
            for c in reval.conflicts
        ),
        "No conflicting rules.",
    )
    promotions = _table(
        "promotions",
        [("Agent", False), ("Rule", False), ("Applied", True), ("SOUL section", False)],
        (
            (
                {
                    "agent": c.agent,
                    "rule-id": c.rule_id,
                    "applied": c.applied_count,
                    "promoted": str(c.promoted).lower(),
                },
                [
                    _e(c.agent),
                    f"<code>{_e(c.rule_id)}</code>"
                    + (" (already in the SOUL file)" if c.promoted else ""),
                    _e(c.applied_count),
                    f"<details><summary>{_e(c.rule)}</summary><pre>{_e(c.soul_section)}</pre>"
                    f"<p>Promote with <code>rayvault-learn soul promote {_e(c.agent)} "
                    f"{_e(c.rule_id)}</code></p></details>",
                ],
            )
            for c in report.promotions
        ),
        "No rule reached the promotion threshold.",
    )
    changes = _table(
        "rule-changes",
        [("Change", False), ("When", False), ("Agent", False), ("Rule", False), ("Sev", False)],
        (
            (
                {"change": kind, "rule-id": item["rule_id"]},
                [
                    _e(kind),
                    _e(str(item["at"])[:16].replace("T", " ")),
                    _e(item["agent"]),
                    f"<code>{_e(item['rule_id'])}</code>",
                    _sev(str(item["severity"])),
                ],
            )
            for kind in ("added", "evicted", "tombstoned")
            for item in report.rules.get(kind, [])
        ),
        "No rule was added, evicted or tombstoned in this window.",
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Learning report: {_e(report.scope)}, {_e(generated)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Weekly learning report</h1>
<p class="sub">Scope <strong data-field="scope">{_e(report.scope)}</strong> ·
window of <span data-field="period_days">{_e(report.period_days)}</span> days, {_e(start)} →
<span data-field="generated_at">{_e(generated)}</span></p>
<dl class="cards">{card_html}</dl>

<h2>Events per day by severity</h2>
{render_chart(report.events_by_day)}

<div class="grid2">
<section><h2>By severity (window)</h2>{_counts_table("by-severity", "Severity", report.by_severity)}
</section>
<section><h2>By status (window)</h2>{_counts_table("by-status", "Status", report.by_status)}
</section>
<section><h2>By component (window)</h2>
{_counts_table("by-component", "Component", report.by_component)}</section>
</div>

<h2>Top recurring patterns</h2>
{patterns}

<h2>New failure patterns</h2>
<p class="sub"><span data-field="new_events">{_e(failures.get("new_events", 0))}</span> events of
new patterns, <span data-field="recurring_events">{_e(failures.get("recurring_events", 0))}</span>
of patterns seen before the window.</p>
{new_patterns}

<h2>Open FAIL and BLOCKER events (newest)</h2>
{open_list}

<h2>Regressions: failures back after their fix was verified</h2>
{_regressions_table(report)}

<h2>Agents</h2>
{agents}

<h2>Rules added, evicted and tombstoned in the window</h2>
{changes}

<h2>Revalidation: stale rules</h2>
{stale}

<h2>Revalidation: conflicting rules</h2>
{conflicts}

<h2>Revalidation: ineffective rules (their failure recurs while delivered)</h2>
{_ineffective_table(report)}

<h2>SOUL promotion candidates</h2>
{promotions}
</body>
</html>
"""
