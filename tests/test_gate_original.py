"""Gate state written by the original system (``state/learning_gate/<vid>.json`` holding
``{"policies_sha", "soul_shas", "last_passed"}``, SHA-1 hashes of the files' bytes, no
``video_id``): read as a baseline by the gate, the single checks, ``doctor`` and ``store import``
into PostgreSQL, never reported corrupt, and upgraded in place by the next gate run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning.doctor import check_root
from rayvault.learning.gate import acknowledge, check_diff_policies, check_diff_soul, learning_gate
from rayvault.learning.store import FileStore, Store
from rayvault.learning.store.postgres import PostgresStore
from rayvault.learning.store.transfer import GATE_STATE, import_root

from .conftest import Clock, PgSchemas

POLICIES = "# the original project's policies\nLEARNING_GATE_ENABLED = True\n"
SOUL = "# Dzine producer\n\n- Keep the 3/4 reference angle.\n"


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def original_root(root: Path) -> dict[str, object]:
    """A data root as the original system left it: its policies at ``rayvault/policies.py``, a
    SOUL in the team layout, and gate state for v042 in the original's exact format."""
    (root / "rayvault").mkdir()
    (root / "rayvault/policies.py").write_bytes(POLICIES.encode())
    (root / "agents/team").mkdir(parents=True)
    (root / "agents/team/SOUL_dzine_producer.md").write_bytes(SOUL.encode())
    state = {
        "policies_sha": sha1(POLICIES.encode()),
        "soul_shas": {"dzine_producer": sha1(SOUL.encode()), "researcher": ""},
        "last_passed": {"stage": "assets", "timestamp": "2026-02-18T10:00:00.123456+00:00"},
    }
    folder = root / "state/learning_gate"
    folder.mkdir(parents=True)
    (folder / "v042.json").write_text(json.dumps(state, indent=2))
    return state


def install(store: Store, root: Path) -> dict[str, object]:
    """The original root, in ``store`` (PostgreSQL: through ``store import``, as a user would)."""
    state = original_root(root)
    if not isinstance(store, FileStore):
        import_root(store, root)
    return state


def check(result, name):  # type: ignore[no-untyped-def]
    return next(c for c in result.checks if c.name == name)


def assert_upgraded(store: Store, video_id: str = "v042") -> dict[str, object]:
    state = store.load_gate_state(video_id)
    assert state is not None
    data = state.to_dict()
    assert data["video_id"] == video_id
    for legacy in ("policies_sha", "soul_shas", "last_passed"):
        assert legacy not in data
    return data


def test_original_state_is_a_baseline_and_is_upgraded_in_place(
    root: Path, store: Store, clock: Clock
) -> None:
    """Nothing changed since the original's last run: the gate passes, and the state is
    rewritten in the current shape (its last pass kept as a run)."""
    install(store, root)
    result = learning_gate("v042", "assets", store=store)
    assert result.blocked is False, result.reason
    assert check(result, "check_diff_policies").reason == (
        "policies file unchanged since the original system's last run (baseline upgraded)"
    )
    assert check(result, "check_diff_soul").reason == (
        "dzine_producer's SOUL unchanged since the original system's last run (baseline upgraded)"
    )
    data = assert_upgraded(store)
    assert data["policies"]["values"]["LEARNING_GATE_ENABLED"] is True
    assert len(data["souls"]["dzine_producer"]["sha256"]) == 64
    # researcher's baseline ("" = no SOUL file) is kept for its own stage, compared by SHA-1
    assert data["souls"]["researcher"] == {"path": None, "sha1": "", "from": "original"}
    assert data["runs"][0] == {
        "at": "2026-02-18T10:00:00.123456Z",
        "stage": "assets",
        "blocked": False,
        "failed": [],
        "from": "original",
    }
    assert data["runs"][1]["at"] == "2026-02-19T12:00:00.000000Z"
    assert check(learning_gate("v042", "research", store=store), "check_diff_soul").reason == (
        "researcher's SOUL unchanged since the original system's last run (baseline upgraded)"
    )


