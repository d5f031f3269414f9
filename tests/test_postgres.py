"""The PostgreSQL store itself: URLs and errors, migrations, versions, locks and transactions,
fork safety, and many processes writing at once."""

from __future__ import annotations

import multiprocessing
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import (
    CorruptFileError,
    StoreError,
    create_event,
    list_events,
    load_active_memory,
    load_tombstones,
    resolve_event,
    update_event,
)
from rayvault.learning.events import get_event
from rayvault.learning.store import FileStore, Store, get_store, open_store
from rayvault.learning.store._fs import dump_json
from rayvault.learning.store.postgres import PostgresStore, display_url, parse_url, with_schema
from rayvault.learning.store.postgres.schema import MIGRATIONS

from . import _workers
from .conftest import PgSchemas, event_kwargs

NAMES = [m.name for m in MIGRATIONS]
UNREACHABLE = "postgresql://root:s3cret@127.0.0.1:1/test"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- URLs and errors (no server needed) ----------------------------------------------------------


def test_url_schema_from_parameter_options_or_default() -> None:
    """``?schema=`` wins, then ``options=-csearch_path=``, then ``rayvault``; ours never reach
    libpq, and every connection is pinned to the schema."""
    target = parse_url("postgresql://u@h:5432/db?schema=team_a&sslmode=disable")
    assert target.schema == "team_a"
    assert "schema=" not in target.conninfo and "sslmode=disable" in target.conninfo
    assert "search_path=team_a" in target.conninfo
    assert parse_url("postgresql://u@h/db?options=-csearch_path%3Dops").schema == "ops"
    assert parse_url("postgres://u@h/db").schema == "rayvault"
    assert parse_url("postgresql://u@h/db?pool_max=12").pool_max == 12
    assert "pool_max" not in parse_url("postgresql://u@h/db?pool_max=12").conninfo
    assert with_schema("postgresql://u@h/db?schema=x&connect_timeout=3", "y") == (
        "postgresql://u@h/db?connect_timeout=3&schema=y"
    )


def test_passwords_never_appear_in_messages() -> None:
    assert display_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert display_url("postgresql://u@h/db?password=pw&schema=s") == (
        "postgresql://u@h/db?password=***&schema=s"
    )
    with pytest.raises(StoreError) as info:
        parse_url("postgresql://u:pw@h/db?schema=Bad-Name")
    assert "pw" not in str(info.value) and "***" in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@h/db?schema=Bad-Name", "schema 'Bad-Name' is not a plain lower-case name"),
        ("postgresql://u@h/db?bogus=1", 'invalid URI query parameter: "bogus"'),
        ("postgresql://u@h/db?pool_max=0", "pool_max must be a number from 1 to 1000"),
    ],
)
def test_bad_url_is_a_store_error(root: Path, url: str, message: str) -> None:
    with pytest.raises(StoreError, match="invalid PostgreSQL store URL") as info:
        open_store(root, url)
    assert message in str(info.value)


def test_unreachable_server_is_a_clear_store_error(root: Path) -> None:
    store = open_store(root, UNREACHABLE)
    with pytest.raises(StoreError) as info:
        store.get_event("le-x")
    assert str(info.value).startswith(
        "cannot connect to PostgreSQL at postgresql://root:***@127.0.0.1:1/test: "
    )
    assert "Connection refused" in str(info.value)
    store.close()


@pytest.mark.parametrize(
    "args",
    [
        ("--store", UNREACHABLE, "events", "list"),
        ("--store", UNREACHABLE, "gate", "v1", "assets"),  # the fast path
        ("--store", UNREACHABLE, "store", "status"),
        ("--store", "postgresql://u@h/db?bogus=1", "memory", "show", "researcher"),
    ],
)
def test_cli_store_errors_are_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    """A bad URL or an unreachable server: exit 1, ``Error: …`` and a hint, no traceback."""
    code, out, err = run(capsys, *args)
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) in (2, 3), err
    assert lines[0].startswith(("Error: cannot connect to PostgreSQL", "Error: invalid PostgreSQL"))
    assert lines[1].startswith("  hint: ")
    assert len(lines) == 2 or lines[2].startswith("store: postgresql://")  # once it was opened
    assert "s3cret" not in err and "Traceback" not in err


