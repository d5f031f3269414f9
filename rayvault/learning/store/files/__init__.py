"""The embedded file store (the default): JSON files under a data root, with a derived SQLite
index. ``store`` is the :class:`FileStore`, ``layout`` every folder and file name, ``doctor`` its
checks and repairs, ``snapshots`` the order of memory snapshots, ``transfer`` a data root read and
written as the items of ``store export``/``store import``."""

from __future__ import annotations

from rayvault.learning.store.files.store import FileStore

__all__ = ["FileStore"]
