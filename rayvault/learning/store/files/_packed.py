"""The event records the derived index keeps, packed (issue 15, item 5).

The index holds a copy of each event's latest version: queries read it without touching the log,
and ``doctor --repair`` restores events a damaged log lost from it. Stored as written, that copy
was most of the index's bytes (about 900 of 1,600 bytes per event at 100k events). Packed, a
record is raw DEFLATE with a preset dictionary of what every event record repeats (its field
names and their usual values): about 220 bytes for a record of 960, 4 µs to unpack.

A packed record starts with :data:`PACKED` (a JSON record starts with ``{``), so the readers of a
row take either form. The dictionary is part of the index's schema: changing it means a new
``SCHEMA_VERSION`` (the index is rebuilt from the log).
"""

from __future__ import annotations

import zlib

from rayvault.learning.store.files._driver import sqlite3

#: The first byte of a packed record.
PACKED = b"\x01"
_LEVEL = 6
_WBITS = -15  # raw DEFLATE: no header or checksum (the log is the truth, the index a copy)
#: What event records repeat, most frequent last (DEFLATE reaches the end of the window best).
_DICTIONARY = (
    b'"source_note":null,"idempotency_key":"rule_conflicts_with":[],"regression_of":"'
    b'"regressed_after_seconds":"verified_by":"person","verified_by":"retry",'
    b'"status":"verified","status":"archived","severity":"BLOCKER","severity":"WARN",'
    b'"severity":"FAIL","component":"research","component":"script","component":"assets",'
    b'"component":"tts","component":"manifest","component":"render","component":"publish",'
    b'"agent":"dzine_producer","agent":"davinci_editor","agent":"scriptwriter",'
    b'"agent":"researcher","agent":"publisher","soul_update":"### '
    b'{"event_id":"le-2026T00Z-","run_id":"run-","timestamp":"2026-T00:00:00.000000Z",'
    b'"severity":"INFO","component":"","symptom":"","root_cause":"","fix_applied":"",'
    b'"verification":"","status":"open","video_id":"v0","source_error_id":null,'
    b'"promotion_rule":"Avoid: . Cause: . Do: .","soul_update":null,'
    b'"obsolete_rules_removed":[],"agent":"","fingerprint":":","pattern":"<*>",'
    b'"rule_id":"rule-2026T00Z-","skill_node":"agents/skills/learnings/2026--fail-.md",'
    b'"loop_errors":[],"loop_steps":[],"updated":"2026-T00:00:00.000000Z",'
    b'"resolved_at":null,"fingerprint_version":2}'
    b'{"event_id":"le-2026T00Z-","run_id":"run-","timestamp":"2026-12-02T07:00:00.000000Z",'
    b'"severity":"FAIL","component":"assets","symptom":"","root_cause":"","fix_applied":"",'
    b'"verification":"","status":"applied","video_id":"v0","source_error_id":null,'
    b'"promotion_rule":"Avoid: . Cause: . Do: .","soul_update":null,'
    b'"obsolete_rules_removed":[],"agent":"dzine_producer","fingerprint":"assets:",'
    b'"pattern":"<*>","rule_id":"rule-2026T00Z-",'
    b'"skill_node":"agents/skills/learnings/2026--fail-assets-.md","loop_errors":[],'
    b'"loop_steps":[],"updated":"2026-T00:00:00.000000Z","resolved_at":null,'
    b'"fingerprint_version":2}'
)


def pack(record: bytes) -> bytes:
    """A record's JSON, packed."""
    packer = zlib.compressobj(
        _LEVEL, zlib.DEFLATED, _WBITS, 9, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY
    )
    return PACKED + packer.compress(record) + packer.flush()


def unpack(data: bytes) -> bytes:
    """A record's JSON, from a row's ``data`` packed or not (``sqlite3.DatabaseError`` when a
    packed row is damaged: the index is then dropped and rebuilt, as for any damage)."""
    if data[:1] != PACKED:
        return data
    try:
        unpacker = zlib.decompressobj(_WBITS, _DICTIONARY)
        return unpacker.decompress(data[1:]) + unpacker.flush()
    except zlib.error as e:
        raise sqlite3.DatabaseError(f"a packed record of the derived index is damaged: {e}") from e


def _record_text(data: bytes | None) -> str | None:
    return None if data is None else unpack(bytes(data)).decode()


def register(conn: sqlite3.Connection) -> None:
    """Give ``conn`` the SQL function ``record(data)``: a row's record as JSON text, for
    ``json_extract``."""
    conn.create_function("record", 1, _record_text, deterministic=True)
