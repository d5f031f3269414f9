"""``store export`` / ``store import``: a whole data root moved between the file layout and
PostgreSQL, losslessly both ways."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import (
    CorruptFileError,
    StoreError,
    create_event,
    list_events,
    resolve_event,
    tombstone_rule,
)
from rayvault.learning.errors import log_error, promote_to_learning, resolve_error
from rayvault.learning.gate import acknowledge, learning_gate
from rayvault.learning.memory import init_memory
from rayvault.learning.revisit import revisit
from rayvault.learning.store import EventQuery, FileStore, Store
from rayvault.learning.store.base import ErrorQuery
from rayvault.learning.store.postgres import PostgresStore
from rayvault.learning.store.transfer import (
    EVENT,
    GATE_STATE,
    REPORT,
    REPORT_HTML,
    SNAPSHOT,
    SOUL,
    TOMBSTONE_ARCHIVE,
    VIDEO_EVENT,
    export_store,
    import_root,
)

from .conftest import Clock, PgSchemas, event_kwargs

#: The top folders the store writes (documents live elsewhere: agents/, policies.py).
STORE_TREES = ("data", "state", "artifacts")


def store_files(root: Path) -> dict[str, bytes]:
    """Every store file under ``root`` (relative path → bytes), without caches, locks, temps."""
    found = {}
    for tree in STORE_TREES:
        for path in sorted((root / tree).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and not rel.startswith("state/cache/") and ".lock" not in path.name:
                found[rel] = path.read_bytes()
    found.pop("data/error_log.journal", None)  # repair's second copy, rebuilt on import
    return found


def assert_same_content(a: Path, b: Path) -> None:
    """The same store files, with equal parsed JSON and equal bytes."""
    left, right = store_files(a), store_files(b)
    assert sorted(left) == sorted(right)
    for rel, data in left.items():
        if rel.endswith(".json"):
            assert json.loads(data) == json.loads(right[rel]), rel
        assert data == right[rel], rel


def build_history(store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data root with every kind of record: event and error versions, promotions, evictions,
    tombstones, memory snapshots, gate states with runs and acks, SOUL snapshots, and what two
    weekly revisits of one day leave: two reports and two tombstone archives."""
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "3")
    events = []
    for i, severity in enumerate(["WARN", "INFO", "FAIL", "WARN", "BLOCKER", "WARN"]):
        clock.advance(minutes=7)
        events.append(
            create_event(
                **event_kwargs(  # type: ignore[arg-type]
                    severity=severity,
                    symptom=f"Failure kind {'abcdef'[i]} on 'variant {i}' — ü",
                    video_id=f"v{i % 2}",
                    verification="" if i % 2 else "checked",
                ),
                store=store,
            )
        )
    resolve_event(events[1].event_id, "re-ran", store=store)
    tombstone_rule(
        "dzine_producer",
        str(events[2].rule_id),
        "superseded",
        evidence_ids=[events[4].event_id],
        store=store,
    )
    errors = [
        log_error(
            f"v{i}", "discover-products", f"Timeout after {30 + i}.2s on B0ABC{i}", store=store
        )
        for i in range(3)
    ]
    resolve_error(errors[0].id, "slow proxy", "switched proxy", store=store)
    clock.advance(minutes=1)  # two resolutions in one instant are a tie either store may break
    promote_to_learning(
        errors[1].id, root_cause="no retry", fix="retry", agent="researcher", store=store
    )
    init_memory(["scriptwriter"], store=store)
    learning_gate("v0", "assets", store=store)
    soul = store.root / "agents/dzine_producer/SOUL.md"
    soul.write_text(soul.read_text() + "\n- Never use top-down references.\n")
    clock.advance(hours=1)
    learning_gate("v0", "assets", store=store)
    acknowledge("v1", "research", note="reviewed", store=store)
    learning_gate("v1", "research", store=store)
    # The weekly revisit, past the tombstones' grace period: a report and an archive; a second
    # one the same day (a rule tombstoned meanwhile, no grace period): "-2" of each.
    clock.advance(days=31)
    assert revisit(store=store).report_name == "weekly-2026-03-22"
    rule = store.load_memory("dzine_producer").rules[0]
    tombstone_rule("dzine_producer", rule.rule_id, "obsolete", store=store)
    monkeypatch.setenv("RAYVAULT_LEARNING_TOMBSTONE_GRACE_DAYS", "0")
    clock.advance(seconds=1)
    second = revisit(store=store)
    assert second.report_name == "weekly-2026-03-22-2"
    archives = {s.agent: s.tombstone_archive for s in second.tombstone_sweep}
    assert "tombstones-2026-03-22-2.json" in str(archives["dzine_producer"])


