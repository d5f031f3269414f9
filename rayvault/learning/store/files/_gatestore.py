"""The file store as a cold ``rayvault-learn gate`` opens it (issue 15 item 4).

:class:`GateFileStore` offers what the gate asks of a store: the policies, the documents (SOUL
files, the policies file), the gate's state and SOUL snapshots, and the index queries of its
checks. Each of these is the file store's own code (``files._base``, ``files._indexreads``,
``files._gate``); what it adds is that it imports only that code: no ``FileStore`` and its
dependencies (``orjson``, ``logging``, ``dataclasses``, the index's catch-up machinery), which
would cost the process several times the gate's own run. While the derived index is current with
the logs it is read as it is; when it is not, or for anything else (a record for data the hand
checks refuse, a rule written before fingerprints), a :class:`FileStore` of the same root is
opened and does it, with its usual results and errors.
"""

from __future__ import annotations

from pathlib import Path

from rayvault.learning.store._fs import register_root
from rayvault.learning.store.documents import Documents
from rayvault.learning.store.files._base import FileStoreBase
from rayvault.learning.store.files._indexreads import IndexReader
from rayvault.learning.store.files.layout import Layout

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

    from rayvault.learning.store.files._sqlindex import SqliteIndex
    from rayvault.learning.store.files.store import FileStore


class GateFileStore(FileStoreBase):
    """A file store for the gate's process (see the module doc). Any other attribute is the
    :class:`FileStore`'s of the same root, opened on first use."""

    #: Not a server store (``cli._location``).
    target = None
    index: IndexReader

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).absolute()
        register_root(self.root)
        self.is_read_only = False
        self._layout_checked = False
        self.layout = layout = Layout(self.root)
        self._full: FileStore | None = None
        self.index = IndexReader(
            layout.index_path,
            {
                "merges": layout.merges_path,
                "events": layout.events_path,
                "errors": layout.errors_path,
            },
            self.stage_aliases,
            self._full_index,
            root=self.root,
        )
        self.docs = Documents(self.root, lambda: self.policies, read_only=False)

    def __repr__(self) -> str:
        return f"GateFileStore({str(self.root)!r})"

    def describe(self) -> str:
        return f"file store at {self.root}"

    def full_store(self) -> FileStore:
        if self._full is None:
            from rayvault.learning.store.files.store import FileStore

            self._full = FileStore(self.root)
        return self._full

    def _full_index(self) -> SqliteIndex:
        return self.full_store().index

    def close(self) -> None:
        self.index.close()
        if self._full is not None:
            self._full.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in {"_full", "index", "layout", "root"}:
            raise AttributeError(name)
        return getattr(self.full_store(), name)
