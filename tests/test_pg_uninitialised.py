"""PostgreSQL on a schema that does not exist yet (issue 10, item 7): the read-only view that dry
runs read through sees an empty store, built once per view — never once per call — and leaves
nothing in the database. Behaviour only: the figures are in benchmarks/bench_pg_schema.py."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayvault.cli import main
from rayvault.learning import StoreError
from rayvault.learning.migrate import migrate_learnings
from rayvault.learning.store import EventQuery
from rayvault.learning.store.postgres import PostgresStore
from rayvault.learning.store.postgres import schema as schema_sql

from .conftest import PgSchemas

pytestmark = pytest.mark.postgres
NOTES = "agents/skills/learnings"


@pytest.fixture
def migrations(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The schema each call of ``postgres.schema.migrate`` (the only DDL the store runs) worked on."""
    calls: list[str] = []
    original = schema_sql.migrate

    def counting(conn: Any, schema: str, lock_key: int) -> list[str]:
        calls.append(schema)
        return original(conn, schema, lock_key)

    monkeypatch.setattr(schema_sql, "migrate", counting)
    yield calls


def _leftover_schemas(store: PostgresStore) -> list[str]:
    with store.connect() as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
            (store.schema, "rayvault\\_empty\\_%"),
        ).fetchall()
    return [name for (name,) in rows]


def _reads(view: PostgresStore, n: int) -> None:
    for i in range(n):
        assert view.count_events(EventQuery()) == 0
        assert view.query_events(EventQuery(source_note=f"{NOTES}/n{i}.md", limit=1)) == []
        assert view.get_event(f"le-{i}") is None
        assert view.load_memory("researcher").rules == []
        assert view.known_failures(("assets",), 1) == []


def test_an_uninitialised_schema_is_built_empty_once_per_view_and_left_nowhere(
    root: Path, pg_schemas: PgSchemas, migrations: list[str]
) -> None:
    store = PostgresStore(root, pg_schemas.new_url())
    view = store.read_only()
    _reads(view, 50)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            _reads(view, 10)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert view.phantom_builds == 1
    assert len(migrations) == 1 and migrations[0].startswith("rayvault_empty_")
    assert migrations[0] != store.schema  # the real name is never taken, even for a moment
    store.close()
    assert _leftover_schemas(store) == []


def test_an_initialised_schema_is_read_without_any_ddl(
    root: Path, pg_schemas: PgSchemas, migrations: list[str]
) -> None:
    url = pg_schemas.new_url()
    setup = PostgresStore(root, url)
    setup.init_schema()
    setup.close()
    migrations.clear()
    store = PostgresStore(root, url)
    view = store.read_only()
    _reads(view, 20)
    assert migrations == [] and view.phantom_builds == 0
    store.close()


def test_a_migrate_dry_run_on_a_new_schema_migrates_once_and_creates_nothing(
    root: Path,
    pg_schemas: PgSchemas,
    shared_data: Path,
    migrations: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(shared_data / "skill-graph" / "learnings", root / NOTES)
    url = pg_schemas.new_url()
    store = PostgresStore(root, url)
    report = migrate_learnings(store=store)
    assert report.migrated > 0
    assert len(migrations) == 1
    store.close()
    assert _leftover_schemas(store) == []
    # The CLI's dry run alike: exit 0, and the schema is still not there.
    capsys.readouterr()
    assert main(["migrate", "--store", url, "--root", str(root)]) == 0
    assert len(migrations) == 2
    assert _leftover_schemas(store) == []


def test_store_init_does_not_wait_for_an_open_view_of_the_empty_schema(
    root: Path, pg_schemas: PgSchemas
) -> None:
    """The view's empty schema has a private name: creating the real one while a dry run
    holds it open does not block."""
    url = pg_schemas.new_url()
    store = PostgresStore(root, url)
    view = store.read_only()
    _reads(view, 1)
    done: list[list[str]] = []

    def init() -> None:
        writer = PostgresStore(root, url)
        done.append(writer.init_schema())
        writer.close()

    thread = threading.Thread(target=init)
    thread.start()
    thread.join(timeout=20)
    assert done and done[0] == [m.name for m in schema_sql.MIGRATIONS]
    store.close()


def test_a_failed_statement_does_not_spoil_the_view(root: Path, pg_schemas: PgSchemas) -> None:
    store = PostgresStore(root, pg_schemas.new_url())
    view = store.read_only()
    _reads(view, 1)
    with pytest.raises(StoreError, match="no_such_table"), view._connection() as conn:
        conn.execute("SELECT * FROM no_such_table")
    _reads(view, 1)  # a new empty schema is built: the failed transaction was dropped
    assert view.phantom_builds == 2
    store.close()
    assert _leftover_schemas(store) == []


@pytest.mark.parametrize(
    "command",
    [
        ["events", "list"],
        ["events", "stats"],
        ["patterns"],
        ["report"],
        ["doctor"],
        ["memory", "show", "researcher"],
        ["errors", "list"],
        ["revisit", "--dry-run"],
        ["gate", "v1", "research"],
        ["gate", "check", "v1", "research"],
    ],
    ids=" ".join,
)
def test_a_cli_read_on_a_schema_that_does_not_exist_creates_nothing(
    root: Path, pg_schemas: PgSchemas, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A read on a new (or mistyped) schema is one error naming the store, exit 1, and the schema
    is not created: reads never create a store, on the server as on files (and the gate never
    passes on a store that holds nothing because its name was mistyped)."""
    url = pg_schemas.new_url()
    probe = PostgresStore(root, url, migrate=False)
    assert main([*command, "--store", url, "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: PostgreSQL store ")
    assert "is not initialised: there is nothing to read" in err
    assert "rayvault-learn store init" in err
    assert "Traceback" not in err
    assert _leftover_schemas(probe) == []
    assert not probe.is_initialised()
    probe.close()


def test_store_status_and_a_migrate_dry_run_on_a_new_schema_create_nothing(
    root: Path, pg_schemas: PgSchemas, capsys: pytest.CaptureFixture[str]
) -> None:
    """`store status` reports a new schema as not initialised and a migrate dry run reads it as
    empty: both exit 0, and the schema is still not there; `store init` then creates it."""
    url = pg_schemas.new_url()
    probe = PostgresStore(root, url, migrate=False)
    assert main(["store", "status", "--json", "--store", url, "--root", str(root)]) == 0
    assert '"initialised": false' in capsys.readouterr().out
    assert main(["migrate", "--dry-run", "--store", url, "--root", str(root)]) == 0
    assert _leftover_schemas(probe) == []
    assert main(["store", "init", "--store", url, "--root", str(root)]) == 0
    assert probe.is_initialised()
    assert main(["events", "list", "--store", url, "--root", str(root)]) == 0
    probe.close()
