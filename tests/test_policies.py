"""Policies: the spec's defaults, overridden by policies.py at the data root and by RAYVAULT_*."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from rayvault import policies as policy_module
from rayvault.learning import ConfigError, create_event
from rayvault.learning.store import FileStore
from rayvault.policies import PolicyError, load_policies

from .conftest import event_kwargs


def test_spec_defaults(root: Path) -> None:
    p = load_policies(root)
    assert p.LEARNING_GATE_ENABLED is True
    assert p.LEARNING_REVISIT_INTERVAL_DAYS == 7
    assert p.LEARNING_ARCHIVE_RETENTION_DAYS == 90
    assert p.LEARNING_MAX_ACTIVE_RULES_PER_AGENT == 50
    assert p.LEARNING_PROMOTION_THRESHOLD_OCCURRENCES == 2
    assert p.LEARNING_TOMBSTONE_GRACE_DAYS == 30
    assert p.LEARNING_STAGE_AGENTS["assets"] == "dzine_producer"
    assert p.LEARNING_STAGE_AGENTS["tts"] == "publisher"
    assert p.LEARNING_STAGE_AGENTS["day"] == "market_scout"
    assert p.file is None and p.sources == {}
    assert policy_module.LEARNING_MAX_ACTIVE_RULES_PER_AGENT == 50
    assert p.LEARNING_EFFICACY_MIN_DELIVERIES == 5
    assert p.LEARNING_EFFICACY_MAX_RECURRENCE_RATE == 0.5


def test_efficacy_thresholds_from_file_and_environment(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ineffective-rule thresholds: an int ≥ 1 and a share in (0, 1] (1 and an integer 1
    are accepted; a bool is not a number)."""
    (root / "policies.py").write_text(
        "LEARNING_EFFICACY_MIN_DELIVERIES = 3\nLEARNING_EFFICACY_MAX_RECURRENCE_RATE = 1\n"
    )
    p = load_policies(root)
    assert p.LEARNING_EFFICACY_MIN_DELIVERIES == 3
    assert p.LEARNING_EFFICACY_MAX_RECURRENCE_RATE == 1.0
    assert isinstance(p.LEARNING_EFFICACY_MAX_RECURRENCE_RATE, float)
    monkeypatch.setenv("RAYVAULT_LEARNING_EFFICACY_MAX_RECURRENCE_RATE", "0.25")
    assert load_policies(root).LEARNING_EFFICACY_MAX_RECURRENCE_RATE == 0.25
    (root / "policies.py").write_text("LEARNING_EFFICACY_MAX_RECURRENCE_RATE = True\n")
    monkeypatch.delenv("RAYVAULT_LEARNING_EFFICACY_MAX_RECURRENCE_RATE")
    with pytest.raises(PolicyError, match="expected a number"):
        load_policies(root)


def test_policies_file_overrides_and_is_not_executed(root: Path) -> None:
    """Literal assignments are read; nothing in the file runs; unrelated constants are ignored."""
    marker = root / "executed"
    (root / "policies.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "LEARNING_MAX_ACTIVE_RULES_PER_AGENT = 5\n"
        "LEARNING_GATE_ENABLED: bool = False\n"
        "LEARNING_STAGE_AGENTS = {'assets': 'image_bot'}\n"
        "UNRELATED_TIMEOUT = 5 * 60\n"
    )
    p = load_policies(root)
    assert not marker.exists()
    assert p.LEARNING_MAX_ACTIVE_RULES_PER_AGENT == 5
    assert p.LEARNING_GATE_ENABLED is False
    assert dict(p.LEARNING_STAGE_AGENTS) == {"assets": "image_bot"}
    assert p.sources == {
        "LEARNING_MAX_ACTIVE_RULES_PER_AGENT": "policies.py",
        "LEARNING_GATE_ENABLED": "policies.py",
        "LEARNING_STAGE_AGENTS": "policies.py",
    }
    assert p.file == root / "policies.py" and p.file_sha256 is not None


