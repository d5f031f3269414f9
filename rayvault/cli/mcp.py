"""``rayvault-learn mcp``: serve the learning loop to agents over the Model Context Protocol
(``rayvault.mcp_server``; the ``mcp`` extra)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer

from rayvault.cli._common import RootOption, StoreOption, open_cli_store


def mcp_command(
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="Serve the streamable HTTP transport at http://HOST:PORT/mcp instead of stdio.",
        ),
    ] = None,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only",
            help="Only the reads: check_gate, get_rules, search_patterns, weekly_summary.",
        ),
    ] = False,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback HOST; needs a bearer token in $RAYVAULT_MCP_TOKEN.",
        ),
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
) -> None:
    """Run the MCP server: the gate, the rules, the error log and the learning path as tools
    for agents (stdio by default). Needs the extra: pip install 'rayvault-learning\\[mcp]'.

    Example: rayvault-learn mcp --root /srv/pipeline --read-only
    """
    from rayvault.mcp_server import TOKEN_VARIABLE, require_sdk, serve

    require_sdk()
    store = open_cli_store(root, store_url, read=read_only)
    # Warnings and errors (the SDK's and the library's) to stderr: stdout is the stdio
    # transport's.
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s", stream=sys.stderr)

    def listening(url: str) -> None:
        sys.stderr.write(f"rayvault-learn mcp: serving {url}\n")
        sys.stderr.flush()

    try:
        serve(
            store,
            read_only=read_only,
            http=http,
            allow_remote=allow_remote,
            token=os.environ.get(TOKEN_VARIABLE, "").strip() or None,
            on_listening=listening,
        )
    finally:
        store.close()
