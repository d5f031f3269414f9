"""The store interface every backend implements, and the query objects domain code passes to it.

Domain modules receive a :class:`Store`; they never build a path or write SQL. Two backends
implement it: the embedded file store (``FileStore``, the default) and PostgreSQL.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from rayvault.learning._patternbook import PatternBook
from rayvault.learning.store.documents import Documents
from rayvault.policies import Policies

if TYPE_CHECKING:  # the records load on first use: the gate's process does not build them
    from rayvault.learning.models import (
        AgentMemory,
        CompactResult,
        ErrorEntry,
        ErrorPattern,
        Finding,
        GateState,
        KnownFailure,
        LearningEvent,
        Pattern,
        PatternMerge,
        Tombstone,
        TombstoneFile,
        WeeklyReport,
    )

#: Progress of a long operation: ``(what, done, total)``, e.g. ``("notes", 120, 4000)``.
ProgressCallback = Callable[[str, int, int], None]


R = TypeVar("R")


def build_records(rows: Iterable[tuple[Any, ...]], build: Callable[[Any], R]) -> list[R]:
    """``[build(row[0]) for row in rows]`` with the cyclic garbage collector paused.

    Building 100k records allocates millions of containers; each allocation burst would set off
    a collection that walks everything built so far, which made reading 100k events take
    nearly three times as long. Nothing built here forms a cycle.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return [build(row[0]) for row in rows]
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True)
class EventQuery:
    """Filters over the latest version of every event; all given filters must match."""

    video_id: str | None = None
    components: tuple[str, ...] | None = None
    severities: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    agent: str | None = None
    #: Events of this agent, or of any of these components (an agent's learnings).
    agent_or_components: tuple[str, tuple[str, ...]] | None = None
    fingerprint: str | None = None
    source_error_id: str | None = None
    #: Events migrated from this skill-graph note (its path relative to the data root).
    source_note: str | None = None
    #: True: only unresolved (not verified, not archived); False: only resolved.
    unresolved: bool | None = None
    date_from: datetime | None = None
    date_to: datetime | None = None
    exclude_event_id: str | None = None
    #: The event created by the call that carried this idempotency key.
    idempotency_key: str | None = None
    newest_first: bool = False
    limit: int | None = None


@dataclass(frozen=True)
class ErrorQuery:
    """Filters over the latest version of every error-log entry."""

    stages: tuple[str, ...] | None = None
    video_id: str | None = None
    #: True: only unresolved entries; False: only resolved ones.
    unresolved: bool | None = None
    fingerprint: str | None = None
    #: Only these entries (by id), or only entries linked to one of these learning events
    #: (``learning_event_id``); given both, an entry matching either.
    ids: tuple[str, ...] | None = None
    learning_event_ids: tuple[str, ...] | None = None
    #: The entry logged by the call that carried this idempotency key.
    idempotency_key: str | None = None
    newest_first: bool = False
    limit: int | None = None


def _no_tombstones() -> TombstoneFile:
    """An empty tombstone list (the records are imported here, when one is needed)."""
    from rayvault.learning.models import TombstoneFile

    return TombstoneFile()


@dataclass
class AgentState:
    """An agent's memory, loaded under the agent's lock (see :meth:`Store.agent_state`). What
    the block marks as changed is written when it exits cleanly; nothing is written after an
    exception.

    The tombstones are not loaded with it: most memory changes never look at them, and the list
    only grows (each eviction at the rule cap adds one). :meth:`add_tombstone` queues a new one,
    appended on exit without reading the list; :meth:`tombstones` reads the list when a change
    needs it (once per transaction)."""

    agent: str
    memory: AgentMemory
    #: Reads the agent's whole tombstone list (set by the store).
    read_tombstones: Callable[[], TombstoneFile] = field(default=_no_tombstones, repr=False)
    #: Set by the store: whether the memory file existed before this transaction.
    existed: bool = False
    memory_changed: bool = False
    #: Archive the previous memory before writing it back (False for a change that only counts
    #: deliveries: snapshots keep versions of the rules, not of their counters).
    archive: bool = True
    #: Tombstones added in this transaction, appended to the list on exit.
    new_tombstones: list[Tombstone] = field(default_factory=list)
    _loaded: TombstoneFile | None = field(default=None, repr=False)

    def add_tombstone(self, tombstone: Tombstone) -> None:
        """Queue ``tombstone`` to be appended to the agent's list when the block exits cleanly."""
        self.new_tombstones.append(tombstone)

    def tombstones(self) -> list[Tombstone]:
        """The agent's tombstones, those added in this transaction last (read on first call)."""
        if self._loaded is None:
            self._loaded = self.read_tombstones()
        return [*self._loaded.tombstones, *self.new_tombstones]


