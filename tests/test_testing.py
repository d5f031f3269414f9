"""``rayvault.learning.testing``: the helpers pipeline authors (and these tests) isolate with."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rayvault.learning import _time, create_event, list_events
from rayvault.learning.store import FileStore, get_store
from rayvault.learning.testing import (
    DEFAULT_START,
    FixedClock,
    fixed_clock,
    isolated,
    reset,
    temporary_store,
)
from rayvault.policies import load_policies

from .conftest import PgSchemas, event_kwargs

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def test_a_fixed_clock_is_read_by_the_library_until_it_is_uninstalled() -> None:
    clock = FixedClock(T0)
    assert clock() == T0 and clock.now == T0
    real = _time.utcnow()
    assert abs(real - datetime.now(UTC)) < timedelta(minutes=1)
    with clock:
        assert _time.utcnow() == T0
        assert clock.advance(days=8, hours=1) == T0 + timedelta(days=8, hours=1)
        assert _time.utcnow() == T0 + timedelta(days=8, hours=1)
        assert clock.advance(timedelta(seconds=5)) == T0 + timedelta(days=8, hours=1, seconds=5)
        assert clock.set("2026-04-01T00:00:00Z") == datetime(2026, 4, 1, tzinfo=UTC)
        assert _time.utcnow() == datetime(2026, 4, 1, tzinfo=UTC)
        clock.set(datetime(2026, 5, 1))  # naive: taken as UTC
        assert _time.utcnow() == datetime(2026, 5, 1, tzinfo=UTC)
    assert abs(_time.utcnow() - datetime.now(UTC)) < timedelta(minutes=1)


def test_fixed_clocks_nest_and_put_back_the_one_before() -> None:
    with fixed_clock() as outer:
        assert _time.utcnow() == DEFAULT_START == outer.now
        with fixed_clock("2030-01-01T00:00:00Z"):
            assert _time.utcnow() == datetime(2030, 1, 1, tzinfo=UTC)
        assert _time.utcnow() == DEFAULT_START
    assert _time._clock is None


def test_a_bad_start_is_refused() -> None:
    with pytest.raises(ValueError, match="not a timestamp"):
        FixedClock("next tuesday")
    assert _time._clock is None


def test_events_take_the_fixed_time(root: Path) -> None:
    with fixed_clock(T0) as clock:
        first = create_event(**event_kwargs())  # type: ignore[arg-type]
        clock.advance(hours=2)
        second = create_event(**event_kwargs(run_id="v042-run-002"))  # type: ignore[arg-type]
    assert (first.timestamp, second.timestamp) == (T0, T0 + timedelta(hours=2))


def test_isolated_hides_the_environment_and_puts_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAYVAULT_STORE", "postgresql://nowhere/db")
    monkeypatch.setenv("RAYVAULT_NOW", "2020-01-01T00:00:00Z")
    monkeypatch.setenv("RAYVAULT_KEEP_ME", "yes")
    before = {k: v for k, v in os.environ.items() if k.startswith("RAYVAULT_")}
    with isolated(keep=["RAYVAULT_KEEP_ME"]) as root:
        assert root.is_dir() and root.is_absolute()
        assert os.environ["RAYVAULT_ROOT"] == str(root)
        assert "RAYVAULT_STORE" not in os.environ and "RAYVAULT_NOW" not in os.environ
        assert os.environ["RAYVAULT_KEEP_ME"] == "yes"
        os.environ["RAYVAULT_LEFT_BEHIND"] = "x"
        store = get_store()
        assert isinstance(store, FileStore) and store.root == root
    assert not root.exists()  # the temporary folder is removed
    assert {k: v for k, v in os.environ.items() if k.startswith("RAYVAULT_")} == before
    given = tmp_path / "given" / "root"
    with isolated(given) as same:
        assert same == given and given.is_dir()
    assert given.is_dir()  # a root the caller gave is kept


def test_isolated_starts_with_fresh_policies_and_stores(root: Path) -> None:
    outer_store = get_store()
    cached = load_policies(root)
    assert load_policies(root) is cached
    with isolated() as inner:
        assert get_store() is not outer_store and get_store().root == inner
        assert load_policies(root) is not cached
    assert get_store() is not outer_store  # reset on the way out too


def test_reset_forgets_stores_and_restores_the_clock() -> None:
    FixedClock(T0).install()
    store = get_store()
    reset()
    assert _time._clock is None
    assert get_store() is not store


def test_temporary_store_is_the_default_store_of_the_block(root: Path) -> None:
    with temporary_store() as store, fixed_clock(T0):
        assert store is get_store() and store.root != root
        event = create_event(**event_kwargs())  # type: ignore[arg-type]
        assert store.get_event(event.event_id) == event
        assert [e.event_id for e in list_events()] == [event.event_id]
        folder = store.root
    assert not folder.exists()
    assert list_events() == []  # the test's own root saw nothing


@pytest.mark.postgres
def test_temporary_store_on_postgresql(pg_schemas: PgSchemas) -> None:
    url = pg_schemas.new_url()
    with temporary_store(url=url) as store:
        assert os.environ["RAYVAULT_STORE"] == url
        assert store is get_store() and type(store).__name__ == "PostgresStore"
        event = create_event(**event_kwargs())  # type: ignore[arg-type]
        assert store.get_event(event.event_id) == event
    assert "RAYVAULT_STORE" not in os.environ


def test_the_docs_example_runs_as_written(root: Path) -> None:
    """docs/howto-testing.md's example, in this process: it leaves nothing behind."""
    text = (REPO / "docs" / "howto-testing.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S)
    assert code is not None
    exec(compile(code.group(1), "docs/howto-testing.md", "exec"), {})
    assert os.environ["RAYVAULT_ROOT"] == str(root)
    assert _time._clock is None
