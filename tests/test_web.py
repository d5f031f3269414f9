"""The web app (issue 18) through Starlette's TestClient: every page, every action, and every
refusal (CSRF, token, read-only, bad ids, GET on an action), on both stores."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the web extra is not installed")
from starlette.testclient import TestClient

from rayvault.cli import main
from rayvault.learning import (
    create_event,
    learning_gate,
    load_active_memory,
    load_tombstones,
    log_error,
    promote_to_learning,
    resolve_event,
    update_event,
)
from rayvault.learning.models import LearningEvent
from rayvault.learning.soul import insert_section, promotion_section
from rayvault.learning.store import Store
from rayvault.web import security
from rayvault.web.app import Settings, create_app

from .conftest import Clock, event_kwargs

AGENT = "dzine_producer"
LOCAL = ("127.0.0.1", 50000)
TOKEN = "s3cret-token-for-the-tests"


def fail(
    store: Store, symptom: str = "Product shape wrong in 4 images", **more: Any
) -> LearningEvent:
    fields = event_kwargs(verification="", symptom=symptom, **more)
    return create_event(**fields, store=store)  # type: ignore[arg-type]


@pytest.fixture
def settings(store: Store) -> Settings:
    return Settings(store=store, user="tester")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), client=LOCAL, follow_redirects=False) as c:
        yield c


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)


# -- pages ---------------------------------------------------------------------------------------
def test_every_page_renders(client: TestClient, store: Store, souls: Path, clock: Clock) -> None:
    event = fail(store)
    learning_gate("v042", "assets", store=store)
    assert event.fingerprint and event.rule_id
    pages = [
        "/",
        "/?days=30",
        "/events",
        f"/events/{event.event_id}",
        "/patterns",
        f"/patterns/{event.fingerprint}",
        "/agents",
        f"/agents/{AGENT}",
        f"/agents/{AGENT}/rules/{event.rule_id}/promote",
        "/gate",
        "/gate/v042/assets",
        "/static/htmx.min.js",
    ]
    state = store.load_gate_state("v042")
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, (url, response.text[:500])
    # The pages wrote nothing: no report (the overview is a dry run), no gate run recorded.
    assert store.list_weekly_reports() == []
    assert store.load_gate_state("v042") == state
    page = client.get("/").text
    assert 'src="/static/htmx.min.js"' in page
    # Nothing from another site: no absolute URL in a src or href.
    for found in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert not found.startswith(("http:", "https:", "//")), found
    headers = client.get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]


def test_the_overview_is_the_live_report_with_a_chosen_window(
    client: TestClient, store: Store, clock: Clock
) -> None:
    fail(store)
    clock.advance(days=10)
    fail(store, "Voice-over clipped at the end", component="tts", agent="publisher")
    week = client.get("/").text
    month = client.get("/?days=30").text
    assert 'data-field="period_days">7<' in week and 'data-field="period_days">30<' in month
    assert 'data-field="events_total">2<' in week
    assert 'data-field="events_recent">1<' in week and 'data-field="events_recent">2<' in month
    # Ids link into the app's pages (the static report has no links).
    assert 'href="/events/le-' in week or 'href="/events?pattern=' in week
    assert client.get("/?days=0").status_code == 400
    assert client.get("/?days=x").status_code == 400
    assert client.get("/?scope=../x").status_code == 400


def test_events_filter_and_escape(client: TestClient, store: Store, clock: Clock) -> None:
    hostile = fail(store, "<script>alert(1)</script> in render", video_id="v1")
    other = fail(store, "Voice-over clipped", severity="WARN", video_id="v2")
    page = client.get("/events?severity=WARN").text
    assert other.event_id in page and hostile.event_id not in page
    page = client.get("/events?video=v1").text
    assert hostile.event_id in page and other.event_id not in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    event_page = client.get(f"/events/{hostile.event_id}").text
    assert "<script>alert(1)</script>" not in event_page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in event_page
    # htmx asks for the results only.
    partial = client.get("/events?video=v1", headers={"HX-Request": "true"}).text
    assert '<div id="results">' in partial and "<html" not in partial
    assert "<nav" not in partial and hostile.event_id in partial
    for bad in ("/events?severity=LOUD", "/events?video=../x", "/events?date_from=yesterday"):
        assert client.get(bad).status_code == 400, bad


def test_event_list_pages_cover_every_event_once(
    client: TestClient, store: Store, clock: Clock
) -> None:
    """Pages follow a keyset (timestamp, then the events of that timestamp already shown), so
    events sharing a timestamp are neither skipped nor repeated."""
    made = []
    for n in range(7):
        made.append(fail(store, f"Failure number {n}", video_id=f"v{n}").event_id)
        if n % 3 == 2:
            clock.advance(minutes=1)
    seen: list[str] = []
    url: str | None = "/events?limit=2"
    pages = 0
    while url:
        page = client.get(url).text
        seen += re.findall(r'<tr data-event-id="([^"]+)"', page)
        more = re.search(r'id="older" href="([^"]+)"', page)
        url = more.group(1).replace("&amp;", "&") if more else None
        pages += 1
    assert pages == 4
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    assert seen[0] == made[-1]  # newest first


def test_event_page_shows_rule_and_linked_errors(
    client: TestClient, store: Store, clock: Clock
) -> None:
    entry = log_error("v042", "assets", "ValueError: product shape wrong", store=store)
    promoted = promote_to_learning(
        entry.id, root_cause="angle changed", fix="use the 3/4 angle", agent=AGENT, store=store
    )
    event = promoted.event
    page = client.get(f"/events/{event.event_id}").text
    assert f'data-error-id="{entry.id}"' in page
    assert event.rule_id is not None and event.rule_id in page
    assert 'id="resolve-button"' in page


def test_event_page_shows_versions_newest_first(
    client: TestClient, store: Store, clock: Clock
) -> None:
    kwargs = event_kwargs()
    del kwargs["verification"]
    event = create_event(**kwargs, store=store)  # type: ignore[arg-type]
    clock.advance(minutes=1)
    update_event(event.event_id, root_cause="the angle, again", store=store)
    clock.advance(minutes=1)
    resolve_event(event.event_id, "checked 5/5 renders", store=store)
    count = len(store.event_versions(event.event_id))
    page = client.get(f"/events/{event.event_id}").text
    assert "this page shows the latest" not in page
    table = page[
        page.index('id="event-versions"') : page.index(
            "</table>", page.index('id="event-versions"')
        )
    ]
    rows = re.findall(r'<tr data-version="(\d+)">(.*?)</tr>', table, re.S)
    assert [int(n) for n, _ in rows] == list(range(count, 0, -1))  # newest first
    newest, update, first = rows[0][1], rows[1][1], rows[-1][1]
    assert "<td>verified</td>" in newest and "resolved_at" in newest and "verification" in newest
    assert "root_cause" in update and "status" not in update and "2026-02-19 12:01" in update
    assert "first recorded" in first


def test_unknown_and_malformed_ids(client: TestClient, store: Store) -> None:
    assert client.get("/events/le-20260101T000000Z-0000000000").status_code == 404
    assert client.get("/events/bad%20id").status_code == 400
    assert client.get("/events/..%2F..%2Fetc").status_code in (400, 404)
    assert client.get("/agents/nobody").status_code == 404
    assert client.get("/agents/bad%20agent").status_code == 400
    assert client.get("/gate/v1/nostage").status_code == 400
    assert client.get("/patterns/nothing-like-this").status_code == 404


# -- actions -------------------------------------------------------------------------------------
def test_resolve_one_records_who(client: TestClient, store: Store, clock: Clock) -> None:
    event = fail(store)
    token = csrf_of(client.get(f"/events/{event.event_id}").text)
    response = client.post(
        f"/events/{event.event_id}/resolve", data={"csrf": token, "verification": "re-ran v042"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/events/{event.event_id}?done=resolved"
    stored = store.get_event(event.event_id)
    assert stored is not None and stored.status == "verified"
    assert stored.verification == "re-ran v042" and stored.get("resolved_by") == "tester"
    page = client.get(response.headers["location"]).text
    assert "Resolved." in page and 'id="resolved-by">tester<' in page
    # Resolving needs a verification text: the library's error, shown as a 400.
    other = fail(store, "Another one")
    refused = client.post(f"/events/{other.event_id}/resolve", data={"csrf": token})
    assert refused.status_code == 400 and "verification" in refused.text


def test_post_without_or_with_a_wrong_csrf_token_is_refused(
    client: TestClient, store: Store
) -> None:
    event = fail(store)
    for data in ({"verification": "x"}, {"verification": "x", "csrf": "forged"}):
        response = client.post(f"/events/{event.event_id}/resolve", data=data)
        assert response.status_code == 403 and "CSRF" in response.text
    stored = store.get_event(event.event_id)
    assert stored is not None and not stored.resolved
    # The header works as the field does (htmx sends it).
    token = csrf_of(client.get(f"/events/{event.event_id}").text)
    ok = client.post(
        f"/events/{event.event_id}/resolve",
        data={"verification": "x"},
        headers={"X-CSRF-Token": token},
    )
    assert ok.status_code == 303


def test_a_cross_site_post_is_refused(client: TestClient, store: Store) -> None:
    event = fail(store)
    token = csrf_of(client.get(f"/events/{event.event_id}").text)
    response = client.post(
        f"/events/{event.event_id}/resolve",
        data={"csrf": token, "verification": "x"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    stored = store.get_event(event.event_id)
    assert stored is not None and not stored.resolved


def test_no_action_follows_a_get(client: TestClient, store: Store, souls: Path) -> None:
    event = fail(store)
    soul = souls / AGENT / "SOUL.md"
    before = soul.read_bytes()
    for url in (
        f"/events/{event.event_id}/resolve?verification=x",
        f"/agents/{AGENT}/rules/{event.rule_id}/tombstone?reason=x",
        "/gate/v042/assets/ack?note=x",
    ):
        assert client.get(url).status_code in (404, 405), url
    client.get(f"/agents/{AGENT}/rules/{event.rule_id}/promote")  # the diff, not the write
    assert soul.read_bytes() == before
    stored = store.get_event(event.event_id)
    assert stored is not None and not stored.resolved
    assert [r.rule_id for r in load_active_memory(AGENT, store=store).rules] == [event.rule_id]


def test_batch_resolve_confirms_what_changes(client: TestClient, store: Store) -> None:
    a = fail(store, "Shape wrong", video_id="v1")
    b = fail(store, "Shape wrong again", video_id="v2")
    keep = fail(store, "Only a warning", severity="WARN", video_id="v3")
    listing = client.get("/events?severity=FAIL").text
    assert 'id="batch-link" href="/events/resolve?severity=FAIL"' in listing
    confirm = client.get("/events/resolve?severity=FAIL").text
    assert 'id="batch-count">2<' in confirm
    assert a.event_id in confirm and b.event_id in confirm and keep.event_id not in confirm
    token = csrf_of(confirm)
    # The selection changed since it was confirmed: nothing is written.
    stale = client.post(
        "/events/resolve",
        data={"csrf": token, "severity": "FAIL", "count": "1", "verification": "fixed"},
    )
    assert stale.status_code == 409
    for e in (a, b):
        current = store.get_event(e.event_id)
        assert current is not None and not current.resolved
    done = client.post(
        "/events/resolve",
        data={"csrf": token, "severity": "FAIL", "count": "2", "verification": "fixed"},
    )
    assert (
        done.status_code == 303 and done.headers["location"] == "/events?severity=FAIL&done=batch"
    )
    for e in (a, b):
        current = store.get_event(e.event_id)
        assert current is not None and current.status == "verified"
        assert current.get("resolved_by") == "tester"
    untouched = store.get_event(keep.event_id)
    assert untouched is not None and not untouched.resolved
    # A filter resolve_events does not take offers no batch.
    assert "batch-link" not in client.get("/events?status=open").text
    assert client.get("/events/resolve?status=open").status_code == 400


def test_tombstone_a_rule(client: TestClient, store: Store, clock: Clock) -> None:
    event = fail(store)
    page = client.get(f"/agents/{AGENT}").text
    token = csrf_of(page)
    url = f"/agents/{AGENT}/rules/{event.rule_id}/tombstone"
    assert client.post(url, data={"csrf": token, "reason": "  "}).status_code == 400
    response = client.post(url, data={"csrf": token, "reason": "stale since the new camera"})
    assert response.status_code == 303
    [stone] = load_tombstones(AGENT, store=store).tombstones
    assert stone.rule_id == event.rule_id and stone.reason == "stale since the new camera"
    assert stone.get("tombstoned_by") == "tester" and stone.tombstoned_at == clock.now
    assert load_active_memory(AGENT, store=store).rules == []
    page = client.get(f"/agents/{AGENT}").text
    assert "stale since the new camera" in page and ">tester<" in page
    assert client.post(url, data={"csrf": token, "reason": "again"}).status_code == 404


def test_promote_shows_the_exact_diff_then_writes_it(
    client: TestClient, store: Store, souls: Path, clock: Clock
) -> None:
    event = fail(store)
    soul = souls / AGENT / "SOUL.md"
    before = soul.read_text()
    rule = next(r for r in load_active_memory(AGENT, store=store).rules)
    expected = insert_section(before, rule.rule_id, promotion_section(rule, AGENT))
    page = client.get(f"/agents/{AGENT}/rules/{event.rule_id}/promote").text
    assert f"+&lt;!-- rayvault:rule {rule.rule_id} --&gt;" in page
    assert f"--- a/agents/{AGENT}/SOUL.md" in page
    response = client.post(
        f"/agents/{AGENT}/rules/{event.rule_id}/promote", data={"csrf": csrf_of(page)}
    )
    assert response.status_code == 303
    assert soul.read_text() == expected
    [after] = load_active_memory(AGENT, store=store).rules
    assert after.get("promoted_by") == "tester"
    assert "No change" in client.get(f"/agents/{AGENT}/rules/{event.rule_id}/promote").text


def test_acknowledge_a_gate_change(
    client: TestClient, store: Store, souls: Path, clock: Clock
) -> None:
    learning_gate("v042", "assets", store=store)
    soul = souls / AGENT / "SOUL.md"
    soul.write_text(soul.read_text() + "\n- A new hand-written rule.\n")
    page = client.get("/gate/v042/assets").text
    assert 'data-check="check_diff_soul" data-outcome="deny"' in page
    response = client.post("/gate/v042/assets/ack", data={"csrf": csrf_of(page), "note": "read it"})
    assert response.status_code == 303
    state = store.load_gate_state("v042")
    assert state is not None and state.acks[-1]["by"] == "tester"
    assert state.acks[-1]["note"] == "read it"
    after = client.get("/gate/v042/assets").text
    assert 'data-check="check_diff_soul" data-outcome="pass"' in after
    matrix = client.get("/gate").text
    assert 'data-video="v042"' in matrix and 'data-stage="assets" data-outcome="pass"' in matrix


def test_read_only_serves_pages_without_actions(store: Store, souls: Path) -> None:
    event = fail(store)
    settings = Settings(store=store, user="tester", read_only=True)
    app = create_app(settings)
    with TestClient(app, client=LOCAL, follow_redirects=False) as c:
        page = c.get(f"/events/{event.event_id}").text
        assert "resolve-button" not in page and "read-only" in page
        assert '/tombstone"' not in c.get(f"/agents/{AGENT}").text
        response = c.post(
            f"/events/{event.event_id}/resolve",
            data={"csrf": settings.csrf, "verification": "x"},
        )
        assert response.status_code == 403 and "read-only" in response.text
    stored = store.get_event(event.event_id)
    assert stored is not None and not stored.resolved


def test_user_header_behind_a_proxy(store: Store) -> None:
    event = fail(store)
    settings = Settings(store=store, user="fallback", user_header="X-Forwarded-User")
    with TestClient(create_app(settings), client=LOCAL, follow_redirects=False) as c:
        c.post(
            f"/events/{event.event_id}/resolve",
            data={"csrf": settings.csrf, "verification": "x"},
            headers={"X-Forwarded-User": "proxy-ana"},
        )
    stored = store.get_event(event.event_id)
    assert stored is not None and stored.get("resolved_by") == "proxy-ana"


# -- the token -----------------------------------------------------------------------------------
def test_a_non_local_request_needs_the_token(store: Store) -> None:
    settings = Settings(store=store, user="tester", token=TOKEN)
    app = create_app(settings)
    with TestClient(app, client=("203.0.113.9", 40000), follow_redirects=False) as remote:
        assert remote.get("/").status_code == 401
        assert remote.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert remote.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        opened = remote.get(f"/events?severity=FAIL&token={TOKEN}")
        assert opened.status_code == 303 and opened.headers["location"] == "/events?severity=FAIL"
        assert security.TOKEN_COOKIE in opened.headers["set-cookie"]
        assert "httponly" in opened.headers["set-cookie"].lower()
        assert remote.get("/events").status_code == 200  # the cookie now
        assert remote.post("/events/resolve", data={}).status_code in (401, 403)
    with TestClient(app, client=LOCAL) as local:
        assert local.get("/").status_code == 200


def test_bind_refuses_a_public_host_without_a_token() -> None:
    security.check_bind("127.0.0.1", None)
    security.check_bind("::1", None)
    security.check_bind("localhost", None)
    with pytest.raises(security.BindRefused, match="RAYVAULT_WEB_TOKEN"):
        security.check_bind("0.0.0.0", None)
    with pytest.raises(security.BindRefused, match="too short"):
        security.check_bind("0.0.0.0", "short")
    security.check_bind("0.0.0.0", TOKEN)


def test_serve_refuses_a_public_host_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(security.TOKEN_ENV, raising=False)
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0" in err and "RAYVAULT_WEB_TOKEN" in err


@pytest.mark.slow
def test_without_the_web_extra_serve_says_how_to_install_it_and_the_core_works(
    root: Path,
) -> None:
    """The extra's packages blocked: ``serve`` exits 1 with the install line, and the other
    commands (and the static report) work without importing Starlette."""
    probe = """
