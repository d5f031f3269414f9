"""The PostgreSQL store's own side of the revisit, migration and maintenance: weekly reports and
tombstone archives in tables, the read-only view of dry runs, the schema's later migrations,
compaction of ``event_versions`` and the doctor's checks and repairs of the tables."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from rayvault.learning import (
    InvalidIdentifierError,
    StoreError,
    create_event,
    list_events,
    resolve_event,
)
from rayvault.learning._time import format_ts
from rayvault.learning.doctor import check_root
from rayvault.learning.errors import log_error
from rayvault.learning.gate import learning_gate
from rayvault.learning.models import LearningEvent
from rayvault.learning.revisit import revisit
from rayvault.learning.store import EventQuery, FileStore
from rayvault.learning.store._fs import dump_json
from rayvault.learning.store._sql import EVENT_COLUMNS, event_row
from rayvault.learning.store.postgres import PostgresStore
from rayvault.learning.store.postgres import schema as schema_sql
from rayvault.learning.store.transfer import export_store, import_root

from . import _raw
from .conftest import Clock, PgSchemas, event_kwargs

pytestmark = pytest.mark.postgres
AGENT = "dzine_producer"
#: Failures with nothing in common: each its own pattern (variants of one text would be grouped).
FAILURES = (
    "Audio clipping at the start",
    "Image hallucination in background",
    "Slow upload of thumbnails",
    "Render farm unreachable",
    "Subtitle track missing entirely",
    "Voiceover out of sync",
)
OLD_MIGRATIONS = schema_sql.MIGRATIONS[:5]  # what the first release of the schema had
NEW = [m.name for m in schema_sql.MIGRATIONS[5:]]


@pytest.fixture
def pg(root: Path, pg_schemas: PgSchemas) -> Iterator[PostgresStore]:
    store = PostgresStore(root, pg_schemas.new_url())
    yield store
    store.close()


def learn(store: PostgresStore, **overrides: object) -> LearningEvent:
    return create_event(**event_kwargs(**overrides), store=store)  # type: ignore[arg-type]


def old_schema(root: Path, url: str) -> PostgresStore:
    """A schema as the first release created it (m001–m005), opened without upgrading it."""
    store = PostgresStore(root, url, migrate=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema_sql, "MIGRATIONS", OLD_MIGRATIONS)
        store.init_schema()
    return store


def sql(store: PostgresStore, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def findings(store: PostgresStore, *, repair: bool = False) -> dict[str, Any]:
    return {f.code: f for f in check_root(repair=repair, store=store).findings}


# -- the later migrations -----------------------------------------------------------------------
def test_an_old_schema_is_upgraded_and_source_notes_filled_in(
    root: Path, pg_schemas: PgSchemas
) -> None:
    """m006 adds the source_note column and fills it from the events already stored: the
    migration's idempotency lookup finds the notes migrated before the upgrade."""
    store = old_schema(root, pg_schemas.new_url())
    columns = [c for c in EVENT_COLUMNS if c not in ("source_note", "idempotency_key")]
    for event_id, note in (("le-a", "agents/skills/learnings/a.md"), ("le-b", ""), ("le-c", None)):
        event = LearningEvent(
            event_id=event_id,
            timestamp=datetime(2026, 2, 19, tzinfo=UTC),
            severity="FAIL",
            component="assets",
            symptom=f"failure {event_id}",
        )
        data = event.to_dict() | ({} if note is None else {"source_note": note})
        row = dict(zip(EVENT_COLUMNS, event_row(data), strict=True))
        text = json.dumps(data)
        (seq,) = sql(
            store,
            "INSERT INTO event_versions (event_id, data) VALUES (%s, %s) RETURNING seq",
            (event_id, text),
        )[0]
        sql(
            store,
            f"INSERT INTO events ({', '.join(columns)}, seq, last_seq, data) "
            f"VALUES ({', '.join(['%s'] * (len(columns) + 3))})",
            (*[row[c] for c in columns], seq, seq, text),
        )
    found = findings(store)
    assert found["schema-outdated"].level == "error" and found["schema-outdated"].repairable
    assert found["schema-outdated"].message.startswith(
        f"migrations of this version not applied: {', '.join(NEW)}"
    )
    with pytest.raises(StoreError, match="needs an upgrade"):
        store.read_only().query_events(EventQuery())

    repaired = findings(store, repair=True)
    assert repaired["schema-outdated"].repaired
    assert repaired["schema-outdated"].action == f"applied {', '.join(NEW)}"
    assert sql(store, "SELECT event_id, source_note FROM events ORDER BY event_id") == [
        ("le-a", "agents/skills/learnings/a.md"),
        ("le-b", None),
        ("le-c", None),
    ]
    [hit] = store.query_events(EventQuery(source_note="agents/skills/learnings/a.md", limit=1))
    assert hit.event_id == "le-a"
    with store.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        rows = conn.execute("EXPLAIN SELECT * FROM events WHERE source_note = 'x'").fetchall()
    plan = " ".join(row[0] for row in rows)
    assert "events_source_note" in plan
    assert findings(store) == {}
    store.close()


