"""The items of ``store export``/``store import``: one per record version or document, with its
exact text, grouped by kind. Every backend speaks them (see ``transfer``); a backend's own dump
and load import this module, never another backend's.
"""

from __future__ import annotations

from rayvault.learning.exceptions import StoreError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

    from rayvault.learning.store._portable import Portable as Portable  # noqa: PLC0414

#: One version of an event (key: event_id); every version, in the order written.
EVENT = "event"
#: One version of an error-log entry (key: id).
ERROR = "error"
#: A recorded merge of two failure patterns (key: its source pattern key), in the order written.
PATTERN_MERGE = "pattern_merge"
#: ``memory_active.json`` of an agent (key: agent).
MEMORY = "memory"
#: ``memory_tombstones.json`` of an agent (key: agent).
TOMBSTONES = "tombstones"
#: A file of ``memory_archive/`` (key: agent, file name).
SNAPSHOT = "memory_snapshot"
#: A file of ``tombstone_archive/``: ``tombstones-YYYY-MM-DD[-N].json`` (key: agent, file name).
TOMBSTONE_ARCHIVE = "tombstone_archive"
#: ``state/learning_gate/<video_id>.json`` (key: video_id).
GATE_STATE = "gate_state"
#: ``state/learning_gate/souls/<sha256>.md`` (key: sha256).
SOUL = "soul_snapshot"
#: ``data/learning_reports/weekly-YYYY-MM-DD[-N].json`` (key: the report's name).
REPORT = "weekly_report"
#: ``data/learning_reports/weekly-YYYY-MM-DD[-N].html``, the report's rendering (key: its name).
REPORT_HTML = "weekly_report_html"
#: The per-video copy of an event's latest version (key: video_id, event_id). Derived: written by
#: an export, never read by an import.
VIDEO_EVENT = "video_event"
KINDS = (
    EVENT,
    ERROR,
    PATTERN_MERGE,
    MEMORY,
    TOMBSTONES,
    SNAPSHOT,
    TOMBSTONE_ARCHIVE,
    GATE_STATE,
    SOUL,
    REPORT,
    REPORT_HTML,
    VIDEO_EVENT,
)
#: How each kind is named for people.
KIND_LABELS = {
    EVENT: "event versions",
    ERROR: "error-log versions",
    PATTERN_MERGE: "pattern merges",
    MEMORY: "agent memories",
    TOMBSTONES: "tombstone lists",
    SNAPSHOT: "memory snapshots",
    TOMBSTONE_ARCHIVE: "tombstone archives",
    GATE_STATE: "gate states",
    SOUL: "SOUL snapshots",
    REPORT: "weekly reports",
    REPORT_HTML: "weekly report pages",
    VIDEO_EVENT: "per-video event files",
}


class Item:
    """One record version or document, with its exact text (a plain class rather than a
    dataclass: the file store's layout imports this module on a cold gate's path)."""

    __slots__ = ("key", "kind", "text")

    def __init__(self, kind: str, key: tuple[str, ...], text: str) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "text", text)

    kind: str
    key: tuple[str, ...]
    text: str

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Item)
        return (self.kind, self.key, self.text) == (other.kind, other.key, other.text)

    def __hash__(self) -> int:
        return hash((self.kind, self.key, self.text))

    def __repr__(self) -> str:
        return f"Item(kind={self.kind!r}, key={self.key!r}, text={self.text!r})"


def not_empty(where: str) -> StoreError:
    return StoreError(
        f"the {where} already holds learning data: nothing was written",
        hint="export into a folder without a data/ or state/ tree, "
        "or import into an empty schema (e.g. a new ?schema=NAME)",
    )


def __getattr__(name: str) -> Any:
    """:class:`Portable` (a runtime-checkable protocol, defined in ``_portable``), imported on
    first use: the file store's layout imports this module on a cold gate's path, which imports
    no ``typing``."""
    if name == "Portable":
        from rayvault.learning.store._portable import Portable

        return Portable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