def test_unknown_store_is_refused(root: Path) -> None:
    with pytest.raises(StoreError, match="unknown store 'mysql://x'"):
        open_store(root, "mysql://x")


# -- both stores --------------------------------------------------------------------------------


def test_store_fixture_and_default_store_agree(store: Store, backend: str | None) -> None:
    """On its PostgreSQL run a test's domain calls use the test's own schema."""
    expected = FileStore if backend is None else PostgresStore
    assert isinstance(store, Store)  # every method of the protocol is there
    assert isinstance(store, expected)
    assert isinstance(get_store(), expected)
    event = create_event(**event_kwargs())  # type: ignore[arg-type]  # default store
    assert store.get_event(event.event_id) == event


# -- schema and migrations ----------------------------------------------------------------------


def test_migrations_are_recorded_once_and_init_is_idempotent(
    root: Path, pg_schemas: PgSchemas
) -> None:
    store = PostgresStore(root, pg_schemas.new_url())
    status = store.schema_status()
    assert status["initialised"] is False and status["pending"] == NAMES
    with pytest.raises(StoreError, match="is not initialised"):
        store.upgrade_schema()
    assert store.init_schema() == NAMES
    assert store.init_schema() == []
    assert store.upgrade_schema() == []
    with store.connect() as conn:
        rows = conn.execute("SELECT name, count(*) FROM schema_migrations GROUP BY name").fetchall()
    assert sorted(rows) == sorted((name, 1) for name in NAMES)
    status = store.schema_status()
    assert status["initialised"] is True and status["pending"] == [] and status["unknown"] == []
    assert [m["name"] for m in status["migrations"]] == NAMES
    store.close()


def test_first_use_creates_the_schema(root: Path, pg_schemas: PgSchemas) -> None:
    """A store opened on a schema that does not exist yet creates and migrates it itself."""
    store = PostgresStore(root, pg_schemas.new_url())
    event = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    assert store.schema_status()["pending"] == []
    assert [e.event_id for e in list_events(store=store)] == [event.event_id]
    store.close()


def test_store_cli_init_upgrade_status(
    root: Path, pg_schemas: PgSchemas, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_schemas.new_url()
    code, out, err = run(capsys, "--store", url, "store", "status", "--json")
    assert code == 0, err
    import json

    assert json.loads(out)["initialised"] is False
    code, _, err = run(capsys, "--store", url, "store", "upgrade")
    assert code == 1 and "is not initialised" in err and "store init" in err
    code, out, _ = run(capsys, "store", "init", "--store", url, "--json")
    assert code == 0 and json.loads(out)["applied"] == NAMES
    code, out, _ = run(capsys, "store", "init", "--store", url)
    assert code == 0 and "schema up to date, nothing to apply." in " ".join(out.split())
    code, out, _ = run(capsys, "--store", url, "store", "status", "--json")
    status = json.loads(out)
    assert status["pending"] == [] and status["counts"]["events"] == 0
    code, out, _ = run(capsys, "--store", url, "store", "status")
    assert code == 0 and "migrations applied: m001_events" in " ".join(out.split())


def test_file_store_has_no_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "store", "init")
    assert code == 0 and "no schema to initialise" in " ".join(out.split())
    create_event(**event_kwargs())  # type: ignore[arg-type]
    code, out, _ = run(capsys, "store", "status", "--json")
    import json

    status = json.loads(out)
    assert status["backend"] == "file" and status["counts"]["events"] == 1


# -- records --------------------------------------------------------------------------------------


