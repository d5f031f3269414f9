"""Tombstones are appended without reading the list (issue 15, item 1).

A memory change that adds a tombstone (an eviction at the rule cap, ``tombstone_rule``,
``resolve_conflict``) appends it — to ``memory_tombstones_log.json`` in the file store, as a row
of ``agent_tombstones`` on PostgreSQL — and a memory change reads no tombstone at all; readers
merge the original system's ``memory_tombstones.json`` (or ``agents.tombstones``) with what was
appended, and the weekly sweep folds the appends back into it.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.learning import create_event, load_active_memory, load_tombstones, tombstone_rule
from rayvault.learning.loop import run_stage
from rayvault.learning.models import Tombstone, TombstoneFile
from rayvault.learning.revisit import revisit
from rayvault.learning.store import FileStore, Store
from rayvault.learning.store.files import _tombstones
from rayvault.learning.store.files.layout import TOMBSTONES_FILE, TOMBSTONES_LOG_FILE
from rayvault.learning.store.postgres import PostgresStore

from . import _workers
from .conftest import PgSchemas
from .test_original_formats import FIXTURE, load_original

AGENT = "dzine_producer"
SEED = FIXTURE / "state/agents" / AGENT / TOMBSTONES_FILE
CAP = 3


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small rule cap, so every new rule evicts one (the environment reaches child processes)."""
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", str(CAP))


def new_failure(store: Store, i: int) -> str:
    """A WARN failure of its own for the agent: a new rule, evicting one at the cap."""
    event = create_event(
        run_id="tomb",
        severity="WARN",
        component="assets",
        symptom=_workers.distinct_failure(2, i),
        agent=AGENT,
        store=store,
    )
    return event.event_id


def stored_document(store: Store) -> bytes | None:
    """The seed-shaped list as stored: the file's bytes, or the ``agents.tombstones`` text."""
    if isinstance(store, FileStore):
        path = store.layout.tombstones_path(AGENT)
        return path.read_bytes() if path.exists() else None
    assert isinstance(store, PostgresStore)
    with store.connect() as conn:
        row = conn.execute("SELECT tombstones::text FROM agents WHERE agent = %s", (AGENT,))
        found = row.fetchone()
    return found[0].encode() if found and found[0] is not None else None


def appended(store: Store) -> int:
    """How many tombstones wait in the log (or rows) to be folded into the list."""
    if isinstance(store, FileStore):
        path = store.layout.agent_dir(AGENT) / TOMBSTONES_LOG_FILE
        return len(orjson.loads(path.read_bytes())) if path.exists() else 0
    assert isinstance(store, PostgresStore)
    with store.connect() as conn:
        row = conn.execute("SELECT count(*) FROM agent_tombstones WHERE agent = %s", (AGENT,))
        return int(row.fetchone()[0])


