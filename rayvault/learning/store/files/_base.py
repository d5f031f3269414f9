"""What every file store of a data root does the same way, whatever else it offers: its policies,
its folders, the gate's state and SOUL snapshots, and the gate's index queries.

:class:`~rayvault.learning.store.files.store.FileStore` is one; the cold gate's
:class:`~rayvault.learning.store.files._gatestore.GateFileStore` is the other (issue 15 item 4).
Both run these methods, so the gate reads and writes exactly as the file store does. Nothing
here imports ``orjson``, ``dataclasses``, ``logging`` or ``hashlib``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from rayvault.learning.exceptions import ConfigError, StoreError
from rayvault.learning.store._fs import create_exclusive
from rayvault.learning.store._sql import event_filters_where
from rayvault.learning.store.files import _indexreads as queries
from rayvault.learning.store.files.layout import Layout
from rayvault.learning.store.roots import policies_at
from rayvault.policies import Policies

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

    from rayvault.learning.store.files._gate import GateReads
    from rayvault.learning.store.files.store import FileStore


class FileStoreBase:
    """The shared part of a file store (see the module doc)."""

    root: Path
    layout: Layout
    index: queries.Synced
    is_read_only: bool
    _layout_checked: bool

    @property
    def policies(self) -> Policies:
        return policies_at(self.root)

    def stage_aliases(self) -> Mapping[str, str]:
        """The alias map the index folds unfingerprinted records with. Unusable policies fall
        back to the defaults (the index follows when they are fixed), so ``doctor`` still reads."""
        try:
            return self.policies.LEARNING_STAGE_ALIASES
        except ConfigError:
            return Policies().LEARNING_STAGE_ALIASES

    def _writable(self) -> None:
        if self.is_read_only:
            raise StoreError(f"the file store at {self.root} was opened read-only")
        if not self._layout_checked:
            self._check_layout()

    def _check_layout(self) -> None:
        """Before the first write: no file where the layout has a folder, nor the reverse, so a
        damaged root fails with one clear error before anything (even a lock file) is created."""
        for path in (self.root, *self.layout.folders()):
            if path.exists() and not path.is_dir():
                raise StoreError(
                    f"cannot write to the file store at {self.root}: {path} is a file where "
                    "the layout has a folder",
                    hint="move the file aside (`rayvault-learn doctor` lists what it finds)",
                )
        layout = self.layout
        for path in (layout.events_path, layout.errors_path, layout.merges_path):
            if path.is_dir():
                raise StoreError(
                    f"cannot write to the file store at {self.root}: {path} is a folder where "
                    "the layout has a file",
                    hint="move the folder aside (`rayvault-learn doctor` lists what it finds)",
                )
        self._layout_checked = True

    def agent_dir(self, agent: str) -> Path:
        return self.layout.agent_dir(agent)

    def relative(self, path: Path) -> str:
        """``path`` relative to the data root (as given, unresolved), else as it is."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def full_store(self) -> FileStore:
        """The :class:`FileStore` of this root (this store, or one opened for what the gate's
        store does not offer: records of data the hand checks refused)."""
        raise NotImplementedError

    # -- the gate -----------------------------------------------------------------------------
    def resolve_pattern(self, key: str) -> str:
        return queries.resolve_pattern(self.index, key)

    def known_failure_rows(
        self, components: tuple[str, ...], threshold: int
    ) -> list[tuple[str, str, int, int]]:
        """:meth:`known_failures` as tuples (fingerprint, pattern, occurrences, unresolved)."""
        return queries.known_failure_rows(self.index, components, threshold)

    def failing_fingerprints(
        self, fingerprints: list[str], components: tuple[str, ...]
    ) -> set[str]:
        return queries.failing_fingerprints(self.index, fingerprints, components)

    def open_occurrences(
        self, fingerprint: str, components: tuple[str, ...], limit: int
    ) -> tuple[list[str], list[str]]:
        return queries.open_occurrences(self.index, fingerprint, components, limit)

    def open_failure_rows(
        self, video_id: str, components: tuple[str, ...]
    ) -> Iterable[tuple[Any, ...]]:
        """The rows of the video's unresolved FAIL/BLOCKER events in the components (the gate's
        regressions check), in time order: ``event_rows`` of that query."""
        conn = self.index.sync("events")
        where, params = event_filters_where(
            video_id=video_id,
            components=components,
            severities=("FAIL", "BLOCKER"),
            unresolved=True,
        )
        return queries.select_events(conn, where, params)

    def gate_reads(self) -> GateReads:
        """What the gate reads, as plain data (``files._gate``): a cold gate imports no
        pydantic."""
        from rayvault.learning.store.files._gate import GateReads

        return GateReads(self)

    def gate_state_path(self, video_id: str) -> Path:
        return self.layout.gate_state_path(video_id)

    def _gate_folder_usable(self) -> None:
        """A file where ``state/learning_gate`` (or ``state``) must be a folder: one clear error."""
        gate_dir = self.layout.gate_dir
        for folder in (gate_dir, gate_dir.parent):
            if folder.exists() and not folder.is_dir():
                raise StoreError(
                    f"{folder} is a file, where the gate keeps its state in a folder",
                    hint="move the file away, or point --root at the right data root",
                )

    def _soul_snapshot_path(self, sha256: str) -> Path:
        return self.layout.soul_path(sha256)

    def save_soul_snapshot(self, sha256: str, text: str) -> None:
        self._writable()
        path = self._soul_snapshot_path(sha256)
        if not path.exists():
            create_exclusive(path, text.encode())

    def load_soul_snapshot(self, sha256: str) -> str | None:
        try:
            return self._soul_snapshot_path(sha256).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
