"""The SQLite driver of the derived index, as the cold paths import it.

``import sqlite3`` imports ``datetime`` for default adapters that no query of the index uses
(timestamps are stored as integer microseconds): 1 ms of a cold gate. The driver module itself,
``_sqlite3``, holds the same classes ``sqlite3`` exports (``sqlite3.Connection`` *is*
``_sqlite3.Connection``), so the index code uses it through this name.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    import sqlite3
else:
    try:
        import _sqlite3 as sqlite3
    except ImportError:  # pragma: no cover - CPython builds the driver as _sqlite3
        import sqlite3

__all__ = ["sqlite3"]
