"""The doctor: a damaged data root is found file by file, what is safe to repair is repaired
(with what it replaced archived), and what is not (a corrupt memory) is reported and untouched.

Runs on both stores; the file store's own checks (torn tails, per-video files, temp and lock
files, the derived index) are ``files_only``; the PostgreSQL store's own checks are in
tests/test_pg_maintenance.py."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import create_event, list_events
from rayvault.learning.doctor import check_root
from rayvault.learning.errors import log_error, resolve_error
from rayvault.learning.gate import learning_gate
from rayvault.learning.memory import load_active_memory
from rayvault.learning.store import FileStore, Store, get_store
from rayvault.learning.store._fs import locked, remove_lock_file
from rayvault.learning.store.transfer import GATE_STATE, MEMORY, REPORT, TOMBSTONES

from . import _raw
from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores
EVENTS = "data/learning_events.json"
FILE_LAYOUT = pytest.mark.files_only


@pytest.fixture
def healthy(root: Path, souls: Path, clock: Clock) -> dict[str, str]:
    """A data root in normal use: events with agents and videos, the error log, a gate run."""
    first = create_event(**event_kwargs())  # type: ignore[arg-type]
    clock.advance(minutes=5)
    second = create_event(
        **event_kwargs(
            symptom="Audio clipping", component="tts", agent="publisher", verification=""
        )
    )  # type: ignore[arg-type]
    entry = log_error("v042", "research", "Timeout after 30s")
    resolve_error(entry.id, "slow proxy", "retry")
    learning_gate("v042", "assets")
    return {"first": first.event_id, "second": second.event_id, "error": entry.id}


def codes(report_findings: list[object]) -> list[tuple[str, str]]:
    return [(f.code, f.path) for f in report_findings]  # type: ignore[attr-defined]


def video_file(root: Path, event_id: str, video: str = "v042") -> Path:
    return root / f"artifacts/videos/{video}/learning/events/{event_id}.json"


def finding_path(store: Store, kind: str, *key: str) -> str:
    """How a finding names a document: a path relative to the data root, or a table row."""
    where = _raw.where(store, kind, *key)
    return where if _raw.is_pg(store) else Path(where).relative_to(store.root).as_posix()


def test_a_healthy_root_is_clean(root: Path, healthy: dict[str, str]) -> None:
    """Normal use leaves nothing to report: lock files of live files are part of the layout."""
    if not _raw.is_pg(get_store()):
        assert list(root.rglob("*.lock"))  # there are lock files, and they are fine
    report = check_root()
    assert report.findings == []
    assert report.clean and report.remaining == 0


@FILE_LAYOUT("a torn tail of the event index file")
def test_torn_index_tail_is_cut_and_kept(root: Path, healthy: dict[str, str]) -> None:
    path = root / EVENTS
    whole = path.read_bytes()
    torn = b',\n{"event_id": "le-half", "symptom": "writer kil'
    path.write_bytes(whole.rstrip()[:-1].rstrip() + torn)
    report = check_root()
    [finding] = report.findings
    assert (finding.code, finding.path, finding.level) == ("log-torn-tail", EVENTS, "warning")
    assert finding.repairable and not finding.repaired
    assert f"{len(torn)} bytes" in finding.message

    report = check_root(repair=True)
    assert [(f.code, f.repaired) for f in report.findings] == [("log-torn-tail", True)]
    assert report.clean
    assert json.loads(path.read_text())  # a valid array again
    assert path.read_bytes() == whole.rstrip()[:-1].rstrip() + b"\n]\n"
    [kept] = (root / "state/doctor-archive").rglob("*.torn-tail")
    assert kept.read_bytes() == torn
    assert str(finding.path) in kept.as_posix()
    assert {e.event_id for e in list_events()} == {healthy["first"], healthy["second"]}
    assert check_root().findings == []


@FILE_LAYOUT("per-video event files")
def test_missing_and_stale_per_video_files_are_rewritten(
    root: Path, healthy: dict[str, str]
) -> None:
    missing = video_file(root, healthy["first"])
    expected = missing.read_bytes()
    missing.unlink()
    stale = video_file(root, healthy["second"])
    old = json.loads(stale.read_text())
    edited = {**old, "status": "archived"}
    stale.write_text(json.dumps(edited))
    report = check_root()
    assert codes(report.findings) == [
        ("video-file-missing", missing.relative_to(root).as_posix()),
        ("video-file-stale", stale.relative_to(root).as_posix()),
    ]
    assert "(status)" in report.findings[1].message

    report = check_root(repair=True)
    assert all(f.repaired for f in report.findings) and report.clean
    assert missing.read_bytes() == expected
    assert json.loads(stale.read_text()) == old
    [kept] = (root / "state/doctor-archive").rglob(stale.name)
    assert json.loads(kept.read_text()) == edited  # what was replaced is kept
    assert "re-written from the index; the old file is in state/doctor-archive/" in str(
        report.findings[1].action
    )


@FILE_LAYOUT("per-video event files")
def test_unreadable_and_orphan_per_video_files(root: Path, healthy: dict[str, str]) -> None:
    broken = video_file(root, healthy["first"])
    broken.write_text("{")
    orphan = video_file(root, "le-20260101T000000Z-000000000000", "v9")
    orphan.parent.mkdir(parents=True)
    orphan.write_text(json.dumps({"event_id": "le-20260101T000000Z-000000000000"}))
    report = check_root(repair=True)
    by_code = {f.code: f for f in report.findings}
    assert by_code["video-file-corrupt"].repaired
    assert json.loads(broken.read_text())["event_id"] == healthy["first"]
    assert not by_code["video-file-orphan"].repairable  # not in the index: only reported
    assert orphan.exists()
    assert report.remaining == 1


@FILE_LAYOUT("a memory file that does not parse (a table holds only JSON)")
def test_corrupt_memory_is_restored_from_its_snapshot(root: Path, healthy: dict[str, str]) -> None:
    memory = root / "state/agents/dzine_producer/memory_active.json"
    second = create_event(**event_kwargs(symptom="Second failure"))  # type: ignore[arg-type]
    memory.write_text('{"rules": [')
    [finding] = check_root().findings
    assert finding.code == "memory-corrupt" and finding.level == "error"
    assert finding.path == "state/agents/dzine_producer/memory_active.json"
    assert finding.repairable and not finding.repaired
    assert "; the newest valid snapshot is state/agents/dzine_producer/memory_archive/" in (
        finding.message
    )
    assert memory.read_text() == '{"rules": ['
    report = check_root(repair=True)
    [finding] = report.findings
    assert finding.repaired and report.clean
    assert "1 later events' rules applied again" in (finding.action or "")
    rules = load_active_memory("dzine_producer").rules
    assert {r.source_event_id for r in rules} == {healthy["first"], second.event_id}
    [kept] = (root / "state/doctor-archive").rglob("memory_active.json")
    assert kept.read_text() == '{"rules": ['


def test_memory_of_the_wrong_shape_is_reported_never_touched(
    root: Path, healthy: dict[str, str]
) -> None:
    create_event(**event_kwargs(symptom="Second failure"))  # type: ignore[arg-type]
    store = get_store()
    _raw.put(store, MEMORY, ("dzine_producer",), '{"rules": [{"rule_id": 1}]}')
    report = check_root()
    [finding] = report.findings
    assert finding.code == "memory-corrupt" and finding.level == "error"
    assert finding.path == finding_path(store, MEMORY, "dzine_producer")
    assert finding.path == store.memory_location("dzine_producer")
    # The file store restores it from the snapshot with --repair (see above).
    assert finding.repairable == isinstance(store, FileStore) and not finding.repaired
    [(_, snapshot)] = store.list_memory_snapshots("dzine_producer")
    assert " snapshot is " in finding.message
    assert finding.message.endswith(f"/{snapshot}")
    assert _raw.get(store, MEMORY, "dzine_producer") == '{"rules": [{"rule_id": 1}]}'
    assert not report.clean


@pytest.mark.parametrize(
    ("kind", "key", "content", "code"),
    [
        (TOMBSTONES, ("publisher",), "[]", "tombstones-corrupt"),
        (MEMORY, ("publisher",), '{"rules": [{"rule_id": 1}]}', "memory-corrupt"),
        (GATE_STATE, ("v042",), '{"runs": {}}', "gate-state-corrupt"),
        (REPORT, ("weekly-2026-02-16",), "[]", "report-corrupt"),
    ],
)
def test_documents_that_do_not_fit_are_reported_never_touched(
    *, healthy: dict[str, str], kind: str, key: tuple[str, ...], content: str, code: str
) -> None:
    store = get_store()
    _raw.put(store, kind, key, content)
    report = check_root(repair=True)
    assert (code, finding_path(store, kind, *key)) in codes(report.findings)
    assert not report.clean
    assert _raw.get(store, kind, *key) == content


@FILE_LAYOUT("files that do not parse (a table holds only JSON)")
@pytest.mark.parametrize(
    ("relative", "content", "code"),
    [
        ("state/agents/publisher/memory_tombstones.json", "[]", "tombstones-corrupt"),
        ("state/agents/publisher/memory_active.json", '{"rules": [{"rule_id": 1}]}', "memory-corrupt"),
        ("state/learning_gate/v042.json", '{"runs": {}}', "gate-state-corrupt"),
        ("data/learning_reports/weekly-2026-02-16.json", "{", "report-corrupt"),
    ],
)  # fmt: skip
def test_state_files_that_do_not_parse_or_fit_are_reported(
    root: Path, healthy: dict[str, str], relative: str, content: str, code: str
) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    report = check_root(repair=True)
    assert (code, relative) in codes(report.findings)
    assert path.read_text() == content


@FILE_LAYOUT("elements of the event index file")
def test_invalid_index_elements_are_reported(root: Path, healthy: dict[str, str]) -> None:
    path = root / EVENTS
    text = path.read_text().rstrip()[:-1].rstrip()
    bad = '{"event_id": "le-bad", "severity": "CRITICAL", "video_id": "v042"}'
    path.write_text(text + ",\n" + bad + "\n]\n")
    [finding] = check_root(repair=True).findings  # no per-video file can be written from it
    assert finding.code == "log-element-invalid"
    assert finding.message.startswith("element 2 is not an event: ")  # one version per event
    assert not (root / "artifacts/videos/v042/learning/events/le-bad.json").exists()


@FILE_LAYOUT("temp files")
def test_stray_temp_files(root: Path, healthy: dict[str, str]) -> None:
    """An old temp file is moved to the archive (it may hold the only copy of a write); a fresh
    one may be a write in progress: only mentioned."""
    old = root / "state/agents/dzine_producer/memory_active.json.tmp-0123456789ab"
    old.write_text('{"rules": []}')
    hours_ago = time.time() - 7200
    os.utime(old, (hours_ago, hours_ago))
    fresh = root / "data/error_log.json.tmp-ba9876543210"
    fresh.write_text("[")
    report = check_root(repair=True)
    by_code = {f.code: f for f in report.findings}
    assert by_code["temp-file-stale"].repaired
    assert by_code["temp-file-recent"].level == "info"
    assert report.clean  # info findings are not problems
    assert not old.exists() and fresh.exists()
    [moved] = (root / "state/doctor-archive").rglob(old.name)
    assert moved.read_text() == '{"rules": []}'
    assert moved.relative_to(root).parts[3:] == old.relative_to(root).parts


@FILE_LAYOUT("lock files")
def test_lock_files_left_behind(root: Path, healthy: dict[str, str]) -> None:
    """A lock file nobody holds that guards nothing is removed; a held one is only mentioned."""
    named = root / "state/locks/promote-e-1.lock"
    named.parent.mkdir(parents=True, exist_ok=True)
    named.touch()
    foreign = root / "data/old_state.json.lock"
    foreign.write_text("pid 4242")  # not one of ours: kept in the archive
    report = check_root()
    assert [(f.code, f.path) for f in report.findings if f.code == "lock-stale"] == [
        ("lock-stale", "data/old_state.json.lock"),
        ("lock-stale", "state/locks/promote-e-1.lock"),
    ]
    with locked(root / "state/locks/held"):
        report = check_root(repair=True)
        held = [f for f in report.findings if f.code == "lock-held"]
        assert [f.path for f in held] == ["state/locks/held.lock"]
        assert held[0].level == "info"
        assert (root / "state/locks/held.lock").exists()
    assert report.clean
    assert not named.exists() and not foreign.exists()
    [kept] = (root / "state/doctor-archive").rglob(foreign.name)
    assert kept.read_text() == "pid 4242"
    assert (root / f"{EVENTS}.lock").exists()  # the lock of a live file stays


@FILE_LAYOUT("lock files")
def test_removed_lock_files_keep_writers_exclusive(root: Path) -> None:
    """Lock files removed on release (named locks) or by the doctor never let two holders in."""
    target = root / "state/locks/shared"
    inside = 0
    most = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, most
        for _ in range(30):
            with locked(target, remove=True):
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)
                with guard:
                    inside -= 1
            remove_lock_file(target.with_name("shared.lock"))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == 1
    assert not target.with_name("shared.lock").exists()


@FILE_LAYOUT("lock files")
def test_remove_lock_file_refuses_a_held_lock(root: Path) -> None:
    with locked(root / "data/x.json"):
        assert remove_lock_file(root / "data/x.json.lock") is False
        assert (root / "data/x.json.lock").exists()


@FILE_LAYOUT("the derived SQLite index")
def test_inconsistent_derived_index_is_rebuilt(root: Path, healthy: dict[str, str]) -> None:
    list_events()  # bring the index up to date
    db = sqlite3.connect(root / "state/cache/index.sqlite3")
    db.execute("DELETE FROM events WHERE event_id = ?", (healthy["first"],))
    db.execute("UPDATE fp_counts SET total = total + 5")
    db.commit()
    db.close()
    report = check_root()
    [finding] = report.findings
    assert finding.code == "index-inconsistent"
    assert "1 events missing" in finding.message
    assert "occurrence counts" in finding.message
    report = check_root(repair=True)
    assert report.findings[0].repaired
    assert {e.event_id for e in FileStore(root).query_events(__import__(
        "rayvault.learning.store", fromlist=["EventQuery"]).EventQuery())} == {
        healthy["first"], healthy["second"]}  # fmt: skip
    assert check_root().findings == []


def test_rules_without_their_event_and_memory_over_the_cap(
    root: Path, healthy: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reported as warnings, never changed: rules are the agent's working memory."""
    store = get_store()
    data = json.loads(str(_raw.get(store, MEMORY, "dzine_producer")))
    data["rules"][0]["source_event_id"] = "le-20200101T000000Z-gone00000000"
    _raw.put(store, MEMORY, ("dzine_producer",), json.dumps(data))
    create_event(**event_kwargs(symptom="Another hallucination kind"))  # type: ignore[arg-type]
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "1")
    report = check_root(repair=True)
    found = {f.code: f for f in report.findings}
    assert found["rule-source-missing"].path == finding_path(store, MEMORY, "dzine_producer")
    if not _raw.is_pg(store):
        assert found["rule-source-missing"].path == (
            "state/agents/dzine_producer/memory_active.json"
        )
    assert "le-20200101T000000Z-gone00000000, which is not in the event index" in (
        found["rule-source-missing"].message
    )
    assert "2 active rules, over LEARNING_MAX_ACTIVE_RULES_PER_AGENT=1" in (
        found["memory-over-cap"].message
    )
    assert "FAIL/BLOCKER rules, which are never evicted" in found["memory-over-cap"].message
    assert len(load_active_memory("dzine_producer").rules) == 2


