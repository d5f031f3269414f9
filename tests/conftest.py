"""Hermetic tests: every test gets its own data root under ``tmp_path``, a scrubbed environment
(no ``RAYVAULT_*`` variables from the developer's shell), fresh policies and stores, and the real
clock unless it fixes one."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rayvault.learning import _time
from rayvault.learning.store import FileStore, reset_store
from rayvault.policies import reset_policies_cache

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RAYVAULT_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in list(os.environ):
        if name.startswith("RAYVAULT_") and name != "RAYVAULT_SHARED_DATA":
            monkeypatch.delenv(name)
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("RAYVAULT_ROOT", str(root))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    reset_store()
    reset_policies_cache()
    _time.set_clock(None)
    yield root
    reset_store()
    reset_policies_cache()
    _time.set_clock(None)


@pytest.fixture
def root(hermetic: Path) -> Path:
    """The test's data root (also ``RAYVAULT_ROOT``)."""
    return hermetic


@pytest.fixture
def store(root: Path) -> Iterator[FileStore]:
    s = FileStore(root)
    yield s
    s.close()


class Clock:
    """A fixed, steppable clock for tests of windows, staleness and grace periods."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        _time.set_clock(lambda: self.now)

    def set(self, value: datetime) -> None:
        self.now = value

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 2, 19, 12, 0, 0, tzinfo=UTC))


@pytest.fixture
def shared_data() -> Path:
    """The real skill-graph notes and SOUL files in ``../shared/data`` (read-only: copy them)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (set RAYVAULT_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def souls(root: Path, shared_data: Path) -> Path:
    """The real SOUL files copied into the data root's ``agents/`` folder."""
    shutil.copytree(shared_data / "agents", root / "agents", dirs_exist_ok=True)
    return root / "agents"


def event_kwargs(**overrides: object) -> dict[str, object]:
    """The spec's example event, with overrides."""
    base: dict[str, object] = {
        "run_id": "v042-run-001",
        "severity": "FAIL",
        "component": "assets",
        "symptom": "Image hallucination in Product Background",
        "root_cause": "Changed reference angle from 3/4 to top-down",
        "fix_applied": "Reverted to original 3/4 angle",
        "verification": "Re-generated, product shape correct",
        "video_id": "v042",
        "agent": "dzine_producer",
    }
    base.update(overrides)
    return base
