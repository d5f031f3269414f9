"""What both stores derive about failure patterns from their records.

The clusters of grouping version 2 are derived data: every record of that version holds its
pattern key, its stage and its text, so a store whose pattern tables must be made again (an
import, a rebuilt index) gets them from the records. The merges (``models.PatternMerge``) are
not derived: each store keeps them durably and transfers them as items.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rayvault.learning._grouping import Cluster, generalise, mask, signature

#: Why a merge was made (``models.PatternMerge.reason``).
MERGE_REASONS = ("clusters", "regroup", "version")


def rebuild_clusters(
    members: Iterable[tuple[str, str, str]], merges: Mapping[str, str] | None = None
) -> tuple[list[Cluster], list[tuple[str, str, str]]]:
    """The clusters and signatures that stored records of grouping version 2 imply, for a store
    whose pattern tables are derived again (an import, a rebuilt index).

    ``members``: (folded stage, failure text, stored pattern key) per record, oldest first. Each
    key is one cluster, made when its first record was (so the order is kept); its template is
    its members' masked tokens generalised where they differ, as :func:`assign` generalises
    them; each masked text's signature names the key of its first record. ``merges`` maps a
    merged key to the key it ends in: a merged cluster widened its target, so the target's
    template admits the merged members too. What the algorithm kept in ``data`` is not in the
    records and starts empty again."""
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
            cluster.tokens = generalise(cluster.tokens, tokens)
    for key, cluster in clusters.items():
        target = clusters.get((merges or {}).get(key, key))
        if target is not None and target is not cluster and target.length == cluster.length:
            target.tokens = generalise(target.tokens, cluster.tokens)
    return list(clusters.values()), [(s, sig, k) for (s, sig), k in signatures.items()]