import sys
for name in ("starlette", "uvicorn", "python_multipart"):
    sys.modules[name] = None
from rayvault.cli import main
code = main(["serve"])
code2 = main(["--root", sys.argv[1], "events", "list", "--json"])
from rayvault.learning import revisit
revisit(store=None)
print("codes", code, code2, "starlette" in {m.split(".")[0] for m in sys.modules if sys.modules[m]})
"""
    done = subprocess.run(
        [sys.executable, "-c", probe, str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "RAYVAULT_ROOT": str(root)},
        check=False,
    )
    assert "codes 1 0 False" in done.stdout, done.stderr
    assert "pip install 'rayvault-learning[web]'" in done.stderr


def test_count_events_stops_at_the_limit(store: Store) -> None:
    """What the event list's "more than N" counts with, on both stores."""
    from dataclasses import replace

    from rayvault.learning.store.base import EventQuery

    for n in range(4):
        fail(store, f"Failure {n}", video_id=f"v{n}")
    assert store.count_events(EventQuery()) == 4
    assert store.count_events(EventQuery(limit=2)) == 2
    assert store.count_events(EventQuery(limit=10)) == 4
    only = EventQuery(severities=("FAIL",))
    assert store.count_events(replace(only, limit=3)) == 3
    assert store.count_events(only) == 4


