"""``rayvault-learn``: the command line. A thin layer over the library: it parses, calls the
domain, and formats; it decides nothing.

Exit codes: 0 success; 2 the learning gate blocked; 1 a usage or data error, printed as one
``Error: …`` line on stderr (a traceback only for the unexpected, or under ``--debug``).

``rayvault-learn gate VIDEO STAGE`` runs before every pipeline stage, so its plain form is served
without loading Typer and Rich (see ``_fast``); everything else goes through the Typer app.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to ``sys.exit``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    from rayvault.cli._fast import run_gate_fast

    code = run_gate_fast(args)
    if code is not None:
        return code
    from rayvault.cli.app import run

    return run(args)


def run_group(group: str, argv: Sequence[str] | None = None) -> int:
    """Run one sub-command group as if it were the whole CLI (the ``tools/*.py`` scripts)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return main([group, *args])
