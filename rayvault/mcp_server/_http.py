"""The streamable HTTP transport: the SDK's Starlette app behind a bearer-token check, served by
uvicorn (both come with the ``mcp`` extra)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from rayvault.mcp_server._address import HttpAddress

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_REFUSED = b'{"error": "unauthorized: send Authorization: Bearer <RAYVAULT_MCP_TOKEN>"}'


class BearerTokenMiddleware:
    """Refuse (401) every HTTP request whose ``Authorization`` header is not exactly
    ``Bearer <token>``, compared in constant time; the app's lifespan passes through."""

    def __init__(self, app: App, token: str) -> None:
        self.app = app
        self.expected = b"Bearer " + token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            given = next(
                (v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"), b""
            )
            if not hmac.compare_digest(given, self.expected):
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", b'Bearer realm="rayvault-learning"'),
                            (b"content-length", str(len(_REFUSED)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _REFUSED})
                return
        await self.app(scope, receive, send)


def http_app(server: MCPServer[Any], address: HttpAddress, token: str | None) -> App:
    """The ASGI app: the SDK's streamable HTTP app (at ``/mcp``; DNS-rebinding protection on a
    loopback host), behind the token check when there is a token."""
    app: App = server.streamable_http_app(host=address.host)
    return BearerTokenMiddleware(app, token) if token is not None else app


def serve_http(
    server: MCPServer[Any],
    address: HttpAddress,
    *,
    token: str | None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until the process is stopped (Ctrl-C, SIGTERM)."""
    import anyio
    import uvicorn

    config = uvicorn.Config(
        http_app(server, address, token),
        host=address.host,
        port=address.port,
        log_level="warning",
        lifespan="on",
    )
    web = uvicorn.Server(config)

    async def run() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(web.serve)
            while not web.started:
                if web.should_exit:
                    return
                await anyio.sleep(0.02)
            if on_listening is not None:
                on_listening(address.url)

    anyio.run(run)