@dataclass(frozen=True)
class SavedReport:
    """Where a weekly report went: its name (``weekly-2026-02-19``, ``weekly-2026-02-19-2`` for
    the second of a day) and where each rendering can be read (paths for the file store)."""

    name: str
    json_location: str
    html_location: str


@dataclass(frozen=True)
class ArchivedTombstones:
    """Tombstones moved out of an agent's tombstone list into its archive."""

    agent: str
    tombstones: list[Tombstone] = field(default_factory=list)
    #: Where they went (None when nothing was due).
    location: str | None = None


class StorePatternBook(PatternBook, Protocol):
    """The :class:`PatternBook` a store hands out (:meth:`Store.pattern_book`): clusters as the
    grouping needs them, plus what links history written by an older grouping version."""

    def link(self, source: str, target: str, reason: str) -> bool:
        """Record that pattern key ``source`` (a key of stored records, not a live cluster of
        this book) is merged into ``target`` for ``reason`` (``"version"``, ``"regroup"``). False,
        recording nothing, when ``source`` is ``target``, is already merged, or would make a
        cycle; the merge is committed with the book."""
        ...

    def in_history(self, key: str) -> bool:
        """Whether stored records (events or error-log entries) carry ``key`` while it is not a
        cluster of the current grouping: a key an older version handed out. An indexed lookup."""
        ...