@pytest.fixture
def pg(root: Path, pg_schemas: PgSchemas) -> PostgresStore:
    store = PostgresStore(root, pg_schemas.new_url())
    return store


def test_every_event_version_is_kept_in_order(pg: PostgresStore) -> None:
    event = create_event(**event_kwargs(verification=""), store=pg)  # type: ignore[arg-type]
    resolve_event(event.event_id, "checked", store=pg)
    update_event(event.event_id, status="open", store=pg)
    with pg.connect() as conn:
        statuses = [
            row[0]
            for row in conn.execute(
                "SELECT data->>'status' FROM event_versions WHERE event_id = %s ORDER BY seq",
                (event.event_id,),
            )
        ]
        latest = conn.execute(
            "SELECT status, resolved FROM events WHERE event_id = %s", (event.event_id,)
        ).fetchone()
    assert statuses == ["open", "applied", "verified", "open"]
    assert latest == ("open", 0)
    assert get_event(event.event_id, store=pg).status == "open"
    pg.close()


def test_a_snapshot_holds_the_memory_before_the_change(pg: PostgresStore) -> None:
    create_event(**event_kwargs(symptom="first failure"), store=pg)  # type: ignore[arg-type]
    before = pg.load_memory("dzine_producer")
    create_event(**event_kwargs(symptom="second failure"), store=pg)  # type: ignore[arg-type]
    [(_, name)] = pg.list_memory_snapshots("dzine_producer")
    with pg.connect() as conn:
        row = conn.execute("SELECT data::text FROM memory_snapshots WHERE name = %s", (name,))
        text = row.fetchone()[0]  # type: ignore[index]
    assert text == dump_json(before.model_dump(mode="json")).decode()  # the bytes, as stored
    assert len(pg.load_memory("dzine_producer").rules) == 2
    pg.close()


def test_corrupt_record_is_named(pg: PostgresStore) -> None:
    create_event(**event_kwargs(), store=pg)  # type: ignore[arg-type]
    with pg.connect() as conn:
        conn.execute('UPDATE agents SET memory = \'{"rules": "nope"}\'')
    with pytest.raises(CorruptFileError) as info:
        load_active_memory("dzine_producer", store=pg)
    assert f"{pg.schema}.agents[dzine_producer].memory is corrupt" in str(info.value)
    pg.close()


def test_nothing_is_written_when_a_block_fails(pg: PostgresStore) -> None:
    """An exception inside agent_state/gate_state rolls back everything the block did."""
    create_event(**event_kwargs(), store=pg)  # type: ignore[arg-type]
    before = pg.load_memory("dzine_producer")
    with pytest.raises(RuntimeError), pg.agent_state("dzine_producer") as state:
        state.memory.rules.clear()
        state.memory_changed = True
        assert pg.load_memory("dzine_producer") == before  # a nested read joins the block
        raise RuntimeError("boom")
    assert pg.load_memory("dzine_producer") == before
    assert pg.list_memory_snapshots("dzine_producer") == []
    with pytest.raises(RuntimeError), pg.gate_state("v1") as gate:
        gate.acks.append({"x": 1})
        raise RuntimeError("boom")
    assert pg.load_gate_state("v1") is None
    pg.close()


def test_agent_state_is_exclusive_across_connections(pg: PostgresStore) -> None:
    """A second worker waits for the first one's agent lock and then sees its change."""
    other = PostgresStore(pg.root, pg.url)
    create_event(**event_kwargs(), store=pg)  # type: ignore[arg-type]
    entered, seen = threading.Event(), []

    def second() -> None:
        entered.wait()
        with other.agent_state("dzine_producer") as state:
            seen.append((time.monotonic(), len(state.memory.rules)))

    thread = threading.Thread(target=second)
    thread.start()
    with pg.agent_state("dzine_producer") as state:
        entered.set()
        time.sleep(0.3)
        state.memory.rules.clear()
        state.memory_changed = True
        released = time.monotonic()
    thread.join(10)
    assert seen and seen[0][0] >= released  # it waited for the lock
    assert seen[0][1] == 0  # and saw the committed change
    other.close()
    pg.close()


