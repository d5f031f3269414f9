"""The gate fails safe and does not stall a learning pipeline: unknown stages are refused, each
check has a level (deny/warn, ``LEARNING_GATE_LEVELS``), known failures deny only what the system
has no answer for, every denial says what clears it, and the four checks are callable alone."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tools.learning_gate as spec_gate
from rayvault.cli import main
from rayvault.cli.app import run as typer_run
from rayvault.learning import ConfigError, InvalidInputError, LearningError, create_event
from rayvault.learning.errors import log_error
from rayvault.learning.gate import (
    check_diff_policies,
    check_diff_soul,
    check_known_failures,
    check_regressions,
    learning_gate,
)
from rayvault.learning.loop import StageContext, run_stage
from rayvault.learning.models import GateCheck
from rayvault.learning.stages import is_known_stage
from rayvault.learning.store import get_store

from . import _raw
from .conftest import event_kwargs

pytestmark = pytest.mark.both_stores
REPO = Path(__file__).resolve().parents[1]


def check(result, name):  # type: ignore[no-untyped-def]
    return next(c for c in result.checks if c.name == name)


def fail_event(**more: object):  # type: ignore[no-untyped-def]
    return create_event(**event_kwargs(verification="", **more))  # type: ignore[arg-type]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- 1. unknown stages --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stage", "suggestion"),
    [
        ("asset", "did you mean 'assets'?"),
        ("Assets", "did you mean 'assets'?"),  # case-sensitive: the map spells it 'assets'
        ("Discover-Products", "did you mean 'discover-products'?"),
        ("reserch", "did you mean 'research'"),
    ],
)
def test_unknown_stage_is_refused_with_a_suggestion(
    root: Path, stage: str, suggestion: str
) -> None:
    """An assets FAIL is open; a misspelt stage is an error, never a pass, and writes nothing."""
    fail_event(video_id="v042")
    before = _raw.everything(get_store())
    with pytest.raises(InvalidInputError, match=f"unknown stage '{stage}': {suggestion}"):
        learning_gate("v042", stage)
    for single in (check_diff_policies, check_diff_soul, check_regressions):
        with pytest.raises(InvalidInputError, match="unknown stage"):
            single("v042", stage)
    with pytest.raises(InvalidInputError, match="unknown stage"):
        check_known_failures(stage)
    assert _raw.everything(get_store()) == before
    assert learning_gate("v042", "assets").blocked is True


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.one_of(
        st.sampled_from(["assets", "Assets", "ASSETS", "tts", "Tts", "daily", "Daily", "qa"]),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC-_.0123", min_size=1, max_size=12),
    )
)
def test_the_gate_runs_only_for_names_a_map_spells(root: Path, name: str) -> None:
    """Whatever the name, the gate either runs (the maps spell it exactly) or refuses it."""
    policies = get_store().policies
    try:
        result = learning_gate("v1", name)
    except LearningError as e:
        assert not is_known_stage(name, policies)
        assert isinstance(e, InvalidInputError)
    else:
        assert is_known_stage(name, policies) and result.enabled


def test_unknown_stage_far_from_any_lists_the_known_ones(root: Path) -> None:
    with pytest.raises(
        InvalidInputError, match=r"unknown stage 'zzz': known stages are assets, day"
    ):
        learning_gate("v1", "zzz")


@pytest.mark.slow
def test_cli_refuses_an_unknown_stage_on_every_path(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fail_event(video_id="v042")
    assert run(capsys, "gate", "v042", "assets")[0] == 2
    for stage in ("asset", "Assets"):
        code, out, err = run(capsys, "gate", "v042", stage)
        assert code == 1 and out == ""
        assert err.splitlines()[0] == f"Error: unknown stage '{stage}': did you mean 'assets'?"
        assert typer_run(["gate", "check", "v042", stage]) == 1
        assert capsys.readouterr().err.startswith(f"Error: unknown stage '{stage}'")
    done = subprocess.run(
        [sys.executable, "tools/learning_gate.py", "v042", "asset"],
        capture_output=True, text=True, cwd=REPO, check=False,
        env={**os.environ, "RAYVAULT_ROOT": str(root)},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("Error: unknown stage 'asset': did you mean 'assets'?")


def test_free_components_are_accepted_with_a_warning(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Events and the error log may use a component no map knows: recorded, and said."""
    with caplog.at_level(logging.WARNING, logger="rayvault"):
        entry = log_error("v1", "asset", "Upscaler returned a blank frame")
        event = create_event(**event_kwargs(component="thumbnails", agent=None))  # type: ignore[arg-type]
    assert entry.stage == "asset" and event.component == "thumbnails"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("log_error: component 'asset' is not a stage or step name")
    assert "(did you mean 'assets'?)" in warnings[0]
    assert warnings[1].startswith("create_event: component 'thumbnails' is not a stage")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rayvault"):
        log_error("v1", "discover-products", "Timeout")
        create_event(**event_kwargs())  # type: ignore[arg-type]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_run_stage_refuses_an_unknown_stage_before_running(root: Path) -> None:
    calls: list[StageContext] = []
    before = _raw.everything(get_store())
    with pytest.raises(InvalidInputError, match="unknown stage 'asset': did you mean 'assets'"):
        run_stage("v1", "asset", calls.append)
    assert calls == [] and _raw.everything(get_store()) == before


