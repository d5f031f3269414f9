"""The weekly report as one self-contained HTML page: inline CSS, an inline SVG chart of events
per day by severity, and tables (top patterns, open failures, agents, flags, promotions).

The page is rendered from the Jinja2 templates in ``rayvault/learning/templates`` (package data),
which the web app (``rayvault.web``) shares for its overview. Jinja2 is imported when a page is
rendered, never when this module is imported: the gate and ``--help`` do not pay for it.

Nothing is fetched when the page is viewed (no script, font, stylesheet or image from
elsewhere), so it can be mailed, archived or opened offline. Every number is also carried in a
``data-*`` attribute, so tests and tools can read the page back and compare it with the JSON.

Words the page uses in one meaning throughout, cards and tables alike:

* **open**: not verified and not archived, at any date (a state, not a window);
* **recurring**: a pattern active in the window that was first seen before it (its opposite is
  **new**); a pattern with two or more events is **repeated**.
* **Median time to resolution** counts the events resolved in the window *after* they were
  created; events created already verified (resolved at once, 0 s) are excluded and counted
  beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from rayvault.learning.models import SEVERITIES, WeeklyReport

if TYPE_CHECKING:
    import jinja2

SEVERITY_COLORS = {"INFO": "#4e79a7", "WARN": "#e8a33d", "FAIL": "#e15759", "BLOCKER": "#7b1e1e"}

#: Recent attempts shown per ineffective rule in the HTML report (the JSON has them all).
ATTEMPTS_SHOWN = 5
#: At most this many date labels under the chart (a phone-width page still reads them).
_DATE_LABELS = 7


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


def short_time(value: object) -> str:
    """``2026-02-19 14:05`` from a datetime or an ISO text."""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value or "")
    return text[:16].replace("T", " ")


def chart(days: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The geometry of the stacked bar chart of events per day by severity, in a viewBox of 100
    units per day slot and 100 high: the SVG is stretched to the page's width (its bars are
    rectangles, which scale cleanly), and the labels are HTML beside it, so they keep their
    size on any screen."""
    n = max(1, len(days))
    peak = max([int(d.get("total", 0)) for d in days] + [1])
    every = max(1, math.ceil(len(days) / _DATE_LABELS))
    columns = []
    for i, day in enumerate(days):
        y = 100.0
        bars = []
        for severity in SEVERITIES:
            count = int(day.get(severity, 0))
            if not count:
                continue
            h = 100.0 * count / peak
            y -= h
            bars.append(
                {
                    "severity": severity,
                    "count": count,
                    "y": round(y, 2),
                    "h": round(h, 2),
                    "color": SEVERITY_COLORS[severity],
                }
            )
        columns.append(
            {
                "date": str(day["date"]),
                "total": int(day.get("total", 0)),
                "x": i * 100 + 15,
                "bars": bars,
                "label": str(day["date"])[5:] if i % every == 0 else "",
            }
        )
    return {"width": n * 100, "peak": peak, "columns": columns}


@cache
def environment() -> jinja2.Environment:
    """The report's Jinja2 environment (autoescaped, strict about undefined names)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rayvault.learning", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    add_helpers(env)
    return env


def add_helpers(env: jinja2.Environment) -> None:
    """The filters and globals the report templates use (the web app adds them to its own
    environment, which loads these templates too)."""
    env.filters["duration"] = duration_text
    env.filters["short_time"] = short_time
    env.filters["day"] = lambda value: short_time(value)[:10]
    env.filters["pct"] = lambda value: f"{value:.0%}"
    env.globals["SEVERITIES"] = SEVERITIES
    env.globals["SEVERITY_COLORS"] = SEVERITY_COLORS
    env.globals["ATTEMPTS_SHOWN"] = ATTEMPTS_SHOWN
    env.globals["report_chart"] = chart


def render_html(report: WeeklyReport) -> str:
    """The report as a complete, self-contained HTML document (see the module doc)."""
    return environment().get_template("report.html").render(report=report, links=None)
