"""Store administration: create and upgrade a store's schema, and describe what it holds.

The file store has no schema (its files are created as it writes); a server store (PostgreSQL)
has versioned migrations. The functions work for either, so the CLI need not know which.
"""

from __future__ import annotations

from typing import Any

from rayvault.learning.store.base import ErrorQuery, EventQuery, Store
from rayvault.learning.store.files.store import FileStore


def _schema_store(store: Store) -> Any | None:
    return store if hasattr(store, "init_schema") else None


def init_schema(store: Store) -> list[str]:
    """Create the store's schema and apply every migration; the names applied now (none for the
    file store, or when the schema is up to date)."""
    server = _schema_store(store)
    return list(server.init_schema()) if server is not None else []


def upgrade_schema(store: Store) -> list[str]:
    """Apply the pending migrations of an initialised schema; the names applied now."""
    server = _schema_store(store)
    return list(server.upgrade_schema()) if server is not None else []


def has_schema(store: Store) -> bool:
    return _schema_store(store) is not None


def store_status(store: Store) -> dict[str, Any]:
    """Which store, its schema's migrations (server stores), and how much it holds."""
    server = _schema_store(store)
    if server is not None:
        status: dict[str, Any] = server.schema_status()
        status["description"] = store.describe()
        return status
    assert isinstance(store, FileStore)
    gate_states = len(store.layout.gate_state_files())
    return {
        "backend": "file",
        "description": store.describe(),
        "root": str(store.root),
        "initialised": True,
        "migrations": [],
        "pending": [],
        "unknown": [],
        "counts": {
            "events": store.count_events(EventQuery()),
            "errors": len(store.query_errors(ErrorQuery())),
            "agents": len(store.list_agents()),
            "gate_states": gate_states,
        },
    }
