"""The PostgreSQL store's SQL: one statement per operation (the queries shared with the file
store's index are built by ``store._sql``)."""

from __future__ import annotations

from rayvault.learning.store._sql import (
    ERROR_COLUMNS,
    LATEST_RESOLUTION_SQL,
    RESOLVED_EVENT_COLUMNS,
)

_EVENT_TYPES = {"ts": "bigint", "resolved": "smallint", "resolved_ts": "bigint"}
_ERROR_TYPES = {"ts": "bigint", "resolved": "smallint", "resolved_ts": "bigint"}


def _upsert_sql(
    versions: str, table: str, key: str, columns: tuple[str, ...], types: dict[str, str]
) -> str:
    """Append one version and make it the record's latest unless a later one is already there.

    Parameters: the key, the JSON text, then the indexed columns (``_sql.*_row``). The version's
    ``seq`` decides which version is the latest, as the position in the file log does: a writer
    that commits late never replaces a newer version.
    """
    values = ", ".join(f"%s::{types.get(c, 'text')}" for c in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*columns[1:], "last_seq", "data"))
    return f"""
        WITH version AS (
            INSERT INTO {versions} ({key}, data) VALUES (%s, %s) RETURNING seq, data
        )
        INSERT INTO {table} ({", ".join(columns)}, seq, last_seq, data)
        SELECT {values}, seq, seq, data FROM version
        ON CONFLICT ({key}) DO UPDATE SET {updates}
        WHERE {table}.last_seq < excluded.last_seq
    """


