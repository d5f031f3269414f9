"""An agent's tombstone list in the file store: ``memory_tombstones.json`` (the original system's
shape, DESIGN.md §3) plus an append-only log of the tombstones added since that file was last
written (``memory_tombstones_log.json``, a :class:`JsonArrayLog` as the event log is).

Why two files: every eviction at the rule cap adds a tombstone, and only the weekly revisit's
sweep trims the list. Rewriting the whole list for each new tombstone made every memory change
cost as much as the list is long (it was read and validated on each one). A new tombstone is now
appended to the log, and nothing reads the list on the write path; readers merge the two.

The revisit's sweep (and anything else that changes the list as a whole) rewrites
``memory_tombstones.json`` with the whole list, then removes the log. A crash between the two
leaves the log in place: readers drop a log entry whose rule the JSON file already holds
(``_records.with_added``), so nothing shows twice, and the next rewrite removes the log.
One the sweep had just archived shows in the list again until the next sweep archives it again:
in both places, never in neither (as a crash between the archive and the list always did).
A crash mid-append leaves a torn tail in the log, which readers ignore and the next append cuts
off: what was appended before is kept.

Callers hold the agent's lock (the memory file's) around :meth:`TombstoneList.append` and
:meth:`TombstoneList.rewrite`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rayvault.learning.store._fs import atomic_write, dump_json, os_error, read_json
from rayvault.learning.store._records import validate_record, with_added
from rayvault.learning.store.files._jsonlog import JsonArrayLog
from rayvault.learning.store.files.layout import TOMBSTONES_FILE, TOMBSTONES_LOG_FILE

if TYPE_CHECKING:  # the records are imported when a list is read (not by the gate's process)
    from rayvault.learning.models import Tombstone, TombstoneFile


class TombstoneList:
    """The tombstone list of the agent whose folder is ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / TOMBSTONES_FILE
        self.log = JsonArrayLog(folder / TOMBSTONES_LOG_FILE)

    def exists(self) -> bool:
        return self.path.exists() or self.log.path.exists()

    def read_base(self) -> TombstoneFile | None:
        """``memory_tombstones.json`` alone (None when absent)."""
        from rayvault.learning.models import TombstoneFile

        raw = read_json(self.path)
        return (
            None
            if raw is None
            else validate_record(TombstoneFile, raw, self.path, "the tombstone list")
        )

    def read_added(self) -> list[Tombstone]:
        """The tombstones appended to the log (a torn tail ignored), oldest first."""
        from rayvault.learning.models import Tombstone

        return [
            validate_record(Tombstone, item, self.log.path, "a tombstone of the log")
            for item in self.log.read().items
        ]

    def read(self) -> TombstoneFile:
        """The whole list: the JSON file's tombstones, then those of the log it does not hold."""
        from rayvault.learning.models import TombstoneFile

        return with_added(self.read_base() or TombstoneFile(), self.read_added())

    def append(self, tombstones: Sequence[Tombstone], now: datetime) -> None:
        """Append ``tombstones`` to the log, without reading the list (the JSON file is created
        empty first when the agent has none, so the list always has its original file)."""
        if not tombstones:
            return
        if not self.path.exists():
            from rayvault.learning.models import TombstoneFile

            atomic_write(self.path, dump_json(TombstoneFile(updated=now).model_dump(mode="json")))
        self.log.append([t.model_dump_json().encode() for t in tombstones])

    def rewrite(self, tombstones: TombstoneFile) -> None:
        """Replace the whole list with ``tombstones``: the JSON file first, then the log goes."""
        atomic_write(self.path, dump_json(tombstones.model_dump(mode="json")))
        try:
            self.log.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise os_error(self.log.path, e, "remove") from e