@runtime_checkable
class Store(Protocol):
    """What the domain needs from a backend."""

    root: Path
    docs: Documents

    @property
    def policies(self) -> Policies: ...

    def describe(self) -> str: ...

    def read_only(self) -> Store:
        """A view of the same data that never writes (dry runs); its writes raise
        ``StoreError``."""
        ...

    # -- events ---------------------------------------------------------------------------
    def append_events(self, events: Sequence[LearningEvent], *, video_files: bool = True) -> None:
        """Persist new events or new versions of events (the last version wins), and the
        per-video copy of each unless ``video_files`` is False (a later version follows at
        once)."""

    def pending_event(self, event: LearningEvent) -> AbstractContextManager[None]:
        """Keep the first version of a new event safe while ``create_event`` runs its loop;
        the block appends the event's final version. A writer that stops inside the block
        leaves the first version for the next writer to persist (file store: one version in
        the log per event whose loop completes; PostgreSQL: the first version is stored at
        once, the final one replaces it)."""
        ...

    def event_pending(self, event_id: str) -> bool:
        """Whether a new event is held by :meth:`pending_event` (its writer at work, or
        stopped and not yet recovered) rather than stored: its rule may be in memory already."""
        ...

    def update_event(
        self, event_id: str, change: Callable[[LearningEvent], LearningEvent]
    ) -> LearningEvent:
        """Append ``change(latest)`` as the new version, atomically with respect to other
        writers; raises ``EventNotFoundError``."""
        ...

    def update_events(
        self,
        event_ids: Sequence[str],
        change: Callable[[LearningEvent], LearningEvent | None],
    ) -> list[LearningEvent]:
        """:meth:`update_event` for many events under one lock (one transaction): each
        ``change(latest)`` that is not None is appended as the new version; returns those, in
        the order of ``event_ids``. An unknown id raises ``EventNotFoundError`` before anything
        is written."""
        ...

    def get_event(self, event_id: str) -> LearningEvent | None: ...

    def event_versions(self, event_id: str) -> list[LearningEvent]:
        """Every version of the event the store still holds, oldest first; [] for an unknown
        id, ``InvalidIdentifierError`` for an unsafe one. A cold path (an event page, a CLI
        command): the file store scans its log. Compaction (``events compact``) keeps only
        the latest version of each event, so older versions it dropped are not returned."""
        ...

    def query_events(self, query: EventQuery) -> list[LearningEvent]: ...

    def count_events(self, query: EventQuery) -> int:
        """How many events match. With ``query.limit``, at most that many: a list that shows
        "more than N" counts no further (its cost is bounded whatever the history)."""
        ...

    def event_facets(self, query: EventQuery) -> dict[str, dict[str, int]]:
        """Counts of the matching events by severity, status, component and agent."""
        ...

    def event_patterns(
        self,
        query: EventQuery,
        *,
        min_count: int = 1,
        active_since: datetime | None = None,
        videos_limit: int | None = None,
    ) -> list[Pattern]:
        """The matching events grouped by pattern (fingerprint, merges followed; events without
        one are left out), groups
        of at least ``min_count``. With ``active_since`` only groups with an occurrence at or
        after it, counted in ``recent_count``. Most frequent first. ``videos_limit``: list at
        most that many videos per pattern, the first by id (``video_count`` counts them all).
        A query matching every event is answered from aggregates kept on write."""
        ...

    def event_timeline(self, query: EventQuery) -> dict[date, dict[str, int]]:
        """Counts of the matching events per UTC day and severity (days without events absent)."""
        ...

    def resolution_times(
        self, query: EventQuery, *, resolved_since: datetime | None = None
    ) -> list[tuple[datetime, datetime]]:
        """``(timestamp, resolved_at)`` of the matching resolved events that record when they
        were resolved (at or after ``resolved_since`` when given)."""
        ...

    def event_statuses(self, event_ids: Sequence[str]) -> dict[str, str]:
        """The current status of each of these events that exists."""
        ...

    def regression_events(self, query: EventQuery) -> list[LearningEvent]:
        """The matching events that record ``regression_of`` (a failure back after its
        pattern's every occurrence was resolved), oldest first. Filtered in the store (the
        field is read out of the stored record there), so only those events are decoded."""
        ...

    # -- agent memory -----------------------------------------------------------------------
    def agent_state(self, agent: str) -> AbstractContextManager[AgentState]:
        """Lock the agent, load memory and tombstones, write back what changed on exit (with an
        archive snapshot of the memory before it changes)."""
        ...

    def load_memory(self, agent: str) -> AgentMemory: ...

    def memory_location(self, agent: str) -> str:
        """Where ``agent``'s memory lives, for messages (a path relative to the data root, a
        table row, …)."""
        ...

    def load_tombstones(self, agent: str) -> TombstoneFile: ...

    def list_agents(self) -> list[str]: ...

    def init_agent(self, agent: str) -> bool:
        """Create empty state for ``agent``; False when it already existed."""
        ...

    def list_memory_snapshots(self, agent: str) -> list[tuple[datetime, str]]: ...

    def prune_memory_snapshots(self, agent: str, older_than: datetime) -> list[str]: ...

    # -- error log --------------------------------------------------------------------------
    def append_errors(self, entries: Sequence[ErrorEntry]) -> None:
        """Persist new error-log entries or new versions of them (the last version wins)."""

    def update_error(self, error_id: str, change: Callable[[ErrorEntry], ErrorEntry]) -> ErrorEntry:
        """Append ``change(latest)`` atomically; raises ``ErrorEntryNotFoundError``."""
        ...

    def update_errors(
        self, error_ids: Sequence[str], change: Callable[[ErrorEntry], ErrorEntry | None]
    ) -> list[ErrorEntry]:
        """:meth:`update_error` for many entries under one lock, as :meth:`update_events`."""
        ...

    def get_error(self, error_id: str) -> ErrorEntry | None: ...

    def query_errors(self, query: ErrorQuery) -> list[ErrorEntry]: ...

    def error_patterns(self, min_count: int) -> list[ErrorPattern]:
        """Error-log entries grouped by pattern (fingerprint, merges followed), most frequent
        first."""
        ...

    def latest_resolutions(self) -> list[ErrorEntry]:
        """For each fingerprint, the most recently resolved entry."""
        ...

    def latest_resolution(self, fingerprint: str) -> ErrorEntry | None:
        """The most recently resolved entry with this fingerprint (an indexed lookup), or None."""
        ...

    # -- failure patterns ---------------------------------------------------------------------
    def pattern_book(self, stage: str) -> AbstractContextManager[StorePatternBook]:
        """The store's failure clusters as a book for :func:`rayvault.learning._grouping.assign`.
        One stage's assignments are serialised across threads and processes while it is held;
        what the block saved and merged is committed when it exits normally, rolled back on an
        exception (a merge already made durable is kept: it is replayed). Read-only stores
        refuse with ``StoreError``."""
        ...

    def resolve_pattern(self, key: str) -> str:
        """``key`` with recorded merges followed (a key never merged is returned as is)."""
        ...

    def pattern_merges(self, stage: str | None = None) -> list[PatternMerge]:
        """The recorded merges (of one stage when given), oldest first."""
        ...

    # -- text relevance -----------------------------------------------------------------------
    def rank_texts(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score in [0, 1) per text of ``texts``, in their order: its full-text relevance to
        ``query`` (stemmed words, rarer shared words weigh more; 0 when they share none). The
        texts are passed in, not read from the store: ``render_rules`` ranks an agent's rules
        against a task with it (SQLite FTS5 BM25 / PostgreSQL ``ts_rank``). Writes nothing."""
        ...

    # -- the gate ---------------------------------------------------------------------------
    def known_failures(self, components: tuple[str, ...], threshold: int) -> list[KnownFailure]:
        """Fingerprints seen at least ``threshold`` times among the events and (not promoted)
        error-log entries of these components, with at least one occurrence unresolved."""
        ...

    def failing_fingerprints(
        self, fingerprints: list[str], components: tuple[str, ...]
    ) -> set[str]:
        """Those of ``fingerprints`` with a FAIL/BLOCKER event or a (not promoted) error-log
        entry among the components: the recurring failures the gate may deny."""
        ...

    def open_occurrences(
        self, fingerprint: str, components: tuple[str, ...], limit: int
    ) -> tuple[list[str], list[str]]:
        """Up to ``limit`` unresolved event ids and (not promoted) error-log entry ids of one
        fingerprint among the components, in no particular order: what a gate denial names."""
        ...

    def gate_state(self, video_id: str) -> AbstractContextManager[GateState]:
        """Lock and load the gate state of a video; it is written back when the block exits
        cleanly."""
        ...

    def load_gate_state(self, video_id: str) -> GateState | None: ...

    def list_gate_videos(self) -> list[str]:
        """The videos with a gate state, sorted (what the web app's gate matrix lists)."""
        ...

    def save_soul_snapshot(self, sha256: str, text: str) -> None:
        """Keep the text of a SOUL file version the gate has seen (to diff against later)."""

    def load_soul_snapshot(self, sha256: str) -> str | None: ...

    def exclusive(self, name: str) -> AbstractContextManager[None]:
        """A named inter-process mutex, for multi-step operations that must not interleave."""

    def archive_tombstones(self, agent: str, older_than: datetime) -> ArchivedTombstones:
        """Move the agent's tombstones removed before ``older_than`` into a dated archive (never
        overwriting an earlier archive), atomically with respect to other writers. It also
        compacts what the store keeps of the tombstones added since the last call (a log of
        appends, rows), due or not: the weekly revisit's sweep runs it for every agent."""
        ...

    # -- weekly reports -----------------------------------------------------------------------
    def save_weekly_report(self, day: date, report: Mapping[str, Any], html: str) -> SavedReport:
        """Store a weekly report and its HTML rendering under a new name for ``day``; a second
        report of the same day never replaces the first."""
        ...

    def list_weekly_reports(self) -> list[str]:
        """Names of the stored weekly reports, oldest first (by day, then order of the day)."""
        ...

    def load_weekly_report(self, name: str | None = None) -> WeeklyReport | None:
        """The weekly report ``name`` (default: the latest); None when there is none."""
        ...

    # -- maintenance ------------------------------------------------------------------------
    def compact_events(self) -> CompactResult:
        """Keep only the latest version of each event, keeping what was removed restorable."""
        ...

    def check(
        self, repair: bool = False, *, progress: ProgressCallback | None = None
    ) -> list[Finding]:
        """Problems in the backend's own data (files or tables): unreadable or malformed
        records, copies that disagree, leftovers of crashed writers. With ``repair``, fix what
        can be fixed without losing anything and mark those findings ``repaired``."""
        ...

    def close(self) -> None: ...
