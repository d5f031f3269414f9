"""The learning gate: its four checks, baselines, acknowledgements, and the command line.

Runs on both stores (the gate state is read back through the store); tests about the bytes of
the file layout are marked ``files_only``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.cli import main
from rayvault.cli.app import run as typer_run
from rayvault.learning import (
    CorruptFileError,
    InvalidIdentifierError,
    create_event,
    list_events,
    resolve_event,
)
from rayvault.learning.errors import log_error, promote_to_learning, resolve_error
from rayvault.learning.gate import acknowledge, learning_gate
from rayvault.learning.store import EventQuery, FileStore, get_store, open_store
from rayvault.learning.store.base import ErrorQuery

from .conftest import Clock, PgSchemas, event_kwargs

pytestmark = pytest.mark.both_stores
REPO = Path(__file__).resolve().parents[1]


def gate_state(video_id: str) -> dict[str, object]:
    """A video's gate state as stored (``state/learning_gate/<video_id>.json`` in the file
    store)."""
    state = get_store().load_gate_state(video_id)
    assert state is not None
    return state.to_dict()


def check(result, name):  # type: ignore[no-untyped-def]
    return next(c for c in result.checks if c.name == name)


def fail_event(**more: object):  # type: ignore[no-untyped-def]
    return create_event(**event_kwargs(verification="", **more))  # type: ignore[arg-type]


def test_first_run_records_baselines_and_passes(root: Path, souls: Path, clock: Clock) -> None:
    result = learning_gate("v042", "assets")
    assert result.blocked is False
    assert result.reason == "all 4 checks passed"
    assert [c.name for c in result.checks] == [
        "check_diff_policies",
        "check_diff_soul",
        "check_regressions",
        "check_known_failures",
    ]
    assert all(c.passed for c in result.checks)
    assert check(result, "check_diff_policies").reason == "baseline recorded for this video"
    assert check(result, "check_diff_soul").reason == "baseline recorded for dzine_producer's SOUL"
    assert result.agent == "dzine_producer"
    state = gate_state("v042")
    assert state["video_id"] == "v042"
    assert state["policies"]["values"]["LEARNING_MAX_ACTIVE_RULES_PER_AGENT"] == 50
    assert state["policies"]["sha256"] is None  # no policies.py at the root
    soul = state["souls"]["dzine_producer"]
    assert soul["path"] == str(souls / "dzine_producer/SOUL.md")
    assert len(soul["sha256"]) == 64
    assert state["runs"] == [
        {
            "at": "2026-02-19T12:00:00.000000Z",
            "stage": "assets",
            "blocked": False,
            "failed": [],
            "warned": [],
        }
    ]


def test_policy_change_blocks_once_naming_the_constant(root: Path, clock: Clock) -> None:
    learning_gate("v042", "research")
    (root / "policies.py").write_text("LEARNING_MAX_ACTIVE_RULES_PER_AGENT = 20\n")
    blocked = learning_gate("v042", "research")
    assert blocked.blocked is True
    diff = check(blocked, "check_diff_policies")
    assert diff.passed is False
    assert diff.reason == "policies changed: LEARNING_MAX_ACTIVE_RULES_PER_AGENT: 50 → 20"
    assert blocked.reason == f"check_diff_policies: {diff.reason}"
    again = learning_gate("v042", "research")  # re-running acknowledges, as the old gate did
    assert again.blocked is False
    assert check(again, "check_diff_policies").reason == "policies unchanged"


def test_environment_override_is_a_policy_change(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    learning_gate("v1", "research")
    monkeypatch.setenv("RAYVAULT_LEARNING_KNOWN_FAILURE_THRESHOLD", "5")
    result = learning_gate("v1", "research")
    assert check(result, "check_diff_policies").reason == (
        "policies changed: LEARNING_KNOWN_FAILURE_THRESHOLD: 3 → 5"
    )


def test_policies_file_edit_without_value_change_still_blocks(root: Path) -> None:
    (root / "policies.py").write_text("LEARNING_GATE_ENABLED = True\n")
    learning_gate("v1", "research")
    (root / "policies.py").write_text("# reviewed\nLEARNING_GATE_ENABLED = True\n")
    result = learning_gate("v1", "research")
    assert check(result, "check_diff_policies").reason == (
        "policies.py changed (no learning constant changed value)"
    )


def test_soul_change_blocks_with_a_diff_summary(root: Path, souls: Path) -> None:
    learning_gate("v042", "assets")
    soul = souls / "dzine_producer/SOUL.md"
    text = soul.read_text()
    soul.write_text(
        text.replace("- Fale com Ray em Portugues.\n", "") + "\n- Never use top-down refs.\n"
    )
    result = learning_gate("v042", "assets")
    diff = check(result, "check_diff_soul")
    assert diff.passed is False
    assert diff.reason.startswith("dzine_producer's SOUL changed (+2 −1 lines)")
    assert "+ - Never use top-down refs." in diff.reason
    assert "- - Fale com Ray em Portugues." in diff.reason
    assert learning_gate("v042", "assets").blocked is False
    other_stage = learning_gate("v042", "research")  # researcher's SOUL: its own baseline
    assert check(other_stage, "check_diff_soul").reason == "baseline recorded for researcher's SOUL"


def test_soul_in_team_layout_and_missing_or_removed_soul(root: Path, souls: Path) -> None:
    team = root / "agents/team"
    team.mkdir(parents=True)
    (team / "SOUL_publisher.md").write_text("# Publisher\n")
    result = learning_gate("v1", "tts")
    assert check(result, "check_diff_soul").reason == "baseline recorded for publisher's SOUL"
    state = gate_state("v1")
    assert state["souls"]["publisher"]["path"] == str(team / "SOUL_publisher.md")

    missing = learning_gate("v1", "manifest")
    reason = check(missing, "check_diff_soul").reason
    assert reason.startswith(
        "no SOUL file for davinci_editor (looked in agents/davinci_editor/SOUL.md"
    )
    assert missing.blocked is False

    (team / "SOUL_publisher.md").unlink()
    removed = learning_gate("v1", "tts")
    assert check(removed, "check_diff_soul").passed is False
    assert check(removed, "check_diff_soul").reason.startswith("publisher's SOUL file was removed")


def test_unmapped_stage_is_reported(root: Path) -> None:
    """A stage the alias map names but no agent runs is known: reported as unmapped."""
    (root / "policies.py").write_text('LEARNING_STAGE_ALIASES = {"thumbs": "thumbnails"}\n')
    result = learning_gate("v1", "thumbnails")
    soul = check(result, "check_diff_soul")
    assert soul.passed is True
    assert soul.reason == (
        "stage 'thumbnails' has no agent in LEARNING_STAGE_AGENTS: no SOUL to check"
    )
    assert result.agent is None


def test_ack_accepts_a_change_and_is_recorded(root: Path, souls: Path, clock: Clock) -> None:
    learning_gate("v042", "assets")
    (root / "policies.py").write_text("LEARNING_TOMBSTONE_GRACE_DAYS = 14\n")
    soul = souls / "dzine_producer/SOUL.md"
    soul.write_text(soul.read_text() + "\n- New rule.\n")
    clock.advance(minutes=5)
    ack = acknowledge("v042", "assets", note="reviewed")
    assert ack.policies == ["policies changed: LEARNING_TOMBSTONE_GRACE_DAYS: 30 → 14"]
    assert ack.soul is not None and ack.soul.startswith(
        "dzine_producer's SOUL changed (+2 −0 lines)"
    )
    state = gate_state("v042")
    assert state["acks"] == [ack.to_dict()]
    assert state["acks"][0]["at"] == "2026-02-19T12:05:00.000000Z"
    assert state["acks"][0]["note"] == "reviewed"
    assert learning_gate("v042", "assets").blocked is False


def test_regressions_hold_the_stage_until_verified(root: Path, clock: Clock) -> None:
    event = fail_event(component="assets", video_id="v042")
    assert event.status == "applied"  # in memory, but not verified
    blocked = learning_gate("v042", "assets")
    regressions = check(blocked, "check_regressions")
    assert regressions.passed is False
    assert regressions.reason.startswith("1 unresolved FAIL/BLOCKER event(s): " + event.event_id)
    assert regressions.details == {"event_ids": [event.event_id]}
    assert learning_gate("v043", "assets").blocked is False  # another video
    assert learning_gate("v042", "research").blocked is False  # another stage
    resolve_event(event.event_id, "re-generated, correct")
    assert learning_gate("v042", "assets").blocked is False


def test_warnings_do_not_hold_the_stage(root: Path) -> None:
    fail_event(severity="WARN", video_id="v1")
    fail_event(severity="INFO", video_id="v1")
    assert learning_gate("v1", "assets").blocked is False


def test_events_under_step_names_count_for_their_stage(root: Path) -> None:
    event = fail_event(component="discover-products", video_id="v1", agent="researcher")
    result = learning_gate("v1", "research")
    assert check(result, "check_regressions").details["event_ids"] == [event.event_id]
    # and the gate accepts a step name for the stage too
    assert learning_gate("v1", "discover-products").blocked is True


def test_known_failures_across_videos(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    errors = [
        log_error(f"v{i}", "discover-products", f"Timeout after {30 + i}.5s on B0ABC{i}")
        for i in range(2)
    ]
    assert learning_gate("v9", "research").blocked is False  # seen twice: not yet known
    third = log_error("v2", "research", "Timeout after 44.1s on B0XYZ")
    result = learning_gate("v9", "research")
    known = check(result, "check_known_failures")
    assert known.passed is False
    assert known.reason == (
        "1 recurring failure(s) with no answer: 'Timeout after <dur> on <id>' seen 3× "
        "(3 unresolved; FAIL/BLOCKER occurrences and no active rule learned from it)"
    )
    assert (known.level, known.outcome) == ("deny", "deny")
    assert known.details["patterns"][0]["occurrences"] == 3
    assert learning_gate("v9", "assets").blocked is False  # other stages are not held
    for entry in [*errors, third]:
        resolve_error(entry.id, "slow proxy", "switched proxy")
    assert learning_gate("v9", "research").blocked is False  # all resolved: a lesson, not a block

    monkeypatch.setenv("RAYVAULT_LEARNING_KNOWN_FAILURE_THRESHOLD", "2")
    log_error("v1", "tts", "Audio clipping at -1dB")
    log_error("v2", "tts", "Audio clipping at -2dB")
    learning_gate("v9", "tts")  # the threshold change itself blocks once
    assert check(learning_gate("v9", "tts"), "check_known_failures").passed is False


def test_events_and_errors_count_together_without_double_counting(root: Path) -> None:
    entry = log_error("v1", "research", "Price anomaly on B0F8HM4PYL")
    promote_to_learning(entry.id, root_cause="no check", fix="check")  # event now carries it
    log_error("v2", "research", "Price anomaly on B0ABCDEFGH")
    result = learning_gate("v9", "research")
    assert check(result, "check_known_failures").passed is True  # 2 occurrences, not 3
    fail_event(
        component="research", symptom="Price anomaly on B0QQQQQQQQ", video_id="v3", agent=None
    )
    assert check(learning_gate("v9", "research"), "check_known_failures").passed is False


def test_disabled_gate_says_so(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fail_event(video_id="v1")
    monkeypatch.setenv("RAYVAULT_SKIP_LEARNING_GATE", "1")
    result = learning_gate("v1", "assets")
    assert result.blocked is False and result.enabled is False
    assert result.reason == "learning gate disabled by RAYVAULT_SKIP_LEARNING_GATE=1: no checks run"
    assert result.checks == []
    monkeypatch.delenv("RAYVAULT_SKIP_LEARNING_GATE")
    (root / "policies.py").write_text("LEARNING_GATE_ENABLED = False\n")
    result = learning_gate("v1", "assets")
    assert result.enabled is False
    assert result.reason == (
        "learning gate disabled by LEARNING_GATE_ENABLED = False (policies.py): no checks run"
    )


def test_unsafe_ids_are_refused(root: Path) -> None:
    with pytest.raises(InvalidIdentifierError, match="invalid video id"):
        learning_gate("../v1", "assets")
    with pytest.raises(InvalidIdentifierError, match="invalid stage"):
        learning_gate("v1", "assets/..")
    with pytest.raises(InvalidIdentifierError, match="invalid video id"):
        acknowledge("../v1", "assets")
    assert get_store().load_gate_state("v1") is None


@pytest.mark.files_only("a corrupt gate-state file")
def test_corrupt_state_is_refused_and_unchanged(root: Path) -> None:
    state = root / "state/learning_gate/v1.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"video_id": "v1", "policies": ')
    with pytest.raises(CorruptFileError, match="v1.json is corrupt"):
        learning_gate("v1", "assets")
    with pytest.raises(CorruptFileError):
        acknowledge("v1", "assets")
    assert state.read_text() == '{"video_id": "v1", "policies": '


# -- the known-failure aggregate stays exact ----------------------------------------------------

operations = st.lists(
    st.tuples(
        st.sampled_from(["event", "error", "resolve_event", "resolve_error", "promote"]),
        st.integers(min_value=0, max_value=3),  # which failure text
        st.sampled_from(["research", "discover-products", "assets"]),
        st.integers(min_value=0, max_value=20),  # which earlier record to act on
    ),
    max_size=25,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_known_failures_match_a_brute_force_count(
    tmp_path_factory: pytest.TempPathFactory, backend: str | None, ops
) -> None:  # type: ignore[no-untyped-def]
    """Whatever happens (events, errors, resolutions, promotions), the gate's aggregate equals
    a count over all records, and so does a recount from scratch (file store: a rebuild of the
    derived index from the logs; PostgreSQL: a recount of the tables)."""
    root = tmp_path_factory.mktemp("agg")
    schemas = PgSchemas()
    store = open_store(root, schemas.new_url() if backend else None)
    try:
        _check_aggregate(store, root, ops)
    finally:
        store.close()
        schemas.drop_all()


def _check_aggregate(store, root, ops) -> None:  # type: ignore[no-untyped-def]
    texts = ["Timeout after 30s", "Price anomaly on B0F8HM4PYL", "Audio clipping", "Crash"]
    events, errors = [], []
    for op, text, stage, pick in ops:
        if op == "event":
            events.append(
                create_event(
                    run_id="", severity="FAIL", component=stage, symptom=texts[text], store=store
                ).event_id
            )
        elif op == "error":
            errors.append(log_error("v1", stage, texts[text], store=store).id)
        elif op == "resolve_event" and events:
            resolve_event(events[pick % len(events)], "ok", store=store)
        elif op == "resolve_error" and errors:
            resolve_error(errors[pick % len(errors)], "c", "f", store=store)
        elif op == "promote" and errors:
            promote_to_learning(errors[pick % len(errors)], root_cause="c", fix="f", store=store)

    def brute(components: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        counts: dict[str, list[int]] = {}
        for e in list_events(store=store):
            if e.component in components:
                c = counts.setdefault(str(e.fingerprint), [0, 0])
                c[0] += 1
                c[1] += 0 if e.resolved else 1
        for r in store.query_errors(ErrorQuery()):
            if r.stage in components and r.learning_event_id is None:
                c = counts.setdefault(str(r.fingerprint), [0, 0])
                c[0] += 1
                c[1] += 0 if r.resolved else 1
        return {fp: (n, o) for fp, (n, o) in counts.items() if n >= 2 and o > 0}

    components = ("discover-products", "research")
    got = {
        k.fingerprint: (k.occurrences, k.unresolved) for k in store.known_failures(components, 2)
    }
    assert got == brute(components)
    if not isinstance(store, FileStore):
        assert _pg_counts(store) == _pg_recount(store)
        return
    store.close()
    (root / "state/cache/index.sqlite3").unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{root}/state/cache/index.sqlite3{suffix}").unlink(missing_ok=True)
    rebuilt = FileStore(root)
    assert {
        k.fingerprint: (k.occurrences, k.unresolved) for k in rebuilt.known_failures(components, 2)
    } == got
    rebuilt.close()


def _pg_counts(store) -> set[tuple[str, str, int, int]]:  # type: ignore[no-untyped-def]
    with store.connect() as conn:
        rows = conn.execute(
            "SELECT component, fingerprint, total, open FROM fp_counts WHERE total <> 0"
        ).fetchall()
    return set(rows)


def _pg_recount(store) -> set[tuple[str, str, int, int]]:  # type: ignore[no-untyped-def]
    from rayvault.learning.store.postgres.schema import FAILURE_RECOUNT

    with store.connect() as conn:
        return set(conn.execute(FAILURE_RECOUNT).fetchall())


# -- command line -----------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes_and_lines(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    get_store().count_events(EventQuery())  # an initialised store (a new schema is refused)
    code, out, err = run(capsys, "gate", "v042", "assets")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "PASSED: all 4 checks passed"
    assert lines[1] == "  [PASS] check_diff_policies: baseline recorded for this video"
    assert [line.split("]")[0] for line in lines[1:]] == ["  [PASS"] * 4
    event = fail_event(video_id="v042")
    code, out, _ = run(capsys, "gate", "v042", "assets")
    assert code == 2
    assert out.startswith(
        f"BLOCKED: check_regressions: 1 unresolved FAIL/BLOCKER event(s): {event.event_id}"
    )
    assert "  [FAIL] check_regressions: " in out
    code, out, _ = run(capsys, "gate", "v042", "assets", "--json")
    assert code == 2
    data = json.loads(out)
    assert data["blocked"] is True and data["checks"][2]["passed"] is False
    code, _, err = run(capsys, "gate", "../x", "assets")
    assert code == 1 and err.startswith("Error: invalid video id '../x'")
    code, _, err = run(capsys, "gate", "v1")
    assert code == 1 and "Missing argument" in err


def test_fast_path_and_typer_path_print_the_same(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_event(video_id="v042")
    learning_gate("v042", "assets")
    fast = main(["gate", "v042", "assets"]), capsys.readouterr()
    slow = typer_run(["gate", "check", "v042", "assets"]), capsys.readouterr()
    assert fast[0] == slow[0] == 2
    assert fast[1].out == slow[1].out
    fast_json = main(["--root", str(root), "gate", "v042", "assets", "--json"]), capsys.readouterr()
    slow_json = typer_run(["gate", "check", "v042", "assets", "--json"]), capsys.readouterr()
    assert json.loads(fast_json[1].out)["checks"] == json.loads(slow_json[1].out)["checks"]


def test_cli_ack(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    learning_gate("v1", "research")
    (root / "policies.py").write_text("LEARNING_REVISIT_INTERVAL_DAYS = 14\n")
    code, out, _ = run(capsys, "gate", "ack", "v1", "research", "--note", "weekly window doubled")
    assert code == 0
    assert out.splitlines() == [
        "Acknowledged for v1/research:",
        "  policies changed: LEARNING_REVISIT_INTERVAL_DAYS: 7 → 14",
    ]
    code, out, _ = run(capsys, "gate", "v1", "research")
    assert code == 0
    code, out, _ = run(capsys, "gate", "ack", "v1", "research")
    assert out.strip() == "Nothing to acknowledge for v1/research: no policies or SOUL change."


@pytest.mark.slow
def test_tools_script_and_cold_process(root: Path) -> None:
    fail_event(video_id="v042")
    env = {**os.environ, "RAYVAULT_ROOT": str(root)}
    done = subprocess.run(
        [sys.executable, "tools/learning_gate.py", "v042", "assets"],
        capture_output=True, text=True, cwd=REPO, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stdout.startswith("BLOCKED: check_regressions:")
    passed = subprocess.run(
        [sys.executable, "tools/learning_gate.py", "v043", "assets"],
        capture_output=True, text=True, cwd=REPO, env=env, check=False,
    )  # fmt: skip
    assert passed.returncode == 0 and passed.stdout.startswith("PASSED: ")


def test_errors_cli(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "errors", "log", "discover-products", "Timeout after 30s", "--video", "v1"
    )
    assert code == 0, err
    error_id = out.split()[1]
    assert error_id.startswith("e-")
    for seconds in (31, 32):
        run(capsys, "errors", "log", "research", f"Timeout after {seconds}s", "--video", "v2")
    code, out, _ = run(capsys, "errors", "list", "--stage", "research", "--json")
    assert [e["stage"] for e in json.loads(out)] == ["research", "research", "discover-products"]
    code, out, _ = run(capsys, "errors", "patterns", "--json")
    [pattern] = json.loads(out)
    assert pattern["count"] == 3 and pattern["pattern"] == "Timeout after <dur>"
    code, out, _ = run(
        capsys, "errors", "resolve", error_id, "--root-cause", "proxy", "--fix", "retry"
    )
    assert code == 0 and out.strip() == f"{error_id} resolved"
    code, out, _ = run(capsys, "errors", "lessons", "--json")
    assert json.loads(out)[0]["fix"] == "retry"
    code, out, _ = run(
        capsys, "errors", "promote", error_id, "--root-cause", "proxy", "--fix", "retry",
        "--agent", "researcher",
    )  # fmt: skip
    assert code == 0 and out.startswith(f"Promoted {error_id} → learning event le-")
    code, out, _ = run(capsys, "errors", "promote", error_id, "--root-cause", "x", "--fix", "y")
    assert out.startswith(f"Already promoted: {error_id}")
    code, _, err = run(capsys, "errors", "promote", "e-missing", "--root-cause", "x", "--fix", "y")
    assert code == 1 and "Error: no error-log entry with id 'e-missing'" in err
    code, out, _ = run(capsys, "errors", "get", error_id, "--json")
    assert json.loads(out)["resolved"] is True
    code, _, err = run(capsys, "errors", "log", "research", "x", "--context", "{nope")
    assert code == 1 and "--context-json (--context) is not valid JSON" in err
