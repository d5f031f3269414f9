"""The PostgreSQL store (optional extra ``postgres``): ``store`` is the :class:`PostgresStore`,
``connection`` its URLs, pool, transactions and retries, ``queries`` its SQL, ``schema`` its
migrations, ``doctor`` its checks and repairs, ``transfer`` its whole-store dump and
load. Importing this package imports psycopg."""

from __future__ import annotations

from rayvault.learning.store.postgres.connection import (
    DEFAULT_SCHEMA,
    Target,
    display_url,
    parse_url,
    with_schema,
)
from rayvault.learning.store.postgres.queries import LATEST_RESOLUTION
from rayvault.learning.store.postgres.store import PostgresStore

__all__ = [
    "DEFAULT_SCHEMA",
    "LATEST_RESOLUTION",
    "PostgresStore",
    "Target",
    "display_url",
    "parse_url",
    "with_schema",
]