def test_environment_wins_over_the_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "policies.py").write_text("LEARNING_TOMBSTONE_GRACE_DAYS = 10\n")
    monkeypatch.setenv("RAYVAULT_LEARNING_TOMBSTONE_GRACE_DAYS", "3")
    monkeypatch.setenv("RAYVAULT_LEARNING_GATE_ENABLED", "off")
    monkeypatch.setenv("RAYVAULT_LEARNING_STAGE_ALIASES", '{"fetch": "research"}')
    p = load_policies(root)
    assert p.LEARNING_TOMBSTONE_GRACE_DAYS == 3
    assert p.LEARNING_GATE_ENABLED is False
    assert dict(p.LEARNING_STAGE_ALIASES) == {"fetch": "research"}
    assert (
        p.sources["LEARNING_TOMBSTONE_GRACE_DAYS"] == "env RAYVAULT_LEARNING_TOMBSTONE_GRACE_DAYS"
    )


def test_file_changes_are_picked_up(root: Path) -> None:
    path = root / "policies.py"
    path.write_text("LEARNING_REVISIT_INTERVAL_DAYS = 7\n")
    assert load_policies(root).LEARNING_REVISIT_INTERVAL_DAYS == 7
    path.write_text("LEARNING_REVISIT_INTERVAL_DAYS = 14  # a longer window\n")
    assert load_policies(root).LEARNING_REVISIT_INTERVAL_DAYS == 14


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "many", "expected an integer"),
        ("LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "0", "must be at least 1"),
        ("LEARNING_GATE_ENABLED", "maybe", "expected true or false"),
        ("LEARNING_STAGE_AGENTS", '["x"]', "expected a mapping"),
        ("LEARNING_STAGE_AGENTS", "{bad json", "not valid JSON"),
        ("LEARNING_EFFICACY_MIN_DELIVERIES", "0", "must be at least 1"),
        ("LEARNING_EFFICACY_MIN_DELIVERIES", "2.5", "expected an integer"),
        ("LEARNING_EFFICACY_MAX_RECURRENCE_RATE", "0", r"must be in \(0, 1\]"),
        ("LEARNING_EFFICACY_MAX_RECURRENCE_RATE", "1.01", r"must be in \(0, 1\]"),
        ("LEARNING_EFFICACY_MAX_RECURRENCE_RATE", "-0.2", r"must be in \(0, 1\]"),
        ("LEARNING_EFFICACY_MAX_RECURRENCE_RATE", "nan", r"must be in \(0, 1\]"),
        ("LEARNING_EFFICACY_MAX_RECURRENCE_RATE", "often", "expected a number"),
    ],
)
def test_bad_environment_values_are_named(
    root: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(f"RAYVAULT_{name}", value)
    with pytest.raises(PolicyError, match=message):
        load_policies(root)
    with pytest.raises(ConfigError, match=message):
        create_event(**event_kwargs(), store=FileStore(root))  # type: ignore[arg-type]


def test_bad_policies_file_is_named(root: Path) -> None:
    (root / "policies.py").write_text("LEARNING_MAX_ACTIVE_RULES_PER_AGENT = compute()\n")
    with pytest.raises(PolicyError, match=r"policies.py:1: LEARNING_MAX_ACTIVE_RULES_PER_AGENT"):
        load_policies(root)
    (root / "policies.py").write_text("def broken(:\n")
    with pytest.raises(PolicyError, match="is not valid Python"):
        load_policies(root)


def test_values_are_plain_for_comparison(root: Path) -> None:
    values = load_policies(root).values()
    assert values["LEARNING_SOUL_PATHS"] == [
        "agents/{agent}/SOUL.md",
        "agents/team/SOUL_{agent}.md",
    ]
    assert values["LEARNING_STAGE_AGENTS"]["research"] == "researcher"
    assert list(values) == list(policy_module.POLICY_NAMES)


def test_module_assignment_changes_the_default(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``rayvault.policies.LEARNING_GATE_ENABLED = False`` at run time (as the original's users
    and tests did) disables the gate through the spec path and the CLI; undoing it enables it
    again: the cache notices both."""
    import tools.learning_gate
    from rayvault.cli import main

    assert tools.learning_gate.learning_gate("v1", "assets").enabled
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policy_module, "LEARNING_GATE_ENABLED", False)
        result = tools.learning_gate.learning_gate("v1", "assets")
        assert not result.enabled and not result.blocked
        assert "LEARNING_GATE_ENABLED = False (rayvault.policies)" in result.reason
        assert load_policies(root).sources == {"LEARNING_GATE_ENABLED": "rayvault.policies"}
        capsys.readouterr()
        assert main(["gate", "v1", "assets"]) == 0
        assert "disabled" in capsys.readouterr().out
    assert tools.learning_gate.learning_gate("v1", "assets").enabled
    assert (root / "state/learning_gate/v1.json").is_file()
    assert load_policies(root).sources == {}


def test_module_assignment_yields_to_the_file_and_environment(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module assignment is a default: policies.py and RAYVAULT_* still override it."""
    monkeypatch.setattr(policy_module, "LEARNING_MAX_ACTIVE_RULES_PER_AGENT", 7)
    assert load_policies(root).LEARNING_MAX_ACTIVE_RULES_PER_AGENT == 7
    (root / "policies.py").write_text("LEARNING_MAX_ACTIVE_RULES_PER_AGENT = 9\n")
    assert load_policies(root).LEARNING_MAX_ACTIVE_RULES_PER_AGENT == 9
    monkeypatch.setenv("RAYVAULT_LEARNING_MAX_ACTIVE_RULES_PER_AGENT", "11")
    assert load_policies(root).LEARNING_MAX_ACTIVE_RULES_PER_AGENT == 11


def test_a_map_assigned_and_changed_in_place_is_seen(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain dict assigned to a constant, then changed in place, is read as it is now; the
    effective map stays read-only."""
    aliases = dict(policy_module.LEARNING_STAGE_ALIASES)
    monkeypatch.setattr(policy_module, "LEARNING_STAGE_ALIASES", aliases)
    assert "scrape" not in load_policies(root).LEARNING_STAGE_ALIASES
    aliases["scrape"] = "research"
    effective = load_policies(root).LEARNING_STAGE_ALIASES
    assert effective["scrape"] == "research"
    with pytest.raises(TypeError):
        effective["x"] = "y"  # type: ignore[index]


def test_a_bad_module_assignment_is_named(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value of the wrong type assigned on the module is refused, naming the constant."""
    monkeypatch.setattr(policy_module, "LEARNING_TOMBSTONE_GRACE_DAYS", "soon")
    with pytest.raises(PolicyError, match=r"rayvault\.policies\.LEARNING_TOMBSTONE_GRACE_DAYS"):
        load_policies(root)
    with pytest.raises(ConfigError, match="LEARNING_TOMBSTONE_GRACE_DAYS"):
        create_event(**event_kwargs(), store=FileStore(root))  # type: ignore[arg-type]


def _another_value(value: object) -> object:
    if value in policy_module.CONFLICT_PREFERENCES:  # a choice: another of the choices
        return next(v for v in policy_module.CONFLICT_PREFERENCES if v != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return value / 2
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return value[:-1] if len(value) > 1 else (*value, *value)
    if isinstance(value, Mapping):
        return dict(list(value.items())[:-1])
    raise AssertionError(f"no test value for {value!r}")


@pytest.mark.parametrize("name", policy_module.POLICY_NAMES)
def test_every_constant_is_read_from_the_module(
    root: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Every constant of POLICY_NAMES is taken from the module when policies are resolved (a
    constant added to the list needs nothing more)."""
    value = _another_value(getattr(policy_module, name))
    monkeypatch.setattr(policy_module, name, value)
    effective = load_policies(root)
    assert effective.values()[name] == policy_module._plain(value)
    assert effective.sources == {name: "rayvault.policies"}
