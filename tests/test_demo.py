"""The demo (a simulated pipeline through the closed loop), its command, and the example script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import InvalidInputError, list_events, load_active_memory
from rayvault.learning.demo import MARKER, DemoNotice, prepare_root, run_demo
from rayvault.learning.errors import list_errors
from rayvault.learning.store import FileStore

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_and_leaves_the_files_it_names(tmp_path: Path) -> None:
    """Four injected failures: recurring (its retry-verified fix overturned, so history hands it
    back no more), fixed by a rule, held by the gate, and one whose learned fix cannot work
    (flagged ineffective)."""
    notices: list[DemoNotice] = []
    target = tmp_path / "demo"
    result = run_demo(target, report=notices.append)
    assert result.root == target.absolute()

    s = result.summary
    # 13 stage runs of v101-v103, then 3 script runs of v104-v106 (2 attempts each, failed).
    assert s["outcomes"] == {"succeeded": 11, "failed": 4, "blocked": 1}
    assert (s["videos"], s["stage_runs"], s["attempts"], s["retries"]) == (6, 16, 22, 7)
    # The rate limit's fix is overturned on v102: history skips it, the LLM is asked each time.
    assert s["diagnoses"] == {"llm (simulated)": 7, "none": 1}
    assert s["events"] == 8
    assert s["events_by_status"] == {"verified": 4, "open": 1, "applied": 3}
    assert (s["failures_logged"], s["errors_unresolved"]) == (11, 7)
    assert s["prevented_by_rules"] == 2
    assert s["gate"] == {"passed": 11, "blocked": 1}

    runs = {(r.video_id, r.stage, r.outcome): r for r in result.runs}
    # Recurring with different numbers: one fingerprint. The rate limit goes away on retry
    # whatever the fix, so v101's retry-verified fix recurs while delivered in v102: overturned,
    # history skips it and the LLM is asked again.
    research = [r for r in result.runs if r.stage == "research"]
    assert [r.diagnoses[0].source for r in research] == ["llm (simulated)"] * 3
    assert len({r.rule_ids[0] for r in research}) == 1
    skipped = [s.data.get("history_skipped") for s in research[1].steps if s.step == "diagnose"]
    assert skipped and "overturned" in skipped[0][0]
    assert result.highlights["recurring_event"] == research[1].event_ids[0]
    # Prevented by the rule learned on v101's retry.
    assert runs[("v101", "assets", "succeeded")].attempts == 2
    for video in ("v102", "v103"):
        run = runs[(video, "assets", "succeeded")]
        assert (
            run.attempts == 1
            and run.delivered_rule_ids == runs[("v101", "assets", "succeeded")].rule_ids
        )
    # Held: v103's tts fails undiagnosed, and its re-run is blocked by the gate.
    assert runs[("v103", "tts", "failed")].attempts == 1
    blocked = runs[("v103", "tts", "blocked")]
    assert blocked.gate is not None and "check_regressions" in blocked.gate.reason
    [held_gate] = [g for g in result.gates if g.blocked]
    assert (held_gate.video_id, held_gate.stage) == ("v103", "tts")
    assert len(result.gates) == 12

    # A rule's efficacy: the angle rule worked every time it was delivered; the "be concise"
    # rule was delivered on every script attempt of v104-v106 and the truncation came back
    # each time, so after 5 deliveries it is flagged ineffective, with its attempts as evidence.
    counters = {
        agent: [
            (r["occurrences"], r["deliveries"], r["successes"], r["recurrences"], r["ineffective"])
            for r in rules
        ]
        for agent, rules in s["rules"].items()
    }
    assert counters["dzine_producer"] == [(1, 3, 3, 0, None)]
    assert counters["researcher"] == [(3, 5, 3, 2, None)]  # 429 on every first attempt
    assert counters["scriptwriter"] == [
        (3, 5, 0, 5, "its failure recurred in 5 of 5 deliveries (100%)")
    ]
    efficacy_runs = [r for r in result.runs if r.video_id in ("v104", "v105", "v106")]
    assert [(r.stage, r.outcome, r.attempts) for r in efficacy_runs] == [
        ("script", "failed", 2)
    ] * 3
    [concise_id] = [r["rule_id"] for r in s["rules"]["scriptwriter"]]
    assert result.highlights["ineffective_rule"] == concise_id
    history = s["ineffective_history"]
    assert (history["rule_id"], history["deliveries"], history["recurrences"]) == (
        concise_id,
        5,
        5,
    )
    assert [(a["video_id"], a["attempt"], a["recurred"]) for a in history["attempts"]] == [
        ("v106", 2, True),
        ("v106", 1, True),
        ("v105", 2, True),
        ("v105", 1, True),
        ("v104", 2, True),
    ]
    notes = [n.message for n in notices if n.kind == "note" and n.video_id == "v106"]
    assert any("INEFFECTIVE: its failure recurred in 5 of 5" in m for m in notes)
    assert result.review is not None
    assert [f.rule_id for f in result.review.revalidation.ineffective] == [concise_id]
    root_cmd = f"rayvault-learn --root {result.root}"
    assert f"{root_cmd} rules history scriptwriter {concise_id}" in result.next_commands

    # What it says it leaves is there.
    assert len(result.files) >= 20
    for name in result.files:
        assert (result.root / name).is_file(), name
    assert "data/learning_events.json" in result.files and "data/error_log.json" in result.files
    for agent in ("researcher", "scriptwriter", "dzine_producer", "publisher"):
        assert f"agents/{agent}/SOUL.md" in result.files
        assert f"state/agents/{agent}/memory_active.json" in result.files
    assert sum(name.startswith("artifacts/videos/") for name in result.files) == 8
    assert sum(name.startswith("agents/skills/learnings/2") for name in result.files) == 8

    # It ends with the weekly revisit: the report files, and both learned rules as candidates.
    review = result.review
    assert review is not None and review.dry_run is False
    assert review.report_files is not None
    for location in review.report_files.values():
        assert Path(location).relative_to(result.root).as_posix() in result.files
    report = json.loads(Path(review.report_files["json"]).read_text())
    assert report["events_recent"] == 8
    assert report["open_failures"]["total"] == 4  # the voice engine's, and 3 truncations
    # The weekly report carries the flagged rule in its revalidation.
    assert [f["rule_id"] for f in report["revalidation"]["ineffective"]] == [concise_id]
    assert sorted(c.agent for c in review.promotions) == ["dzine_producer", "researcher"]

    # ... and the other commands read it.
    store = FileStore(result.root)
    try:
        events = list_events(store=store)
        assert len(events) == 8
        held = result.highlights["held_event"]
        open_events = [e for e in events if not e.resolved]
        assert [e.event_id for e in open_events if not e.rule_id] == [held]
        assert {e.video_id for e in open_events if e.rule_id} == {"v104", "v105", "v106"}
        assert all(e.loop_steps for e in events)
        assert len(list_errors(store=store)) == 11
        [rule] = load_active_memory("researcher", store=store).rules
        assert rule.applied_count == 5  # learned 3 times, delivered into 2 later runs
        assert rule.verified_by == "overturned" and rule.overturned_at is not None
        [angle] = load_active_memory("dzine_producer", store=store).rules
        assert angle.applied_count == 3  # learned once, delivered into 2 later runs
    finally:
        store.close()
    marker = json.loads((result.root / MARKER).read_text())
    assert marker["complete"] is True
    assert marker["entries"] == ["agents", "artifacts", "data", "state"]

    kinds = {n.kind for n in notices}
    assert kinds == {"root", "phase", "video", "step", "stage", "gate", "note"}
    steps = [n.step.step for n in notices if n.step is not None]
    assert steps.count("give_up") == 1 and steps.count("verify") == 4
    root_cmd = f"rayvault-learn --root {result.root}"
    assert all(c.startswith(root_cmd) for c in result.next_commands)
    assert f"{root_cmd} gate v103 tts" in result.next_commands


def test_demo_root_default_is_a_new_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a root the demo makes a fresh directory in the system's temp folder."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = prepare_root()
    second = prepare_root()
    assert first != second
    assert first.parent == tmp_path and first.name.startswith("rayvault-demo-")
    assert [p.name for p in first.iterdir()] == [MARKER]


def test_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    """A non-empty directory that is not a previous demo root is refused and left untouched."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="is not empty and is not a previous demo root"):
        run_demo(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InvalidInputError, match="is not a directory"):
        run_demo(a_file)


