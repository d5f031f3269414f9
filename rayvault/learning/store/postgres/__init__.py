"""The PostgreSQL store (optional extra ``postgres``): ``store`` is the :class:`PostgresStore`,
``schema`` its migrations, ``doctor`` its checks and repairs, ``transfer`` its whole-store dump and
load. Importing this package imports psycopg."""

from __future__ import annotations

from rayvault.learning.store.postgres.store import (
    DEFAULT_SCHEMA,
    LATEST_RESOLUTION,
    PostgresStore,
    Target,
    display_url,
    parse_url,
    with_schema,
)

__all__ = [
    "DEFAULT_SCHEMA",
    "LATEST_RESOLUTION",
    "PostgresStore",
    "Target",
    "display_url",
    "parse_url",
    "with_schema",
]
