"""The PostgreSQL store's connections: store URLs (parsing, display), connection errors, and
:class:`Connections`, the part of the store that owns its pool — fork safety, the thread's
transaction, retries after a deadlock or a lost connection, the read-only view's empty schema,
and creating or upgrading the schema on first use.

The doctor (``postgres.doctor``) and dump/load (``postgres.transfer``) use the store through the
small interface documented on :class:`Connections` (``open_pool``, ``pooled``, ``transaction``)
and ``PostgresStore.location``, never its private methods.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from rayvault.learning.exceptions import (
    StoreError,
)
from rayvault.learning.store.postgres import schema as schema_sql

log = logging.getLogger("rayvault.learning")
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


def _close_pool(pool: ConnectionPool[Any], pid: int) -> None:
    if os.getpid() == pid:
        pool.close()
    else:
        _INHERITED.append(pool)


class Connections:
    """The connection half of :class:`~rayvault.learning.store.postgres.store.PostgresStore`.

    Internal interface for the store's helpers: ``open_pool()`` (connect; a first use creates or
    upgrades the schema), ``is_connected()``, ``pooled()`` (a pooled connection of its own),
    ``transaction()`` (the thread's transaction, or a savepoint in it), ``lock_key`` and
    ``lock_tables``."""

    root: Path

    def _init_connections(self, url: str, *, migrate: bool, read_only: bool) -> None:
        self.url = url
        self.target = parse_url(url)
        self.schema = self.target.schema
        self.is_read_only = read_only
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
        #: holds an empty copy of the schema in a transaction never committed (``pooled``).
        self._phantom_schema = False
        self._phantom_conn: Conn | None = None
        self._phantom_lock = threading.RLock()
        #: How many times this store built that empty schema (once per process and store).
        self.phantom_builds = 0
        self._pool: ConnectionPool[Any] | None = None
        self._finalizer: weakref.finalize[Any, Connections] | None = None
        self._pool_lock = threading.Lock()
        self._local = threading.local()
        self._pid = os.getpid()
        #: Migrations this object applied when it first connected (the doctor reports them).
        self.applied_on_open: list[str] = []

    def _close_connections(self) -> None:
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

    def is_connected(self) -> bool:
        """Whether this store has connected (made its pool) in this process."""
        return self._pool is not None

    def open_pool(self) -> None:
        """Connect, as any first use does (creating or upgrading the schema when the store
        migrates on open)."""
        self._get_pool()

    def pooled(self) -> contextlib.AbstractContextManager[Conn]:
        """A pooled connection of its own (not the thread's current transaction)."""
        return self._pooled()

    def transaction(self) -> contextlib.AbstractContextManager[Conn]:
        """A transaction on the thread's connection (a savepoint when already in one)."""
        return self._transaction()

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
