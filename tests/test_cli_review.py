"""The review commands: revisit, patterns, report (and the tools/learning_revisit.py script).

Runs on both stores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import create_event
from rayvault.learning.store import get_store
from rayvault.learning.store.transfer import MEMORY, REPORT, REPORT_HTML

from . import _raw
from .conftest import Clock, event_kwargs, rules_worked

pytestmark = pytest.mark.both_stores
REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def history(root: Path, clock: Clock) -> None:
    for i, (symptom, fix) in enumerate(
        [
            ("Timeout after 30s on B0AAA1", "Changed reference angle from 3/4 to top-down"),
            ("Timeout after 31s on B0BBB2", "Changed reference angle from 3/4 to top-down"),
            ("Timeout after 9s on B0CCC3", "Changed reference angle from 3/4 to top-down"),
            ("Image hallucination", "Reverted to original 3/4 angle"),
        ]
    ):
        clock.set(NOW - timedelta(hours=4 - i))
        create_event(**event_kwargs(symptom=symptom, fix_applied=fix, verification=""))  # type: ignore[arg-type]
    rules_worked()  # promotion counts successes
    clock.set(NOW)


def test_revisit_json_and_files(
    root: Path, history: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "revisit", "--scope", "all", "--days", "7", "--json")
    assert code == 0, err
    assert err == ""  # no progress bar under --json (and none off a terminal)
    data = json.loads(out)
    assert data["scope"] == "all" and data["days"] == 7 and data["dry_run"] is False
    assert data["report_name"] == "weekly-2026-02-19"
    store = get_store()
    assert data["report_files"]["json"] == _raw.where(store, REPORT, "weekly-2026-02-19")
    if not _raw.is_pg(store):
        assert data["report_files"]["json"] == str(
            root / "data/learning_reports/weekly-2026-02-19.json"
        )
    assert json.loads(str(_raw.get(store, REPORT, "weekly-2026-02-19"))) == data["report"]
    assert data["report"]["events_total"] == 4
    [conflict] = data["revalidation"]["conflicts"]
    assert conflict["kind"] == "revert"
    [candidate] = data["promotions"]
    assert candidate["applied_count"] == 3
    assert {s["agent"] for s in data["tombstone_sweep"]} >= {"dzine_producer", "researcher"}


def test_revisit_for_people(root: Path, history: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "revisit", "--scope", "dzine_producer", "--days", "14")
    assert code == 0
    assert "Revisit of dzine_producer (1 agent), last 14 days: 2026-02-05 12:00 → 2026-02-19" in out
    # Each number says what it counts (issue 16).
    assert (
        "Learning events: 4 recorded in the window, 4 in all; unresolved FAIL/BLOCKER events "
        "(any date): 4\nFailure patterns of the window: 2 new (first seen in it)"
    ) in out
    assert "Conflicting rules:" in out and "[revert]" in out
    assert "SOUL promotion candidates: 1 (0 already promoted)" in out
    assert "rayvault-learn soul promote dzine_producer rule-" in out
    assert f"Report: {_raw.where(get_store(), REPORT, 'weekly-2026-02-19')}\n" in out
    assert f"        {_raw.where(get_store(), REPORT_HTML, 'weekly-2026-02-19')}\n" in out

    code, out, _ = run(capsys, "revisit", "--dry-run")
    assert code == 0 and "Dry run: nothing was written." in out
    assert get_store().list_weekly_reports() == ["weekly-2026-02-19"]


def test_revisit_errors_exit_1(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "revisit", "--scope", "nobody")
    assert code == 1 and out == ""
    assert err.splitlines()[0] == "Error: unknown agent 'nobody' for the revisit scope"
    code, _, err = run(capsys, "revisit", "--days", "0")
    assert code == 1 and "Invalid value for '--days'" in err
    store = get_store()
    _raw.put(store, MEMORY, ("researcher",), "[]")
    code, _, err = run(capsys, "revisit")
    assert code == 1 and f"Error: {_raw.where(store, MEMORY, 'researcher')} is corrupt" in err
    assert _raw.get(store, MEMORY, "researcher") == "[]"
    assert store.list_weekly_reports() == []


def test_patterns_command(root: Path, history: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "patterns", "--json")
    assert code == 0
    [pattern] = json.loads(out)
    assert pattern["count"] == 3 and pattern["pattern"] == "Timeout after <dur> on <id>"
    code, out, _ = run(capsys, "patterns", "--min-count", "1", "--json")
    assert [p["count"] for p in json.loads(out)] == [3, 1]
    code, out, _ = run(capsys, "patterns", "--component", "research", "--json")
    assert json.loads(out) == []
    code, out, _ = run(capsys, "patterns", "--since", "2026-02-19T09:00:00Z", "--min-count", "2")
    assert code == 0 and "Timeout after <dur> on <id>" in out and "(1 of 1)" in out
    code, out, _ = run(capsys, "patterns", "--min-count", "9")
    assert "No learning-event pattern occurred 9 times or more." in out
    code, _, err = run(capsys, "patterns", "--since", "soon")
    assert code == 1 and "Error: date_from 'soon' is not a date or timestamp" in err


def test_report_command(root: Path, history: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "report")
    assert code == 0 and "No weekly report yet" in out
    code, out, _ = run(capsys, "report", "--json")
    assert json.loads(out) is None
    assert run(capsys, "revisit", "--json")[0] == 0
    code, out, _ = run(capsys, "report", "--json")
    data = json.loads(out)
    assert data["events_total"] == 4 and data["generated_at"] == "2026-02-19T12:00:00.000000Z"
    code, out, _ = run(capsys, "report")
    assert "Weekly report of all, generated 2026-02-19 12:00 UTC, window 7 days" in out
    assert "3 this window, 3 in all: Timeout after <dur> on <id>" in out


@pytest.mark.slow
def test_tools_script_is_the_revisit_command(root: Path, history: None) -> None:
    """``python3 tools/learning_revisit.py --scope all --days 7`` is ``rayvault-learn revisit``."""
    env = {**os.environ, "RAYVAULT_ROOT": str(root), "COLUMNS": "200",
           "RAYVAULT_NOW": "2026-02-19T12:00:00Z"}  # fmt: skip

    def out(*cmd: str) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True)
        return done.stdout

    script = [sys.executable, "tools/learning_revisit.py"]
    cli = [sys.executable, "-m", "rayvault.cli", "revisit"]
    args = ["--scope", "all", "--days", "7", "--dry-run"]
    assert out(*script, *args, "--json") == out(*cli, *args, "--json")
    assert out(*script, *args) == out(*cli, *args)
    written = json.loads(out(*script, "--scope", "all", "--days", "7", "--json"))
    assert written["report_name"] == "weekly-2026-02-19"
    assert str(_raw.get(get_store(), REPORT_HTML, "weekly-2026-02-19")).startswith("<!DOCTYPE")


@pytest.mark.slow
def test_spec_import_paths(root: Path) -> None:
    code = (
        "from tools.learning_revisit import revisit, run_revisit\n"
        "from rayvault.learning.registry import (query_events, get_patterns,"
        " get_agent_learnings, get_promotion_candidates, get_weekly_summary)\n"
        "print(run_revisit is revisit, get_weekly_summary(), get_patterns(min_count=3))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
        env={**os.environ, "RAYVAULT_ROOT": str(root)},
    )  # fmt: skip
    assert done.stdout.strip() == "True None []"
