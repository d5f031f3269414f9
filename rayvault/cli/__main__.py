"""``python -m rayvault.cli``: the same as the ``rayvault-learn`` command."""

from rayvault.cli import main

raise SystemExit(main())
