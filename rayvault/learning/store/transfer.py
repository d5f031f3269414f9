"""Moving a whole data root between stores: ``rayvault-learn store export --to DIR`` writes the
current store's data in the file layout, ``store import --from DIR`` loads a file-layout root into
the current store. Lossless both ways: every version of every event and error-log entry (in
order), the merges of failure patterns (in order), agent memory and tombstones, memory
snapshots, tombstone archives, gate states, SOUL snapshots and weekly reports (JSON and HTML),
each with the exact text the file store writes.

Both sides speak a stream of :class:`Item` — one per record version or document — so any store
can be the source or the destination: the file layout (``FileLayout``) and PostgreSQL
(``PostgresStore.dump_items``/``load_items``). Items come grouped by kind, in ``KINDS`` order.

Not transferred: the documents, which are files in every store (skill-graph notes, SOUL files,
``policies.py``) and stay where they are; the derived files (``state/cache/``, the per-video event
copies, which an export writes again from the latest version of each event); lock and temp files;
what compaction and the doctor archived (``data/archive/``, ``state/doctor-archive/``, PostgreSQL's
``event_version_archive``), which belong to the store they were made in. Any other file found
under the store's folders is reported in the summary as *skipped*, so nothing is dropped silently.

Adding a kind of data: add its constant to ``_items.KINDS``, read it in ``FileLayout.dump_items``,
write it in ``FileLayout.load_items``, and do the same in ``postgres.transfer``;
``FileLayout.skipped_files`` stops reporting its files once it is known there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rayvault.learning.exceptions import StoreError
from rayvault.learning.store._items import (
    ERROR,
    EVENT,
    GATE_STATE,
    KIND_LABELS,
    KINDS,
    MEMORY,
    REPORT,
    REPORT_HTML,
    SNAPSHOT,
    SOUL,
    TOMBSTONE_ARCHIVE,
    TOMBSTONES,
    VIDEO_EVENT,
    Item,
    Portable,
    not_empty,
)
from rayvault.learning.store.base import Store
from rayvault.learning.store.capabilities import Transferable
from rayvault.learning.store.files.transfer import FileLayout

__all__ = [
    "ERROR",
    "EVENT",
    "GATE_STATE",
    "KINDS",
    "KIND_LABELS",
    "MEMORY",
    "REPORT",
    "REPORT_HTML",
    "SNAPSHOT",
    "SOUL",
    "TOMBSTONES",
    "TOMBSTONE_ARCHIVE",
    "VIDEO_EVENT",
    "FileLayout",
    "Item",
    "Portable",
    "TransferSummary",
    "export_store",
    "import_root",
    "portable",
    "transfer",
]


@dataclass
class TransferSummary:
    """What an export or import moved: items per kind, and files it did not know."""

    source: str
    destination: str
    counts: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "counts": {kind: self.counts.get(kind, 0) for kind in KINDS},
            "skipped": self.skipped,
        }


# -- the operations -----------------------------------------------------------------------------
def portable(store: Store) -> Portable:
    """The item interface of ``store`` (see ``capabilities.Transferable``)."""
    if isinstance(store, Transferable):
        return store.portable()
    raise StoreError(f"{store.describe()} cannot export or import data")


def transfer(
    source: Portable, destination: Portable, *, source_name: str, destination_name: str
) -> TransferSummary:
    """Copy every item of ``source`` into ``destination``, which must hold no data."""
    if destination.has_data():
        raise not_empty(destination_name)
    skipped = source.skipped_files()
    counts = destination.load_items(source.dump_items())
    return TransferSummary(source_name, destination_name, counts, skipped)


def export_store(store: Store, destination: Path | str) -> TransferSummary:
    """Write everything ``store`` holds into ``destination`` in the file layout (the folder may
    hold documents, not store data)."""
    target = FileLayout(destination)
    source = portable(store)
    if source.is_data_root(target.root):
        raise StoreError(f"{target.root} is the store's own data root: nothing to export")
    return transfer(
        source,
        target,
        source_name=store.describe(),
        destination_name=target.describe(),
    )


def import_root(store: Store, source: Path | str) -> TransferSummary:
    """Load the file-layout data root ``source`` into ``store``, which must hold no data."""
    layout = FileLayout(source)
    if not layout.root.is_dir():
        raise StoreError(f"{layout.root} is not a folder", hint="give a data root to import")
    destination = portable(store)
    if destination.is_data_root(layout.root):
        raise StoreError(f"{layout.root} is the store's own data root: nothing to import")
    return transfer(
        layout,
        destination,
        source_name=layout.describe(),
        destination_name=store.describe(),
    )