def test_original_baseline_tells_that_something_changed(root: Path, store: Store) -> None:
    """A policies or SOUL edit since the original's last run blocks once, saying that only a
    hash was kept; re-running (or ``gate ack``) accepts it."""
    install(store, root)
    (root / "rayvault/policies.py").write_text(POLICIES + "LEARNING_TOMBSTONE_GRACE_DAYS = 14\n")
    soul = root / "agents/team/SOUL_dzine_producer.md"
    soul.write_text(SOUL + "- New rule.\n")
    result = learning_gate("v042", "assets", store=store)
    assert result.blocked is True
    policies = check(result, "check_diff_policies")
    assert policies.outcome == "deny"
    assert policies.reason.startswith("policies file changed since the original system's last")
    assert "which constant changed cannot be told" in policies.reason
    assert policies.clear == ['rayvault-learn gate ack v042 assets --note "<what you reviewed>"']
    assert check(result, "check_diff_soul").reason == (
        "dzine_producer's SOUL changed since the original system's last gate run "
        "(it kept only a SHA-1 of the file: no diff)"
    )
    assert learning_gate("v042", "assets", store=store).blocked is False


def test_ack_upgrades_an_original_state(root: Path, store: Store) -> None:
    install(store, root)
    (root / "agents/team/SOUL_dzine_producer.md").write_text(SOUL + "- New.\n")
    ack = acknowledge("v042", "assets", note="reviewed", store=store)
    assert ack.soul is not None and "kept only a SHA-1" in ack.soul
    assert_upgraded(store)
    assert learning_gate("v042", "assets", store=store).blocked is False


@pytest.mark.files_only("the original's file, byte for byte")
def test_single_checks_read_an_original_state_without_writing(root: Path) -> None:
    original_root(root)
    path = root / "state/learning_gate/v042.json"
    before = path.read_bytes()
    assert check_diff_policies("v042", "assets").outcome == "pass"
    assert check_diff_soul("v042", "assets").outcome == "pass"
    (root / "agents/team/SOUL_dzine_producer.md").write_text(SOUL + "- New.\n")
    assert check_diff_soul("v042", "assets").outcome == "deny"
    assert check_diff_soul("v042", "assets").outcome == "deny"  # nothing was acknowledged
    assert path.read_bytes() == before


@pytest.mark.files_only("the original's files in a file store")
def test_doctor_accepts_original_state(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original_root(root)
    report = check_root()
    assert [f.code for f in report.findings if f.code.startswith("gate-state")] == []
    assert main(["doctor", "--json"]) == 0, capsys.readouterr()
    assert "gate-state-corrupt" not in capsys.readouterr().out


@pytest.mark.postgres
def test_store_import_into_postgres_accepts_original_state(
    root: Path, tmp_path: Path, pg_schemas: PgSchemas
) -> None:
    """``store import`` of an original root: the gate state is loaded as it is, doctor finds
    nothing wrong with it, and the gate on PostgreSQL reads it as a baseline and upgrades it."""
    state = original_root(root)
    pg = PostgresStore(root, pg_schemas.new_url())
    summary = import_root(pg, root)
    assert summary.counts[GATE_STATE] == 1
    loaded = pg.load_gate_state("v042")
    assert loaded is not None and loaded.get("policies_sha") == state["policies_sha"]
    assert [f.code for f in check_root(store=pg).findings if f.code.startswith("gate-state")] == []
    result = learning_gate("v042", "assets", store=pg)
    assert result.blocked is False, result.reason
    assert_upgraded(pg)
    pg.close()


@pytest.mark.slow
@pytest.mark.files_only("a file where a folder must be")
def test_a_file_in_place_of_the_gate_folder_is_one_error_line(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import subprocess
    import sys

    (root / "state").mkdir()
    (root / "state/learning_gate").write_text("not a folder")
    for args in (["gate", "v1", "assets"], ["gate", "check", "v1", "assets"]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"Error: cannot write to the file store at {root}: ")
        assert f"{root}/state/learning_gate is a file where the layout has a folder" in err
        assert "Traceback" not in err
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "tools/learning_gate.py", "v1", "assets"],
        capture_output=True, text=True, cwd=repo, check=False,
        env={**os.environ, "RAYVAULT_ROOT": str(root)},
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines()[0].startswith("Error: ")
    assert "Traceback" not in done.stderr
    assert (root / "state/learning_gate").read_text() == "not a folder"
    assert FileStore(root).gate_dir.is_file()
