"""What a store can do beyond :class:`~rayvault.learning.store.base.Store`: explicit protocols
that every backend implements (the file store answers as a store without a schema does), so the
code that needs a capability asks for it by type — never by backend class or ``hasattr``. A
third backend implements these and works with ``store init/upgrade/status/export/import`` as is.

The doctor (``check``) is part of ``Store`` itself.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from rayvault.learning.exceptions import StoreError
from rayvault.learning.store._items import Portable
from rayvault.learning.store.base import Store


@runtime_checkable
class SchemaAdmin(Protocol):
    """Schema administration and status: ``store init``, ``store upgrade``, ``store status``."""

    def has_schema(self) -> bool:
        """Whether the store has a versioned schema (False: it creates what it needs as it
        writes, and ``init_schema``/``upgrade_schema`` apply nothing)."""
        ...

    def is_initialised(self) -> bool:
        """Whether there is anything to read: the schema exists (a store without a schema: True).
        One catalogue query; creates nothing."""
        ...

    def init_schema(self) -> list[str]:
        """Create the schema and apply every migration; the names applied now."""
        ...

    def upgrade_schema(self) -> list[str]:
        """Apply the pending migrations of an initialised schema; the names applied now."""
        ...

    def schema_status(self) -> dict[str, Any]:
        """Which backend, its migrations (applied, pending, unknown) and how much it holds:
        ``backend``, ``initialised``, ``migrations``, ``pending``, ``unknown``, ``counts``.
        Changes nothing."""
        ...


@runtime_checkable
class Transferable(Protocol):
    """A store whose whole data can be dumped and loaded: ``store export``/``store import``."""

    def portable(self) -> Portable:
        """Its data as a stream of items (``store._items``)."""
        ...


def require_initialised(store: Store) -> None:
    """Reads never create a server schema: one that does not exist yet (a new store, or a
    mistyped ``?schema=``) is a :class:`StoreError` naming it, not an empty store silently
    created, nor a gate that passes on nothing."""
    if isinstance(store, SchemaAdmin) and not store.is_initialised():
        raise StoreError(
            f"{store.describe()} is not initialised: there is nothing to read",
            hint="run `rayvault-learn store init` to create it, or check --store / RAYVAULT_STORE",
        )
