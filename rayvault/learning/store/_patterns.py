"""What both stores record about failure patterns beyond their clusters: the merges.

A pattern key, once handed out, never changes; when grouping later finds that two patterns are
one failure, the store records a :class:`PatternMerge` and every query treats the source key as
its target from then on. Shared by the file store and PostgreSQL (the store's base layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

#: Why a merge was made: two clusters' templates turned out to vary only where values vary
#: ("clusters"), a regroup of stored records ("regroup"), a record keyed by an older grouping
#: version mapped onto its current pattern ("version").
MERGE_REASONS = ("clusters", "regroup", "version")


@dataclass(frozen=True)
class PatternMerge:
    """One recorded merge: ``source`` resolves to ``target`` from ``at`` on (UTC), decided by
    grouping version ``version``."""

    source: str
    target: str
    stage: str
    at: datetime
    version: int
    reason: str
