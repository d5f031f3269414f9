"""Policies: the spec's defaults, overridden by policies.py at the data root and by RAYVAULT_*."""

from __future__ import annotations

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