def test_progress_is_reported(root: Path, healthy: dict[str, str]) -> None:
    calls: list[tuple[str, int, int]] = []
    check_root(progress=lambda what, done, total: calls.append((what, done, total)))
    assert calls and all(0 <= done <= total for _, done, total in calls)
    finished = {what: total for what, done, total in calls if done == total}
    assert {what for what, _, _ in calls} == set(finished)  # every part runs to its end
    if _raw.is_pg(get_store()):
        assert finished["event versions"] == 4 and finished["events"] == 2
    else:
        assert calls[-1] == ("per-video files", 2, 2)


def test_cli_exit_codes_and_messages_on_any_store(
    root: Path, healthy: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    store = get_store()
    assert main(["doctor"]) == 0
    assert capsys.readouterr().out == f"No problems found in the {store.describe()}.\n"
    _raw.put(store, TOMBSTONES, ("dzine_producer",), "[]")
    assert main(["doctor", "--repair"]) == 1
    out = capsys.readouterr().out
    path = finding_path(store, TOMBSTONES, "dzine_producer")
    assert f"ERROR    {path}: the tombstone list " in out
    assert out.endswith(f"1 problem left in the {store.describe()}.\n")
    assert main(["doctor", "--json"]) == 1
    [finding] = json.loads(capsys.readouterr().out)["findings"]
    assert (finding["code"], finding["path"], finding["repairable"]) == (
        "tombstones-corrupt",
        path,
        False,
    )
    _raw.put(store, TOMBSTONES, ("dzine_producer",), '{"tombstones": []}')
    assert main(["doctor"]) == 0


@FILE_LAYOUT("per-video event files")
def test_cli_exit_codes_messages_and_json(
    root: Path, healthy: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out == f"No problems found in the file store at {root}.\n"

    missing = video_file(root, healthy["first"])
    missing.unlink()
    memory = root / "state/agents/publisher/memory_active.json"
    good = memory.read_bytes()
    memory.write_text("{")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    rel = missing.relative_to(root).as_posix()
    assert f"WARNING  {rel}: is missing: event {healthy['first']} has video id v042" in out
    assert (
        "ERROR    state/agents/publisher/memory_active.json: the agent's memory is corrupt" in out
    )
    assert out.endswith(
        f"2 problems left in the file store at {root} (1 can be repaired: run "
        "`rayvault-learn doctor --repair`).\n"
    )

    assert main(["doctor", "--repair", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert (data["repaired"], data["remaining"], data["repairable"]) == (1, 1, 0)
    assert [(f["code"], f["repaired"]) for f in data["findings"]] == [
        ("video-file-missing", True),
        ("memory-corrupt", False),
    ]
    assert data["findings"][0]["action"] == "re-written from the index"

    memory.write_bytes(good)
    assert main(["doctor"]) == 0
    capsys.readouterr()
    missing.unlink()
    assert main(["doctor", "--repair"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"REPAIRED {rel}: is missing")
    assert out.endswith(f"Repaired 1 problem; the file store at {root} is healthy.\n")


def test_doctor_without_repair_changes_nothing_on_any_store(
    root: Path, healthy: dict[str, str]
) -> None:
    """Something wrong to find and something to repair, on either store: only reported."""
    store = get_store()
    _raw.put(store, TOMBSTONES, ("dzine_producer",), "[]")
    if _raw.is_pg(store):
        with store.connect() as conn:  # type: ignore[attr-defined]
            conn.execute("UPDATE fp_counts SET total = total + 5")
    else:
        video_file(root, healthy["first"]).unlink()
    before = _raw.everything(store)
    report = check_root()
    assert report.remaining == 2 and report.repairable == 1
    assert _raw.everything(store) == before


@FILE_LAYOUT("lock files and the derived index")
def test_doctor_without_repair_changes_no_data(root: Path, healthy: dict[str, str]) -> None:
    """Without --repair only the derived index (a cache every read updates) may change."""
    video_file(root, healthy["first"]).unlink()
    (root / "state/locks").mkdir(exist_ok=True)
    (root / "state/locks/x.lock").touch()
    before = {
        p: p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "state/cache" not in p.as_posix()
    }
    check_root()
    after = {
        p: p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and "state/cache" not in p.as_posix()
    }
    assert after == before
