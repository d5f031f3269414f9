"""What both stores record about failure patterns beyond their clusters: the merges.

A pattern key, once handed out, never changes; when grouping later finds that two patterns are
one failure, the store records a :class:`PatternMerge` and every query treats the source key as
its target from then on. Shared by the file store and PostgreSQL (the store's base layer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from rayvault.learning._grouping import VARIABLE, Cluster, mask, signature

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


def rebuild_clusters(
    members: Iterable[tuple[str, str, str]],
) -> tuple[list[Cluster], list[tuple[str, str, str]]]:
    """The clusters and signatures that stored records of grouping version 2 imply, for a store
    whose pattern tables are derived again (an import, a rebuilt index).

    ``members``: (folded stage, failure text, stored pattern key) per record, oldest first. Each
    key is one cluster, made when its first record was (so the order is kept); its template is
    its members' masked tokens generalised where they differ; each masked text's signature
    names the key of its first record. What the algorithm kept in ``data`` is not in the records
    and starts empty again."""
    clusters: dict[str, Cluster] = {}
    signatures: dict[tuple[str, str], str] = {}
    for stage, text, key in members:
        masked = mask(text)
        tokens = tuple(masked.split(" ")) if masked else ("",)
        signatures.setdefault((stage, signature(stage, masked)), key)
        cluster = clusters.get(key)
        if cluster is None:
            clusters[key] = Cluster(key, stage, tokens)
        elif cluster.length == len(tokens):
            cluster.tokens = tuple(
                a if a == b else VARIABLE for a, b in zip(cluster.tokens, tokens, strict=True)
            )
    return list(clusters.values()), [(s, sig, k) for (s, sig), k in signatures.items()]
