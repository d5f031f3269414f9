"""The embedded file store (the default): JSON files under a data root, with a derived SQLite
index. ``store`` is the :class:`FileStore`, ``layout`` every folder and file name, ``doctor`` its
checks and repairs, ``snapshots`` the order of memory snapshots, ``transfer`` a data root read and
written as the items of ``store export``/``store import``."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any


__all__ = ["FileStore"]

if TYPE_CHECKING:
    from rayvault.learning.store.files.store import FileStore


def __getattr__(name: str) -> Any:
    """``FileStore``, imported on first use: importing a module of this package (the cold
    gate's ``_gatestore``) does not load it."""
    if name == "FileStore":
        from rayvault.learning.store.files.store import FileStore

        return FileStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
