"""What keeps the web app's actions to the person who runs it (docs/web.md, "Security").

* It binds 127.0.0.1 by default; binding any other address needs ``RAYVAULT_WEB_TOKEN``
  (:func:`check_bind` refuses to start without one), and then every request from an address
  that is not loopback must carry the token (``Authorization: Bearer …``, the ``rayvault_token``
  cookie, or ``?token=…`` once, which sets the cookie), compared in constant time.
* Every POST carries the app's CSRF token (a form field or the ``X-CSRF-Token`` header, also
  compared in constant time), and a POST whose ``Origin`` is another site is refused.
* Pages send a Content-Security-Policy allowing scripts and requests to this origin only.
"""

from __future__ import annotations

import hmac
import ipaddress
import os

TOKEN_ENV = "RAYVAULT_WEB_TOKEN"
TOKEN_COOKIE = "rayvault_token"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


class BindRefused(Exception):
    """The server must not start on this address (no token for a non-loopback host)."""


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this machine only."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback ``host`` without a token (see the module doc)."""
    if not is_loopback(host) and not token:
        raise BindRefused(
            f"refusing to serve on {host}, reachable from other machines, without a token: "
            f"set {TOKEN_ENV} (a long random secret, e.g. `python -c 'import secrets; "
            f"print(secrets.token_urlsafe(32))'`), or serve on 127.0.0.1"
        )
    if token is not None and len(token) < 16:
        raise BindRefused(f"{TOKEN_ENV} is too short: use at least 16 characters")


def env_token() -> str | None:
    return os.environ.get(TOKEN_ENV) or None


def same(given: str | None, expected: str) -> bool:
    """``given == expected`` in constant time (``hmac.compare_digest``)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return None
