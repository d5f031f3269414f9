"""The shapes of failure grouping, apart from the algorithm (:mod:`rayvault.learning._grouping`):
its version, a cluster, the book clusters live in, and one assignment's outcome.

Kept apart so that what only names these types — the store interface, the stores' modules, the
gate's start-up path — does not compile the algorithm's masks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from rayvault.learning._template import template_of

#: The grouping algorithm's version, stored with every fingerprint it computes. Version 1 is
#: :func:`rayvault.learning._fingerprint.fingerprint` (records stored without a version).
GROUPING_VERSION = 2
#: A template position that the cluster's evidence showed to vary.
VARIABLE = "<*>"


@dataclass
class Cluster:
    """One failure pattern: its key (never changes) and its template tokens (only generalise).

    ``data`` is the algorithm's evidence about the cluster; a book stores it as JSON, unread."""

    key: str
    stage: str
    tokens: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return len(self.tokens)

    @property
    def template(self) -> str:
        return template_of(self.tokens)


class PatternBook(Protocol):
    """Where the clusters of failure templates live: memory, the file store's index, PostgreSQL.

    :func:`assign` calls it while the caller holds whatever makes one stage's assignments one at
    a time (the store's lock); a book itself only reads and writes."""

    def find(self, stage: str, sig: str) -> Cluster | None:
        """The live cluster this exact masked text (its :func:`signature`) already belongs to,
        merges followed; None for a text never seen."""
        ...

    def clusters(self, stage: str, length: int) -> list[Cluster]:
        """The stage's live clusters (not merged into another) with this many tokens, oldest
        first."""
        ...

    def save(self, cluster: Cluster, sig: str) -> None:
        """Insert or update ``cluster`` (its template may have generalised) and record that the
        signature ``sig`` belongs to it."""
        ...

    def merge(self, source: Cluster, target: Cluster) -> None:
        """Record that ``source`` is merged into ``target``: its signatures and its pattern key
        resolve to ``target.key`` from now on; ``source`` is no longer live."""
        ...


@dataclass(frozen=True)
class Grouping:
    """Where one failure text went: its pattern key and template, and why."""

    key: str
    template: str
    sig: str
    masked: str
    version: int
    #: "known" (the exact masked text was seen), "joined" (fits a cluster's template), "merged"
    #: (it made a family of clusters one), or "new".
    decision: str
    #: Pattern keys merged into ``key`` by this assignment.
    merged: tuple[str, ...] = ()