def test_schema_changes_the_doctor_reports(pg: PostgresStore) -> None:
    learn(pg)
    sql(pg, "INSERT INTO schema_migrations (name) VALUES ('m999_from_the_future')")
    sql(pg, "DROP TRIGGER events_counted ON events")
    found = findings(pg, repair=True)
    assert found["schema-newer"].level == "warning"
    assert "m999_from_the_future" in found["schema-newer"].message
    missing = found["schema-object-missing"]
    assert (missing.path, missing.level, missing.repairable) == (
        f"{pg.schema}.events",
        "error",
        False,
    )
    assert missing.message == (
        "trigger events_counted on events is missing although migration m003_failure_counts "
        "is recorded: the schema was changed by hand"
    )


def test_a_first_use_by_the_doctor_is_reported_and_a_missing_schema_is_found(
    root: Path, pg_schemas: PgSchemas
) -> None:
    url = pg_schemas.new_url()
    report = check_root(store=PostgresStore(root, url))  # creates it, as any command would
    [info] = report.findings
    assert (info.code, info.level) == ("schema-upgraded", "info") and report.clean
    assert check_root(store=PostgresStore(root, url)).findings == []

    other = PostgresStore(root, pg_schemas.new_url(), migrate=False)
    [missing] = other.check()
    assert (missing.code, missing.level, missing.repairable) == ("schema-missing", "warning", True)
    [fixed] = other.check(repair=True)
    assert fixed.repaired and fixed.action and fixed.action.startswith("initialised: applied m001")
    assert other.check() == []


# -- the read-only view --------------------------------------------------------------------------
def test_the_read_only_view_reads_everything_and_writes_nothing(
    pg: PostgresStore, souls: Path, clock: Clock
) -> None:
    first = learn(pg)
    learn(pg, symptom="Second failure", verification="")
    log_error("v042", "research", "Timeout after 30s", store=pg)
    learning_gate("v042", "assets", store=pg)
    view = pg.read_only()
    assert view is pg.read_only() and view.read_only() is view and view.is_read_only
    assert view.describe().endswith("(read-only)") and view.docs.read_only
    assert view.query_events(EventQuery()) == pg.query_events(EventQuery())
    assert view.load_memory(AGENT) == pg.load_memory(AGENT)
    assert view.load_gate_state("v042") == pg.load_gate_state("v042")
    assert view.event_patterns(EventQuery()) == pg.event_patterns(EventQuery())
    before = _raw.everything(pg)

    writes = {
        "append_events": lambda: view.append_events([first]),
        "update_event": lambda: view.update_event(first.event_id, lambda e: e),
        "agent_state": lambda: view.agent_state(AGENT).__enter__(),
        "init_agent": lambda: view.init_agent("scriptwriter"),
        "prune": lambda: view.prune_memory_snapshots(AGENT, clock.now),
        "append_errors": lambda: view.append_errors([]),
        "update_error": lambda: view.update_error("e-x", lambda e: e),
        "gate_state": lambda: view.gate_state("v042").__enter__(),
        "soul": lambda: view.save_soul_snapshot("a" * 64, "text"),
        "exclusive": lambda: view.exclusive("x").__enter__(),
        "archive": lambda: view.archive_tombstones(AGENT, clock.now),
        "report": lambda: view.save_weekly_report(date(2026, 2, 19), {}, ""),
        "compact": view.compact_events,
        "repair": lambda: view.check(repair=True),
        "init": view.init_schema,
        "upgrade": view.upgrade_schema,
        "load": lambda: view.load_items([]),
    }
    for name, write in writes.items():
        with pytest.raises(StoreError, match="was opened read-only"):
            write()
        assert _raw.everything(pg) == before, name
    # A write the store forgot to refuse would fail in the server: every transaction is READ ONLY.
    with view.connect() as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("DELETE FROM events")
    assert view.check() == []
    revisit(dry_run=True, store=view)
    assert _raw.everything(pg) == before