@pytest.mark.postgres
def test_file_to_postgres_to_file_is_lossless(
    *,
    root: Path,
    souls: Path,
    clock: Clock,
    tmp_path: Path,
    pg_schemas: PgSchemas,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Import a file root into PostgreSQL, export it to a new folder: the same files, byte for
    byte; and the PostgreSQL store answers every query as the file store did."""
    files = FileStore(root)
    build_history(files, clock, monkeypatch)
    pg = PostgresStore(tmp_path / "project", pg_schemas.new_url())
    summary = import_root(pg, root)
    counts = summary.counts
    # 7 events (one promoted from an error), one version each (issue 15), and one resolved
    assert counts[EVENT] == 7 + 1 and counts[VIDEO_EVENT] == 7
    # SOUL snapshots: two versions of dzine_producer's, one of researcher's
    assert counts[SNAPSHOT] >= 5 and counts[GATE_STATE] == 2 and counts[SOUL] == 3
    assert counts[REPORT] == counts[REPORT_HTML] == 2
    assert counts[TOMBSTONE_ARCHIVE] == 2  # both sweeps of dzine_producer
    assert summary.skipped == []

    assert [e.to_dict() for e in list_events(store=pg)] == [
        e.to_dict() for e in list_events(store=files)
    ]
    assert pg.query_errors(ErrorQuery()) == files.query_errors(ErrorQuery())
    for stage in (("research", "discover-products"), ("assets",)):
        assert pg.known_failures(stage, 1) == files.known_failures(stage, 1)
    assert pg.error_patterns(1) == files.error_patterns(1)
    assert pg.latest_resolutions() == files.latest_resolutions()
    for agent in files.list_agents():
        assert pg.load_memory(agent) == files.load_memory(agent)
        assert pg.load_tombstones(agent) == files.load_tombstones(agent)
        assert pg.list_memory_snapshots(agent) == files.list_memory_snapshots(agent)
    assert pg.load_gate_state("v0") == files.load_gate_state("v0")
    assert pg.list_agents() == files.list_agents()
    assert pg.list_weekly_reports() == files.list_weekly_reports()
    for name in files.list_weekly_reports():
        assert pg.load_weekly_report(name) == files.load_weekly_report(name)
    # The registry's and the revisit's queries answer alike (PostgreSQL's dialect of _sql).
    since = clock.now - timedelta(days=40)
    for query in (EventQuery(), EventQuery(components=("assets",)), EventQuery(unresolved=True)):
        assert pg.event_facets(query) == files.event_facets(query)
        assert pg.event_patterns(query) == files.event_patterns(query)
        assert pg.event_patterns(query, min_count=2, active_since=since) == files.event_patterns(
            query, min_count=2, active_since=since
        )
        assert pg.event_timeline(query) == files.event_timeline(query)
        assert pg.resolution_times(query) == files.resolution_times(query)
        assert pg.count_events(query) == files.count_events(query)
    assert files.resolution_times(EventQuery()) and files.event_patterns(EventQuery())
    ids = [e.event_id for e in files.query_events(EventQuery())] + ["le-missing"]
    assert pg.event_statuses(ids) == files.event_statuses(ids)
    for entry in files.query_errors(ErrorQuery()):
        fp = str(entry.fingerprint)
        assert pg.latest_resolution(fp) == files.latest_resolution(fp)

    out = tmp_path / "exported"
    export_store(pg, out)
    assert_same_content(root, out)
    pg.close()
    files.close()


@pytest.mark.postgres
def test_postgres_to_file_to_postgres_is_lossless(
    *,
    root: Path,
    souls: Path,
    clock: Clock,
    tmp_path: Path,
    pg_schemas: PgSchemas,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """History written straight into PostgreSQL survives export → import → export unchanged,
    and each export reads in the file store as the PostgreSQL store read."""
    pg = PostgresStore(root, pg_schemas.new_url())
    build_history(pg, clock, monkeypatch)
    first = tmp_path / "first"
    export_store(pg, first)
    exported = FileStore(first)
    assert [e.to_dict() for e in list_events(store=exported)] == [
        e.to_dict() for e in list_events(store=pg)
    ]
    assert exported.load_memory("dzine_producer") == pg.load_memory("dzine_producer")
    again = PostgresStore(root, pg_schemas.new_url())
    import_root(again, first)
    second = tmp_path / "second"
    export_store(again, second)
    assert_same_content(first, second)
    assert list(again.dump_items()) == list(pg.dump_items())
    for store in (pg, again, exported):
        store.close()


def test_file_store_exports_and_imports_between_folders(
    root: Path, souls: Path, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a server the same commands copy a data root between folders, exactly."""
    files = FileStore(root)
    build_history(files, clock, monkeypatch)
    out = tmp_path / "copy"
    export_store(files, out)
    assert_same_content(root, out)
    target = FileStore(tmp_path / "imported")
    import_root(target, out)
    assert_same_content(out, target.root)


def test_destination_with_store_data_is_refused(root: Path, tmp_path: Path) -> None:
    create_event(**event_kwargs())  # type: ignore[arg-type]
    other = tmp_path / "other"
    create_event(**event_kwargs(), store=FileStore(other))  # type: ignore[arg-type]
    before = store_files(other)
    with pytest.raises(StoreError, match="already holds learning data: nothing was written"):
        export_store(FileStore(root), other)
    with pytest.raises(StoreError, match="already holds learning data"):
        import_root(FileStore(other), root)
    assert store_files(other) == before
    with pytest.raises(StoreError, match="the store's own data root"):
        export_store(FileStore(root), root)


@pytest.mark.postgres
def test_import_into_a_schema_with_data_is_refused(
    root: Path, tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    create_event(**event_kwargs())  # type: ignore[arg-type]
    pg = PostgresStore(tmp_path, pg_schemas.new_url())
    kept = create_event(**event_kwargs(symptom="already there"), store=pg)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="already holds learning data"):
        import_root(pg, root)
    assert [e.event_id for e in list_events(store=pg)] == [kept.event_id]
    pg.close()


@pytest.mark.postgres
def test_corrupt_source_is_refused_and_nothing_loaded(
    root: Path, tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    """A bad record anywhere stops the import before anything is committed (one transaction)."""
    create_event(**event_kwargs())  # type: ignore[arg-type]
    memory = root / "state/agents/dzine_producer/memory_active.json"
    memory.write_text('{"rules": "nope"}')
    pg = PostgresStore(tmp_path, pg_schemas.new_url())
    with pytest.raises(CorruptFileError, match="memory_active.json is corrupt"):
        import_root(pg, root)
    assert not pg.has_data()
    pg.close()


def test_legacy_files_keep_their_content(root: Path, tmp_path: Path) -> None:
    """A pretty-printed index written by the old system moves with the same JSON content."""
    legacy = [
        {
            "event_id": "evt-20260219-120000-ab12",
            "run_id": "v038-run",
            "timestamp": "2026-02-19T12:00:00.123456+00:00",
            "severity": "FAIL",
            "component": "research",
            "symptom": "ASIN B0F8HM4PYL was accessories",
            "status": "applied",
            "video_id": None,
            "legacy_field": {"kept": True},
        }
    ]
    (root / "data").mkdir()
    (root / "data/learning_events.json").write_text(json.dumps(legacy, indent=2))
    out = tmp_path / "out"
    export_store(FileStore(root), out)
    assert json.loads((out / "data/learning_events.json").read_text()) == legacy


def test_files_no_store_knows_are_reported(root: Path, tmp_path: Path) -> None:
    """Files under data/ or state/ that no kind covers are listed as skipped: what compaction
    archived, files that only look like reports or archives."""
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    folder = root / "data/learning_reports"
    folder.mkdir(parents=True)
    for name in ("weekly-2026-02-19.json", "weekly-2026-13-45.json", "notes.txt"):
        (folder / name).write_text("{}")
    archive = root / "state/agents/dzine_producer/tombstone_archive"
    archive.mkdir()
    (archive / "tombstones-2026-02-19.json").write_text("{}")
    (archive / "tombstones-old.json").write_text("{}")
    resolve_event(event.event_id, "checked")  # a second version
    compacted = FileStore(root).compact_events()  # the event's two versions: one archive
    summary = export_store(FileStore(root), tmp_path / "out")
    assert summary.skipped == [
        str(compacted.archive),
        "data/learning_reports/notes.txt",
        "data/learning_reports/weekly-2026-13-45.json",
        "state/agents/dzine_producer/tombstone_archive/tombstones-old.json",
    ]
    assert summary.counts[REPORT] == 1 and summary.counts[TOMBSTONE_ARCHIVE] == 1


@pytest.mark.postgres
def test_reports_and_archives_left_half_written_move_as_they_are(
    root: Path, tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    """A report without its page, a page without its report (interrupted writers): each moves
    to PostgreSQL and back as found, and keeps its name taken."""
    create_event(**event_kwargs())  # type: ignore[arg-type]
    folder = root / "data/learning_reports"
    folder.mkdir(parents=True)
    base = {"generated_at": "2026-02-19T12:00:00.000000Z", "period_days": 7, "scope": "all"}
    (folder / "weekly-2026-02-19.json").write_text(json.dumps(base))
    (folder / "weekly-2026-02-19-2.html").write_text("<p>left over</p>")
    (folder / "weekly-2026-02-19-10.json").write_text(json.dumps({**base, "scope": "x"}))
    pg = PostgresStore(tmp_path / "project", pg_schemas.new_url())
    import_root(pg, root)
    assert pg.list_weekly_reports() == ["weekly-2026-02-19", "weekly-2026-02-19-10"]
    assert pg.load_weekly_report("weekly-2026-02-19-2") is None  # a page only
    saved = pg.save_weekly_report(date(2026, 2, 19), base, "<p>new</p>")
    assert saved.name == "weekly-2026-02-19-11"
    export_store(pg, tmp_path / "out")
    out = tmp_path / "out/data/learning_reports"
    assert (out / "weekly-2026-02-19-2.html").read_text() == "<p>left over</p>"
    assert not (out / "weekly-2026-02-19-2.json").exists()
    assert not (out / "weekly-2026-02-19.html").exists()
    assert (out / "weekly-2026-02-19.json").read_bytes() == (
        folder / "weekly-2026-02-19.json"
    ).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [
        "weekly-2026-02-19-10.json",
        "weekly-2026-02-19-11.html",
        "weekly-2026-02-19-11.json",
        "weekly-2026-02-19-2.html",
        "weekly-2026-02-19.json",
    ]
    pg.close()


def test_store_export_and_import_commands(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_event(**event_kwargs())  # type: ignore[arg-type]
    (root / "data/learning_reports").mkdir()
    (root / "data/learning_reports/weekly-2026-02-19.json").write_text("{}")
    (root / "data/learning_reports/notes.txt").write_text("mine")
    out = tmp_path / "out"
    code = main(["store", "export", "--to", str(out), "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(stdout)
    assert data["counts"]["event"] == 1 and data["counts"]["video_event"] == 1
    assert data["counts"]["weekly_report"] == 1
    assert data["skipped"] == ["data/learning_reports/notes.txt"]
    code = main(["store", "export", "--to", str(out)])
    _, err = capsys.readouterr()
    assert code == 1 and err.startswith(f"Error: the file layout at {out} already holds")
    target = tmp_path / "target"
    code = main(["--root", str(target), "store", "import", "--from", str(out)])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "event versions" in stdout and "weekly reports" in stdout and "warning" not in err
    assert len(list_events(store=FileStore(target))) == 1
    code = main(["store", "export", "--to", str(tmp_path / "again")])
    _, err = capsys.readouterr()
    assert (
        "warning: not transferred (not a record this version moves): data/learning_reports/" in err
    )
