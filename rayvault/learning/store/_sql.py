"""SQL shared by the file store's derived index (SQLite) and the PostgreSQL store.

Both keep the latest version of each event in an ``events`` table with the same indexed columns;
timestamps are stored as integer microseconds since the epoch so they compare as datetimes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

from rayvault.learning._constants import RESOLVED_STATUSES, SEVERITIES
from rayvault.learning._time import to_micros

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

    from rayvault.learning.store.base import ErrorQuery, EventQuery

EVENT_COLUMNS = (
    "event_id",
    "ts",
    "severity",
    "component",
    "status",
    "video_id",
    "agent",
    "fingerprint",
    "source_error_id",
    "source_note",
    "resolved",
    "idempotency_key",
)
FACETS = ("severity", "status", "component", "agent")
#: No step-name aliases (the default of :func:`event_row` and :func:`error_row`).
NO_ALIASES: Mapping[str, str] = MappingProxyType({})
MICROS_PER_DAY = 86_400_000_000
#: The aggregate listing a column's distinct values as one comma-separated text, per dialect (ids,
#: agents and components are validated identifiers: they hold no comma).
DISTINCT_LIST = {
    "sqlite": "group_concat(DISTINCT {column})",
    "postgresql": "string_agg(DISTINCT {column}, ',')",
}
#: The columns :func:`pattern_sql` selects, in order.
PATTERN_COLUMNS = (
    "fingerprint",
    "count",
    "open_count",
    "recent_count",
    "first_ts",
    "last_ts",
    "sample_event_id",
    "videos",
    "video_count",
    "components",
    "agents",
    *(f"n_{s}" for s in SEVERITIES),
)


def event_row(item: dict[str, Any], aliases: Mapping[str, str] = NO_ALIASES) -> tuple[Any, ...]:
    """The indexed columns of one event (a raw dict as stored), in ``EVENT_COLUMNS`` order.

    ``aliases`` (the policies' step-name map) folds the component of an event that was stored
    without a fingerprint (the original system's) before fingerprinting it, as new ones are.
    """
    from rayvault.learning._time import parse_ts

    try:
        ts = to_micros(parse_ts(item["timestamp"]))
    except (KeyError, TypeError, ValueError):
        ts = 0
    status = item.get("status") or "open"
    return (
        item["event_id"],
        ts,
        str(item.get("severity") or "").upper(),
        item.get("component"),
        status,
        item.get("video_id") or None,
        item.get("agent") or None,
        item.get("fingerprint")
        or legacy_fingerprint(item.get("component"), item.get("symptom"), aliases),
        item.get("source_error_id") or None,
        item.get("source_note") or None,
        1 if status in RESOLVED_STATUSES else 0,
        item.get("idempotency_key") or None,
    )


#: The events' columns with when each was resolved (the file store's index and PostgreSQL from
#: ``m012_event_patterns`` on): a window's resolutions are an index range.
RESOLVED_EVENT_COLUMNS = (*EVENT_COLUMNS, "resolved_ts")


def resolved_event_row(
    item: dict[str, Any], aliases: Mapping[str, str] = NO_ALIASES
) -> tuple[Any, ...]:
    """:func:`event_row`, and the event's ``resolved_at`` in microseconds (None when it has none
    or it does not parse: such an event has no resolution time to report)."""
    return (*event_row(item, aliases), _micros_or_none(item.get("resolved_at")))


def _micros_or_none(value: object) -> int | None:
    from rayvault.learning._time import parse_ts

    if not isinstance(value, str):
        return None
    try:
        return to_micros(parse_ts(value))
    except (ValueError, OverflowError):
        return None


def legacy_fingerprint(
    stage: object, text: object, aliases: Mapping[str, str] = NO_ALIASES
) -> str | None:
    """The fingerprint of a record written before fingerprints existed (the original system's),
    computed on read exactly as a new record's is at write time: its stage or component folded
    through ``aliases``, its text masked. So old and new occurrences of one failure, logged under
    any of its step names, are one pattern."""
    if isinstance(stage, str) and stage.strip() and isinstance(text, str) and text.strip():
        from rayvault.learning._aliases import fold_name
        from rayvault.learning._fingerprint import fingerprint

        return fingerprint(fold_name(stage, aliases), text).key
    return None


def shown_pattern(text: object) -> str | None:
    """The template shown for a record stored without one (the original system's)."""
    if isinstance(text, str) and text.strip():
        from rayvault.learning._fingerprint import fingerprint

        return fingerprint("", text).template
    return None


def event_where(query: EventQuery, ph: str = "?") -> tuple[str, list[Any]]:
    """A WHERE clause (possibly empty) and its parameters for ``query``."""
    return event_filters_where(
        ph,
        video_id=query.video_id,
        components=query.components,
        severities=query.severities,
        statuses=query.statuses,
        agent=query.agent,
        agent_or_components=query.agent_or_components,
        fingerprint=query.fingerprint,
        source_error_id=query.source_error_id,
        source_note=query.source_note,
        idempotency_key=query.idempotency_key,
        unresolved=query.unresolved,
        date_from=query.date_from,
        date_to=query.date_to,
        exclude_event_id=query.exclude_event_id,
    )


def event_filters_where(
    ph: str = "?",
    *,
    video_id: str | None = None,
    components: tuple[str, ...] | None = None,
    severities: tuple[str, ...] | None = None,
    statuses: tuple[str, ...] | None = None,
    agent: str | None = None,
    agent_or_components: tuple[str, tuple[str, ...]] | None = None,
    fingerprint: str | None = None,
    source_error_id: str | None = None,
    source_note: str | None = None,
    idempotency_key: str | None = None,
    unresolved: bool | None = None,
    date_from: datetime | None = None,
    date_to: datetime | None = None,
    exclude_event_id: str | None = None,
) -> tuple[str, list[Any]]:
    """:func:`event_where` from the filters of an ``EventQuery`` given one by one (the cold
    gate's query, without the ``EventQuery`` record)."""
    clauses: list[str] = []
    params: list[Any] = []

    def any_of(column: str, values: tuple[str, ...]) -> None:
        if not values:
            clauses.append("0 = 1")
            return
        clauses.append(f"{column} IN ({', '.join([ph] * len(values))})")
        params.extend(values)

    if video_id is not None:
        clauses.append(f"video_id = {ph}")
        params.append(video_id)
    if components is not None:
        any_of("component", components)
    if severities is not None:
        any_of("severity", tuple(s.upper() for s in severities))
    if statuses is not None:
        any_of("status", statuses)
    if agent is not None:
        clauses.append(f"agent = {ph}")
        params.append(agent)
    if agent_or_components is not None:
        either, of_components = agent_or_components
        if of_components:
            marks = ", ".join([ph] * len(of_components))
            clauses.append(f"(agent = {ph} OR component IN ({marks}))")
            params.extend([either, *of_components])
        else:
            clauses.append(f"agent = {ph}")
            params.append(either)
    for column, value in (
        ("fingerprint", fingerprint),
        ("source_error_id", source_error_id),
        ("source_note", source_note),
        ("idempotency_key", idempotency_key),
    ):
        if value is not None:
            clauses.append(f"{column} = {ph}")
            params.append(value)
    if unresolved is not None:
        clauses.append(f"resolved = {ph}")
        params.append(0 if unresolved else 1)
    if date_from is not None:
        clauses.append(f"ts >= {ph}")
        params.append(to_micros(date_from))
    if date_to is not None:
        clauses.append(f"ts <= {ph}")
        params.append(to_micros(date_to))
    if exclude_event_id is not None:
        clauses.append(f"event_id <> {ph}")
        params.append(exclude_event_id)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def event_order(query: EventQuery, ph: str = "?") -> tuple[str, list[Any]]:
    order = " ORDER BY ts DESC, seq DESC" if query.newest_first else " ORDER BY ts, seq"
    if query.limit is not None:
        return f"{order} LIMIT {ph}", [query.limit]
    return order, []


ERROR_COLUMNS = (
    "id",
    "ts",
    "stage",
    "video_id",
    "fingerprint",
    "resolved",
    "resolved_ts",
    "learning_event_id",
    "idempotency_key",
)


def error_row(item: dict[str, Any], aliases: Mapping[str, str] = NO_ALIASES) -> tuple[Any, ...]:
    """The indexed columns of one error-log entry (a raw dict as stored); ``aliases`` as for
    :func:`event_row`."""
    from rayvault.learning._time import parse_ts

    try:
        ts = to_micros(parse_ts(item["timestamp"]))
    except (KeyError, TypeError, ValueError):
        ts = 0
    resolution = item.get("resolution")
    resolved_ts = None
    if isinstance(resolution, dict) and resolution.get("resolved_at"):
        try:
            resolved_ts = to_micros(parse_ts(resolution["resolved_at"]))
        except (TypeError, ValueError):
            resolved_ts = None
    return (
        item["id"],
        ts,
        item.get("stage"),
        item.get("video_id") or None,
        item.get("fingerprint")
        or legacy_fingerprint(item.get("stage"), item.get("error"), aliases),
        1 if item.get("resolved") else 0,
        resolved_ts,
        item.get("learning_event_id") or None,
        item.get("idempotency_key") or None,
    )


def error_where(query: ErrorQuery, ph: str = "?") -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.stages is not None:
        if query.stages:
            clauses.append(f"stage IN ({', '.join([ph] * len(query.stages))})")
            params.extend(query.stages)
        else:
            clauses.append("0 = 1")
    if query.video_id is not None:
        clauses.append(f"video_id = {ph}")
        params.append(query.video_id)
    if query.unresolved is not None:
        clauses.append(f"resolved = {ph}")
        params.append(0 if query.unresolved else 1)
    if query.fingerprint is not None:
        clauses.append(f"fingerprint = {ph}")
        params.append(query.fingerprint)
    either = [
        (column, values)
        for column, values in (("id", query.ids), ("learning_event_id", query.learning_event_ids))
        if values is not None
    ]
    if either:
        parts = [f"{c} IN ({', '.join([ph] * len(v))})" for c, v in either if v]
        clauses.append(f"({' OR '.join(parts)})" if parts else "0 = 1")
        for _, values in either:
            params.extend(values)
    if query.idempotency_key is not None:
        clauses.append(f"idempotency_key = {ph}")
        params.append(query.idempotency_key)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    order = " ORDER BY ts DESC, seq DESC" if query.newest_first else " ORDER BY ts, seq"
    if query.limit is not None:
        order += f" LIMIT {ph}"
        params.append(query.limit)
    return where + order, params


def known_failures_sql(components: int, ph: str = "?") -> str:
    """Fingerprints with >= threshold occurrences in the components, some unresolved, from the
    ``fp_counts`` aggregate. Parameters: the components, then the threshold."""
    marks = ", ".join([ph] * components)
    return f"""
        SELECT fingerprint, sum(total) AS occurrences, sum(open) AS unresolved
          FROM fp_counts WHERE component IN ({marks})
         GROUP BY fingerprint
        HAVING sum(total) >= {ph} AND sum(open) > 0
         ORDER BY sum(total) DESC, fingerprint
    """


def failing_fingerprints_sql(fingerprints: int, components: int, ph: str = "?") -> str:
    """Which of the fingerprints have, in the components, a FAIL/BLOCKER event or an error-log
    entry not promoted to an event (a stage failure); each answered by an indexed EXISTS that
    stops at the first such occurrence. Parameters: the fingerprints, then the components twice."""
    keys = ", ".join([f"({ph})"] * fingerprints)
    marks = ", ".join([ph] * components)
    return f"""
        WITH k(fp) AS (VALUES {keys})
        SELECT fp FROM k
         WHERE EXISTS (SELECT 1 FROM events WHERE fingerprint = k.fp AND component IN ({marks})
                          AND severity IN ('FAIL', 'BLOCKER'))
            OR EXISTS (SELECT 1 FROM errors WHERE fingerprint = k.fp AND stage IN ({marks})
                          AND learning_event_id IS NULL)
    """


def open_occurrences_sql(components: int, ph: str = "?") -> str:
    """A few unresolved occurrences of one fingerprint in the components, in index order (no
    sort: only their ids are wanted): event ids, then ids of error-log entries not promoted.
    Parameters: fingerprint, components, limit, fingerprint, components, limit."""
    marks = ", ".join([ph] * components)
    return f"""
        SELECT * FROM (SELECT 'event', event_id FROM events
          WHERE fingerprint = {ph} AND component IN ({marks}) AND resolved = 0 LIMIT {ph}) AS e
        UNION ALL
        SELECT * FROM (SELECT 'error', id FROM errors
          WHERE fingerprint = {ph} AND stage IN ({marks}) AND resolved = 0
            AND learning_event_id IS NULL LIMIT {ph}) AS r
    """


#: At most this many videos are listed per error-log pattern (the most recently affected); its
#: ``video_count`` counts them all. A pattern's output does not grow with its history.
PATTERN_VIDEOS_LISTED = 50

#: The error-log patterns from their aggregates (``error_patterns``, kept current on write), most
#: frequent first: fingerprint, count, unresolved, first and last ts, example id, video count.
#: The ``(total, last_ts)`` index answers the filter and the order without a sort.
ERROR_PATTERNS_SQL = """
    SELECT fingerprint, total, open, first_ts, last_ts, example_id, videos
      FROM error_patterns WHERE total >= {ph}
     ORDER BY total DESC, last_ts DESC, fingerprint DESC
"""
#: A pattern's most recently affected videos (parameters: fingerprint, limit): a walk of the
#: ``(fingerprint, last_ts)`` index that stops at the limit.
PATTERN_RECENT_VIDEOS_SQL = """
    SELECT video_id FROM error_pattern_videos WHERE fingerprint = {ph}
     ORDER BY last_ts DESC, video_id DESC LIMIT {ph}
"""
PATTERN_STAGES_SQL = "SELECT stage FROM error_pattern_stages WHERE fingerprint = {ph}"


def error_aggregate_recounts(where: str = "") -> dict[str, str]:
    """The error-log aggregates counted from scratch, per table: what the triggers keep the
    tables equal to, and how a rebuild or a stale pattern fills them in. ``where`` narrows the
    rows counted (``AND fingerprint = ?`` for one pattern); the same SQL runs on SQLite and
    PostgreSQL."""
    base = f"FROM errors WHERE fingerprint IS NOT NULL{where}"
    return {
        "error_patterns": (
            "SELECT fingerprint, count(*), sum(1 - resolved), min(ts), max(ts), max(id), "
            f"count(DISTINCT video_id) {base} GROUP BY fingerprint"
        ),
        "error_pattern_videos": (
            f"SELECT fingerprint, video_id, count(*), max(ts) {base} AND video_id IS NOT NULL "
            "GROUP BY fingerprint, video_id"
        ),
        "error_pattern_stages": (
            f"SELECT fingerprint, stage, count(*) {base} AND stage IS NOT NULL "
            "GROUP BY fingerprint, stage"
        ),
    }


#: The columns each aggregate table is filled in with, in the order of the recounts above.
ERROR_AGGREGATE_COLUMNS = {
    "error_patterns": "fingerprint, total, open, first_ts, last_ts, example_id, videos",
    "error_pattern_videos": "fingerprint, video_id, n, last_ts",
    "error_pattern_stages": "fingerprint, stage, n",
}


def pattern_sql(
    query: EventQuery,
    *,
    min_count: int,
    active_since: datetime | None,
    dialect: str = "sqlite",
    ph: str = "?",
) -> tuple[str, list[Any]]:
    """One GROUP BY over the matching events with a fingerprint: the columns of
    ``PATTERN_COLUMNS`` per fingerprint, most frequent first. One pass over the table whatever
    the number of groups; no event is decoded."""
    where, where_params = event_where(query, ph)
    where += (" AND " if where else " WHERE ") + "fingerprint IS NOT NULL"
    listed = DISTINCT_LIST[dialect]
    severity_counts = ", ".join(
        f"sum(CASE WHEN severity = '{s}' THEN 1 ELSE 0 END)" for s in SEVERITIES
    )
    select_params: list[Any] = []
    having_params: list[Any] = [min_count]
    recent = "NULL"
    having = f"count(*) >= {ph}"
    if active_since is not None:
        since = to_micros(active_since)
        recent = f"sum(CASE WHEN ts >= {ph} THEN 1 ELSE 0 END)"
        select_params.append(since)
        # Repeated rather than named by alias: PostgreSQL does not see aliases in HAVING.
        having += f" AND sum(CASE WHEN ts >= {ph} THEN 1 ELSE 0 END) > 0"
        having_params.append(since)
    sql = (
        f"SELECT fingerprint, count(*), sum(1 - resolved), {recent}, min(ts), max(ts), "
        f"max(event_id), {listed.format(column='video_id')}, count(DISTINCT video_id), "
        f"{listed.format(column='component')}, {listed.format(column='agent')}, "
        f"{severity_counts} "
        f"FROM events{where} GROUP BY fingerprint HAVING {having} "
        "ORDER BY count(*) DESC, max(ts) DESC, fingerprint"
    )
    return sql, [*select_params, *where_params, *having_params]


def timeline_sql(query: EventQuery, ph: str = "?") -> tuple[str, list[Any]]:
    """Counts of the matching events per UTC day (days since the epoch) and severity."""
    where, params = event_where(query, ph)
    day = f"ts / {MICROS_PER_DAY}"
    return (
        f"SELECT {day}, severity, count(*) FROM events{where} GROUP BY {day}, severity",
        params,
    )


#: The newest resolution of one fingerprint: walks the ``errors (fingerprint, resolved_ts)`` index
#: backwards, never the history of the pattern.
LATEST_RESOLUTION_SQL = """
    SELECT data FROM errors
     WHERE fingerprint = {ph} AND resolved = 1 AND resolved_ts IS NOT NULL
     ORDER BY resolved_ts DESC, seq DESC LIMIT 1
"""


#: The per-severity counters of an event pattern aggregate, in ``SEVERITIES`` order.
SEVERITY_COUNT_COLUMNS = tuple(f"n_{s.lower()}" for s in SEVERITIES)


def event_aggregate_recounts(where: str = "") -> dict[str, str]:
    """The event pattern aggregates counted from scratch, per table (as
    :func:`error_aggregate_recounts` for the error log): what the triggers keep them equal to,
    how a rebuild or a stale pattern fills them in, and the oracle the tests compare with.
    ``where`` narrows the rows counted (``AND fingerprint = ?``); SQLite and PostgreSQL alike."""
    base = f"FROM events WHERE fingerprint IS NOT NULL{where}"
    severities = ", ".join(f"sum(CASE WHEN severity = '{s}' THEN 1 ELSE 0 END)" for s in SEVERITIES)
    return {
        "event_patterns": (
            "SELECT fingerprint, count(*), sum(1 - resolved), min(ts), max(ts), max(event_id), "
            f"count(DISTINCT video_id), {severities} {base} GROUP BY fingerprint"
        ),
        "event_pattern_videos": (
            f"SELECT fingerprint, video_id, count(*) {base} AND video_id IS NOT NULL "
            "GROUP BY fingerprint, video_id"
        ),
        "event_pattern_components": (
            f"SELECT fingerprint, component, count(*) {base} AND component IS NOT NULL "
            "GROUP BY fingerprint, component"
        ),
        "event_pattern_agents": (
            f"SELECT fingerprint, agent, count(*) {base} AND agent IS NOT NULL "
            "GROUP BY fingerprint, agent"
        ),
    }


#: The columns each event aggregate table is filled in with, in the order of the recounts above.
EVENT_AGGREGATE_COLUMNS = {
    "event_patterns": (
        "fingerprint, total, open, first_ts, last_ts, sample_id, videos, "
        + ", ".join(SEVERITY_COUNT_COLUMNS)
    ),
    "event_pattern_videos": "fingerprint, video_id, n",
    "event_pattern_components": "fingerprint, component, n",
    "event_pattern_agents": "fingerprint, agent, n",
}

#: The unresolved events counted per (severity, status, component, agent): open failures are a
#: state, kept as one. A missing component or agent is counted under ''.
OPEN_EVENT_COUNTS_RECOUNT = """
    SELECT severity, status, coalesce(component, ''), coalesce(agent, ''), count(*)
      FROM events WHERE resolved = 0 GROUP BY 1, 2, 3, 4
"""
OPEN_EVENT_COUNTS_COLUMNS = "severity, status, component, agent, n"
#: The open counts seen as the unresolved events they count (``nullif`` gives back the missing
#: component or agent), so ``event_where`` filters them as it filters events.
OPEN_EVENT_COUNTS_AS_EVENTS = """(
    SELECT severity, status, nullif(component, '') AS component, nullif(agent, '') AS agent,
           0 AS resolved, n FROM open_event_counts WHERE n > 0
) AS open_events"""


def answered_by_open_counts(query: EventQuery) -> bool:
    """Whether the open counts answer ``query``'s facets: only unresolved events, filtered on
    the columns they keep (severity, status, component, agent)."""
    from dataclasses import replace

    from rayvault.learning.store.base import EventQuery

    if query.unresolved is not True:
        return False
    kept = replace(
        query,
        unresolved=None,
        severities=None,
        statuses=None,
        components=None,
        agent=None,
        agent_or_components=None,
        newest_first=False,
        limit=None,
    )
    return kept == EventQuery()


def answered_by_pattern_aggregates(query: EventQuery) -> bool:
    """Whether the pattern aggregates answer ``event_patterns(query)``: every event counts."""
    from dataclasses import replace

    from rayvault.learning.store.base import EventQuery

    return replace(query, newest_first=False, limit=None) == EventQuery()


#: How many events there are: the patterns' totals and the events without a pattern (an index
#: range of the events stored by the original system without a fingerprint).
COUNT_ALL_EVENTS_SQL = """
    SELECT (SELECT coalesce(sum(total), 0) FROM event_patterns)
         + (SELECT count(*) FROM events WHERE fingerprint IS NULL)
"""

#: The patterns with an occurrence at or after a time, and how many there (parameter: the time
#: in microseconds): a range of the time index, the window's events only. ``{plus}`` is SQLite's
#: unary plus, which keeps its planner off the fingerprint index (a walk of the whole history in
#: group order).
RECENT_PATTERN_COUNTS_SQL = """
    SELECT fingerprint, count(*) FROM events
     WHERE ts >= {ph} AND {plus}fingerprint IS NOT NULL GROUP BY {plus}fingerprint
"""

#: How many keys one ``IN (…)`` list of SQLite holds (its parameter limit is far above).
_IN_CHUNK = 500


def _key_lists(dialect: str, ph: str, keys: list[str]) -> list[tuple[str, list[Any]]]:
    """``fingerprint IN keys`` as (clause, parameters), in chunks for SQLite, one array for
    PostgreSQL."""
    if dialect == "postgresql":
        return [(f"fingerprint = ANY({ph})", [keys])]
    return [
        (f"fingerprint IN ({', '.join([ph] * len(chunk))})", list(chunk))
        for chunk in (keys[i : i + _IN_CHUNK] for i in range(0, len(keys), _IN_CHUNK))
    ]


def aggregate_pattern_rows(
    execute: Callable[[str, list[Any]], Iterable[Sequence[Any]]],
    *,
    min_count: int,
    active_since: datetime | None,
    videos_limit: int | None,
    dialect: str = "sqlite",
    ph: str = "?",
) -> list[tuple[Any, ...]]:
    """The rows :func:`pattern_sql` gives for a query matching every event, read from the pattern
    aggregates: the window's patterns from the time index (``active_since``), their totals from
    ``event_patterns``, at most ``videos_limit`` videos each (the first by id, as the report
    lists them; None: all). Reads grow with the window and the patterns shown, not the history.
    ``execute(sql, params)`` runs one statement and returns its rows."""
    recent: dict[str, int] | None = None
    columns = EVENT_AGGREGATE_COLUMNS["event_patterns"]
    if active_since is not None:
        found = execute(
            RECENT_PATTERN_COUNTS_SQL.format(ph=ph, plus="+" if dialect == "sqlite" else ""),
            [to_micros(active_since)],
        )
        recent = {str(fp): int(n) for fp, n in found}
        totals: list[Sequence[Any]] = []
        for clause, params in _key_lists(dialect, ph, sorted(recent)):
            statement = f"SELECT {columns} FROM event_patterns WHERE {clause} AND total >= {ph}"
            totals.extend(execute(statement, [*params, min_count]))
    else:
        statement = f"SELECT {columns} FROM event_patterns WHERE total >= {ph}"
        totals = list(execute(statement, [min_count]))
    keys = sorted(str(row[0]) for row in totals)
    videos = _pattern_videos(execute, keys, videos_limit, dialect, ph)
    listed: dict[str, dict[str, list[str]]] = {"component": {}, "agent": {}}
    for column, found_by_key in listed.items():
        for clause, params in _key_lists(dialect, ph, keys):
            statement = f"SELECT fingerprint, {column} FROM event_pattern_{column}s WHERE {clause}"
            for fp, value in execute(statement, params):
                found_by_key.setdefault(str(fp), []).append(str(value))
    rows = []
    for fp, total, open_count, first, last, sample, n_videos, *severities in totals:
        rows.append(
            (
                fp,
                total,
                open_count,
                recent.get(fp, 0) if recent is not None else None,
                first,
                last,
                sample,
                ",".join(videos.get(fp, [])) or None,
                n_videos,
                ",".join(listed["component"].get(fp, [])) or None,
                ",".join(listed["agent"].get(fp, [])) or None,
                *severities,
            )
        )
    rows.sort(key=lambda row: (-row[1], -row[5], row[0]))
    return rows


def _pattern_videos(
    execute: Callable[[str, list[Any]], Iterable[Sequence[Any]]],
    keys: list[str],
    limit: int | None,
    dialect: str,
    ph: str,
) -> dict[str, list[str]]:
    """The first ``limit`` videos (by id) of each pattern, each a walk of the primary key that
    stops at the limit (None: all of them)."""
    found: dict[str, list[str]] = {}
    if limit is None:
        for clause, params in _key_lists(dialect, ph, keys):
            statement = f"SELECT fingerprint, video_id FROM event_pattern_videos WHERE {clause}"
            for fp, video in execute(statement, params):
                found.setdefault(str(fp), []).append(str(video))
        return found
    if dialect == "postgresql":
        statement = f"""
            SELECT k.fp, v.video_id FROM unnest({ph}::text[]) AS k(fp)
            CROSS JOIN LATERAL (SELECT video_id FROM event_pattern_videos
                                 WHERE fingerprint = k.fp ORDER BY video_id LIMIT {ph}) AS v
        """
        for fp, video in execute(statement, [keys, limit]):
            found.setdefault(str(fp), []).append(str(video))
        return found
    statement = (
        f"SELECT video_id FROM event_pattern_videos WHERE fingerprint = {ph} "
        f"ORDER BY video_id LIMIT {ph}"
    )
    for fp in keys:
        found[fp] = [str(video) for (video,) in execute(statement, [fp, limit])]
    return found
