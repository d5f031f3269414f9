"""The static weekly report in a real headless browser (issue 16 item 9): Debian's chromium
through Playwright, at desktop and phone width. The chart takes the page's width, ids and dates
never wrap mid-token, the page never scrolls sideways on a phone (wide tables scroll inside
their own box), and the cards stack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rayvault.learning.demo import run_demo
from rayvault.learning.revisit import revisit
from rayvault.learning.store import FileStore

from ._browser import WIDTHS, WRAPPED_TOKENS_JS, browser, screenshots

if TYPE_CHECKING:
    from playwright.sync_api import Browser

__all__ = ["browser"]

pytestmark = pytest.mark.slow


def test_the_report_reads_on_a_desktop_and_a_phone(
    browser: Browser, root: Path, tmp_path: Path
) -> None:
    run_demo(root)
    store = FileStore(root)
    try:
        result = revisit(days=14, store=store)
    finally:
        store.close()
    assert result.report_files is not None
    html = root / result.report_files["html"]
    assert html.is_file(), html
    shots = screenshots(tmp_path)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(html.as_uri())
        page.screenshot(path=str(shots / f"report-{width}.png"), full_page=True)
        # Nothing scrolls sideways but the tables, inside their own boxes.
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        for table in page.locator("table").all():
            parent = table.evaluate("t => getComputedStyle(t.parentElement).overflowX")
            assert parent == "auto"
        # The chart spans the content's width (its viewBox scales, its labels are HTML).
        chart = page.locator("#events-by-day").bounding_box()
        body = page.evaluate("document.body.clientWidth")
        assert chart is not None and chart["width"] >= 0.8 * (body - 48)
        assert page.locator("#events-by-day").get_attribute("width") is None
        # Ids and dates on one line each.
        assert page.evaluate(WRAPPED_TOKENS_JS, ".id, .when, .cards dd") == []
        # The cards: one row of several on a desktop, two columns on a phone.
        tops = page.evaluate(
            "[...document.querySelectorAll('.cards > div')].map(d => d.getBoundingClientRect())"
            ".map(r => [Math.round(r.left), Math.round(r.top)])"
        )
        per_row = sum(1 for left, top in tops if top == tops[0][1])
        assert per_row == (2 if width < 600 else 6), (width, per_row)
    assert all(u.startswith("file:") for u in requests), requests
    page.close()
