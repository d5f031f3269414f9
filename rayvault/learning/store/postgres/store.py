"""The PostgreSQL store: one shared, transactional store for pipelines whose workers run on
several machines (DESIGN.md §4–§5). Selected by a ``postgresql://`` URL (``RAYVAULT_STORE`` or
``--store``); psycopg 3 with a connection pool, imported only when asked for. This module is
the store's operations; its connections, pool, transactions and retries are ``connection``
(:class:`Connections`, which it extends), its SQL ``queries``.

Tables (created and upgraded by the migrations in ``postgres.schema``, in the URL's ``schema``)::

    event_versions, events     every version of every event / the latest one, with indexed columns
    error_versions, errors     the same for the error log
    fp_counts                  occurrences per (stage, fingerprint), kept by triggers in the
                               writing transaction: the gate reads a few rows, never the history
    error_patterns, error_pattern_videos, error_pattern_stages
                               the error log's patterns, kept by triggers likewise
                               (``get_patterns`` reads a few rows per pattern)
    agents, memory_snapshots   each agent's memory and tombstones; the memory before each change
    gate_states, soul_snapshots  what the gate saw: baselines, runs, acks; SOUL texts by hash
    weekly_reports             the weekly revisit's reports (JSON and HTML), named by day
    tombstone_archives         tombstones moved out of an agent's list after their grace period
    event_version_archive      what ``events compact`` removed from ``event_versions``
    pattern_clusters, pattern_signatures, pattern_merges
                               failure patterns (grouping version 2) and their merges; the
                               ``fingerprint`` column of events and errors is the record's
                               pattern key with merges followed (``postgres.patterns``)

Documents are stored as the text the file store writes, so an export gives back its files.
Skill-graph notes, SOUL files and ``policies.py`` stay files under ``root`` (``docs``).

A read-only view (``read_only()``, for dry runs) has its own connections, on which every
transaction is ``READ ONLY``: a write the store forgot to refuse still fails in the server. A
view of a schema that does not exist yet reads an empty store: an empty copy of the schema is
built once, under a private name, in a transaction held open by one connection of the view and
rolled back when it closes (see ``_phantom_connection``); nothing of it is ever committed.

Concurrency: a read-modify-write (agent memory, gate state, an event or error update) runs in one
transaction under a lock: a transaction-level advisory lock keyed by schema and name, or the row's
``FOR UPDATE``. Store calls made inside such a block on the same thread join its transaction (one
connection per thread and block; a nested write is a savepoint), so they see what the block sees
and cannot deadlock against it. After a ``fork`` the child builds its own pool and never touches
the parent's connections.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from pydantic import BaseModel

from rayvault.learning._ids import is_safe_identifier, validate_identifier
from rayvault.learning._template import template_of
from rayvault.learning._time import as_utc, compact_ts, from_micros, parse_ts, to_micros, utcnow
from rayvault.learning.exceptions import (
    CorruptFileError,
    ErrorEntryNotFoundError,
    EventNotFoundError,
    InvalidIdentifierError,
    InvalidInputError,
    StoreError,
)
from rayvault.learning.models import (
    AgentMemory,
    CompactResult,
    ErrorEntry,
    ErrorPattern,
    Finding,
    GateState,
    KnownFailure,
    LearningEvent,
    Pattern,
    PatternMerge,
    Tombstone,
    TombstoneFile,
    WeeklyReport,
)
from rayvault.learning.store._fs import dump_json
from rayvault.learning.store._names import REPORT_NAME, dated_name
from rayvault.learning.store._records import (
    error_pattern_from_row,
    pattern_from_row,
    tombstone_archive_document,
    validate_record,
    with_added,
)
from rayvault.learning.store._sql import (
    COUNT_ALL_EVENTS_SQL,
    OPEN_EVENT_COUNTS_AS_EVENTS,
    PATTERN_VIDEOS_LISTED,
    aggregate_pattern_rows,
    answered_by_open_counts,
    answered_by_pattern_aggregates,
    error_row,
    error_where,
    event_order,
    event_where,
    failing_fingerprints_sql,
    known_failures_sql,
    open_occurrences_sql,
    pattern_sql,
    resolved_event_row,
    shown_pattern,
    timeline_sql,
)
from rayvault.learning.store._textrank import bounded, query_words
from rayvault.learning.store.base import (
    AgentState,
    ArchivedTombstones,
    ErrorQuery,
    EventQuery,
    ProgressCallback,
    SavedReport,
    Store,
    StorePatternBook,
    build_records,
)
from rayvault.learning.store.documents import Documents
from rayvault.learning.store.postgres import patterns as pg_patterns
from rayvault.learning.store.postgres import schema as schema_sql
from rayvault.learning.store.postgres.connection import (
    Connections,
    _first_line,
)
from rayvault.learning.store.postgres.queries import (
    AGENT_LOCKED,
    AGENT_SAVE,
    AGENT_STATE,
    AGENT_WRITE,
    COMPACT_PLAN,
    COMPACT_SIZE,
    COMPACT_STEPS,
    ERROR_BY_ID,
    ERROR_FOR_UPDATE,
    ERROR_PATTERNS,
    ERROR_UPSERT,
    ERRORS_FOR_UPDATE,
    EVENT_BY_ID,
    EVENT_FACETS,
    EVENT_FOR_UPDATE,
    EVENT_STATUSES,
    EVENT_UPSERT,
    EVENT_VERSIONS_BY_ID,
    EVENTS_FOR_UPDATE,
    GATE_SAVE,
    GATE_STATE,
    GATE_STATE_LOCKED,
    KNOWN_FAILURES,
    LATEST_RESOLUTION,
    LATEST_RESOLUTIONS,
    LOCK,
    PATTERN_SAMPLES,
    RANK_TEXTS,
    REPORT_INSERT,
    REPORT_LIST,
    REPORT_LOAD,
    REPORT_NEXT,
    SNAPSHOT_INSERT,
    SNAPSHOT_LIST,
    SNAPSHOT_PRUNE,
    SOUL_LOAD,
    SOUL_SAVE,
    TOMBSTONE_ADD,
    TOMBSTONE_ARCHIVE_INSERT,
    TOMBSTONE_ARCHIVE_NEXT,
    TOMBSTONES_FOLD,
    TOMBSTONES_READ,
)
from rayvault.learning.store.roots import policies_at
from rayvault.policies import Policies

log = logging.getLogger("rayvault.learning")
M = TypeVar("M", bound=BaseModel)
Q = TypeVar("Q", EventQuery, ErrorQuery)
Conn = psycopg.Connection[Any]


def _snapshot_name(stamp: str) -> str:
    return f"memory_active-{stamp}-{secrets.token_hex(4)}.json"


class PostgresStore(Connections):
    """The shared store: learning data in PostgreSQL, documents as files under ``root``."""

    def __init__(
        self, root: Path | str, url: str, *, migrate: bool = True, read_only: bool = False
    ) -> None:
        self.root = Path(root).absolute()
        self._init_connections(url, migrate=migrate, read_only=read_only)
        self.docs = Documents(self.root, lambda: self.policies, read_only=read_only)
        self._souls_saved: set[str] = set()
        self._read_only_view: PostgresStore | None = None

    def __repr__(self) -> str:
        extra = ", read_only=True" if self.is_read_only else ""
        return f"PostgresStore({str(self.root)!r}, {self.target.display!r}{extra})"

    def read_only(self) -> PostgresStore:
        """A view of the same schema that never writes: its writes raise ``StoreError`` before
        doing anything, and its connections run every transaction ``READ ONLY``. It is closed
        with this store."""
        if self.is_read_only:
            return self
        if self._read_only_view is None:
            self._read_only_view = PostgresStore(self.root, self.url, read_only=True)
        return self._read_only_view

    def _writable(self) -> None:
        if self.is_read_only:
            raise StoreError(
                f"the PostgreSQL store {self.target.display} (schema {self.schema}) was opened "
                "read-only"
            )

    @property
    def policies(self) -> Policies:
        return policies_at(self.root)

    def describe(self) -> str:
        return (
            f"PostgreSQL store {self.target.display} (schema {self.schema}), "
            f"documents at {self.root}" + (" (read-only)" if self.is_read_only else "")
        )

    def close(self) -> None:
        if self._read_only_view is not None:
            self._read_only_view.close()
        self._close_connections()

    # -- writes -------------------------------------------------------------------------------
    def _version_stored(self, statement: str, params: tuple[Any, ...]) -> bool:
        """Whether the record version of an upsert's ``params`` (key, JSON text, …) is in its
        versions table: after a connection lost during the upsert, it tells whether it was
        committed."""
        errors = statement is ERROR_UPSERT
        versions, key = ("error_versions", "id") if errors else ("event_versions", "event_id")
        with self._connection() as conn:
            row = conn.execute(
                f"SELECT 1 FROM {versions} WHERE {key} = %s AND data::text = %s LIMIT 1",
                params[:2],
            ).fetchone()
        return row is not None

    def _executemany(self, statement: str, params: list[tuple[Any, ...]]) -> None:
        def write(conn: Conn) -> None:
            with conn.cursor() as cur:
                cur.executemany(statement, params)

        # Upserts, in one transaction: all of them were committed or none.
        self._retrying(write, stored=lambda: self._version_stored(statement, params[0]))

    # -- schema -------------------------------------------------------------------------------
    def has_schema(self) -> bool:
        return True

    def is_initialised(self) -> bool:
        with self.connect() as conn:
            return schema_sql.applied_migrations(conn, self.schema) is not None

    def init_schema(self) -> list[str]:
        """Create the schema if needed and apply every pending migration; their names."""
        self._writable()
        with self.connect() as conn:
            try:
                return schema_sql.migrate(conn, self.schema, self.lock_key("migrate"))
            except psycopg.Error as e:
                raise StoreError(
                    f"cannot initialise schema {self.schema!r} at {self.target.display}: "
                    f"{_first_line(e)}",
                    hint="the user needs the CREATE privilege on the database",
                ) from e

    def upgrade_schema(self) -> list[str]:
        """Apply the pending migrations of an initialised schema; their names."""
        self._writable()
        with self.connect() as conn:
            if schema_sql.applied_migrations(conn, self.schema) is None:
                raise StoreError(
                    f"schema {self.schema!r} at {self.target.display} is not initialised",
                    hint="run `rayvault-learn store init` first",
                )
        return self.init_schema()

    def schema_status(self) -> dict[str, Any]:
        """The schema's migrations (applied, pending, unknown to this version) and row counts;
        changes nothing."""
        with self.connect() as conn:
            done = schema_sql.applied_migrations(conn, self.schema)
            known = {m.name for m in schema_sql.MIGRATIONS}
            counts: dict[str, int] = {}
            if done is not None:
                # The two derived tables, then every table holding data.
                for table in ("events", "errors", *schema_sql.DATA_TABLES):
                    query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                        sql.Identifier(self.schema), sql.Identifier(table)
                    )
                    with contextlib.suppress(pg_errors.UndefinedTable):
                        counts[table] = int(conn.execute(query).fetchone()[0])  # type: ignore[index]
        applied = sorted((done or {}).items(), key=lambda item: (item[1], item[0]))
        return {
            "backend": "postgresql",
            "url": self.target.display,
            "schema": self.schema,
            "initialised": done is not None,
            "migrations": [{"name": n, "applied_at": at} for n, at in applied],
            "pending": [m.name for m in schema_sql.MIGRATIONS if m.name not in (done or {})],
            "unknown": sorted(n for n in (done or {}) if n not in known),
            "counts": counts,
        }

    # -- records ----------------------------------------------------------------------------------
    def location(self, table: str, key: str | None = None, column: str | None = None) -> Path:
        """How a record is named in a corruption error (there is no file to name):
        ``rayvault.agents[dzine_producer].memory``."""
        name = f"{self.schema}.{table}" + (f"[{key}]" if key else "")
        return Path(name + (f".{column}" if column else ""))

    def _record(self, model: type[M], text: str | Any, where: Path, what: str) -> M:
        """Validate a stored document (its JSON text, or as psycopg decoded it); one of the wrong
        shape is a ``CorruptFileError`` naming the row."""
        try:
            return validate_record(
                model, orjson.loads(text) if isinstance(text, str) else text, where, what
            )
        except CorruptFileError as e:
            e.hint = "the record was left unchanged; inspect it, or run `rayvault-learn doctor`"
            raise

    def _event(self, text: str) -> LearningEvent:
        return self._record(LearningEvent, text, self.location("events"), "an event")

    def _error(self, text: str) -> ErrorEntry:
        return self._record(ErrorEntry, text, self.location("errors"), "an error-log entry")

    # -- events -----------------------------------------------------------------------------------
    def _event_params(self, event: LearningEvent) -> tuple[Any, ...]:
        data = event.model_dump_json()
        aliases = self.policies.LEARNING_STAGE_ALIASES
        return (event.event_id, data, *resolved_event_row(orjson.loads(data), aliases))

    def append_events(self, events: Sequence[LearningEvent], *, video_files: bool = True) -> None:
        # Per-video copies are not stored: in this store they are the latest version of each
        # event, and ``store export`` writes them as files.
        del video_files
        self._writable()
        params = []
        for event in events:
            validate_identifier(event.event_id, "event id")
            if event.video_id:
                validate_identifier(event.video_id, "video id")
            params.append(self._event_params(event))
        if len(params) == 1:
            self._execute_upsert(EVENT_UPSERT, params[0])
        elif params:
            self._executemany(EVENT_UPSERT, params)

    @contextlib.contextmanager
    def pending_event(self, event: LearningEvent) -> Iterator[None]:
        # A row is replaced in place by its next version: storing the first at once costs no
        # disk, and a writer that stops leaves it for ``complete_event``.
        self.append_events([event])
        yield

    def event_pending(self, event_id: str) -> bool:
        del event_id
        return False  # ``pending_event`` stores the first version at once

    def _execute_upsert(self, statement: str, params: tuple[Any, ...]) -> None:
        """One record version, in a statement of its own (autocommit); if the connection was
        lost, again on a new one unless the version was committed after all."""

        def run() -> None:
            with self._connection() as conn:
                conn.execute(statement, params)

        self._reconnecting(run, stored=lambda: self._version_stored(statement, params))

    def update_event(
        self, event_id: str, change: Callable[[LearningEvent], LearningEvent]
    ) -> LearningEvent:
        self._writable()
        with self._transaction() as conn:
            row = conn.execute(EVENT_FOR_UPDATE, (event_id,)).fetchone()
            if row is None:
                raise EventNotFoundError(event_id)
            new = change(self._event(row[0]))
            validate_identifier(new.event_id, "event id")
            conn.execute(EVENT_UPSERT, self._event_params(new))
            return new

    def update_events(
        self,
        event_ids: Sequence[str],
        change: Callable[[LearningEvent], LearningEvent | None],
    ) -> list[LearningEvent]:
        self._writable()
        ids = list(dict.fromkeys(event_ids))
        with self._transaction() as conn:
            current = dict(conn.execute(EVENTS_FOR_UPDATE, (sorted(ids),)).fetchall())
            missing = next((i for i in ids if i not in current), None)
            if missing is not None:
                raise EventNotFoundError(missing)
            new = [e for e in (change(self._event(current[i])) for i in ids) if e is not None]
            for event in new:
                validate_identifier(event.event_id, "event id")
            if new:
                with conn.cursor() as cur:
                    cur.executemany(EVENT_UPSERT, [self._event_params(e) for e in new])
            return new

    def get_event(self, event_id: str) -> LearningEvent | None:
        with self._connection() as conn:
            row = conn.execute(EVENT_BY_ID, (event_id,)).fetchone()
        return self._event(row[0]) if row else None

    def event_versions(self, event_id: str) -> list[LearningEvent]:
        """Every version of the event ``event_versions`` holds, oldest first ([] for an unknown
        id); read through its ``(event_id, seq)`` index. ``events compact`` keeps only the latest
        version of each event."""
        validate_identifier(event_id, "event id")
        with self._connection() as conn:
            rows = conn.execute(EVENT_VERSIONS_BY_ID, (event_id,)).fetchall()
        return [self._event(row[0]) for row in rows]

    def query_events(self, query: EventQuery) -> list[LearningEvent]:
        with self._connection() as conn:
            query = self._following(conn, query)
            where, params = event_where(query, "%s")
            order, more = event_order(query, "%s")
            rows = conn.execute(f"SELECT data::text FROM events{where}{order}", [*params, *more])
            return build_records(rows, self._event)

    def count_events(self, query: EventQuery) -> int:
        with self._connection() as conn:
            if answered_by_pattern_aggregates(query):
                # Every event: the patterns' totals and the few without a pattern.
                row = conn.execute(COUNT_ALL_EVENTS_SQL).fetchone()
                total = int(row[0]) if row else 0
                return total if query.limit is None else min(total, query.limit)
            where, params = event_where(self._following(conn, query), "%s")
            if query.limit is not None:
                sql = f"SELECT count(*) FROM (SELECT 1 FROM events{where} LIMIT %s) AS capped"
                row = conn.execute(sql, [*params, query.limit]).fetchone()
            else:
                row = conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()
        return int(row[0]) if row else 0

    def event_facets(self, query: EventQuery) -> dict[str, dict[str, int]]:
        facets: dict[str, dict[str, int]] = {
            f: {} for f in ("severity", "status", "component", "agent")
        }
        with self._connection() as conn:
            query = self._following(conn, query)
            where, params = event_where(query, "%s")
            # Unresolved events are counted from their open counts (a state kept on write).
            if answered_by_open_counts(query):
                source, count = OPEN_EVENT_COUNTS_AS_EVENTS, "sum(n)"
            else:
                source, count = "events", "count(*)"
            statement = EVENT_FACETS.format(source=source, count=count, where=where)
            for facet, value, n in conn.execute(statement, params):
                if value is not None:
                    facets[facet][str(value)] = int(n)
        return facets

    def event_patterns(
        self,
        query: EventQuery,
        *,
        min_count: int = 1,
        active_since: datetime | None = None,
        videos_limit: int | None = None,
    ) -> list[Pattern]:
        with self._connection() as conn:
            query = self._following(conn, query)
            if answered_by_pattern_aggregates(query):
                rows: list[Any] = aggregate_pattern_rows(
                    lambda statement, params: conn.execute(statement, params).fetchall(),
                    min_count=min_count,
                    active_since=active_since,
                    videos_limit=videos_limit,
                    dialect="postgresql",
                    ph="%s",
                )
            else:
                statement, params = pattern_sql(
                    query,
                    min_count=min_count,
                    active_since=active_since,
                    dialect="postgresql",
                    ph="%s",
                )
                rows = conn.execute(statement, params).fetchall()
            return self._patterns(conn, rows, videos_limit)

    def grouped_event_patterns(
        self, query: EventQuery, *, min_count: int = 1, active_since: datetime | None = None
    ) -> list[Pattern]:
        """:meth:`event_patterns` by one GROUP BY over the events, never from the aggregates
        (the oracle the aggregates are tested against)."""
        with self._connection() as conn:
            statement, params = pattern_sql(
                self._following(conn, query),
                min_count=min_count,
                active_since=active_since,
                dialect="postgresql",
                ph="%s",
            )
            return self._patterns(conn, conn.execute(statement, params).fetchall(), None)

    def event_aggregate_problems(self) -> list[str]:
        """``table/key`` of each event pattern aggregate or open count that differs from a
        recount of the events (empty when they agree)."""
        with self._connection() as conn:
            return schema_sql.event_aggregate_labels(conn)

    def _patterns(self, conn: Conn, rows: list[Any], videos_limit: int | None) -> list[Pattern]:
        """Patterns from rows of ``pattern_sql``'s columns, with their samples' templates and at
        most ``videos_limit`` videos each (the first by id)."""
        samples = {
            event_id: pattern or symptom or ""
            for event_id, pattern, symptom in conn.execute(
                PATTERN_SAMPLES, ([row[6] for row in rows],)
            )
        }
        patterns = []
        for row in rows:
            pattern = pattern_from_row(row, samples.get(row[6], ""))
            if videos_limit is not None and len(pattern.videos) > videos_limit:
                pattern = pattern.model_copy(update={"videos": pattern.videos[:videos_limit]})
            patterns.append(pattern)
        return patterns

    def event_timeline(self, query: EventQuery) -> dict[date, dict[str, int]]:
        epoch = date(1970, 1, 1)
        timeline: dict[date, dict[str, int]] = {}
        with self._connection() as conn:
            statement, params = timeline_sql(self._following(conn, query), "%s")
            for day, severity, count in conn.execute(statement, params):
                timeline.setdefault(epoch + timedelta(days=day), {})[str(severity)] = int(count)
        return dict(sorted(timeline.items()))

    def regression_events(self, query: EventQuery) -> list[LearningEvent]:
        with self._connection() as conn:
            where, params = event_where(self._following(conn, query), "%s")
            has = "data->>'regression_of' IS NOT NULL"
            where = f"{where} AND {has}" if where else f" WHERE {has}"
            rows = conn.execute(f"SELECT data::text FROM events{where} ORDER BY ts, seq", params)
            return build_records(rows, self._event)

    def resolution_times(
        self, query: EventQuery, *, resolved_since: datetime | None = None
    ) -> list[tuple[datetime, datetime]]:
        with self._connection() as conn:
            where, params = event_where(
                self._following(conn, replace(query, unresolved=False)), "%s"
            )
            # ``resolved_ts`` is the event's resolved_at, parsed when it was written (NULL when
            # it has none or it does not parse): a window's resolutions are an index range.
            where += " AND resolved_ts IS NOT NULL"
            if resolved_since is not None:
                where += " AND resolved_ts >= %s"
                params.append(to_micros(resolved_since))
            rows = conn.execute(f"SELECT ts, resolved_ts FROM events{where} ORDER BY seq", params)
            return [(from_micros(ts), from_micros(resolved)) for ts, resolved in rows]

    def event_statuses(self, event_ids: Sequence[str]) -> dict[str, str]:
        with self._connection() as conn:
            rows = conn.execute(EVENT_STATUSES, (list(dict.fromkeys(event_ids)),))
            return {event_id: str(status) for event_id, status in rows}

    # -- agent memory -----------------------------------------------------------------------------
    def _agent_docs(self, conn: Conn, agent: str) -> tuple[str | None, bool]:
        """The agent's memory text and whether its tombstone document exists."""
        row = conn.execute(AGENT_STATE, (agent,)).fetchone()
        return (row[0], bool(row[1])) if row else (None, False)

    def _memory(self, agent: str, text: str | None) -> AgentMemory:
        if text is None:
            return AgentMemory()
        where = self.location("agents", agent, "memory")
        return self._record(AgentMemory, text, where, "agent memory")

    def _tombstones(self, conn: Conn, agent: str) -> TombstoneFile:
        """The whole list: the document, then the rows added since it was written."""
        return with_added(*self._tombstone_parts(conn, agent))

    def _tombstone_parts(self, conn: Conn, agent: str) -> tuple[TombstoneFile, list[Tombstone]]:
        """The tombstone document (empty when missing) and the rows added since, in order."""
        text, added = conn.execute(TOMBSTONES_READ, {"agent": agent}).fetchone() or (None, None)
        base = (
            TombstoneFile()
            if text is None
            else self._record(
                TombstoneFile,
                text,
                self.location("agents", agent, "tombstones"),
                "the tombstone list",
            )
        )
        where = self.location("agent_tombstones", agent)
        new = [
            self._record(Tombstone, item, where, "an added tombstone")
            for item in (orjson.loads(added) if added else [])
        ]
        return base, new

    def load_memory(self, agent: str) -> AgentMemory:
        validate_identifier(agent, "agent")
        with self._connection() as conn:
            memory, _ = self._agent_docs(conn, agent)
        return self._memory(agent, memory)

    def load_tombstones(self, agent: str) -> TombstoneFile:
        validate_identifier(agent, "agent")
        with self._connection() as conn:
            return self._tombstones(conn, agent)

    def memory_location(self, agent: str) -> str:
        return str(self.location("agents", validate_identifier(agent, "agent"), "memory"))

    def _locked_row(self, conn: Conn, query: str, key: str, *lock: str) -> tuple[Any, ...] | None:
        """Lock a record's row and read it, in the caller's transaction (``query`` ends in
        ``FOR UPDATE``).

        An existing row is locked by ``FOR UPDATE`` (which also returns its latest committed
        version). For a record without a row yet, the advisory lock ``lock`` is taken and the row
        read again ``FOR UPDATE``: so whoever writes a record holds its row lock or is the one
        creating the row, and two writers never overlap.
        """
        row = conn.execute(query, (key,)).fetchone()
        if row is None:
            conn.execute(LOCK, (self.lock_key(*lock),))
            row = conn.execute(query, (key,)).fetchone()
        return row

    def _lock_agent(self, conn: Conn, agent: str) -> tuple[str | None, bool]:
        """Lock the agent; its memory text and whether its tombstone document exists."""
        row = self._locked_row(conn, AGENT_LOCKED, agent, "agent", agent)
        return (row[0], bool(row[1])) if row else (None, False)

    @contextlib.contextmanager
    def agent_state(self, agent: str) -> Iterator[AgentState]:
        validate_identifier(agent, "agent")
        self._writable()
        with self._transaction() as conn:
            old_memory, has_tombstones = self._lock_agent(conn, agent)
            state = AgentState(
                agent,
                self._memory(agent, old_memory),
                lambda: self._tombstones(conn, agent),
                existed=old_memory is not None,
            )
            yield state
            if not (state.memory_changed or state.new_tombstones):
                return
            now = utcnow()
            memory_text = tombstones_text = None
            if state.memory_changed:
                state.memory.updated = now
                memory_text = dump_json(state.memory.model_dump(mode="json")).decode()
            if state.new_tombstones:
                # Rows, not a rewrite of the document (which is created, empty, if missing).
                if not has_tombstones:
                    empty = TombstoneFile(updated=now).model_dump(mode="json")
                    tombstones_text = dump_json(empty).decode()
                with conn.cursor() as cur:
                    cur.executemany(
                        TOMBSTONE_ADD,
                        [(agent, t.model_dump_json()) for t in state.new_tombstones],
                    )
            snapshot = state.memory_changed and state.archive and old_memory is not None
            stamp = compact_ts(now)
            params = {
                "agent": agent,
                "memory": memory_text,
                "tombstones": tombstones_text,
                "snapshot": snapshot,
                "name": _snapshot_name(stamp),
                "taken": parse_ts(stamp),
            }
            row = conn.execute(AGENT_WRITE, params).fetchone()
            if snapshot and old_memory is not None and not (row and row[0]):
                self._snapshot(conn, agent, old_memory, now)  # the random name was taken

    def _snapshot(self, conn: Conn, agent: str, text: str, now: datetime) -> None:
        """Archive a memory text, named like the file store's snapshots (several changes in one
        second each keep their own)."""
        stamp = compact_ts(now)
        while not conn.execute(
            SNAPSHOT_INSERT, (agent, _snapshot_name(stamp), parse_ts(stamp), text)
        ).fetchone():
            pass

    def list_agents(self) -> list[str]:
        with self._connection() as conn:
            names = [a for (a,) in conn.execute("SELECT agent FROM agents ORDER BY agent")]
        return [a for a in names if is_safe_identifier(a)]

    def init_agent(self, agent: str) -> bool:
        validate_identifier(agent, "agent")
        self._writable()
        with self._transaction() as conn:
            memory, has_tombstones = self._lock_agent(conn, agent)
            if memory is not None and has_tombstones:
                return False
            now = utcnow()
            new_memory = (
                dump_json(AgentMemory(updated=now).model_dump(mode="json")).decode()
                if memory is None
                else None
            )
            new_tombstones = (
                dump_json(TombstoneFile(updated=now).model_dump(mode="json")).decode()
                if not has_tombstones
                else None
            )
            conn.execute(AGENT_SAVE, (agent, new_memory, new_tombstones))
            return True

    def list_memory_snapshots(self, agent: str) -> list[tuple[datetime, str]]:
        validate_identifier(agent, "agent")
        with self._connection() as conn:
            return [(as_utc(at), name) for at, name in conn.execute(SNAPSHOT_LIST, (agent,))]

    def prune_memory_snapshots(self, agent: str, older_than: datetime) -> list[str]:
        validate_identifier(agent, "agent")
        self._writable()
        with self._connection() as conn:
            rows = conn.execute(SNAPSHOT_PRUNE, (agent, as_utc(older_than))).fetchall()
        return [name for _, name in sorted((as_utc(at), name) for at, name in rows)]

    # -- error log --------------------------------------------------------------------------------
    def _error_params(self, entry: ErrorEntry) -> tuple[Any, ...]:
        data = entry.model_dump_json()
        aliases = self.policies.LEARNING_STAGE_ALIASES
        return (entry.id, data, *error_row(orjson.loads(data), aliases))

    def append_errors(self, entries: Sequence[ErrorEntry]) -> None:
        self._writable()
        params = []
        for entry in entries:
            validate_identifier(entry.id, "error id")
            params.append(self._error_params(entry))
        if len(params) == 1:
            self._execute_upsert(ERROR_UPSERT, params[0])
        elif params:
            self._executemany(ERROR_UPSERT, params)

    def update_error(self, error_id: str, change: Callable[[ErrorEntry], ErrorEntry]) -> ErrorEntry:
        self._writable()
        with self._transaction() as conn:
            row = conn.execute(ERROR_FOR_UPDATE, (error_id,)).fetchone()
            if row is None:
                raise ErrorEntryNotFoundError(error_id)
            new = change(self._error(row[0]))
            validate_identifier(new.id, "error id")
            conn.execute(ERROR_UPSERT, self._error_params(new))
            return new

    def update_errors(
        self, error_ids: Sequence[str], change: Callable[[ErrorEntry], ErrorEntry | None]
    ) -> list[ErrorEntry]:
        self._writable()
        ids = list(dict.fromkeys(error_ids))
        with self._transaction() as conn:
            current = dict(conn.execute(ERRORS_FOR_UPDATE, (sorted(ids),)).fetchall())
            missing = next((i for i in ids if i not in current), None)
            if missing is not None:
                raise ErrorEntryNotFoundError(missing)
            new = [e for e in (change(self._error(current[i])) for i in ids) if e is not None]
            for entry in new:
                validate_identifier(entry.id, "error id")
            if new:
                with conn.cursor() as cur:
                    cur.executemany(ERROR_UPSERT, [self._error_params(e) for e in new])
            return new

    def get_error(self, error_id: str) -> ErrorEntry | None:
        with self._connection() as conn:
            row = conn.execute(ERROR_BY_ID, (error_id,)).fetchone()
        return self._error(row[0]) if row else None

    def query_errors(self, query: ErrorQuery) -> list[ErrorEntry]:
        with self._connection() as conn:
            clause, params = error_where(self._following(conn, query), "%s")
            rows = conn.execute(f"SELECT data::text FROM errors{clause}", params)
            return build_records(rows, self._error)

    def error_patterns(self, min_count: int) -> list[ErrorPattern]:
        params = {"min_count": min_count, "videos": PATTERN_VIDEOS_LISTED}
        with self._connection() as conn:
            groups = conn.execute(ERROR_PATTERNS, params).fetchall()
        return [
            error_pattern_from_row(group, self._error(group[9]), group[7], group[8])
            for group in groups
        ]

    def latest_resolutions(self) -> list[ErrorEntry]:
        with self._connection() as conn:
            return [self._error(text) for (text,) in conn.execute(LATEST_RESOLUTIONS)]

    def latest_resolution(self, fingerprint: str) -> ErrorEntry | None:
        with self._connection() as conn:
            row = conn.execute(LATEST_RESOLUTION, (fingerprint,)).fetchone()
        if row is None:
            return None
        return self._record(ErrorEntry, row[0], self.location("errors"), "an error-log entry")

    # -- failure patterns -------------------------------------------------------------------------
    @staticmethod
    def _following(conn: Conn, query: Q) -> Q:
        """``query`` asking for the pattern of its fingerprint (merges followed): the
        ``fingerprint`` column holds each record's pattern key so resolved."""
        if query.fingerprint is None:
            return query
        return replace(query, fingerprint=pg_patterns.resolve(conn, query.fingerprint))

    @contextlib.contextmanager
    def pattern_book(self, stage: str) -> Iterator[StorePatternBook]:
        """The clusters of failure templates, for ``assign``: one transaction holding the stage's
        advisory lock (one stage's assignments are made one at a time across threads and
        processes), committed when the block exits normally, rolled back on an exception."""
        if not isinstance(stage, str) or not stage.strip():
            raise InvalidInputError("stage must be non-empty text")
        self._writable()
        with self._transaction() as conn:
            conn.execute(LOCK, (self.lock_key("patterns", stage.strip()),))
            yield pg_patterns.PostgresPatternBook(self, conn)

    def resolve_pattern(self, key: str) -> str:
        with self._connection() as conn:
            return pg_patterns.resolve(conn, key)

    def rank_texts(self, query: str, texts: Sequence[str]) -> list[float]:
        words = query_words(query)
        if not words or not texts:
            return [0.0] * len(texts)
        with self._connection() as conn:
            rows = conn.execute(RANK_TEXTS, (" | ".join(words), list(texts))).fetchall()
        return [bounded(float(rank)) for (rank,) in rows]

    def pattern_merges(self, stage: str | None = None) -> list[PatternMerge]:
        with self._connection() as conn:
            return pg_patterns.merges(conn, stage)

    # -- the gate ---------------------------------------------------------------------------------
    def known_failures(self, components: tuple[str, ...], threshold: int) -> list[KnownFailure]:
        if not components:
            return []
        inner = known_failures_sql(len(components), "%s")
        with self._connection() as conn:
            rows = conn.execute(KNOWN_FAILURES.format(inner=inner), [*components, threshold])
            return [
                KnownFailure(
                    fingerprint=fp,
                    # The cluster's template now (wider than an early record's after a merge);
                    # a record's own for a pattern of an older grouping version.
                    pattern=(template_of(orjson.loads(tokens)) if tokens else None)
                    or template
                    or shown_pattern(text)
                    or fp,
                    occurrences=occurrences,
                    unresolved=unresolved,
                )
                for fp, occurrences, unresolved, template, text, tokens in rows
            ]

    def failing_fingerprints(
        self, fingerprints: list[str], components: tuple[str, ...]
    ) -> set[str]:
        if not fingerprints or not components:
            return set()
        with self._connection() as conn:
            # A fingerprint fails when its pattern (merges followed) does.
            canonical = pg_patterns.resolve_many(conn, fingerprints)
            keys = sorted(set(canonical.values()))
            sql = failing_fingerprints_sql(len(keys), len(components), "%s")
            failing = {fp for (fp,) in conn.execute(sql, [*keys, *components, *components])}
        return {fp for fp in fingerprints if canonical[fp] in failing}

    def open_occurrences(
        self, fingerprint: str, components: tuple[str, ...], limit: int
    ) -> tuple[list[str], list[str]]:
        if not components:
            return [], []
        with self._connection() as conn:
            params = [pg_patterns.resolve(conn, fingerprint), *components, limit]
            rows = conn.execute(open_occurrences_sql(len(components), "%s"), params * 2)
            found = rows.fetchall()
        return [i for k, i in found if k == "event"], [i for k, i in found if k == "error"]

    def load_gate_state(self, video_id: str) -> GateState | None:
        validate_identifier(video_id, "video id")
        with self._connection() as conn:
            row = conn.execute(GATE_STATE, (video_id,)).fetchone()
        if row is None:
            return None
        where = self.location("gate_states", video_id)
        return self._record(GateState, row[0], where, "the gate state")

    def list_gate_videos(self) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute("SELECT video_id FROM gate_states ORDER BY video_id").fetchall()
        return [str(r[0]) for r in rows]

    @contextlib.contextmanager
    def gate_state(self, video_id: str) -> Iterator[GateState]:
        validate_identifier(video_id, "video id")
        self._writable()
        with self._transaction() as conn:
            row = self._locked_row(conn, GATE_STATE_LOCKED, video_id, "gate", video_id)
            where = self.location("gate_states", video_id)
            state = (
                self._record(GateState, row[0], where, "the gate state")
                if row
                else GateState(video_id=video_id)
            )
            yield state
            state.updated = utcnow()
            conn.execute(GATE_SAVE, (video_id, dump_json(state.model_dump(mode="json")).decode()))

    def save_soul_snapshot(self, sha256: str, text: str) -> None:
        validate_identifier(sha256, "SOUL hash")
        self._writable()
        if sha256 in self._souls_saved:  # a hash names one text forever: saved once is enough
            return
        with self._connection() as conn:
            conn.execute(SOUL_SAVE, (sha256, text))
        self._souls_saved.add(sha256)

    def load_soul_snapshot(self, sha256: str) -> str | None:
        validate_identifier(sha256, "SOUL hash")
        with self._connection() as conn:
            row = conn.execute(SOUL_LOAD, (sha256,)).fetchone()
        return str(row[0]) if row else None

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A session advisory lock on a connection of its own, held for the block: the steps
        inside run in their own transactions, as with the file store's lock file."""
        key = self.lock_key("exclusive", validate_identifier(name, "lock name"))
        self._writable()
        with self._pooled() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
            try:
                yield
            finally:
                # A broken connection has lost the lock with its session already.
                with contextlib.suppress(psycopg.OperationalError):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def archive_tombstones(self, agent: str, older_than: datetime) -> ArchivedTombstones:
        """Move the due tombstones into a ``tombstone_archives`` row named as the file store
        names its archive files, in the transaction that rewrites the list (under the agent's
        lock): they are in exactly one of the two. The rows of tombstones added since the list
        was last written are folded into it in the same transaction, due or not."""
        validate_identifier(agent, "agent")
        self._writable()
        with self._transaction() as conn:
            _, has_tombstones = self._lock_agent(conn, agent)
            if not has_tombstones:
                return ArchivedTombstones(agent)
            base, added = self._tombstone_parts(conn, agent)
            whole = with_added(base, added)
            due = [t for t in whole.tombstones if t.tombstoned_at < older_than]
            if not (due or added):
                return ArchivedTombstones(agent)
            kept = [t for t in whole.tombstones if not t.tombstoned_at < older_than]
            now = utcnow()
            name = None
            if due:
                text = dump_json(tombstone_archive_document(agent, now, older_than, due)).decode()
                day = now.date()
                (n,) = conn.execute(TOMBSTONE_ARCHIVE_NEXT, (agent, day)).fetchone() or (1,)
                while True:
                    name = dated_name("tombstones", day, n) + ".json"
                    params = (agent, name, day, n, text)
                    if conn.execute(TOMBSTONE_ARCHIVE_INSERT, params).fetchone():
                        break
                    n += 1
                whole = whole.model_copy(update={"tombstones": kept, "updated": now})
            document = dump_json(whole.model_dump(mode="json")).decode()
            conn.execute(TOMBSTONES_FOLD, {"agent": agent, "tombstones": document})
        if name is None:
            return ArchivedTombstones(agent)
        return ArchivedTombstones(agent, due, self.tombstone_archive_location(agent, name))

    def tombstone_archive_location(self, agent: str, name: str) -> str:
        return f"{self.schema}.tombstone_archives[{agent}/{name}]"

    # -- weekly reports ---------------------------------------------------------------------------
    def save_weekly_report(self, day: date, report: Mapping[str, Any], html: str) -> SavedReport:
        self._writable()
        text = dump_json(dict(report)).decode()
        with self._transaction() as conn:
            conn.execute(LOCK, (self.lock_key("weekly-report", day.isoformat()),))
            (n,) = conn.execute(REPORT_NEXT, (day,)).fetchone() or (1,)
            while True:
                name = dated_name("weekly", day, n)
                if conn.execute(REPORT_INSERT, (name, day, n, text, html)).fetchone():
                    break
                n += 1
        where = f"{self.schema}.weekly_reports[{name}]"
        return SavedReport(name, f"{where}.data", f"{where}.html")

    def list_weekly_reports(self) -> list[str]:
        with self._connection() as conn:
            return [name for (name,) in conn.execute(REPORT_LIST)]

    def load_weekly_report(self, name: str | None = None) -> WeeklyReport | None:
        if name is None:
            names = self.list_weekly_reports()
            if not names:
                return None
            name = names[-1]
        elif not REPORT_NAME.fullmatch(name):
            raise InvalidIdentifierError(
                f"invalid weekly report name {name!r}: expected weekly-YYYY-MM-DD or "
                "weekly-YYYY-MM-DD-N"
            )
        with self._connection() as conn:
            row = conn.execute(REPORT_LOAD, (name,)).fetchone()
        if row is None:
            return None
        where = self.location("weekly_reports", name, "data")
        return self._record(WeeklyReport, row[0], where, "the weekly report")

    # -- maintenance ------------------------------------------------------------------------------
    def compact_events(self) -> CompactResult:
        """Fold ``event_versions`` to one row per event, in one transaction that holds off
        writers of events (readers go on).

        Each event with several versions keeps the row of its first version, holding the latest
        version's text (the order of the log is kept, as in the file store's compacted index);
        its other rows are deleted. Every row changed or deleted is first copied, as it was, to
        ``event_version_archive`` under the compaction's name (``learning_events-<timestamp>``):
        with the rows left in place, that is the log as it was. ``events`` (what every read
        uses) keeps the same latest versions, and the failure counts do not change. The older
        versions leave ``event_versions``: :meth:`event_versions` then returns one per event.
        """
        self._writable()
        path = f"{self.schema}.event_versions"
        with self._transaction() as conn:
            self.lock_tables(conn, "event_versions, events", "EXCLUSIVE")
            versions_before, bytes_before = conn.execute(COMPACT_SIZE).fetchone() or (0, 0)
            (events_after,) = conn.execute("SELECT count(*) FROM events").fetchone() or (0,)
            result = CompactResult(
                path=path,
                compacted=False,
                versions_before=versions_before,
                events_after=events_after,
                bytes_before=bytes_before,
                bytes_after=bytes_before,
            )
            conn.execute(COMPACT_PLAN)
            (to_fold,) = conn.execute("SELECT count(*) FROM rayvault_compact").fetchone() or (0,)
            if not to_fold:
                return result
            name = f"learning_events-{compact_ts(utcnow())}"
            while conn.execute(
                "SELECT 1 FROM event_version_archive WHERE compaction = %s LIMIT 1", (name,)
            ).fetchone():
                name = f"learning_events-{compact_ts(utcnow())}-{secrets.token_hex(4)}"
            # Nothing here changes what the failure counts count: their triggers stand aside.
            conn.execute("SELECT set_config(%s, 'on', true)", (schema_sql.BULK_LOAD_SETTING,))
            for statement in COMPACT_STEPS:
                conn.execute(statement, {"name": name})
            conn.execute("SELECT set_config(%s, 'off', true)", (schema_sql.BULK_LOAD_SETTING,))
            _, bytes_after = conn.execute(COMPACT_SIZE).fetchone() or (0, 0)
        return result.model_copy(
            update={
                "compacted": True,
                "archive": f"{self.schema}.event_version_archive[{name}]",
                "bytes_after": bytes_after,
            }
        )

    def check(
        self, repair: bool = False, *, progress: ProgressCallback | None = None
    ) -> list[Finding]:
        """Check the schema and every stored record (see ``postgres.doctor``); with ``repair``, fix
        what can be fixed without losing anything."""
        if repair:
            self._writable()
        from rayvault.learning.store.postgres.doctor import PostgresDoctor

        return PostgresDoctor(self, repair=repair, progress=progress).run()

    # -- whole-store transfer (``store export``/``store import``, see ``transfer``) ---------------
    def portable(self) -> PostgresStore:
        """The store gives and takes its data as items itself (``postgres.transfer``)."""
        return self

    def skipped_files(self) -> list[str]:
        return []  # its data is rows, all of known kinds

    def is_data_root(self, path: Path) -> bool:
        return False  # its data is in the server, never in a folder

    def has_data(self) -> bool:
        with self._connection() as conn:
            query = " OR ".join(f"EXISTS (SELECT 1 FROM {t})" for t in schema_sql.DATA_TABLES)
            row = conn.execute(f"SELECT {query}").fetchone()
        return bool(row and row[0])

    def dump_items(self) -> Iterator[Any]:
        from rayvault.learning.store.postgres import transfer as _pgtransfer

        return _pgtransfer.dump(self)

    def load_items(self, items: Iterable[Any]) -> dict[str, int]:
        self._writable()
        from rayvault.learning.store.postgres import transfer as _pgtransfer

        return _pgtransfer.load(self, items)


if TYPE_CHECKING:

    def _implements_the_protocol(store: PostgresStore) -> Store:
        return store  # mypy checks every method of ``Store`` against this class
