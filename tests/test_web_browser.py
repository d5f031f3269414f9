"""The web app as a person uses it (issue 18): real headless chromium (Debian's, through
Playwright's ``executable_path``) against a real uvicorn server on the demo's data root. Each
page is screenshot at desktop and phone width into ``$RAYVAULT_SCREENSHOTS`` (else tmp_path)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")

from rayvault.learning import create_event, load_active_memory, load_tombstones
from rayvault.learning.demo import run_demo
from rayvault.learning.soul import insert_section, promotion_section
from rayvault.learning.store import FileStore
from rayvault.web.app import Settings, create_app

from ._browser import WIDTHS, WRAPPED_TOKENS_JS, browser, outward_address, running, screenshots
from .conftest import event_kwargs

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

expect = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").expect
__all__ = ["browser"]  # the fixture, imported for the tests of this module

pytestmark = pytest.mark.slow
HOSTILE = "<script>alert(1)</script> broke the render"
TOKEN = "browser-test-token-0123456789"


@dataclass
class Site:
    url: str
    root: Path
    store: FileStore
    shots: Path
    hostile: str


@pytest.fixture
def site(root: Path, tmp_path: Path) -> Iterator[Site]:
    run_demo(root)
    store = FileStore(root)
    hostile = create_event(
        **event_kwargs(verification="", symptom=HOSTILE, video_id="v900"),  # type: ignore[arg-type]
        store=store,
    )
    app = create_app(Settings(store=store, user="reviewer"))
    with running(app) as port:
        yield Site(f"http://127.0.0.1:{port}", root, store, screenshots(tmp_path), hostile.event_id)
    store.close()


def shoot(page: Page, site: Site, name: str) -> None:
    """A screenshot of the page at each width, checking it fits a phone's width and that no
    id or date wraps mid-token."""
    url = page.url
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(url)
        page.screenshot(path=str(site.shots / f"web-{name}-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, f"{name} at {width}px: the page is {overflow}px wide"
        wrapped = page.evaluate(WRAPPED_TOKENS_JS, ".id, .when")
        assert wrapped == [], f"{name} at {width}px: wrapped tokens {wrapped[:5]}"
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def test_a_review_in_the_browser(browser: Browser, site: Site) -> None:
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))

    # The overview: the live report, linking into the pages.
    page.goto(site.url + "/")
    assert page.locator("h1").first.inner_text().startswith("Weekly learning report")
    assert int(page.locator('[data-field="events_total"]').inner_text()) >= 1
    shoot(page, site, "overview")
    page.select_option("select[name=days]", "30")
    page.click("text=Show")
    page.wait_for_url(re.compile(r"days=30"))
    assert page.locator('[data-field="period_days"]').inner_text() == "30"

    # Events, filtered through htmx (the table swaps, the URL follows).
    page.click("nav >> text=Events")
    total = int(page.locator("#event-total").get_attribute("data-total") or 0)
    page.fill("input[name=video]", "v900")
    page.click("#event-filters button[type=submit]")
    page.wait_for_url(re.compile(r"video=v900"))
    page.wait_for_function("document.querySelectorAll('#events tbody tr').length === 1")
    assert int(page.locator("#event-total").get_attribute("data-total") or 0) < total
    shoot(page, site, "events")

    # The event: the hostile symptom is text, not a script.
    page.click(f"a[href='/events/{site.hostile}']")
    page.wait_for_url(re.compile(site.hostile))
    assert page.locator("#event-symptom").inner_text() == HOSTILE
    assert dialogs == []
    shoot(page, site, "event")

    # Resolve it.
    page.fill("textarea[name=verification]", "re-rendered v900, checked by eye")
    page.click("#resolve-button")
    page.wait_for_selector(".done")
    assert page.locator("#event-status").inner_text() == "verified"
    assert page.locator("#resolved-by").inner_text() == "reviewer"
    stored = site.store.get_event(site.hostile)
    assert stored is not None and stored.status == "verified"
    assert stored.get("resolved_by") == "reviewer"

    # Patterns and the gate.
    page.click("nav >> text=Patterns")
    page.wait_for_url(re.compile(r"/patterns$"))
    page.wait_for_selector("#patterns tbody tr")  # a click waits for the commit, not the load
    shoot(page, site, "patterns")
    page.click("nav >> text=Gate")
    page.wait_for_url(re.compile(r"/gate$"))
    page.wait_for_selector("#gate-matrix tbody tr")
    shoot(page, site, "gate")
    page.locator("#gate-matrix td[data-outcome] a").first.click()
    expect(page.locator("#gate-checks tbody tr")).to_have_count(4)  # retried until the page is in
    shoot(page, site, "gate-cell")

    # An agent: tombstone one rule, promote another (checking the SOUL file's bytes).
    agent = next(a for a in site.store.list_agents() if len(load_active_memory(a).rules) >= 2)
    rules = load_active_memory(agent).rules
    doomed, kept = rules[0], rules[1]
    page.goto(f"{site.url}/agents/{agent}")
    shoot(page, site, "agent")
    row = page.locator(f"#rule-{doomed.rule_id}")
    row.locator("input[name=reason]").fill("superseded by the new camera rig")
    row.locator("button", has_text="Tombstone").click()
    page.wait_for_selector(".done")
    stones = load_tombstones(agent).tombstones
    assert stones[-1].rule_id == doomed.rule_id
    assert stones[-1].reason == "superseded by the new camera rig"
    assert stones[-1].get("tombstoned_by") == "reviewer"
    expect(page.locator(f"#tombstone-list tr[data-rule-id='{doomed.rule_id}']")).to_have_count(1)

    soul = site.store.docs.find_soul(agent)
    assert soul is not None
    before = soul.read_bytes()
    expected = insert_section(before.decode(), kept.rule_id, promotion_section(kept, agent))
    page.locator(f"#rule-{kept.rule_id} a.promote").click()
    diff = page.locator("#soul-diff").inner_text()
    assert f"+<!-- rayvault:rule {kept.rule_id} -->" in diff
    shoot(page, site, "promote")
    assert soul.read_bytes() == before  # showing the diff wrote nothing
    page.click("#promote-button")
    page.wait_for_selector(".done")
    assert soul.read_bytes() == expected.encode()
    assert f"<!-- rayvault:rule {kept.rule_id} -->" in page.locator("#soul-learned").inner_text()

    # Nothing was asked of another site.
    assert all(u.startswith(site.url) for u in requests), [
        u for u in requests if not u.startswith(site.url)
    ]
    page.close()


def test_a_post_without_the_csrf_token_is_refused(browser: Browser, site: Site) -> None:
    page = browser.new_page()
    page.goto(f"{site.url}/events/{site.hostile}")
    # The form, with its CSRF field removed, submitted as a person would.
    page.evaluate("document.querySelector('input[name=csrf]').remove()")
    page.fill("textarea[name=verification]", "sneaky")
    with page.expect_response(re.compile(r"/resolve$")) as answer:
        page.click("#resolve-button")
    assert answer.value.status == 403
    assert "CSRF" in page.locator("#error-message").inner_text()
    stored = site.store.get_event(site.hostile)
    assert stored is not None and not stored.resolved
    page.screenshot(path=str(site.shots / "web-csrf-refused-1280.png"))
    page.close()


def test_a_non_local_request_without_the_token_is_refused(
    browser: Browser, root: Path, tmp_path: Path
) -> None:
    address = outward_address()
    if address is None:
        pytest.skip("this machine has no address but loopback to be a non-local client from")
    run_demo(root)
    store = FileStore(root)
    app = create_app(Settings(store=store, user="reviewer", token=TOKEN))
    try:
        with running(app, host="0.0.0.0") as port:
            page = browser.new_page()
            refused = page.goto(f"http://{address}:{port}/")
            assert refused is not None and refused.status == 401
            assert "RAYVAULT_WEB_TOKEN" in page.content()
            opened = page.goto(f"http://{address}:{port}/?token={TOKEN}")
            assert opened is not None and opened.status == 200
            assert "token=" not in page.url  # the token moved to a cookie
            assert page.goto(f"http://{address}:{port}/events").status == 200  # type: ignore[union-attr]
            local = page.goto(f"http://127.0.0.1:{port}/gate")
            assert local is not None and local.status == 200
            page.close()
    finally:
        store.close()
