"""The MCP server of ``rayvault-learn mcp`` (docs/mcp.md): the gate, the rules, the error log and
the learning path as tools an agent calls over the Model Context Protocol, its memory and the
weekly report as resources.

Built on the official ``mcp`` SDK, an optional extra (``pip install 'rayvault-learning[mcp]'``):
nothing here imports it until a server is built, and without it :func:`require_sdk` says what to
install. Each tool is one call into the library with the library's validation; a library error
is a tool error with the library's message (``_server``). Transports: stdio (the default) and
streamable HTTP, on the loopback interface unless remote clients are allowed, which needs a
bearer token (``_http``).

Named ``mcp_server``, not ``mcp``: a package named ``mcp`` would shadow the SDK.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rayvault.learning.exceptions import ConfigError
from rayvault.mcp_server._address import HttpAddress, parse_http_address

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from rayvault.learning.store import Store

__all__ = [
    "MIN_TOKEN_LENGTH",
    "TOKEN_VARIABLE",
    "HttpAddress",
    "build_server",
    "check_http_access",
    "parse_http_address",
    "require_sdk",
    "serve",
]

#: The bearer token HTTP clients must send (``Authorization: Bearer <token>``).
TOKEN_VARIABLE = "RAYVAULT_MCP_TOKEN"

#: The shortest token accepted (a bearer token is a password: ``secrets.token_urlsafe(32)``).
MIN_TOKEN_LENGTH = 16

INSTALL_HINT = "pip install 'rayvault-learning[mcp]'"


def require_sdk() -> None:
    """Raise :class:`ConfigError` unless the MCP SDK (the ``mcp`` extra) is installed."""
    try:
        found = importlib.util.find_spec("mcp") is not None
    except (ImportError, ValueError):  # a blocked or half-imported package
        found = False
    if not found:
        raise ConfigError(
            "the MCP server needs the MCP SDK, which is not installed: "
            "install rayvault-learning[mcp]",
            hint=INSTALL_HINT,
        )


def build_server(store: Store, *, read_only: bool = False) -> MCPServer[Any]:
    """The MCP server over ``store`` (see ``_server``); only the read tools when ``read_only``."""
    require_sdk()
    from rayvault.mcp_server._server import build_server as build

    return build(store, read_only=read_only)


def serve(
    store: Store,
    *,
    read_only: bool = False,
    http: str | None = None,
    allow_remote: bool = False,
    token: str | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve ``store`` until the client goes (stdio) or the process is stopped (HTTP).

    ``http``: ``HOST:PORT`` (or ``PORT``, on 127.0.0.1) for the streamable HTTP transport.
    A host other than a loopback address is refused unless ``allow_remote``, which needs a
    ``token`` (``RAYVAULT_MCP_TOKEN``) of :data:`MIN_TOKEN_LENGTH` characters or more. With a
    token, every HTTP request without ``Authorization: Bearer <token>`` is refused (401).
    ``on_listening`` is called with the server's URL once it accepts connections."""
    require_sdk()
    token = token or None
    address = parse_http_address(http) if http is not None else None
    if address is not None:
        check_http_access(address, allow_remote=allow_remote, token=token)
    elif allow_remote:
        raise ConfigError("--allow-remote is for the HTTP transport: add --http HOST:PORT")
    server = build_server(store, read_only=read_only)
    if address is None:
        import anyio

        anyio.run(server.run_stdio_async)
        return
    from rayvault.mcp_server._http import serve_http

    serve_http(server, address, token=token, on_listening=on_listening)


def check_http_access(address: HttpAddress, *, allow_remote: bool, token: str | None) -> None:
    """Refuse what would expose the server: a non-loopback address without ``allow_remote``,
    ``allow_remote`` without a token long enough."""
    if not address.loopback and not allow_remote:
        raise ConfigError(
            f"{address.host} is not a loopback address: the server would be reachable from "
            "other machines",
            hint=f"serve on 127.0.0.1, or add --allow-remote with a token in {TOKEN_VARIABLE}",
        )
    if allow_remote and token is None:
        raise ConfigError(
            f"--allow-remote needs a bearer token in {TOKEN_VARIABLE}: refusing to serve "
            "without one",
            hint=f"export {TOKEN_VARIABLE}=\"$(python3 -c 'import secrets; "
            f"print(secrets.token_urlsafe(32))')\"",
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(
            f"{TOKEN_VARIABLE} is {len(token)} characters long: use {MIN_TOKEN_LENGTH} or more",
            hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