# -- 4. levels and outcomes ---------------------------------------------------------------------
def test_levels_and_outcomes_are_on_every_check(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = learning_gate("v1", "assets")
    assert result.outcome == "pass"
    assert [(c.level, c.outcome, c.passed) for c in result.checks] == [("deny", "pass", True)] * 4
    code, out, _ = run(capsys, "gate", "v1", "assets", "--json")
    data = json.loads(out)
    assert code == 0 and data["outcome"] == "pass"
    assert [(c["level"], c["outcome"], c["clear"]) for c in data["checks"]] == [
        ("deny", "pass", [])
    ] * 4


def test_regression_denial_names_what_clears_it(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = fail_event(video_id="v042")
    regressions = check(learning_gate("v042", "assets"), "check_regressions")
    command = f'rayvault-learn events resolve {event.event_id} --verification "<how the fix was verified>"'
    assert (regressions.outcome, regressions.clear) == ("deny", [command])
    code, out, _ = run(capsys, "gate", "v042", "assets")
    assert code == 2
    assert f"  [FAIL] check_regressions: 1 unresolved FAIL/BLOCKER event: {event.event_id}" in out
    assert f"      to clear: {command}\n" in out


def test_recurring_warn_only_failures_warn_and_pass(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Migrated WARN notes ('audio clipping') do not hold tts for every new video."""
    for i in range(3):
        create_event(
            **event_kwargs(  # type: ignore[arg-type]
                severity="WARN", component="tts", symptom=f"Audio clipping at -{i}dB",
                verification="", video_id=f"v{i}", agent=None,
            )
        )  # fmt: skip
    result = learning_gate("v9", "tts")
    known = check(result, "check_known_failures")
    assert (result.blocked, result.outcome) == (False, "warn")
    assert (known.level, known.outcome, known.passed, known.clear) == ("deny", "warn", True, [])
    assert "seen only as INFO/WARN" in known.reason
    assert known.details["patterns"][0]["failing"] is False
    code, out, _ = run(capsys, "gate", "v9", "tts")
    assert code == 0
    assert out.startswith("PASSED: passed with 1 warning: check_known_failures: ")
    assert "\n  [WARN] check_known_failures: 1 recurring failure, none unanswered: " in out


def test_recurring_failure_with_a_rule_warns_without_one_denies(root: Path) -> None:
    """Three open FAILs of one pattern: denied while no rule was learned from it, a warning once
    the researcher's memory holds its rule (the rule is being delivered)."""
    errors = [
        log_error(f"v{i}", "research", f"Timeout after {30 + i}s on B0ABCDEFG{i}") for i in range(3)
    ]
    known = check(learning_gate("v9", "research"), "check_known_failures")
    assert (known.outcome, known.passed) == ("deny", False)
    assert "FAIL/BLOCKER occurrences and no active rule learned from it" in known.reason
    promote = known.clear[0].split()
    assert promote[:3] == ["rayvault-learn", "errors", "promote"]
    assert promote[3] in {e.id for e in errors}
    assert known.clear[0].endswith('--fix "<what to do>" --agent researcher')
    assert all(c.startswith("rayvault-learn errors ") for c in known.clear)
    event = create_event(
        **event_kwargs(  # type: ignore[arg-type]
            component="research", symptom="Timeout after 44s on B0ZZZZZZZZ", verification="",
            video_id="v3", agent="researcher", root_cause="slow proxy", fix_applied="retry later",
        )
    )  # fmt: skip
    result = learning_gate("v9", "research")
    known = check(result, "check_known_failures")
    assert (result.blocked, known.outcome) == (False, "warn")
    assert f"rule {event.rule_id} of researcher is being delivered" in known.reason
    assert known.details["patterns"][0]["rule_id"] == event.rule_id


def test_a_denied_pattern_of_events_is_cleared_by_the_command_it_names(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three open FAIL events of one pattern and no rule: the first clearing command resolves
    them all by pattern, and running it as printed lets the stage through."""
    for i in range(3):
        create_event(
            **event_kwargs(  # type: ignore[arg-type]
                component="research", symptom=f"Timeout after {30 + i}s on B0ABCDEFG{i}",
                verification="", video_id=f"v{i}", agent=None,
            )
        )  # fmt: skip
    known = check(learning_gate("v9", "research"), "check_known_failures")
    assert known.outcome == "deny"
    fp = known.details["patterns"][0]["fingerprint"]
    command = known.clear[0]
    assert command.startswith(f"rayvault-learn events resolve --pattern {fp} --yes ")
    args = command.replace('"<how the fix was verified>"', "proxy-fixed").split()[1:]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert out.startswith("Resolved 3 learning events"), out
    after = check(learning_gate("v9", "research"), "check_known_failures")
    assert after.outcome == "pass", after.reason


def test_gate_levels_are_set_per_check_and_per_stage(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (root / "policies.py").write_text(
        'LEARNING_GATE_LEVELS = {"regressions": {"assets": "warn"}, "check_diff_soul": "warn"}\n'
    )
    fail_event(video_id="v042")
    fail_event(video_id="v042", component="research", agent=None)
    assets = learning_gate("v042", "assets")
    regressions = check(assets, "check_regressions")
    assert (assets.blocked, regressions.level, regressions.outcome) == (False, "warn", "warn")
    assert regressions.clear == []  # a warning needs no clearing
    assert check(assets, "check_diff_soul").level == "warn"
    research = learning_gate("v042", "research")
    assert research.blocked is True
    assert check(research, "check_regressions").level == "deny"  # other stages keep the default
    code, out, _ = run(capsys, "gate", "v042", "assets")
    assert code == 0 and "  [WARN] check_regressions: 1 unresolved" in out


@pytest.mark.parametrize(
    "value",
    [
        '{"check_everything": "deny"}',
        '{"regressions": "block"}',
        '{"regressions": {"assets": "off"}}',
        '["deny"]',
    ],
)
def test_bad_gate_levels_are_a_clear_error(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    monkeypatch.setenv("RAYVAULT_LEARNING_GATE_LEVELS", value)
    with pytest.raises(ConfigError, match="LEARNING_GATE_LEVELS from environment variable"):
        learning_gate("v1", "assets")
    code, out, err = run(capsys, "gate", "v1", "assets")
    assert code == 1 and out == "" and err.startswith("Error: ")
    assert get_store().load_gate_state("v1") is None


def test_a_new_constant_at_its_default_is_not_a_policy_change(root: Path) -> None:
    """Gate state recorded before LEARNING_GATE_LEVELS existed does not block after an upgrade;
    setting it does."""
    learning_gate("v1", "assets")
    with get_store().gate_state("v1") as state:
        assert state.policies is not None
        del state.policies["values"]["LEARNING_GATE_LEVELS"]
    assert learning_gate("v1", "assets").blocked is False
    (root / "policies.py").write_text('LEARNING_GATE_LEVELS = {"known_failures": "warn"}\n')
    policies = check(learning_gate("v1", "assets"), "check_diff_policies")
    assert policies.reason.startswith("policies changed: LEARNING_GATE_LEVELS: ")


# -- 10. the four checks, callable alone ----------------------------------------------------------
def test_the_four_checks_are_callable_with_plain_arguments(root: Path) -> None:
    assert spec_gate.check_diff_policies is check_diff_policies
    assert spec_gate.check_known_failures is check_known_failures
    event = fail_event(video_id="v042")
    for i in range(3):
        log_error(f"v{i}", "generate-assets", f"Upscaler blank frame {i} of 12")
    store = get_store()
    regressions = check_regressions("v042", "assets", store=store)
    assert isinstance(regressions, GateCheck)
    assert (regressions.name, regressions.outcome) == ("check_regressions", "deny")
    assert regressions.details["event_ids"] == [event.event_id]
    known = spec_gate.check_known_failures("assets")
    assert (known.name, known.outcome) == ("check_known_failures", "deny")
    assert known.details["patterns"][0]["occurrences"] == 3
    assert check_regressions("v043", "generate-assets").outcome == "pass"  # a step name is fine


def test_single_diff_checks_read_and_never_record(root: Path) -> None:
    """Alone, the diff checks compare with the recorded baseline; they never record one, and
    never acknowledge a change (only the gate and ``gate ack`` do)."""
    store = get_store()
    first = check_diff_policies("v1", "assets")
    assert (first.outcome, first.reason) == (
        "pass",
        "no baseline yet for this video (the gate records one on its first run)",
    )
    assert check_diff_soul("v1", "assets").reason.startswith(
        "no baseline yet for dzine_producer's SOUL"
    )
    assert store.load_gate_state("v1") is None
    learning_gate("v1", "assets")
    recorded = store.load_gate_state("v1")
    (root / "policies.py").write_text("LEARNING_TOMBSTONE_GRACE_DAYS = 14\n")
    for _ in range(2):
        changed = check_diff_policies("v1", "assets")
        assert (changed.outcome, changed.passed) == ("deny", False)
        assert changed.reason == "policies changed: LEARNING_TOMBSTONE_GRACE_DAYS: 30 → 14"
        assert changed.clear == ['rayvault-learn gate ack v1 assets --note "<what you reviewed>"']
    assert store.load_gate_state("v1") == recorded
    assert check_diff_soul("v1", "assets").outcome == "pass"
