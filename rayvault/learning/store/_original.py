"""Shapes only the original system wrote and only the doctors check: kept out of ``_records``,
which every process imports, so the model is built only where it is used."""

from __future__ import annotations

from pydantic import RootModel

from rayvault.learning.models import Tombstone


class OriginalTombstoneArchive(RootModel[list[Tombstone]]):
    """The content of the original system's ``tombstones_archive_YYYYMMDD.json``: a bare list."""
