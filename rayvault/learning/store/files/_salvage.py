"""Salvage of a damaged log: every readable record of a file that no longer parses.

Used by ``doctor --repair`` on the event log and the error log (JSON arrays, one element per
line, or pretty-printed by older writers) and on the error log's journal (JSON lines). A record
is a JSON object holding the log's key as a string; anything else between records is damage,
counted in bytes so the report can say how much was lost.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rayvault.learning.store.files._packed import unpack


@dataclass
class Salvage:
    """What a damaged file still holds."""

    #: Every readable record, in file order (all versions of a record, as appended).
    items: list[dict[str, Any]] = field(default_factory=list)
    #: Damaged stretches (between readable records) and their total size in characters.
    damaged_regions: int = 0
    damaged_chars: int = 0
    #: Keys still legible inside the damage, of records not salvaged: what was lost.
    damaged_keys: set[str] = field(default_factory=set)


_SEPARATORS = frozenset(" \t\r\n,[]\x00")


def salvage_records(data: bytes, key: str) -> Salvage:
    """Every JSON object with a string ``key`` that can be read out of ``data``, in order."""
    text = data.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    found = Salvage()
    pos, n = 0, len(text)
    damaged_from: int | None = None
    spans: list[tuple[int, int]] = []

    def damage(start: int, end: int) -> None:
        nonlocal damaged_from
        if any(c not in _SEPARATORS for c in text[start:end]):
            if damaged_from is None:
                found.damaged_regions += 1
                damaged_from = start
            found.damaged_chars += end - start
            spans.append((start, end))

    while pos < n:
        i = text.find("{", pos)
        if i < 0:
            damage(pos, n)
            break
        damage(pos, i)
        value: Any = None
        end = -1
        nl = text.find("\n", i)
        line = text[i : n if nl < 0 else nl].rstrip(" \t\r,]\x00")
        try:  # the single-line layout: one record per line
            value, end = orjson.loads(line), i + len(line)
        except orjson.JSONDecodeError:
            try:  # a pretty-printed record, or a record followed by damage on its line
                value, end = decoder.raw_decode(text, i)
            except ValueError:
                value = None
        if isinstance(value, dict) and isinstance(value.get(key), str):
            found.items.append(value)
            damaged_from = None
            pos = end
        elif value is not None:  # an object that is not a record (part of a damaged one)
            damage(i, end)
            pos = end
        else:
            damage(i, i + 1)
            pos = i + 1
    legible = re.compile(r'"' + re.escape(key) + r'"\s*:\s*"([A-Za-z0-9._:-]{1,200})"')
    salvaged = {item[key] for item in found.items}
    for start, end in _merge(spans):
        found.damaged_keys.update(legible.findall(text, start, min(n, end + 200)))
    found.damaged_keys -= salvaged
    return found


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def read_index_rows(path: Path | None, table: str, key: str) -> dict[str, dict[str, Any]]:
    """The records a derived index holds (``{key: record}``), read without bringing it up to
    date (which would drop what the damaged log lost); empty when it cannot be read."""
    if path is None or not path.exists():
        return {}
    rows: dict[str, dict[str, Any]] = {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        for record_key, data in conn.execute(f"SELECT {key}, data FROM {table}"):
            try:
                value = orjson.loads(unpack(data))
            except (orjson.JSONDecodeError, sqlite3.DatabaseError):
                continue
            if isinstance(value, dict) and isinstance(record_key, str):
                rows[record_key] = value
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return rows


def latest_by_key(items: Iterable[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """The last version of each record (records without a string ``key`` skipped)."""
    latest: dict[str, dict[str, Any]] = {}
    for item in items:
        value = item.get(key)
        if isinstance(value, str):
            latest[value] = item
    return latest


def version_time(record: dict[str, Any]) -> str:
    """When this version of a record was written, as stored (ISO text sorts in time order)."""
    for name in ("updated", "resolved_at", "timestamp", "ts"):
        value = record.get(name)
        if isinstance(value, str) and value:
            return value
    return ""