def test_the_event_list_counts_up_to_its_cap(
    client: TestClient, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rayvault.web import app as web_app

    for n in range(4):
        fail(store, f"Failure {n}", video_id=f"v{n}")
    monkeypatch.setattr(web_app, "COUNT_CAP", 2)
    page = client.get("/events?severity=FAIL").text
    assert 'data-total="2">more than 2</span> events match' in page
    monkeypatch.setattr(web_app, "COUNT_CAP", 10)
    assert 'data-total="4">4</span> events match' in client.get("/events?severity=FAIL").text


@pytest.mark.slow
def test_rayvault_learn_serve_serves_the_root(root: Path, store: Store) -> None:
    """The command itself, as a process: it announces the address and serves the pages, with
    actions recorded as ``--user``."""
    import socket
    import time
    import urllib.request

    from rayvault.learning.store import FileStore

    if not isinstance(store, FileStore):
        pytest.skip("the process opens the root's file store")
    event = fail(store)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rayvault.cli",
            "--root",
            str(root),
            "serve",
            "--port",
            str(port),
            "--user",
            "ana",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAYVAULT_ROOT": str(root)},
    )
    try:
        deadline = time.monotonic() + 30
        page = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/events/{event.event_id}"
                ) as r:
                    page = r.read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert event.event_id in page and "acting as <strong>ana</strong>" in page
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    assert f"on http://127.0.0.1:{port}/ (actions recorded as ana)" in err
