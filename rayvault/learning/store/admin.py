"""Store administration: create and upgrade a store's schema, and describe what it holds.

The file store has no schema (its files are created as it writes); a server store (PostgreSQL)
has versioned migrations. The functions work for either, so the CLI need not know which.
"""

from __future__ import annotations

from typing import Any

from rayvault.learning.exceptions import StoreError
from rayvault.learning.store.base import Store
from rayvault.learning.store.capabilities import SchemaAdmin


def _admin(store: Store) -> SchemaAdmin:
    if isinstance(store, SchemaAdmin):
        return store
    raise StoreError(f"{store.describe()} has no schema administration")


def init_schema(store: Store) -> list[str]:
    """Create the store's schema and apply every migration; the names applied now (none for the
    file store, or when the schema is up to date)."""
    return list(_admin(store).init_schema())


def upgrade_schema(store: Store) -> list[str]:
    """Apply the pending migrations of an initialised schema; the names applied now."""
    return list(_admin(store).upgrade_schema())


def has_schema(store: Store) -> bool:
    return _admin(store).has_schema()


def store_status(store: Store) -> dict[str, Any]:
    """Which store, its schema's migrations (server stores), and how much it holds."""
    status = _admin(store).schema_status()
    status["description"] = store.describe()
    return status
