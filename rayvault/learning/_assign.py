"""Grouping a failure as it is written: :func:`assign` under the store's pattern book, with the
history of the previous grouping version linked to the new pattern.

``log_error`` and ``create_event`` call :func:`group_failure`; so does ``regroup`` (without the
link: it records its own merges, with the counts behind them).
"""

from __future__ import annotations

from rayvault.learning._fingerprint import fingerprint as fingerprint_v1
from rayvault.learning._grouping import Grouping, assign
from rayvault.learning.store import Store

#: The reason recorded for the merge of a text's version-1 key into its new key.
VERSION_LINK = "version"


def group_failure(store: Store, stage: str, text: str) -> Grouping:
    """The pattern of a failure text of ``stage`` (already folded), assigned in the store.

    When the text starts a new cluster and records written by version 1 carry the key version
    1 gives this text, that key is merged into the new one (as Sentry links the hashes of an
    old grouping to the new): the failure's history is not split by the new version. Only the
    new-cluster path pays for it (one masking, two indexed lookups)."""
    with store.pattern_book(stage) as book:
        grouping = assign(book, stage, text)
        if grouping.decision == "new":
            old = fingerprint_v1(stage, text).key
            if old != grouping.key and book.in_history(old):
                book.link(old, grouping.key, VERSION_LINK)
    return grouping
