"""``_items.Portable``, apart: a protocol (``typing``), which a cold gate does not import."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from rayvault.learning.store._items import Item


@runtime_checkable
class Portable(Protocol):
    """A data root given and taken as items: a file-layout folder, or a whole server store."""

    def describe(self) -> str: ...

    def has_data(self) -> bool: ...

    def dump_items(self) -> Iterator[Item]: ...

    def load_items(self, items: Iterable[Item]) -> dict[str, int]: ...

    def skipped_files(self) -> list[str]:
        """Files found under its folders that no kind covers (reported, never dropped
        silently); none where the data is not files."""
        ...

    def is_data_root(self, path: Path) -> bool:
        """Whether ``path`` is where this data lives (a copy onto itself is refused)."""
        ...


Portable.__module__ = "rayvault.learning.store._items"