def test_a_read_only_view_of_a_schema_not_created_yet_is_empty_and_leaves_nothing(
    root: Path, pg_schemas: PgSchemas
) -> None:
    """A dry run before the first write (e.g. ``migrate`` on a new database) reads an empty
    store; the schema is still not there afterwards."""
    store = PostgresStore(root, pg_schemas.new_url())
    view = store.read_only()
    assert view.query_events(EventQuery()) == []
    assert view.list_agents() == [] and view.load_memory(AGENT).rules == []
    assert view.list_weekly_reports() == [] and view.load_weekly_report() is None
    assert view.known_failures(("assets",), 1) == []

    def query(n: int) -> None:
        view.count_events(EventQuery(components=(f"c{n}",)))

    threads = [threading.Thread(target=query, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store.connect() as conn:
        assert not schema_sql.schema_exists(conn, store.schema)
    store.close()


# -- weekly reports and tombstone archives ------------------------------------------------------
def test_weekly_reports_are_named_by_day_and_never_replaced(pg: PostgresStore) -> None:
    day = date(2026, 2, 19)
    report = {"generated_at": "2026-02-19T12:00:00.000000Z", "period_days": 7, "scope": "all"}
    saved = [
        pg.save_weekly_report(day, {**report, "events_total": n}, f"<p>{n}</p>") for n in (1, 2, 3)
    ]
    later = pg.save_weekly_report(day + timedelta(days=1), report, "<p>4</p>")
    assert [s.name for s in saved] == [
        "weekly-2026-02-19",
        "weekly-2026-02-19-2",
        "weekly-2026-02-19-3",
    ]
    assert saved[1].json_location == f"{pg.schema}.weekly_reports[weekly-2026-02-19-2].data"
    assert saved[1].html_location == f"{pg.schema}.weekly_reports[weekly-2026-02-19-2].html"
    assert pg.list_weekly_reports() == [*(s.name for s in saved), later.name]
    assert pg.load_weekly_report() == pg.load_weekly_report("weekly-2026-02-20")
    loaded = pg.load_weekly_report("weekly-2026-02-19-2")
    assert loaded is not None and loaded.events_total == 2
    assert pg.load_weekly_report("weekly-2026-02-18") is None
    with pytest.raises(InvalidIdentifierError, match="invalid weekly report name"):
        pg.load_weekly_report("../weekly")
    [(text, html)] = sql(
        pg, "SELECT data::text, html FROM weekly_reports WHERE name = 'weekly-2026-02-19-3'"
    )
    assert text == dump_json({**report, "events_total": 3}).decode()  # as a file would hold it
    assert html == "<p>3</p>"


def test_workers_saving_reports_the_same_day_each_get_a_name(pg: PostgresStore) -> None:
    names: list[str] = []

    def save() -> None:
        store = PostgresStore(pg.root, pg.url)
        for _ in range(5):
            names.append(store.save_weekly_report(date(2026, 2, 19), {}, "").name)
        store.close()

    pg.init_schema()
    threads = [threading.Thread(target=save) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = ["weekly-2026-02-19"] + [f"weekly-2026-02-19-{n}" for n in range(2, 21)]
    assert sorted(names) == sorted(expected)
    assert pg.list_weekly_reports() == expected


def _evicting_history(pg: PostgresStore, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six WARN rules for an agent whose cap is 2: four tombstones, one a day."""
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "2")
    for i in range(6):
        learn(pg, severity="WARN", symptom=FAILURES[i])
        clock.advance(days=1)


def test_tombstone_archives_take_what_is_due_once(
    pg: PostgresStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _evicting_history(pg, clock, monkeypatch)
    stones = pg.load_tombstones(AGENT).tombstones
    assert len(stones) == 4
    cutoff = stones[2].tombstoned_at  # the two before it are due
    archived = pg.archive_tombstones(AGENT, cutoff)
    assert [t.rule_id for t in archived.tombstones] == [t.rule_id for t in stones[:2]]
    day = clock.now.date().isoformat()
    assert archived.location == f"{pg.schema}.tombstone_archives[{AGENT}/tombstones-{day}.json]"
    assert [t.rule_id for t in pg.load_tombstones(AGENT).tombstones] == [
        t.rule_id for t in stones[2:]
    ]
    [(text,)] = sql(pg, "SELECT data::text FROM tombstone_archives")
    document = json.loads(text)
    assert document["count"] == 2 and document["agent"] == AGENT
    assert document["older_than"] == format_ts(cutoff)

    before = _raw.everything(pg)
    nothing = pg.archive_tombstones(AGENT, cutoff)
    assert (nothing.tombstones, nothing.location) == ([], None)
    assert pg.archive_tombstones("scriptwriter", clock.now).location is None
    assert _raw.everything(pg) == before  # nothing due: nothing written, no agent row made

    again = pg.archive_tombstones(AGENT, clock.now)
    assert again.location is not None and again.location.endswith(f"tombstones-{day}-2.json]")
    assert len(again.tombstones) == 2 and pg.load_tombstones(AGENT).tombstones == []


def test_concurrent_sweeps_archive_each_tombstone_once(
    pg: PostgresStore, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _evicting_history(pg, clock, monkeypatch)
    expected = {t.rule_id for t in pg.load_tombstones(AGENT).tombstones}

    def sweep() -> None:
        store = PostgresStore(pg.root, pg.url)
        store.archive_tombstones(AGENT, clock.now)
        store.close()

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    archived = [
        t["rule_id"]
        for (text,) in sql(pg, "SELECT data::text FROM tombstone_archives")
        for t in json.loads(text)["tombstones"]
    ]
    assert sorted(archived) == sorted(expected)  # each once: in one archive, none left behind
    assert pg.load_tombstones(AGENT).tombstones == []


# -- compaction ----------------------------------------------------------------------------------
def test_compaction_folds_the_log_as_the_file_store_does(
    root: Path, souls: Path, pg: PostgresStore, clock: Clock, tmp_path: Path
) -> None:
    """The same history compacted in files and in PostgreSQL exports to the same index file;
    the failure counts and the doctor see no change."""
    files = FileStore(root)
    events = [learn(files, symptom=text, verification="") for text in FAILURES[:4]]
    for event in events[::2]:
        resolve_event(event.event_id, "checked", store=files)
    import_root(pg, root)
    failures = pg.known_failures(("assets",), 1)
    (kept_rows,) = sql(pg, "SELECT count(*) FROM event_versions")[0]
    assert kept_rows == 6  # one version per created event (issue 15), two resolved later
    assert files.compact_events().compacted
    result = pg.compact_events()
    assert (result.versions_before, result.events_after, result.compacted) == (6, 4, True)
    archived = sql(pg, "SELECT count(*), count(DISTINCT event_id) FROM event_version_archive")
    assert archived == [(4, 2)]  # every version of an event that had several
    export_store(pg, tmp_path / "out")
    assert (tmp_path / "out/data/learning_events.json").read_bytes() == (
        root / "data/learning_events.json"
    ).read_bytes()
    assert pg.known_failures(("assets",), 1) == failures
    assert check_root(store=pg).findings == []


# -- the doctor's checks of the tables -----------------------------------------------------------
@pytest.fixture
def history(pg: PostgresStore, souls: Path, clock: Clock) -> list[LearningEvent]:
    events = []
    for text in FAILURES[:4]:
        events.append(learn(pg, symptom=text, verification=""))
        clock.advance(minutes=1)
    resolve_event(events[0].event_id, "checked", store=pg)
    log_error("v042", "assets", "Timeout after 30s", store=pg)
    learning_gate("v042", "assets", store=pg)
    assert check_root(store=pg).findings == []
    return events


def test_tables_that_disagree_with_the_versions_are_rewritten(
    pg: PostgresStore, history: list[LearningEvent]
) -> None:
    a, b, c, d = (e.event_id for e in history)
    expected = {e.event_id: e.to_dict() for e in list_events(store=pg)}
    sql(pg, "DELETE FROM events WHERE event_id = %s", (a,))  # a version but no row
    sql(pg, "UPDATE events SET status = 'archived', resolved = 1 WHERE event_id = %s", (b,))
    sql(
        pg,  # the row holds an older version
        "UPDATE events SET data = (SELECT data FROM event_versions WHERE event_id = %s "
        "ORDER BY seq LIMIT 1) WHERE event_id = %s",
        (c, c),
    )
    extra = "le-20260219T130000Z-000000000000"
    sql(
        pg,  # a row whose record has no version at all
        "INSERT INTO events SELECT %s, seq, last_seq, ts, severity, component, status, video_id, "
        "agent, fingerprint, source_error_id, resolved, "
        "json_build_object('event_id', %s::text, 'timestamp', data->'timestamp', "
        "'severity', 'WARN', 'component', 'assets', 'symptom', 'kept'), source_note "
        "FROM events WHERE event_id = %s",
        (extra, extra, d),
    )
    found = findings(pg)
    table = found["events-table-inconsistent"]
    assert (table.path, table.level, table.repairable) == (f"{pg.schema}.events", "warning", True)
    assert table.message == (
        "the events table disagrees with event_versions: 1 missing (a version but no row): "
        f"{a}; 1 not in event_versions: {extra}; 1 not the latest version: {c}; 1 indexed "
        f"columns that do not match the record: {b}"
    )
    assert "failure-counts-wrong" not in found  # the counts follow the rows, wrong or not

    repaired = findings(pg, repair=True)["events-table-inconsistent"]
    assert repaired.repaired and repaired.action == (
        "4 rows rewritten from their latest version; 1 rows without a version added to "
        "event_versions first"
    )
    assert findings(pg) == {}
    now = {e.event_id: e.to_dict() for e in list_events(store=pg)}
    assert {k: v for k, v in now.items() if k != extra} == expected
    assert now[extra]["symptom"] == "kept"
    assert sql(pg, "SELECT count(*) FROM event_versions WHERE event_id = %s", (extra,)) == [(1,)]


def test_wrong_failure_counts_are_recounted(
    pg: PostgresStore, history: list[LearningEvent]
) -> None:
    right = pg.known_failures(("assets",), 1)
    sql(pg, "UPDATE fp_counts SET total = total + 5")
    sql(pg, "INSERT INTO fp_counts VALUES ('tts', 'tts:0000', 3, 3)")
    assert pg.known_failures(("assets",), 1) != right
    wrong = findings(pg)["failure-counts-wrong"]
    assert wrong.repairable and wrong.message.startswith("6 failure counts of the gate's")
    assert findings(pg, repair=True)["failure-counts-wrong"].repaired
    assert pg.known_failures(("assets",), 1) == right
    assert pg.known_failures(("tts",), 1) == []
    assert findings(pg) == {}


def test_versions_and_documents_of_the_wrong_shape_are_reported_never_touched(
    pg: PostgresStore, history: list[LearningEvent]
) -> None:
    event = history[0]
    [(seq,)] = sql(pg, "SELECT min(seq) FROM event_versions WHERE event_id = %s", (event.event_id,))
    bad = json.dumps({**event.to_dict(), "severity": "LOUD"})
    sql(pg, "UPDATE event_versions SET data = %s WHERE seq = %s", (bad, seq))
    other = json.dumps({**history[1].to_dict(), "event_id": "le-someone-else"})
    [(other_seq,)] = sql(
        pg, "SELECT min(seq) FROM event_versions WHERE event_id = %s", (history[1].event_id,)
    )
    sql(pg, "UPDATE event_versions SET data = %s WHERE seq = %s", (other, other_seq))
    snapshot = pg.list_memory_snapshots(AGENT)[0][1]
    sql(pg, "UPDATE memory_snapshots SET data = '[]' WHERE name = %s", (snapshot,))
    sql(pg, "UPDATE soul_snapshots SET text = text || 'edited'")
    _raw.put(pg, _raw.TOMBSTONE_ARCHIVE, (AGENT, "tombstones-2026-02-19.json"), '{"tombstones": 1}')
    before = _raw.everything(pg)
    report = check_root(repair=True, store=pg)
    by_code: dict[str, list[Any]] = {}
    for f in report.findings:
        by_code.setdefault(f.code, []).append(f)
    assert [(f.path, f.message.split(": ")[0]) for f in by_code["event-version-invalid"]] == [
        (
            f"{pg.schema}.event_versions[{seq}]",
            f"version {seq} of {event.event_id} is not an event",
        ),
        (
            f"{pg.schema}.event_versions[{other_seq}]",
            f"version {other_seq} of {history[1].event_id} is not an event",
        ),
    ]
    assert "severity" in by_code["event-version-invalid"][0].message
    assert by_code["event-version-invalid"][1].message.endswith(
        f"its event_id is 'le-someone-else', not '{history[1].event_id}'"
    )
    assert (
        by_code["snapshot-corrupt"][0].path == f"{pg.schema}.memory_snapshots[{AGENT}]/{snapshot}"
    )
    assert by_code["soul-snapshot-mismatch"][0].level == "warning"
    assert by_code["tombstone-archive-corrupt"][0].path == (
        f"{pg.schema}.tombstone_archives[{AGENT}]/tombstones-2026-02-19.json"
    )
    assert not any(f.repaired for f in report.findings)
    assert _raw.everything(pg) == before  # the only copy of each: never rewritten
