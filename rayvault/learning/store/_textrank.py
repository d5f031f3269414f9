"""What both stores' full-text ranking (``Store.rank_texts``) shares: the task text turned into
the words of a query, and the raw rank turned into a score between 0 and 1.

A task is free text (a video title, a product description): it is never handed to a query
parser as is, where a quote or an operator would be a syntax error. Its words (letters and
digits only) are OR-ed, so a task that shares any word with a rule ranks it above zero, and
one that shares more (and rarer) words ranks it higher.
"""

from __future__ import annotations

import re

#: Most words of a task the query keeps: a long description costs no more than this.
MAX_QUERY_WORDS = 32
_WORD = re.compile(r"[^\W_]+")
#: English words too common to say what a task is about (PostgreSQL's ``english`` configuration
#: drops the same kind; FTS5 has no stop list, and in a handful of rules BM25 weighs "the" as
#: much as "price"). Left out of the query on both stores.
_STOP_TEXT = """a about above after again against all am an and any are as at be because been before
    being below between both but by can did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it its
    itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with you your yours yourself yourselves"""
STOP_WORDS = frozenset(_STOP_TEXT.split())


def query_words(text: str) -> list[str]:
    """The distinct words of ``text`` that are not :data:`STOP_WORDS`, lower-cased, in order of
    appearance, at most :data:`MAX_QUERY_WORDS` (letters and digits only: safe in any full-text
    query syntax)."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text.lower()):
        if match.group() not in STOP_WORDS:
            seen.setdefault(match.group(), None)
        if len(seen) >= MAX_QUERY_WORDS:
            break
    return list(seen)


def bounded(rank: float) -> float:
    """A non-negative raw rank as a score in [0, 1): ``rank / (1 + rank)`` (what PostgreSQL's
    ``ts_rank`` normalisation 32 computes), so both stores report relevance on one scale."""
    rank = max(rank, 0.0)
    return rank / (1.0 + rank)