EVENT_UPSERT = _upsert_sql(
    "event_versions", "events", "event_id", RESOLVED_EVENT_COLUMNS, _EVENT_TYPES
)
ERROR_UPSERT = _upsert_sql("error_versions", "errors", "id", ERROR_COLUMNS, _ERROR_TYPES)
EVENT_BY_ID = "SELECT data::text FROM events WHERE event_id = %s"
EVENT_FOR_UPDATE = EVENT_BY_ID + " FOR UPDATE"
EVENT_VERSIONS_BY_ID = "SELECT data::text FROM event_versions WHERE event_id = %s ORDER BY seq"
ERROR_BY_ID = "SELECT data::text FROM errors WHERE id = %s"
ERROR_FOR_UPDATE = ERROR_BY_ID + " FOR UPDATE"
# Many rows locked in key order, so two bulk writers never wait for each other in a cycle.
EVENTS_FOR_UPDATE = (
    "SELECT event_id, data::text FROM events WHERE event_id = ANY(%s) ORDER BY event_id FOR UPDATE"
)
ERRORS_FOR_UPDATE = "SELECT id, data::text FROM errors WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
EVENT_FACETS = """
    SELECT CASE WHEN GROUPING(severity) = 0 THEN 'severity'
                WHEN GROUPING(status) = 0 THEN 'status'
                WHEN GROUPING(component) = 0 THEN 'component'
                ELSE 'agent' END AS facet,
           coalesce(severity, status, component, agent) AS value, {count} AS n
      FROM {source}{where}
     GROUP BY GROUPING SETS ((severity), (status), (component), (agent))
     ORDER BY facet, n DESC, value
"""
#: The error-log patterns from their aggregates (migration ``m011_error_patterns``), most frequent
#: first, each with its most recently affected videos (an index walk stopping at the limit), its
#: stages and its example's text: one statement, a few rows per pattern, whatever the history.
#: Parameters: min_count, the number of videos listed.
ERROR_PATTERNS = """
    SELECT p.fingerprint, p.total, p.open, p.first_ts, p.last_ts, p.example_id, p.videos,
           coalesce((SELECT array_agg(r.video_id) FROM (
               SELECT video_id FROM error_pattern_videos AS v
                WHERE v.fingerprint = p.fingerprint
                ORDER BY v.last_ts DESC, v.video_id DESC LIMIT %(videos)s) AS r), '{}'),
           coalesce((SELECT array_agg(s.stage) FROM error_pattern_stages AS s
                      WHERE s.fingerprint = p.fingerprint), '{}'),
           (SELECT e.data::text FROM errors AS e WHERE e.id = p.example_id)
      FROM error_patterns AS p WHERE p.total >= %(min_count)s
     ORDER BY p.total DESC, p.last_ts DESC, p.fingerprint DESC
"""
LATEST_RESOLUTIONS = """
    SELECT data::text FROM (
        SELECT DISTINCT ON (fingerprint) data, resolved_ts, seq FROM errors
         WHERE resolved = 1 AND fingerprint IS NOT NULL AND resolved_ts IS NOT NULL
         ORDER BY fingerprint, resolved_ts DESC, seq DESC
    ) AS latest
    ORDER BY resolved_ts DESC, seq DESC
"""
# The pattern shown for a known failure: from an event with the fingerprint if there is one
# (its pattern, or none: then the fingerprint is shown), else from an error-log entry; and the
# text of that record, masked for records stored without a pattern (the original system's).
KNOWN_FAILURES = """
    SELECT k.fingerprint, k.occurrences, k.unresolved,
           coalesce((SELECT coalesce(e.data->>'pattern', '') FROM events AS e
                      WHERE e.fingerprint = k.fingerprint LIMIT 1),
                    (SELECT r.data->>'pattern' FROM errors AS r
                      WHERE r.fingerprint = k.fingerprint LIMIT 1)),
           coalesce((SELECT e.data->>'symptom' FROM events AS e
                      WHERE e.fingerprint = k.fingerprint LIMIT 1),
                    (SELECT r.data->>'error' FROM errors AS r
                      WHERE r.fingerprint = k.fingerprint LIMIT 1)),
           (SELECT c.tokens::text FROM pattern_clusters AS c WHERE c.key = k.fingerprint)
      FROM ({inner}) AS k
     ORDER BY k.occurrences DESC, k.fingerprint
"""
LOCK = "SELECT pg_advisory_xact_lock(%s)"
#: An agent's memory, and whether its tombstone document exists (the list itself is not read:
#: see ``TOMBSTONES_READ``).
AGENT_STATE = "SELECT memory::text, tombstones IS NOT NULL FROM agents WHERE agent = %s"
AGENT_LOCKED = AGENT_STATE + " FOR UPDATE"
#: The tombstone document and the tombstones added since it was written (a JSON array or NULL),
#: in one statement: one snapshot, so a sweep folding the rows in between is never half seen.
TOMBSTONES_READ = """
    SELECT (SELECT tombstones::text FROM agents WHERE agent = %(agent)s),
           (SELECT json_agg(data ORDER BY seq)::text FROM agent_tombstones
             WHERE agent = %(agent)s)
"""
TOMBSTONE_ADD = "INSERT INTO agent_tombstones (agent, data) VALUES (%s, %s)"
TOMBSTONES_FOLD = """
    WITH folded AS (DELETE FROM agent_tombstones WHERE agent = %(agent)s)
    UPDATE agents SET tombstones = %(tombstones)s WHERE agent = %(agent)s
"""
# One statement: archive the memory as it is (server side: it is not sent back) and save the new
# documents. The snapshot reads the row as the statement found it: before the update.
AGENT_WRITE = """
    WITH snapshot AS (
        INSERT INTO memory_snapshots (agent, name, taken_at, data)
        SELECT agent, %(name)s, %(taken)s, memory FROM agents
         WHERE agent = %(agent)s AND memory IS NOT NULL AND %(snapshot)s
        ON CONFLICT DO NOTHING RETURNING name
    )
    INSERT INTO agents (agent, memory, tombstones) VALUES (%(agent)s, %(memory)s, %(tombstones)s)
    ON CONFLICT (agent) DO UPDATE SET memory = coalesce(excluded.memory, agents.memory),
                                      tombstones = coalesce(excluded.tombstones, agents.tombstones)
    RETURNING (SELECT count(*) FROM snapshot)
"""
AGENT_SAVE = """
    INSERT INTO agents (agent, memory, tombstones) VALUES (%s, %s, %s)
    ON CONFLICT (agent) DO UPDATE SET memory = coalesce(excluded.memory, agents.memory),
                                      tombstones = coalesce(excluded.tombstones, agents.tombstones)
"""
SNAPSHOT_INSERT = """
    INSERT INTO memory_snapshots (agent, name, taken_at, data) VALUES (%s, %s, %s, %s)
    ON CONFLICT DO NOTHING RETURNING name
"""
SNAPSHOT_LIST = (
    "SELECT taken_at, name FROM memory_snapshots WHERE agent = %s ORDER BY taken_at, name"
)
SNAPSHOT_PRUNE = (
    "DELETE FROM memory_snapshots WHERE agent = %s AND taken_at < %s RETURNING taken_at, name"
)
GATE_STATE = "SELECT data::text FROM gate_states WHERE video_id = %s"
GATE_STATE_LOCKED = GATE_STATE + " FOR UPDATE"
GATE_SAVE = """
    INSERT INTO gate_states (video_id, data) VALUES (%s, %s)
    ON CONFLICT (video_id) DO UPDATE SET data = excluded.data
"""
SOUL_SAVE = "INSERT INTO soul_snapshots (sha256, text) VALUES (%s, %s) ON CONFLICT DO NOTHING"
SOUL_LOAD = "SELECT text FROM soul_snapshots WHERE sha256 = %s"
#: psycopg decodes the ``json`` column it selects: the record is validated from that. The key is
#: resolved (merges followed) once, before the index is walked: the column holds resolved keys.
LATEST_RESOLUTION = LATEST_RESOLUTION_SQL.format(ph="pattern_resolve(%s)")
PATTERN_SAMPLES = (
    "SELECT event_id, data->>'pattern', data->>'symptom' FROM events WHERE event_id = ANY(%s)"
)
EVENT_STATUSES = "SELECT event_id, status FROM events WHERE event_id = ANY(%s)"
# Dated names (weekly-2026-02-19, …-2): the next number of the day, claimed by an insert that
# never replaces a row (under a lock, so two writers of one day do not race for a number).
REPORT_NEXT = "SELECT coalesce(max(n), 0) + 1 FROM weekly_reports WHERE day = %s"
REPORT_INSERT = """
    INSERT INTO weekly_reports (name, day, n, data, html) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (name) DO NOTHING RETURNING name
"""
REPORT_LIST = "SELECT name FROM weekly_reports WHERE data IS NOT NULL ORDER BY day, n, name"
REPORT_LOAD = "SELECT data::text FROM weekly_reports WHERE name = %s AND data IS NOT NULL"
TOMBSTONE_ARCHIVE_NEXT = (
    "SELECT coalesce(max(n), 0) + 1 FROM tombstone_archives WHERE agent = %s AND day = %s"
)
TOMBSTONE_ARCHIVE_INSERT = """
    INSERT INTO tombstone_archives (agent, name, day, n, data) VALUES (%s, %s, %s, %s, %s)
    ON CONFLICT (agent, name) DO NOTHING RETURNING name
"""
# Compaction: the first version row of every event with several versions takes the latest
# version's text; the other rows go. Everything changed or removed is copied to the archive first.
COMPACT_SIZE = "SELECT count(*), coalesce(sum(octet_length(data::text)), 0) FROM event_versions"
COMPACT_PLAN = """
    CREATE TEMP TABLE rayvault_compact ON COMMIT DROP AS
    SELECT v.event_id, min(v.seq) AS keep FROM event_versions AS v
      JOIN events AS e ON e.event_id = v.event_id
     GROUP BY v.event_id HAVING count(*) > 1
"""
COMPACT_STEPS = (
    """INSERT INTO event_version_archive (compaction, seq, event_id, data)
       SELECT %(name)s, v.seq, v.event_id, v.data FROM event_versions AS v
         JOIN rayvault_compact AS c ON c.event_id = v.event_id""",
    """UPDATE event_versions AS v SET data = e.data FROM rayvault_compact AS c, events AS e
        WHERE v.seq = c.keep AND e.event_id = c.event_id""",
    """DELETE FROM event_versions AS v USING rayvault_compact AS c
        WHERE v.event_id = c.event_id AND v.seq <> c.keep""",
    """UPDATE events AS e SET seq = c.keep, last_seq = c.keep FROM rayvault_compact AS c
        WHERE e.event_id = c.event_id""",
)
#: Full-text relevance of each passed text to an OR of the task's words (``Store.rank_texts``),
#: over an array parameter: no table, nothing written. Normalisation 32 is ``rank / (rank + 1)``;
#: the caller applies the same bound to the raw rank, so it asks for the raw one (0).
RANK_TEXTS = (
    "SELECT ts_rank(to_tsvector('english', t), q) FROM to_tsquery('english', %s) AS q, "
    "unnest(%s::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i"
)