@pytest.fixture
def no_tombstone_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make every read of a tombstone list fail, and note who tried: a memory change that reads
    the list would fail the test (its cost would grow with the list)."""
    tried: list[str] = []

    def refuse(*_: Any, **__: Any) -> Any:
        tried.append("read")
        raise AssertionError("a memory change read the tombstone list")

    if isinstance(store, FileStore):
        monkeypatch.setattr(_tombstones.TombstoneList, "read_base", refuse)
        monkeypatch.setattr(_tombstones.TombstoneList, "read_added", refuse)
    else:
        monkeypatch.setattr(PostgresStore, "_tombstone_parts", refuse)
    yield tried
    monkeypatch.undo()


def test_the_original_list_loads_appends_and_round_trips(store: Store, tmp_path: Path) -> None:
    """The seed's memory_tombstones.json loads as it is; a new tombstone is appended without
    rewriting it; the sweep folds the appended one in, in the seed's shape, and nothing moves."""
    load_original(store, tmp_path)
    seed = TombstoneFile.model_validate_json(SEED.read_bytes())
    assert load_tombstones(AGENT, store=store).tombstones == seed.tombstones
    before = stored_document(store)
    [rule] = load_active_memory(AGENT, store=store).rules
    stone = tombstone_rule(AGENT, rule.rule_id, "Replaced by hand", store=store)

    assert stored_document(store) == before  # not rewritten: the tombstone was appended
    assert appended(store) == 1
    whole = load_tombstones(AGENT, store=store)
    assert whole.tombstones == [*seed.tombstones, stone] and whole.count == 2
    assert whole.updated == stone.tombstoned_at

    nothing_due = store.archive_tombstones(AGENT, datetime(2000, 1, 1, tzinfo=UTC))
    assert nothing_due.tombstones == [] and appended(store) == 0  # folded in all the same
    folded = stored_document(store)
    assert folded is not None
    raw = orjson.loads(folded)
    assert raw["count"] == 2 and [t["rule_id"] for t in raw["tombstones"]] == [
        seed.tombstones[0].rule_id,
        rule.rule_id,
    ]
    assert load_tombstones(AGENT, store=store).tombstones == [*seed.tombstones, stone]
    # The weekly sweep archives the seed's tombstone (past its grace period), keeps the new one.
    new_failure(store, 1)
    assert appended(store) == 0  # a first rule again: nothing evicted
    report = revisit("all", 7, store=store)
    [sweep] = [s for s in report.tombstone_sweep if s.agent == AGENT]
    assert (sweep.tombstones_archived, sweep.tombstones_kept) == (1, 1)
    assert load_tombstones(AGENT, store=store).tombstones == [stone]


def test_memory_writes_read_no_tombstone(
    store: Store, capped: None, no_tombstone_reads: list[str]
) -> None:
    """Evictions at the cap and stage runs (deliveries counted in the memory) never read the
    tombstone list, however long it is: the bytes a memory write reads do not grow with it."""
    for i in range(CAP + 4):
        new_failure(store, i)
    run = run_stage("v1", "assets", lambda ctx: "ok", agent=AGENT, store=store)
    assert run.ok and not no_tombstone_reads
    rules = load_active_memory(AGENT, store=store).rules
    assert len(rules) == CAP and all(r.applied_count >= 1 for r in rules)
    assert appended(store) == 4


def test_evictions_are_appended_and_every_rule_accounted_for(store: Store, capped: None) -> None:
    ids = [new_failure(store, i) for i in range(CAP + 5)]
    document = stored_document(store)
    assert document is not None and orjson.loads(document)["tombstones"] == []
    assert appended(store) == 5
    evicted = load_tombstones(AGENT, store=store).tombstones
    active = load_active_memory(AGENT, store=store).rules
    assert [t.source_event_id for t in evicted] == ids[:5]  # the least recently used first
    assert {r.source_event_id for r in active} == set(ids[5:])
    assert all(t.kind == "evicted" for t in evicted)


def test_archiving_folds_and_moves_only_what_is_due(store: Store, capped: None) -> None:
    ids = [new_failure(store, i) for i in range(CAP + 3)]
    stones = load_tombstones(AGENT, store=store).tombstones
    cutoff = stones[1].tombstoned_at  # the first one is due, the two after it are not
    archived = store.archive_tombstones(AGENT, cutoff)
    assert [t.source_event_id for t in archived.tombstones] == ids[:1] and archived.location
    assert appended(store) == 0
    assert load_tombstones(AGENT, store=store).tombstones == stones[1:]
    assert store.archive_tombstones(AGENT, cutoff).tombstones == []


@pytest.mark.files_only("the files a crash leaves behind")
def test_a_log_already_folded_in_shows_nothing_twice(file_store: FileStore, capped: None) -> None:
    """A crash after the sweep rewrote the list but before it removed the log: the log's
    tombstones are in both files; readers show each once, and the next sweep removes the log."""
    for i in range(CAP + 3):
        new_failure(file_store, i)
    folder = file_store.layout.agent_dir(AGENT)
    log = (folder / TOMBSTONES_LOG_FILE).read_bytes()
    whole = load_tombstones(AGENT, store=file_store)
    file_store.archive_tombstones(AGENT, datetime(2000, 1, 1, tzinfo=UTC))
    (folder / TOMBSTONES_LOG_FILE).write_bytes(log)  # as if the removal never happened
    assert load_tombstones(AGENT, store=file_store).tombstones == whole.tombstones
    new_failure(file_store, 99)
    assert len(load_tombstones(AGENT, store=file_store).tombstones) == 4
    file_store.archive_tombstones(AGENT, datetime(2000, 1, 1, tzinfo=UTC))
    assert not (folder / TOMBSTONES_LOG_FILE).exists()
    assert len(load_tombstones(AGENT, store=file_store).tombstones) == 4


