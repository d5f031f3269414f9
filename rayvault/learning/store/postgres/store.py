"""The PostgreSQL store: one shared, transactional store for pipelines whose workers run on
several machines (DESIGN.md §4–§5). Selected by a ``postgresql://`` URL (``RAYVAULT_STORE`` or
``--store``); psycopg 3 with a connection pool, imported only when asked for.

Tables (created and upgraded by the migrations in ``postgres.schema``, in the URL's ``schema``)::

    event_versions, events     every version of every event / the latest one, with indexed columns
    error_versions, errors     the same for the error log
    fp_counts                  occurrences per (stage, fingerprint), kept by triggers in the
                               writing transaction: the gate reads a few rows, never the history
    agents, memory_snapshots   each agent's memory and tombstones; the memory before each change
    gate_states, soul_snapshots  what the gate saw: baselines, runs, acks; SOUL texts by hash
    weekly_reports             the weekly revisit's reports (JSON and HTML), named by day
    tombstone_archives         tombstones moved out of an agent's list after their grace period
    event_version_archive      what ``events compact`` removed from ``event_versions``

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
import hashlib
import logging
import os
import random
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import BaseModel

from rayvault.learning._ids import is_safe_identifier, validate_identifier
from rayvault.learning._time import as_utc, compact_ts, from_micros, parse_ts, utcnow
from rayvault.learning.exceptions import (
    ConfigError,
    CorruptFileError,
    ErrorEntryNotFoundError,
    EventNotFoundError,
    InvalidIdentifierError,
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
)
from rayvault.learning.store._sql import (
    ERROR_COLUMNS,
    EVENT_COLUMNS,
    LATEST_RESOLUTION_SQL,
    error_row,
    error_where,
    event_order,
    event_row,
    event_where,
    failing_fingerprints_sql,
    known_failures_sql,
    open_occurrences_sql,
    pattern_sql,
    shown_pattern,
    timeline_sql,
)
from rayvault.learning.store.base import (
    AgentState,
    ArchivedTombstones,
    ErrorQuery,
    EventQuery,
    ProgressCallback,
    SavedReport,
    Store,
    build_records,
)
from rayvault.learning.store.documents import Documents
from rayvault.learning.store.postgres import schema as schema_sql
from rayvault.policies import Policies, PolicyError, load_policies

log = logging.getLogger("rayvault.learning")
M = TypeVar("M", bound=BaseModel)
Conn = psycopg.Connection[Any]

DEFAULT_SCHEMA = "rayvault"
#: How long a writer waits for a lock held by another worker before giving up (the file store
#: waits as long for its file locks).
LOCK_TIMEOUT_MS = 60_000
#: Connections per process and store (``?pool_max=N`` to change): one per thread running a
#: store call, plus one for an ``exclusive`` block.
POOL_MAX = 4
#: Seconds to wait for a free pooled connection.
POOL_TIMEOUT = 30.0
#: How long one attempt of a maintenance transaction waits for its table locks (well under
#: PostgreSQL's deadlock_timeout, 1 s by default: it gives up before a writer could be aborted).
MAINTENANCE_LOCK_TRY_MS = 200
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_OPTIONS_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*\"?([^\s,\"]+)")
#: Query parameters of a store URL that are ours, not libpq's.
_OWN_PARAMS = ("schema", "pool_max")
#: Pools inherited by a forked child: kept referenced and never closed there (closing would end
#: the parent's sessions; psycopg itself leaves a connection made by another process alone).
_INHERITED: list[ConnectionPool[Any]] = []
#: The same for the connection holding a read-only view's empty schema (see ``_phantom``).
_INHERITED_CONNECTIONS: list[Any] = []


# -- URLs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where a store URL points: libpq connection string, schema, and a printable URL."""

    conninfo: str
    schema: str
    display: str
    pool_max: int = POOL_MAX


def display_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages and ``describe``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}"
    query = "&".join(
        f"{k}={'***' if k == 'password' else v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def with_schema(url: str, schema: str) -> str:
    """``url`` pointing at ``schema`` (its ``schema`` parameter set or replaced)."""
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "schema"]
    params.append(("schema", schema))
    return urlunsplit(parts._replace(query=urlencode(params, quote_via=quote)))


