"""Stores: where learning data lives. ``open_store`` picks the backend; ``get_store`` returns the
process's default one (``RAYVAULT_STORE`` or the file store at ``RAYVAULT_ROOT``/cwd)."""

from __future__ import annotations

import os
from pathlib import Path

from rayvault.learning._validate import checked
from rayvault.learning.exceptions import StoreError
from rayvault.learning.store.roots import (
    DATA_ROOT_MARKERS,
    choose_root,
    is_data_root,
    root_for_reading,
    uses_server_store,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "DATA_ROOT_MARKERS",
    "AgentState",
    "ArchivedTombstones",
    "EventQuery",
    "FileStore",
    "ProgressCallback",
    "RootChoice",
    "SavedReport",
    "Store",
    "choose_root",
    "get_store",
    "is_data_root",
    "open_store",
    "reset_store",
    "resolve_root",
    "root_for_reading",
    "uses_server_store",
]

#: Names imported on first use (PEP 562): importing ``rayvault.learning.store.<module>`` does
#: not load the file store and the store interface (a cold ``rayvault-learn gate`` needs
#: neither: issue 15 item 4).
_LAZY = {
    "AgentState": "rayvault.learning.store.base",
    "ArchivedTombstones": "rayvault.learning.store.base",
    "EventQuery": "rayvault.learning.store.base",
    "ProgressCallback": "rayvault.learning.store.base",
    "SavedReport": "rayvault.learning.store.base",
    "Store": "rayvault.learning.store.base",
    "FileStore": "rayvault.learning.store.files.store",
    "RootChoice": "rayvault.learning.store.roots",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # mypy checks that both backends are stores (never run: psycopg stays lazy)
    from rayvault.learning.store._items import Portable
    from rayvault.learning.store._rootchoice import RootChoice
    from rayvault.learning.store.base import (
        AgentState,
        ArchivedTombstones,
        EventQuery,
        ProgressCallback,
        SavedReport,
        Store,
    )
    from rayvault.learning.store.capabilities import SchemaAdmin, Transferable
    from rayvault.learning.store.files.store import FileStore
    from rayvault.learning.store.postgres import PostgresStore

    _FILE_STORE: type[Store] = FileStore
    _POSTGRES_STORE: type[Store] = PostgresStore
    _FILE_ADMIN: type[SchemaAdmin] = FileStore
    _POSTGRES_ADMIN: type[SchemaAdmin] = PostgresStore
    _FILE_TRANSFER: type[Transferable] = FileStore
    _POSTGRES_TRANSFER: type[Transferable] = PostgresStore
    _POSTGRES_PORTABLE: type[Portable] = PostgresStore

_default: dict[tuple[str, str], Store] = {}


def resolve_root(root: Path | str | None = None) -> Path:
    """The data root: ``root`` if given, else ``RAYVAULT_ROOT``, else the current directory."""
    if root is not None and str(root) != "":
        return Path(root).expanduser().absolute()
    env = os.environ.get("RAYVAULT_ROOT", "").strip()
    return Path(env).expanduser().absolute() if env else Path.cwd()


@checked
def open_store(root: Path | str | None = None, url: str | None = None) -> Store:
    """Open the store for ``root``: the file store, or the server store ``url`` names
    (``RAYVAULT_STORE`` when ``url`` is None)."""
    base = resolve_root(root)
    target = url if url is not None else os.environ.get("RAYVAULT_STORE", "").strip()
    if not target or target in {"file", "files"}:
        from rayvault.learning.store.files.store import FileStore

        return FileStore(base)
    if target.startswith(("postgresql://", "postgres://")):
        try:  # imported only when asked for: psycopg is an optional extra
            from rayvault.learning.store.postgres import PostgresStore
        except ImportError as e:
            raise StoreError(
                f"the PostgreSQL store is not available: {e}",
                hint="pip install 'rayvault-learning[postgres]'",
            ) from e
        return PostgresStore(base, target)
    raise StoreError(
        f"unknown store {target!r}",
        hint="use a postgresql://… URL, or leave RAYVAULT_STORE unset for the file store",
    )


@checked
def get_store() -> Store:
    """The default store of this process for the current ``RAYVAULT_ROOT``/``RAYVAULT_STORE``."""
    key = (str(resolve_root()), os.environ.get("RAYVAULT_STORE", "").strip())
    store = _default.get(key)
    if store is None:
        store = _default[key] = open_store()
    return store


@checked
def reset_store() -> None:
    """Close and forget the default stores (tests call this between cases)."""
    for store in _default.values():
        store.close()
    _default.clear()