@pytest.mark.files_only("a torn append is a file's")
def test_a_torn_append_loses_nothing_written_before(file_store: FileStore, capped: None) -> None:
    for i in range(CAP + 2):
        new_failure(file_store, i)
    log = file_store.layout.agent_dir(AGENT) / TOMBSTONES_LOG_FILE
    data = log.read_bytes()
    torn = data.rstrip()[:-1].rstrip() + b',\n{"rule_id": "rule-torn", "sev'
    log.write_bytes(torn)  # a writer killed mid-append
    assert len(load_tombstones(AGENT, store=file_store).tombstones) == 2
    findings = [f for f in file_store.check() if f.path.endswith(TOMBSTONES_LOG_FILE)]
    assert [f.code for f in findings] == ["log-torn-tail"]
    new_failure(file_store, 50)  # the next append cuts the tail off first
    assert len(load_tombstones(AGENT, store=file_store).tombstones) == 3
    assert not [f for f in file_store.check() if f.path.endswith(TOMBSTONES_LOG_FILE)]


def test_doctor_checks_appended_tombstones(store: Store, capped: None) -> None:
    for i in range(CAP + 1):
        new_failure(store, i)
    assert not [f for f in store.check() if f.code == "tombstones-corrupt"]
    if isinstance(store, FileStore):
        log = store.layout.agent_dir(AGENT) / TOMBSTONES_LOG_FILE
        log.write_bytes(log.read_bytes().replace(b'"tombstoned_at"', b'"buried_at"'))
    else:
        assert isinstance(store, PostgresStore)
        with store.connect() as conn:
            conn.execute("INSERT INTO agent_tombstones (agent, data) VALUES (%s, '{}')", (AGENT,))
    [finding] = [f for f in store.check() if f.code == "tombstones-corrupt"]
    assert "tombstone" in finding.message
    with pytest.raises(Exception, match="tombstone"):
        load_tombstones(AGENT, store=store)


def test_export_carries_appended_tombstones(store: Store, capped: None, tmp_path: Path) -> None:
    from rayvault.learning.store.transfer import export_store

    for i in range(CAP + 2):
        new_failure(store, i)
    whole = load_tombstones(AGENT, store=store)
    target = tmp_path / "exported"
    export_store(store, target)
    exported = TombstoneFile.model_validate_json(
        (target / "state/agents" / AGENT / TOMBSTONES_FILE).read_bytes()
    )
    assert exported.tombstones == whole.tombstones and len(exported.tombstones) == 2
    assert not (target / "state/agents" / AGENT / TOMBSTONES_LOG_FILE).exists()