def parse_url(url: str) -> Target:
    """Split a store URL into libpq's connection string and our schema.

    The schema comes from ``?schema=NAME``, else from ``options=-csearch_path=NAME``, else
    ``rayvault``; ``?pool_max=N`` sizes the connection pool. Every connection gets the schema as
    its search path, a lock timeout, and (unless the URL says otherwise) a connect timeout and an
    application name.
    """
    display = display_url(url)
    try:
        parts = urlsplit(url)
        params = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False)
    except ValueError as e:
        raise _bad_url(display, str(e)) from e
    own = {k: v for k, v in params if k in _OWN_PARAMS}
    rest = [(k, v) for k, v in params if k not in _OWN_PARAMS]
    options = next((v for k, v in rest if k == "options"), "")
    schema = own.get("schema")
    if schema is None:
        match = _OPTIONS_SEARCH_PATH.search(options)
        schema = match.group(1) if match else DEFAULT_SCHEMA
    if not _SCHEMA_NAME.fullmatch(schema):
        raise _bad_url(
            display,
            f"schema {schema!r} is not a plain lower-case name "
            "(letters, digits and '_', not starting with a digit, at most 63 characters)",
        )
    try:
        pool_max = int(own.get("pool_max", POOL_MAX))
    except ValueError:
        pool_max = 0
    if not 1 <= pool_max <= 1000:
        raise _bad_url(
            display, f"pool_max must be a number from 1 to 1000 (got {own['pool_max']!r})"
        )
    libpq_url = urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote)))
    try:
        info = conninfo_to_dict(libpq_url)
    except psycopg.Error as e:
        raise _bad_url(display, _first_line(e)) from e
    own_options = f"-c lock_timeout={LOCK_TIMEOUT_MS}"
    info["options"] = f"{own_options} {info.get('options') or ''} -c search_path={schema}".strip()
    info.setdefault("connect_timeout", "10")
    info.setdefault("application_name", "rayvault-learning")
    return Target(make_conninfo("", **info), schema, display, pool_max)


