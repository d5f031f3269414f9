"""PostgreSQL: a connection the server ended is not an error, and a write retried after a lost
connection is not made twice (issue 11, item 6).

Every test terminates real server connections with ``pg_terminate_backend``, selected by an
``application_name`` unique to the test, so other sessions on the server are never touched.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayvault.cli import main
from rayvault.learning import create_event
from rayvault.learning.errors import log_error
from rayvault.learning.store import postgres as pg_module
from rayvault.learning.store.postgres import PostgresStore
from tests.conftest import PG_DSN, PgSchemas, event_kwargs

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_name() -> str:
    return f"rv_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(pg_schemas: PgSchemas, app_name: str) -> str:
    return f"{pg_schemas.new_url()}&application_name={app_name}"


@pytest.fixture
def pg(root: Path, url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(root, url)
    yield store
    store.close()


def admin(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def terminate(app_name: str, where: str = "TRUE") -> int:
    """End every server connection of this test's store; how many were ended."""
    rows = admin(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = %s AND pid <> pg_backend_pid() AND {where}",
        (app_name,),
    )
    return sum(1 for (ok,) in rows if ok)


def rows(store: PostgresStore, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        return conn.execute(statement, params).fetchall()


def test_writes_after_the_server_ended_idle_connections(
    pg: PostgresStore, app_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_event(**event_kwargs(), store=pg)  # the pool holds open connections now
    assert terminate(app_name) >= 1
    caplog.set_level(logging.INFO, logger="rayvault")
    first = create_event(**event_kwargs(symptom="After the termination"), store=pg)
    second = log_error("v042", "assets", "boom", store=pg)
    third = create_event(**event_kwargs(symptom="And once more"), store=pg)
    assert pg.get_event(first.event_id) == first
    assert pg.get_error(second.id) == second
    assert pg.get_event(third.event_id) == third
    assert [r[0] for r in rows(pg, "SELECT count(*) FROM events")] == [3]


def test_terminating_every_connection_repeatedly(pg: PostgresStore, app_name: str) -> None:
    """30 rounds of "terminate everything, then write": every write succeeds, none twice."""
    ids = []
    for i in range(30):
        terminate(app_name)
        ids.append(create_event(**event_kwargs(symptom=f"round {i}"), store=pg).event_id)
    assert len(set(ids)) == 30
    assert rows(pg, "SELECT count(*) FROM events") == [(30,)]


def test_pool_messages_go_to_the_logger_not_stderr(
    root: Path, url: str, app_name: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A CLI process whose pooled connections were ended: the pool's "discarding closed
    connection" is logged, never printed next to the command's output."""
    store = PostgresStore(root, url)
    create_event(**event_kwargs(), store=store)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("rayvault")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        terminate(app_name)
        capfd.readouterr()
        # The pool's own warning, as psycopg_pool emits it when it finds a closed connection.
        logging.getLogger("psycopg.pool").warning("discarding closed connection: %s", "conn")
        create_event(**event_kwargs(symptom="after"), store=store)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        store.close()
    out, err = capfd.readouterr()
    assert "discarding" not in err and "discarding" not in out
    assert any("discarding closed connection" in r.getMessage() for r in records)
    assert all(r.levelno == logging.INFO for r in records if "pool" in r.getMessage())


def test_cli_after_termination_prints_no_pool_warning(
    root: Path, url: str, app_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--store", url, "events", "create", "--severity", "WARN", "--component", "assets"]
    assert main([*args, "--symptom", "first"]) == 0
    terminate(app_name)
    assert main([*args, "--symptom", "second"]) == 0
    err = capsys.readouterr().err
    assert "discarding" not in err
    assert "Error" not in err


def lock_events_then_terminate_waiting(app_name: str, schema: str) -> threading.Thread:
    """Hold a lock on ``events`` so the store's next upsert waits; terminate the waiting
    connection (its write was not committed), then release the lock."""
    import psycopg

    ready = threading.Event()

    def hold() -> None:
        with psycopg.connect(PG_DSN) as conn:
            conn.execute(f'LOCK TABLE "{schema}".events IN EXCLUSIVE MODE')
            ready.set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if terminate(app_name, "wait_event_type = 'Lock'"):
                    break
                time.sleep(0.02)
            time.sleep(0.3)
            conn.rollback()

    thread = threading.Thread(target=hold)
    thread.start()
    ready.wait(10)
    return thread


def test_write_lost_before_commit_is_retried_once(pg: PostgresStore, app_name: str) -> None:
    first = create_event(**event_kwargs(agent=None, video_id=None), store=pg)
    thread = lock_events_then_terminate_waiting(app_name, pg.schema)
    try:
        entry = log_error("v042", "assets", "unrelated", store=pg)  # errors: not locked
        updated = first.model_copy(update={"root_cause": "found later"})
        pg.append_events([updated])  # waits on the lock; its connection is ended; retried
    finally:
        thread.join()
    assert pg.get_error(entry.id) == entry
    assert pg.get_event(first.event_id).root_cause == "found later"  # type: ignore[union-attr]
    versions = rows(
        pg, "SELECT count(*) FROM event_versions WHERE event_id = %s", (first.event_id,)
    )
    assert versions == [(3,)]  # two of create_event, one of the update: none twice


def test_write_lost_after_commit_is_not_made_twice(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection ends just after the server committed the upsert (the client never hears
    back): the store finds the version stored and does not write it again."""
    event = create_event(**event_kwargs(agent=None, video_id=None), store=pg)
    real = pg_module.PostgresStore._connection
    ended: list[int] = []

    import contextlib

    @contextlib.contextmanager
    def connection(self: PostgresStore) -> Iterator[Any]:
        with real(self) as conn:
            if ended:
                yield conn
                return

            class Ending:
                def execute(self, *args: Any, **kwargs: Any) -> Any:
                    result = conn.execute(*args, **kwargs)  # committed (autocommit)
                    ended.append(1)
                    conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
                    return result

            yield Ending()

    monkeypatch.setattr(pg_module.PostgresStore, "_connection", connection)
    pg.append_events([event.model_copy(update={"root_cause": "later"})])
    monkeypatch.undo()
    assert ended == [1]
    versions = rows(
        pg, "SELECT count(*) FROM event_versions WHERE event_id = %s", (event.event_id,)
    )
    assert versions == [(3,)]
    assert pg.get_event(event.event_id).root_cause == "later"  # type: ignore[union-attr]


def test_lost_connection_inside_a_transaction_block_is_an_error(
    pg: PostgresStore, app_name: str
) -> None:
    """A block's connection ending is reported (the block cannot be run again by the store)."""
    from rayvault.learning.exceptions import StoreError

    pg.init_agent("dzine_producer")
    with pytest.raises(StoreError), pg.agent_state("dzine_producer") as state:
        terminate(app_name, "state <> 'idle'")
        state.memory_changed = True
        pg.load_memory("dzine_producer")  # on the block's ended connection