@pytest.mark.slow
def test_concurrent_evictions_lose_no_tombstone(
    store: Store, root: Path, backend: str | None, capped: None
) -> None:
    """Four processes evicting from one agent's memory at once: every rule is active or
    tombstoned, once."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        futures = [
            pool.submit(_workers.create_many, str(root), w, 12, url=backend) for w in range(4)
        ]
        ids = [event_id for f in futures for event_id in f.result()]
    active = load_active_memory(AGENT, store=store).rules
    evicted = load_tombstones(AGENT, store=store).tombstones
    assert len(active) == CAP and len(evicted) == 48 - CAP
    sources = [r.source_event_id for r in active] + [t.source_event_id for t in evicted]
    assert sorted(sources) == sorted(ids)


@pytest.mark.slow
def test_a_killed_writer_loses_no_acknowledged_tombstone(
    store: Store, root: Path, backend: str | None, capped: None, tmp_path: Path
) -> None:
    """SIGKILL a process evicting in a loop, three times: every event it acknowledged has its
    rule active or tombstoned, once, and the list stays readable (and appendable)."""
    acknowledged = tmp_path / "acknowledged.txt"
    ctx = multiprocessing.get_context("spawn")
    for round_ in range(3):
        proc = ctx.Process(
            target=_workers.evict_forever, args=(str(root), backend, str(acknowledged))
        )
        proc.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if acknowledged.exists() and len(acknowledged.read_text().split()) >= 6 * (round_ + 1):
                break
            time.sleep(0.01)
        time.sleep(0.007 * round_)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    done = set(acknowledged.read_text().split())
    new_failure(store, 7)  # the next writer repairs whatever the kill left
    rules = load_active_memory(AGENT, store=store).rules
    stones: list[Tombstone] = load_tombstones(AGENT, store=store).tombstones
    # A kill between the append and the memory write leaves the evicted rule active as well
    # (never in neither); evicted again, its first tombstone stands: none is listed twice.
    assert len({t.rule_id for t in stones}) == len(stones)
    assert done <= {r.source_event_id for r in rules} | {t.source_event_id for t in stones}


def _stone(i: int) -> Tombstone:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
    return Tombstone(
        rule_id=f"rule-{i:04d}",
        source_event_id=f"evt-{i:04d}",
        created=at,
        severity="WARN",
        component="assets",
        rule=f"Rule {i}",
        tombstoned_at=at,
        reason="evicted",
        kind="evicted",
    )


@pytest.mark.files_only("the two files of the list")
@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 4)),
            st.tuples(st.just("fold"), st.integers(0, 0)),
            st.tuples(st.just("crash-fold"), st.integers(0, 0)),
        ),
        max_size=12,
    )
)
def test_the_list_is_what_was_appended_whatever_the_folds(
    tmp_path: Path, steps: list[tuple[str, int]]
) -> None:
    """Appends, folds, and folds that crashed before removing the log, in any order: the list
    read is every tombstone appended, once each, in order; a fold leaves no log behind."""
    folder = tmp_path / f"agent-{uuid.uuid4().hex}"
    folder.mkdir()
    tombstones = _tombstones.TombstoneList(folder)
    expected: list[Tombstone] = []
    for op, n in steps:
        if op == "append":
            new = [_stone(len(expected) + k) for k in range(n)]
            tombstones.append(new, datetime.now(UTC))
            expected += new
        else:
            log = tombstones.log.path.read_bytes() if tombstones.log.path.exists() else None
            tombstones.rewrite(tombstones.read())
            assert not tombstones.log.path.exists()
            if op == "crash-fold" and log is not None:
                tombstones.log.path.write_bytes(log)  # the removal never happened
        assert tombstones.read().tombstones == expected
        assert tombstones.read().count == len(expected)


def test_a_schema_before_m013_keeps_its_tombstones(
    root: Path, pg_schemas: PgSchemas, capped: None
) -> None:
    """A PostgreSQL schema written before ``agent_tombstones`` existed: its tombstone documents
    load as they are after the upgrade, and new tombstones are appended as rows."""
    from rayvault.learning.store.postgres import schema as schema_sql

    url = pg_schemas.new_url()
    old = PostgresStore(root, url, migrate=False)
    before = [m for m in schema_sql.MIGRATIONS if m.name != "m013_agent_tombstones"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema_sql, "MIGRATIONS", tuple(before))
        old.init_schema()
    document = TombstoneFile(tombstones=[_stone(1), _stone(2)], updated=datetime.now(UTC))
    with old.connect() as conn:
        conn.execute(
            "INSERT INTO agents (agent, tombstones) VALUES (%s, %s)",
            (AGENT, document.model_dump_json()),
        )
    assert "m013_agent_tombstones" in old.upgrade_schema()
    assert load_tombstones(AGENT, store=old).tombstones == document.tombstones
    for i in range(CAP + 1):
        new_failure(old, i)
    assert appended(old) == 1
    assert len(load_tombstones(AGENT, store=old).tombstones) == 3
    old.close()