def _bad_url(display: str, why: str) -> StoreError:
    return StoreError(
        f"invalid PostgreSQL store URL {display}: {why}",
        hint="use postgresql://USER@HOST:PORT/DATABASE[?schema=NAME] (--store or RAYVAULT_STORE)",
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__


def _connect_error(display: str, error: BaseException) -> StoreError:
    return StoreError(
        f"cannot connect to PostgreSQL at {display}: {_first_line(error)}",
        hint="check that the server is running and reachable, and the URL "
        "(--store or RAYVAULT_STORE)",
    )


class _RetryableError(StoreError):
    """PostgreSQL rolled a transaction back (deadlock victim, serialization failure): nothing
    of it was committed, and running it again is safe."""


class _ConnectionLost(StoreError):
    """The connection broke under a call (the server terminated it, the network dropped it).
    ``in_commit``: it broke while a transaction was being committed, so the write may or may
    not have been stored."""

    in_commit = False


class _PoolLog(logging.Handler):
    """psycopg_pool's own messages ("discarding closed connection" after the server ended a
    pooled connection, …) go to the ``rayvault.learning`` logger at INFO: they are expected, the
    store reconnects, and they must not be printed around the CLI's ``Error:`` line (with no
    handler of its own, Python would print the pool's warnings to stderr)."""

    def emit(self, record: logging.LogRecord) -> None:
        log.info("PostgreSQL connection pool: %s", record.getMessage())


_pool_log = logging.getLogger("psycopg.pool")
if not any(isinstance(h, _PoolLog) for h in _pool_log.handlers):
    _pool_log.addHandler(_PoolLog())


def _snapshot_name(stamp: str) -> str:
    return f"memory_active-{stamp}-{secrets.token_hex(4)}.json"


def _close_pool(pool: ConnectionPool[Any], pid: int) -> None:
    if os.getpid() == pid:
        pool.close()
    else:
        _INHERITED.append(pool)


# -- SQL of one operation each ------------------------------------------------------------------
_EVENT_TYPES = {"ts": "bigint", "resolved": "smallint"}
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


EVENT_UPSERT = _upsert_sql("event_versions", "events", "event_id", EVENT_COLUMNS, _EVENT_TYPES)
ERROR_UPSERT = _upsert_sql("error_versions", "errors", "id", ERROR_COLUMNS, _ERROR_TYPES)
EVENT_BY_ID = "SELECT data::text FROM events WHERE event_id = %s"
EVENT_FOR_UPDATE = EVENT_BY_ID + " FOR UPDATE"
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
           coalesce(severity, status, component, agent) AS value, count(*) AS n
      FROM events{where}
     GROUP BY GROUPING SETS ((severity), (status), (component), (agent))
     ORDER BY facet, n DESC, value
"""
ERROR_PATTERNS = """
    SELECT fingerprint, count(*), sum(1 - resolved), min(ts), max(ts), max(id),
           array_remove(array_agg(DISTINCT video_id), NULL),
           array_remove(array_agg(DISTINCT stage), NULL)
      FROM errors WHERE fingerprint IS NOT NULL
     GROUP BY fingerprint HAVING count(*) >= %s
     ORDER BY count(*) DESC, max(ts) DESC
"""
ERRORS_BY_IDS = "SELECT id, data::text FROM errors WHERE id = ANY(%s)"
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
                      WHERE r.fingerprint = k.fingerprint LIMIT 1))
      FROM ({inner}) AS k
     ORDER BY k.occurrences DESC, k.fingerprint
"""
LOCK = "SELECT pg_advisory_xact_lock(%s)"
AGENT_STATE = "SELECT memory::text, tombstones::text FROM agents WHERE agent = %s"
AGENT_LOCKED = AGENT_STATE + " FOR UPDATE"
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
#: psycopg decodes the ``json`` column it selects: the record is validated from that.
LATEST_RESOLUTION = LATEST_RESOLUTION_SQL.format(ph="%s")
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


class PostgresStore:
    """The shared store: learning data in PostgreSQL, documents as files under ``root``."""

    def __init__(
        self, root: Path | str, url: str, *, migrate: bool = True, read_only: bool = False
    ) -> None:
        self.root = Path(root).absolute()
        self.url = url
        self.target = parse_url(url)
        self.schema = self.target.schema
        self.is_read_only = read_only
        self.docs = Documents(self.root, lambda: self.policies, read_only=read_only)
        #: Create or upgrade the schema on first use (``store status`` looks without changing it;
        #: a read-only view never changes it).
        self.auto_migrate = migrate and not read_only
        self.conninfo = self.target.conninfo
        if read_only:
            options = conninfo_to_dict(self.conninfo).get("options") or ""
            self.conninfo = make_conninfo(
                self.conninfo, options=f"{options} -c default_transaction_read_only=on"
            )
        #: A read-only view of a schema that does not exist yet sees it empty: one connection
        #: holds an empty copy of the schema in a transaction never committed (``_pooled``).
        self._phantom_schema = False
        self._phantom_conn: Conn | None = None
        self._phantom_lock = threading.RLock()
        #: How many times this store built that empty schema (once per process and store).
        self.phantom_builds = 0
        self._pool: ConnectionPool[Any] | None = None
        self._finalizer: weakref.finalize[Any, PostgresStore] | None = None
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        self._pid = os.getpid()
        self._souls_saved: set[str] = set()
        self._read_only_view: PostgresStore | None = None
        #: Migrations this object applied when it first connected (the doctor reports them).
        self.applied_on_open: list[str] = []

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
        try:
            return load_policies(self.root)
        except PolicyError as e:
            raise ConfigError(str(e), hint="fix the value in policies.py or the environment") from e

    def describe(self) -> str:
        return (
            f"PostgreSQL store {self.target.display} (schema {self.schema}), "
            f"documents at {self.root}" + (" (read-only)" if self.is_read_only else "")
        )

    def close(self) -> None:
        if self._read_only_view is not None:
            self._read_only_view.close()
        with self._pool_lock:
            pool, self._pool = self._pool, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
        if pool is not None:
            _close_pool(pool, self._pid)
        with self._phantom_lock:
            phantom, self._phantom_conn = self._phantom_conn, None
        if phantom is not None and not phantom.closed:
            if os.getpid() == self._pid:
                phantom.close()  # rolls the empty schema back
            else:
                _INHERITED_CONNECTIONS.append(phantom)

    # -- connections ----------------------------------------------------------------------------
    def lock_key(self, *parts: str) -> int:
        """A 64-bit advisory-lock key for ``parts`` in this schema (other schemas never block)."""
        digest = hashlib.blake2b("\0".join((self.schema, *parts)).encode(), digest_size=8)
        return int.from_bytes(digest.digest(), "big", signed=True)

    def connect(self) -> Conn:
        """A new connection of its own (not pooled), autocommit, on this store's schema."""
        try:
            return psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.OperationalError as e:
            raise _connect_error(self.target.display, e) from e

    def _forked(self) -> None:
        """In a child process: forget the parent's pool and transaction; build our own."""
        if self._pool is not None:
            _INHERITED.append(self._pool)
        self._pool = None
        self._finalizer = None
        if self._phantom_conn is not None:
            _INHERITED_CONNECTIONS.append(self._phantom_conn)
            self._phantom_conn = None
        self._phantom_lock = threading.RLock()
        self._local = threading.local()
        self._pool_lock = threading.Lock()
        self._pid = os.getpid()

    def _get_pool(self) -> ConnectionPool[Any]:
        if self._pid != os.getpid():
            self._forked()
        pool = self._pool
        if pool is not None:
            return pool
        with self._pool_lock:
            if self._pool is None:
                if self.auto_migrate:
                    # A connection of our own first: a bad URL or a server that is down is
                    # reported at once and clearly (the pool would retry in the background).
                    with self.connect() as conn:
                        self._ensure_schema(conn)
                elif self.is_read_only:
                    with self.connect() as conn:
                        self._check_readable(conn)
                pool = ConnectionPool(
                    self.conninfo,
                    kwargs={"autocommit": True},
                    min_size=1,
                    max_size=self.target.pool_max,
                    open=False,
                    name=f"rayvault-{self.schema}",
                    timeout=POOL_TIMEOUT,
                    # A connection the server ended while it sat in the pool is found and
                    # replaced when it is checked out, not reported as the next call's error.
                    check=ConnectionPool.check_connection,
                )
                pool.open(wait=False)
                self._pool = pool
                self._finalizer = weakref.finalize(self, _close_pool, pool, self._pid)
            return self._pool

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[Conn]:
        """A pooled connection of its own (not the thread's current transaction)."""
        pool = self._get_pool()
        conn: Conn | None = None
        try:
            if self._phantom_schema:
                with self._phantom_connection() as conn:
                    yield conn
            else:
                with pool.connection() as conn:
                    yield conn
        except PoolTimeout as e:
            raise StoreError(
                f"no PostgreSQL connection available at {self.target.display} "
                f"after {POOL_TIMEOUT:.0f}s: {_first_line(e)}",
                hint="check that the server is running and accepts connections",
            ) from e
        except pg_errors.LockNotAvailable as e:
            raise StoreError(
                f"timed out after {LOCK_TIMEOUT_MS // 1000}s waiting for a lock in the "
                f"PostgreSQL store {self.target.display} (schema {self.schema})",
                hint="another worker holds it; check for stuck sessions in pg_stat_activity",
            ) from e
        except pg_errors.TransactionRollback as e:
            raise _RetryableError(
                f"PostgreSQL store {self.target.display}: {_first_line(e)}",
                hint="a concurrent write conflicted with this one; try again",
            ) from e
        except pg_errors.UndefinedTable as e:
            raise StoreError(
                f"schema {self.schema!r} at {self.target.display} is not initialised "
                f"({_first_line(e)})",
                hint="run `rayvault-learn store init`",
            ) from e
        except psycopg.OperationalError as e:
            if conn is not None and conn.broken:
                raise self._lost(e) from e
            raise StoreError(
                f"PostgreSQL store {self.target.display}: {_first_line(e)}",
                hint="check that the server is running and reachable",
            ) from e

    def _lost(self, error: psycopg.OperationalError) -> _ConnectionLost:
        in_commit = bool(getattr(error, "rayvault_in_commit", False))
        lost = _ConnectionLost(
            f"PostgreSQL store {self.target.display}: the connection was lost"
            + (" while committing: the write may or may not have been stored" if in_commit else "")
            + f" ({_first_line(error)})",
            hint="retry with the same idempotency key (--idempotency-key): a write that was "
            "stored is then returned, not made twice"
            if in_commit
            else "check that the server is running and reachable",
        )
        lost.in_commit = in_commit
        return lost

    def _reconnecting(
        self, call: Callable[[], None], *, stored: Callable[[], bool] | None = None
    ) -> None:
        """Run a write ``call`` again, once, on a new connection when its connection was lost
        and that is safe: it broke before a commit was under way (nothing of it was stored), or
        ``stored()`` (asked on a new connection) says the write did not reach the database. A
        write that did is not made twice. Never inside a transaction block (the block's
        connection is gone: the block fails), never for other errors (constraints, bad data)."""
        try:
            call()
        except _ConnectionLost as e:
            if getattr(self._local, "conn", None) is not None:
                raise
            if stored is not None:
                if stored():
                    log.info("PostgreSQL store: connection lost (%s); the write was stored", e)
                    return
            elif e.in_commit:
                raise
            log.info("PostgreSQL store: connection lost (%s); retried on a new connection", e)
            call()

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

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Conn]:
        """The thread's connection: inside a transaction block, that block's; else a pooled one
        for the duration (autocommit: a single statement is its own transaction)."""
        if self._pid == os.getpid():
            current: Conn | None = getattr(self._local, "conn", None)
            if current is not None:
                yield current
                return
        with self._pooled() as conn:
            self._local.conn = conn
            try:
                yield conn
            finally:
                self._local.conn = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Conn]:
        """A transaction (a savepoint when the thread is already in one)."""
        with self._connection() as conn:
            committing = False
            try:
                with conn.transaction():
                    yield conn
                    committing = True
            except psycopg.OperationalError as e:
                # Lost during COMMIT: the server may have stored it (see ``_lost``).
                e.rayvault_in_commit = committing  # type: ignore[attr-defined]
                raise

    def lock_tables(self, conn: Conn, tables: str, mode: str) -> None:
        """``LOCK TABLE tables IN mode MODE`` in the caller's transaction, for maintenance that
        holds writers off (compaction, repairs) without ever waiting while it holds a lock.

        Writers take the locks of ``events`` and ``event_versions`` in either order (an update
        reads its row first, an append inserts its version first): a maintenance transaction
        waiting for its second table could deadlock with one, and PostgreSQL could abort the
        writer. So each attempt gives up quickly, releases what it got, and tries again, up to
        the usual lock timeout."""
        deadline = time.monotonic() + LOCK_TIMEOUT_MS / 1000
        while True:
            try:
                with conn.transaction():  # a savepoint: rolling it back releases its locks
                    conn.execute(f"SET LOCAL lock_timeout = {MAINTENANCE_LOCK_TRY_MS}")
                    conn.execute(f"LOCK TABLE {tables} IN {mode} MODE")
                conn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS}")
                return
            except pg_errors.LockNotAvailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))

    def _executemany(self, statement: str, params: list[tuple[Any, ...]]) -> None:
        def write(conn: Conn) -> None:
            with conn.cursor() as cur:
                cur.executemany(statement, params)

        # Upserts, in one transaction: all of them were committed or none.
        self._retrying(write, stored=lambda: self._version_stored(statement, params[0]))

    def _retrying(
        self, write: Callable[[Conn], None], *, stored: Callable[[], bool] | None = None
    ) -> None:
        """Run a multi-statement write in a transaction, again if PostgreSQL picked it as the
        victim of a deadlock (nothing of it was committed), or once on a new connection when its
        connection was lost (see ``_reconnecting``)."""

        def run() -> None:
            with self._transaction() as conn:
                write(conn)

        for attempt in range(5):
            try:
                self._reconnecting(run, stored=stored)
                return
            except _RetryableError:
                if attempt == 4 or getattr(self._local, "conn", None) is not None:
                    raise
                log.info("PostgreSQL store: write retried after a deadlock")

    @contextlib.contextmanager
    def _phantom_connection(self) -> Iterator[Conn]:
        """For a read-only view of a schema not created yet: the one connection that sees an
        empty store, for the duration of a call (calls of several threads take turns). A call
        that leaves its transaction failed drops it: the next call builds a new one."""
        with self._phantom_lock:
            conn = self._phantom_conn
            if conn is None or conn.closed:
                conn = self._phantom_conn = self._build_phantom()
            try:
                yield conn
            finally:
                if conn.info.transaction_status != TransactionStatus.INTRANS:
                    self._phantom_conn = None
                    conn.close()

    def _build_phantom(self) -> Conn:
        """A connection in an open transaction holding the schema as a first use would create
        it, empty, under a private name (a concurrent ``store init`` of the real one never
        waits for it), read-only from then on. The transaction is never committed: closing the
        view rolls it back, and nothing of it is left in the database. Built once per view."""
        name = f"rayvault_empty_{secrets.token_hex(6)}"
        conn = self.connect()
        try:
            conn.execute("BEGIN READ WRITE")
            conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(name)))
            schema_sql.migrate(conn, name, self.lock_key("empty", name))
            conn.execute("SET TRANSACTION READ ONLY")
        except psycopg.Error as e:
            conn.close()
            raise StoreError(
                f"cannot read schema {self.schema!r} at {self.target.display}, which is not "
                f"initialised, as an empty store: {_first_line(e)}",
                hint="run `rayvault-learn store init`",
            ) from e
        self.phantom_builds += 1
        log.info(
            "schema %s is not initialised: the read-only view reads it as an empty store",
            self.schema,
        )
        return conn

    def _check_readable(self, conn: Conn) -> None:
        """A read-only view reads the schema as it is: a missing one is empty (``_phantom``), one
        written by an older version cannot be read (upgrading it would be a write)."""
        try:
            applied = schema_sql.applied_migrations(conn, self.schema)
        except psycopg.OperationalError as e:
            raise _connect_error(self.target.display, e) from e
        if applied is None:
            self._phantom_schema = True
            return
        pending = [m.name for m in schema_sql.MIGRATIONS if m.name not in applied]
        if pending:
            raise StoreError(
                f"schema {self.schema!r} at {self.target.display} needs an upgrade "
                f"({', '.join(pending)}) before it can be read; a read-only view does not "
                "change it",
                hint="run `rayvault-learn store upgrade`",
            )

    # -- schema -----------------------------------------------------------------------------------
    def _ensure_schema(self, conn: Conn) -> None:
        try:
            if schema_sql.pending_migrations(conn, self.schema):
                applied = schema_sql.migrate(conn, self.schema, self.lock_key("migrate"))
                if applied:
                    self.applied_on_open = applied
                    log.info("schema %s: applied %s", self.schema, ", ".join(applied))
        except psycopg.OperationalError as e:
            raise _connect_error(self.target.display, e) from e
        except psycopg.Error as e:
            raise StoreError(
                f"cannot create or upgrade schema {self.schema!r} at {self.target.display}: "
                f"{_first_line(e)}",
                hint="run `rayvault-learn store init` as a user allowed to create it",
            ) from e

    def has_schema(self) -> bool:
        return True

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
                for table in (
                    "events",
                    "event_versions",
                    "errors",
                    "error_versions",
                    "agents",
                    "memory_snapshots",
                    "gate_states",
                    "soul_snapshots",
                    "weekly_reports",
                    "tombstone_archives",
                    "event_version_archive",
                ):
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
    def _where(self, table: str, key: str | None = None, column: str | None = None) -> Path:
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
        return self._record(LearningEvent, text, self._where("events"), "an event")

    def _error(self, text: str) -> ErrorEntry:
        return self._record(ErrorEntry, text, self._where("errors"), "an error-log entry")

    # -- events -----------------------------------------------------------------------------------
    def _event_params(self, event: LearningEvent) -> tuple[Any, ...]:
        data = event.model_dump_json()
        aliases = self.policies.LEARNING_STAGE_ALIASES
        return (event.event_id, data, *event_row(orjson.loads(data), aliases))

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

    def query_events(self, query: EventQuery) -> list[LearningEvent]:
        where, params = event_where(query, "%s")
        order, more = event_order(query, "%s")
        with self._connection() as conn:
            rows = conn.execute(f"SELECT data::text FROM events{where}{order}", [*params, *more])
            return build_records(rows, self._event)

    def count_events(self, query: EventQuery) -> int:
        where, params = event_where(query, "%s")
        with self._connection() as conn:
            row = conn.execute(f"SELECT count(*) FROM events{where}", params).fetchone()
        return int(row[0]) if row else 0

    def event_facets(self, query: EventQuery) -> dict[str, dict[str, int]]:
        where, params = event_where(query, "%s")
        facets: dict[str, dict[str, int]] = {
            f: {} for f in ("severity", "status", "component", "agent")
        }
        with self._connection() as conn:
            for facet, value, n in conn.execute(EVENT_FACETS.format(where=where), params):
                if value is not None:
                    facets[facet][str(value)] = int(n)
        return facets

    def event_patterns(
        self, query: EventQuery, *, min_count: int = 1, active_since: datetime | None = None
    ) -> list[Pattern]:
        statement, params = pattern_sql(
            query, min_count=min_count, active_since=active_since, dialect="postgresql", ph="%s"
        )
        with self._connection() as conn:
            rows = conn.execute(statement, params).fetchall()
            samples = {
                event_id: pattern or symptom or ""
                for event_id, pattern, symptom in conn.execute(
                    PATTERN_SAMPLES, ([row[6] for row in rows],)
                )
            }
        patterns = [pattern_from_row(row, samples.get(row[6], "")) for row in rows]
        return patterns

    def event_timeline(self, query: EventQuery) -> dict[date, dict[str, int]]:
        statement, params = timeline_sql(query, "%s")
        epoch = date(1970, 1, 1)
        timeline: dict[date, dict[str, int]] = {}
        with self._connection() as conn:
            for day, severity, count in conn.execute(statement, params):
                timeline.setdefault(epoch + timedelta(days=day), {})[str(severity)] = int(count)
        return dict(sorted(timeline.items()))

    def resolution_times(
        self, query: EventQuery, *, resolved_since: datetime | None = None
    ) -> list[tuple[datetime, datetime]]:
        where, params = event_where(replace(query, unresolved=False), "%s")
        times = []
        with self._connection() as conn:
            rows = conn.execute(f"SELECT ts, data->>'resolved_at' FROM events{where}", params)
            for ts, resolved_at in rows:
                if resolved_at is None:
                    continue  # resolved by an older writer that did not record when
                try:
                    when = parse_ts(resolved_at)
                except ValueError:
                    continue
                if resolved_since is None or when >= resolved_since:
                    times.append((from_micros(ts), when))
        return times

    def event_statuses(self, event_ids: Sequence[str]) -> dict[str, str]:
        with self._connection() as conn:
            rows = conn.execute(EVENT_STATUSES, (list(dict.fromkeys(event_ids)),))
            return {event_id: str(status) for event_id, status in rows}

    # -- agent memory -----------------------------------------------------------------------------
    def _agent_docs(self, conn: Conn, agent: str) -> tuple[str | None, str | None]:
        row = conn.execute(AGENT_STATE, (agent,)).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def _memory(self, agent: str, text: str | None) -> AgentMemory:
        if text is None:
            return AgentMemory()
        where = self._where("agents", agent, "memory")
        return self._record(AgentMemory, text, where, "agent memory")

    def _tombstones(self, agent: str, text: str | None) -> TombstoneFile:
        if text is None:
            return TombstoneFile()
        where = self._where("agents", agent, "tombstones")
        return self._record(TombstoneFile, text, where, "the tombstone list")

    def load_memory(self, agent: str) -> AgentMemory:
        validate_identifier(agent, "agent")
        with self._connection() as conn:
            memory, _ = self._agent_docs(conn, agent)
        return self._memory(agent, memory)

    def load_tombstones(self, agent: str) -> TombstoneFile:
        validate_identifier(agent, "agent")
        with self._connection() as conn:
            _, tombstones = self._agent_docs(conn, agent)
        return self._tombstones(agent, tombstones)

    def memory_location(self, agent: str) -> str:
        return str(self._where("agents", validate_identifier(agent, "agent"), "memory"))

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

    def _lock_agent(self, conn: Conn, agent: str) -> tuple[str | None, str | None]:
        row = self._locked_row(conn, AGENT_LOCKED, agent, "agent", agent)
        return (row[0], row[1]) if row else (None, None)

    @contextlib.contextmanager
    def agent_state(self, agent: str) -> Iterator[AgentState]:
        validate_identifier(agent, "agent")
        self._writable()
        with self._transaction() as conn:
            old_memory, old_tombstones = self._lock_agent(conn, agent)
            state = AgentState(
                agent,
                self._memory(agent, old_memory),
                self._tombstones(agent, old_tombstones),
                existed=old_memory is not None,
            )
            yield state
            if not (state.memory_changed or state.tombstones_changed):
                return
            now = utcnow()
            memory_text = tombstones_text = None
            if state.memory_changed:
                state.memory.updated = now
                memory_text = dump_json(state.memory.model_dump(mode="json")).decode()
            if state.tombstones_changed:
                state.tombstones.updated = now
                tombstones_text = dump_json(state.tombstones.model_dump(mode="json")).decode()
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
            memory, tombstones = self._lock_agent(conn, agent)
            if memory is not None and tombstones is not None:
                return False
            now = utcnow()
            new_memory = (
                dump_json(AgentMemory(updated=now).model_dump(mode="json")).decode()
                if memory is None
                else None
            )
            new_tombstones = (
                dump_json(TombstoneFile(updated=now).model_dump(mode="json")).decode()
                if tombstones is None
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
        clause, params = error_where(query, "%s")
        with self._connection() as conn:
            rows = conn.execute(f"SELECT data::text FROM errors{clause}", params)
            return build_records(rows, self._error)

    def error_patterns(self, min_count: int) -> list[ErrorPattern]:
        with self._connection() as conn:
            groups = conn.execute(ERROR_PATTERNS, (min_count,)).fetchall()
            examples = {
                entry_id: self._error(text)
                for entry_id, text in conn.execute(ERRORS_BY_IDS, ([g[5] for g in groups],))
            }
        patterns = [
            error_pattern_from_row(group, examples[group[5]], group[6], group[7])
            for group in groups
        ]
        return patterns

    def latest_resolutions(self) -> list[ErrorEntry]:
        with self._connection() as conn:
            return [self._error(text) for (text,) in conn.execute(LATEST_RESOLUTIONS)]

    def latest_resolution(self, fingerprint: str) -> ErrorEntry | None:
        with self._connection() as conn:
            row = conn.execute(LATEST_RESOLUTION, (fingerprint,)).fetchone()
        if row is None:
            return None
        return self._record(ErrorEntry, row[0], self._where("errors"), "an error-log entry")

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
                    pattern=template or shown_pattern(text) or fp,
                    occurrences=occurrences,
                    unresolved=unresolved,
                )
                for fp, occurrences, unresolved, template, text in rows
            ]

    def failing_fingerprints(
        self, fingerprints: list[str], components: tuple[str, ...]
    ) -> set[str]:
        if not fingerprints or not components:
            return set()
        sql = failing_fingerprints_sql(len(fingerprints), len(components), "%s")
        with self._connection() as conn:
            rows = conn.execute(sql, [*fingerprints, *components, *components])
            return {fp for (fp,) in rows}

    def open_occurrences(
        self, fingerprint: str, components: tuple[str, ...], limit: int
    ) -> tuple[list[str], list[str]]:
        if not components:
            return [], []
        params = [fingerprint, *components, limit]
        with self._connection() as conn:
            rows = conn.execute(open_occurrences_sql(len(components), "%s"), params * 2)
            found = rows.fetchall()
        return [i for k, i in found if k == "event"], [i for k, i in found if k == "error"]

    def load_gate_state(self, video_id: str) -> GateState | None:
        validate_identifier(video_id, "video id")
        with self._connection() as conn:
            row = conn.execute(GATE_STATE, (video_id,)).fetchone()
        if row is None:
            return None
        where = self._where("gate_states", video_id)
        return self._record(GateState, row[0], where, "the gate state")

    @contextlib.contextmanager
    def gate_state(self, video_id: str) -> Iterator[GateState]:
        validate_identifier(video_id, "video id")
        self._writable()
        with self._transaction() as conn:
            row = self._locked_row(conn, GATE_STATE_LOCKED, video_id, "gate", video_id)
            where = self._where("gate_states", video_id)
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
        lock): they are in exactly one of the two."""
        self._writable()
        with self.agent_state(agent) as state:
            due = [t for t in state.tombstones.tombstones if t.tombstoned_at < older_than]
            if not due:
                return ArchivedTombstones(agent)
            now = utcnow()
            text = dump_json(tombstone_archive_document(agent, now, older_than, due)).decode()
            with self._connection() as conn:
                day = now.date()
                (n,) = conn.execute(TOMBSTONE_ARCHIVE_NEXT, (agent, day)).fetchone() or (1,)
                while True:
                    name = dated_name("tombstones", day, n) + ".json"
                    params = (agent, name, day, n, text)
                    if conn.execute(TOMBSTONE_ARCHIVE_INSERT, params).fetchone():
                        break
                    n += 1
            state.tombstones.tombstones = [
                t for t in state.tombstones.tombstones if not t.tombstoned_at < older_than
            ]
            state.tombstones_changed = True
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
        where = self._where("weekly_reports", name, "data")
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
        uses) keeps the same latest versions, and the failure counts do not change.
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
