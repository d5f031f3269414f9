"""Running the app under uvicorn (what ``rayvault-learn serve`` calls)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rayvault.web.app import Settings, create_app

if TYPE_CHECKING:
    from rayvault.learning.store import Store


def serve(
    store: Store,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    read_only: bool = False,
    user: str | None = None,
    user_header: str | None = None,
    token: str | None = None,
    announce: Callable[[str], None] = lambda text: None,
) -> None:
    """Serve the app on ``host:port`` until interrupted."""
    import uvicorn

    settings = Settings(store=store, read_only=read_only, user_header=user_header, token=token)
    if user:
        settings.user = user
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    mode = "read-only" if read_only else f"actions recorded as {settings.user}"
    announce(f"Serving {store.describe()} on http://{shown}:{port}/ ({mode}); Ctrl-C stops it.")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
