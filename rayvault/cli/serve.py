"""``rayvault-learn serve``: the weekly review as a local web app (docs/web.md; needs the
``web`` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from rayvault.cli._common import RootOption, StoreOption, console, open_cli_store


def serve_command(
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Any address but loopback needs RAYVAULT_WEB_TOKEN.",
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on.", min=0, max=65535)
    ] = 8765,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Serve the pages without any action.")
    ] = False,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Who the actions are recorded as (default: the OS user)."),
    ] = None,
    user_header: Annotated[
        str | None,
        typer.Option(
            "--user-header",
            help="Behind an authenticating proxy: the request header naming the user "
            "(e.g. X-Forwarded-User); it wins over --user when a request carries it.",
        ),
    ] = None,
    root: RootOption = None,
    store_url: StoreOption = None,
) -> None:
    """Serve the weekly review as a web app: overview, events, patterns, agents, gate, and the
    actions (resolve, tombstone, promote, acknowledge) as POSTs through the library.

    Example: rayvault-learn serve --port 8765
    """
    from rayvault.web import INSTALL_HINT, missing_extra

    missing = missing_extra()
    if missing is not None:
        console(stderr=True).print(
            f"Error: {missing} is not installed: {INSTALL_HINT}", markup=False, soft_wrap=True
        )
        raise typer.Exit(code=1)

    from rayvault.web import security

    token = security.env_token()
    try:
        security.check_bind(host, token)
    except security.BindRefused as e:
        console(stderr=True).print(f"Error: {e}", markup=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    from rayvault.learning._validate import clean_actor
    from rayvault.web.server import serve

    store = open_cli_store(root, store_url, read=True)
    serve(
        store,
        host=host,
        port=port,
        read_only=read_only,
        user=clean_actor(user),
        user_header=user_header,
        token=token,
        announce=lambda text: console(stderr=True).print(text, markup=False, soft_wrap=True),
    )
