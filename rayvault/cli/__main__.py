"""``python -m rayvault.cli``: the same as the ``rayvault-learn`` command."""

from rayvault.cli import script

raise SystemExit(script())