def test_exclusive_is_a_mutex(pg: PostgresStore) -> None:
    other = PostgresStore(pg.root, pg.url)
    order: list[str] = []
    entered = threading.Event()

    def second() -> None:
        entered.wait()
        with other.exclusive("promote-e1"):
            order.append("second")

    thread = threading.Thread(target=second)
    thread.start()
    with pg.exclusive("promote-e1"):
        entered.set()
        time.sleep(0.3)
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    with pg.exclusive("another-name"), other.exclusive("promote-e1"):
        pass  # names are independent, and the lock was released
    other.close()
    pg.close()


_INHERITED: list[PostgresStore] = []


def _child_writes(queue: multiprocessing.Queue[str]) -> None:
    store = _INHERITED[0]  # the parent's object, inherited by fork
    event = create_event(**event_kwargs(symptom="from the child"), store=store)  # type: ignore[arg-type]
    queue.put(event.event_id)


@pytest.mark.slow
def test_a_forked_child_builds_its_own_pool(pg: PostgresStore) -> None:
    """A child process using the parent's store object gets its own connections and leaves the
    parent's alone."""
    first = create_event(**event_kwargs(), store=pg)  # type: ignore[arg-type]
    _INHERITED[:] = [pg]
    ctx = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    child = ctx.Process(target=_child_writes, args=(queue,))
    child.start()
    child_id = queue.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    # The parent's pooled connections still work, and see the child's event.
    assert {e.event_id for e in list_events(store=pg)} == {first.event_id, child_id}
    second = create_event(**event_kwargs(symptom="parent again"), store=pg)  # type: ignore[arg-type]
    assert get_event(second.event_id, store=pg).symptom == "parent again"
    _INHERITED.clear()
    pg.close()


# -- many processes ----------------------------------------------------------------------------


def _run_workers(root: Path, url: str, workers: int, count: int) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(_workers.create_many, str(root), w, count, "WARN", url)
            for w in range(workers)
        ]
        return [event_id for f in futures for event_id in f.result()]


@pytest.mark.slow
def test_eight_processes_lose_no_event_and_no_rule(
    root: Path, pg_schemas: PgSchemas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 processes start on a schema that does not exist yet: it is migrated once, and every
    event, version and rule is kept."""
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "100000")
    url = pg_schemas.new_url()
    ids = _run_workers(root, url, 8, 30)
    assert len(set(ids)) == 240
    store = PostgresStore(root, url)
    assert {e.event_id for e in list_events(store=store)} == set(ids)
    assert all(e.status == "applied" and e.rule_id for e in list_events(store=store))
    rules = load_active_memory("dzine_producer", store=store).rules
    assert {r.source_event_id for r in rules} == set(ids)
    status = store.schema_status()
    assert [m["name"] for m in status["migrations"]] == NAMES  # each recorded once
    assert status["counts"]["event_versions"] == 480
    assert status["counts"]["memory_snapshots"] == 239  # one before every change but the first
    assert len(list((root / "agents/skills/learnings").glob("2*.md"))) == 240
    store.close()


@pytest.mark.slow
def test_cap_holds_under_concurrency(
    root: Path, pg_schemas: PgSchemas, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent appliers never leave more INFO/WARN rules than the cap; every evicted rule is
    in the tombstones."""
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "20")
    url = pg_schemas.new_url()
    PostgresStore(root, url).init_schema()
    ids = _run_workers(root, url, 8, 25)
    store = PostgresStore(root, url)
    active = load_active_memory("dzine_producer", store=store).rules
    evicted = load_tombstones("dzine_producer", store=store).tombstones
    assert len(active) == 20
    assert {r.source_event_id for r in active} | {t.source_event_id for t in evicted} == set(ids)
    assert len(active) + len(evicted) == 200
    store.close()
