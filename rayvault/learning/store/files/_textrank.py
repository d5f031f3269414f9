"""Full-text ranking for the file store: SQLite FTS5 (porter stemming, BM25) over the texts
passed in, in an in-memory table per thread.

The texts ranked are an agent's active rules, which live in ``memory_active.json``, not in the
derived index; ranking them in an in-memory table costs an insert per rule and one query, and
nothing on disk to keep in step (measured in benchmarks/bench_render.py). The table holds the
texts of the last call only: the next call with the same texts (the same agent's rules, the
common case: one render per attempt) queries it as it is (~30 µs for 50 rules), other texts
replace it (~250 µs for 50). Its cost never grows with history.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence

from rayvault.learning.store._textrank import bounded, query_words

_local = threading.local()
_CREATE = "CREATE VIRTUAL TABLE texts USING fts5(body, tokenize='porter unicode61')"


def _connection() -> sqlite3.Connection:
    """The thread's in-memory database (a new one in a forked child: SQLite connections are
    never used across a fork)."""
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None or getattr(_local, "pid", None) != os.getpid():
        conn = sqlite3.connect(":memory:", check_same_thread=True)
        _local.conn, _local.pid, _local.loaded = conn, os.getpid(), None
    return conn


def _load(texts: tuple[str, ...]) -> sqlite3.Connection:
    """The thread's table, holding exactly ``texts`` (rowid = position + 1)."""
    conn = _connection()
    if getattr(_local, "loaded", None) != texts:
        _local.loaded = None  # a failed load leaves nothing that looks loaded
        with conn:
            # A new table rather than deleted rows: FTS5 keeps deletions as segments that every
            # later query reads through (a query took 8x longer after a reload that deleted).
            conn.execute("DROP TABLE IF EXISTS texts")
            conn.execute(_CREATE)
            conn.executemany("INSERT INTO texts(rowid, body) VALUES (?, ?)", enumerate(texts, 1))
        _local.loaded = texts
    return conn


def rank_texts(query: str, texts: Sequence[str]) -> list[float]:
    """One score in [0, 1) per text of ``texts``: its BM25 relevance to ``query`` (0 when they
    share no word)."""
    scores = [0.0] * len(texts)
    words = query_words(query)
    if not words or not texts:
        return scores
    match = " OR ".join(f'"{w}"' for w in words)
    conn = _load(tuple(texts))
    rows = conn.execute("SELECT rowid, bm25(texts) FROM texts WHERE texts MATCH ?", (match,))
    for rowid, rank in rows:
        scores[rowid - 1] = bounded(-rank)  # bm25(): lower is more relevant
    return scores