def test_demo_reuses_a_previous_demo_root_but_nothing_else_in_it(tmp_path: Path) -> None:
    """Running twice in one root starts afresh; a file the demo did not make stops it."""
    target = tmp_path / "demo"
    first = run_demo(target)
    second = run_demo(target)
    assert second.summary["outcomes"] == first.summary["outcomes"]
    assert second.summary["events"] == 8  # the old data was cleared, not added to
    assert set(first.highlights.values()).isdisjoint(
        v for k, v in second.highlights.items() if k.endswith("event")
    )

    (target / "mine.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="also holds mine.txt"):
        run_demo(target)
    assert (target / "data/learning_events.json").exists()  # nothing was removed

    (target / "mine.txt").unlink()
    (target / MARKER).write_text('{"complete": false}')  # a demo that did not finish
    with pytest.raises(InvalidInputError, match="unfinished or unreadable demo"):
        run_demo(target)
    assert (target / "data/learning_events.json").exists()


def test_cli_demo_prints_the_loop_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rayvault-learn demo --root DIR` prints the loop, the gate table, the summary and what
    to run next; those commands work."""
    target = tmp_path / "demo"
    assert main(["demo", "--root", str(target)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"Demo data root: {target}" in out
    for text in (
        "v101",
        "diagnose  from llm (simulated)",
        "skipped: its text was overturned",
        "retry     attempt 2 of 2",
        "✓ assets succeeded on attempt 2",
        "✓ assets succeeded at once",
        "give_up   no diagnosis: not retried",
        "✗ tts blocked by the learning gate",
        "BLOCKED",
        "Summary",
        "16 stage runs (one stage of one video, its retries included) over 6 videos: "
        "11 succeeded, 4 failed, 1 blocked by the gate",
        "22 attempts in all, 7 of them retries after a failure",
        "11 failures logged in the error log (every failed attempt), 7 still unresolved",
        "8 learning events (failures learned from): 4 verified (fix proven)",
        "Does a rule work? v104, v105, v106 through script",
        "v106: rule rule-",
        "INEFFECTIVE: its failure recurred in 5 of 5 deliveries (100%)",
        "Active rules: does each one work?",
        "rules history scriptwriter rule-",
        "v106 script attempt 2: recurred",
        "Explore it:",
        f"rayvault-learn --root {target} gate v103 tts",
    ):
        assert text in out, text

    # It reads in order (issue 16): the gate table under its own heading, then the revisit,
    # of the demo's agents only; the symptom the gate names is cut with "…".
    gate_heading = out.index("The learning gate, for every video and stage")
    revisit_heading = out.index("The weekly revisit: review rules")
    assert gate_heading < out.index("BLOCKED") < revisit_heading
    assert revisit_heading < out.index("Revisit of ") < out.index("Summary")
    assert "Revisit of dzine_producer, publisher, researcher, scriptwriter (4 agents)" in out
    for other in ("davinci_editor", "market_scout", "reviewer"):
        assert other not in out, other
    assert re.search(
        r"v103/tts: check_regressions: 1 unresolved FAIL/BLOCKER event: .*… \(open\)", out
    )

    assert main(["--root", str(target), "gate", "v103", "tts"]) == 2
    capsys.readouterr()
    events = json.loads(_run_ok(capsys, "--root", str(target), "events", "list", "--json"))
    open_ids = [e["event_id"] for e in events if e["status"] == "open"]
    assert len(open_ids) == 1
    assert f"events resolve {open_ids[0]}" in out
    # The counters table: one row per agent, the flagged rule's verdict among them.
    rows = {
        words[0]: words[1:]
        for line in out.splitlines()
        if len(words := line.split()) == 7 and words[1].isdigit()
    }
    assert rows["scriptwriter"] == ["3", "5", "0", "5", "5", "ineffective"]
    assert rows["dzine_producer"] == ["1", "3", "3", "0", "3", "works"]
    # ... and `rules history` shows the same evidence.
    [rule_id] = re.findall(r"^rules history scriptwriter (rule-[\w-]+):", out, re.MULTILINE)
    history = json.loads(
        _run_ok(
            capsys, "--root", str(target), "rules", "history", "scriptwriter", rule_id, "--json"
        )
    )
    assert (history["deliveries"], history["recurrences"], history["successes"]) == (5, 5, 0)


def _run_ok(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_cli_demo_json_and_global_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints only the result; the global --root works too; a bad root exits 1."""
    target = tmp_path / "demo"
    data = json.loads(_run_ok(capsys, "--root", str(target), "demo", "--json"))
    assert data["root"] == str(target)
    assert data["summary"]["outcomes"] == {"succeeded": 11, "failed": 4, "blocked": 1}
    assert len(data["runs"]) == 16 and len(data["gates"]) == 12
    assert (
        data["summary"]["ineffective_history"]["rule_id"] == data["highlights"]["ineffective_rule"]
    )
    assert data["runs"][0]["steps"][0]["step"] == "gate"
    assert all((target / f).is_file() for f in data["files"])

    other = tmp_path / "other"
    other.mkdir()
    (other / "x").write_text("x")
    assert main(["demo", "--root", str(other)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"Error: {other} is not empty and is not a previous demo root")


@pytest.mark.slow
def test_example_pipeline_learns_on_the_first_video_and_applies_on_the_next(
    tmp_path: Path,
) -> None:
    """examples/pipeline.py: v042's assets stage learns and retries; v043's passes at once."""
    target = tmp_path / "example"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(video: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "examples/pipeline.py", "--root", str(target), video],
            capture_output=True, text=True, cwd=REPO, env=env, check=False,
        )  # fmt: skip

    first = run("v042")
    assert first.returncode == 0, first.stderr
    assert "v042/assets diagnose (attempt 1): from llm" in first.stderr
    assert "v042/assets succeed (attempt 2)" in first.stderr
    second = run("v043")
    assert second.returncode == 0, second.stderr
    assert "v043/assets execute (attempt 1): 1 rule delivered to dzine_producer" in second.stderr
    assert "v043/assets fail" not in second.stderr
    store = FileStore(target)
    try:
        [event] = list_events(store=store)
        assert event.status == "verified" and event.component == "assets"
    finally:
        store.close()


def test_readme_quick_start_is_two_commands_and_ci_runs_exactly_them() -> None:
    """The Quick start has two commands: set-up + the demo (installing only the package, no
    extra), then the tests (installing the dev extra); .ci/run runs exactly these lines, each
    followed by ``|| exit $?`` (``set -e`` does not stop inside an ``&&`` list)."""
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [block.split("\n```", 1)[0].strip() for block in quick.split("```bash\n")[1:]]
    assert len(commands) == 2, commands
    first, second = commands
    assert first == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
        ".venv/bin/rayvault-learn demo --root /tmp/rayvault-demo"
    )
    assert second == ".venv/bin/pip install -q -e '.[dev]' && .venv/bin/python -m pytest -n auto"
    ci = [
        line.removesuffix(" || exit $?")
        for line in (REPO / ".ci/run").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert first in ci and second in ci
    assert ci.index(first) < ci.index(second)


def test_demo_shows_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The rate limit's fix is verified by a retry and the next video hits it again: each later
    occurrence is a regression of the one before, in the summary, the events and the report."""
    result = run_demo(tmp_path / "demo")
    regressions = result.summary["regressions"]
    research = [r for r in result.runs if r.stage == "research"]
    first, second, third = (r.event_ids[0] for r in research)
    assert [(r["event_id"], r["regression_of"]) for r in regressions] == [
        (second, first),
        (third, second),
    ]
    assert result.highlights["regression_event"] == second
    assert all(r["reason"].startswith("regressed: fixed ") for r in regressions)
    assert result.review is not None
    [section] = result.review.report.regressions
    assert {e["event_id"] for e in section["events"]} == {second, third}
    out = _run_ok(capsys, "demo", "--root", str(tmp_path / "again"))
    assert "2 regressions, failures back after their fix was verified" in out
