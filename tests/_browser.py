"""Real headless chromium for the tests (issue 16 item 9, issue 18): Debian's ``chromium``
driven by Playwright through ``executable_path`` (Playwright's own browser download is not
reachable here). Tests using it skip, with the reason, when either is missing."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = os.environ.get("RAYVAULT_CHROMIUM", "/usr/bin/chromium")
#: Read at import: the tests' isolation clears every RAYVAULT_* variable.
SHOTS = os.environ.get("RAYVAULT_SCREENSHOTS")
#: The widths every page is checked at: a desktop and a phone.
WIDTHS = (1280, 420)

#: Token-like elements (ids, dates) whose text wraps onto two lines: each returns
#: ``[selector text, its height, its line height]``.
WRAPPED_TOKENS_JS = """
(selector) => {
  const out = [];
  for (const el of document.querySelectorAll(selector)) {
    if (!el.textContent.trim() || el.offsetParent === null) continue;
    const rects = el.getClientRects();
    const style = getComputedStyle(el);
    const lines = new Set([...rects].map(r => Math.round(r.top)));
    if (lines.size > 1 || style.whiteSpace !== 'nowrap') out.push([el.textContent, lines.size, style.whiteSpace]);
  }
  return out;
}
"""


def chromium_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; it is in the dev extra)"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return f"chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = chromium_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()


def screenshots(tmp_path: Path) -> Path:
    """Where the tests write their screenshots: ``$RAYVAULT_SCREENSHOTS``, else ``tmp_path``."""
    folder = Path(SHOTS) if SHOTS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def outward_address() -> str | None:
    """An address of this machine that is not loopback (to be a non-local client), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))  # no packet is sent (UDP)
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@contextmanager
def running(app: Any, host: str = "127.0.0.1") -> Iterator[int]:
    """A real uvicorn server for ``app`` on a free port, in a thread; yields the port."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan="off", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
