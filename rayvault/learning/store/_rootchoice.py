"""``roots.RootChoice``, apart (a dataclass: ``roots`` is on a cold gate's path, this is not)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RootChoice:
    """The data root a command uses and where that came from: ``given`` (by the caller,
    e.g. ``--root``), ``RAYVAULT_ROOT``, or ``current directory``."""

    path: Path
    source: str


RootChoice.__module__ = "rayvault.learning.store.roots"
