"""The optional extras cost nothing when absent (issue 17): with ``opentelemetry`` and ``mcp``
blocked from importing, the package, ``run_stage``, the gate and the CLI work, and
``rayvault-learn mcp`` says what to install; with them installed, ``import rayvault.learning``
and the gate still import neither (``run_stage`` imports OpenTelemetry on its first call)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXTRAS = ("opentelemetry", "mcp", "mcp_types")

_BLOCK = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {extras!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Blocked())
"""

_REPORT = """
import json, sys
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({extras!r}))
sys.stderr.write("\\n" + json.dumps({{"loaded": loaded, **result}}) + "\\n")
"""


def probe(code: str, *, block: bool) -> dict[str, object]:
    """Run ``code`` (which fills the dict ``result``) in a new Python, the extras blocked or
    not; what it reported and the extras it had imported."""
    script = (_BLOCK.format(extras=EXTRAS) if block else "") + "result = {}\n" + code
    script += _REPORT.format(extras=EXTRAS)
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env=dict(os.environ),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stderr.strip().splitlines()[-1])
    report["stderr"] = done.stderr
    return report


_LOOP = """
import io, contextlib
import rayvault.learning
from rayvault.learning import learning_gate, list_events, run_stage
from rayvault.learning import _telemetry
from rayvault.learning.loop import Diagnosis

def broken(ctx):
    raise ValueError("render farm unreachable")

ok = run_stage("v1", "assets", lambda ctx: "done")
failed = run_stage("v2", "assets", broken, on_failure="return")
gate = learning_gate("v2", "assets")
from rayvault.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    gate_code = main(["gate", "v2", "assets"])
result.update(
    ok=ok.outcome, value=ok.value, failed=failed.outcome, events=len(list_events()),
    gate_blocked=gate.blocked, gate_code=gate_code, gate_out=out.getvalue().splitlines()[0],
    telemetry=_telemetry.enabled(),
)
"""


def test_the_package_run_stage_and_the_gate_work_with_the_extras_blocked(root: Path) -> None:
    report = probe(_LOOP, block=True)
    assert report["loaded"] == []
    assert report["ok"] == "succeeded" and report["value"] == "done"
    assert report["failed"] == "failed" and report["events"] == 1
    assert report["gate_blocked"] is True and report["gate_code"] == 2
    assert str(report["gate_out"]).startswith("BLOCKED: ")
    assert report["telemetry"] is False


def test_the_mcp_command_without_the_extra_says_what_to_install(root: Path) -> None:
    code = """
from rayvault.cli import main
result["code"] = main(["mcp", "--root", "."])
"""
    report = probe(code, block=True)
    assert report["code"] == 1 and report["loaded"] == []
    assert "install rayvault-learning[mcp]" in str(report["stderr"])


def test_importing_the_package_and_the_gate_import_no_extra(root: Path) -> None:
    """Installed but not needed: ``import rayvault.learning``, the API's gate and the CLI's
    gate leave both extras unimported; ``run_stage`` imports OpenTelemetry (only the API) on
    its first call, never the MCP SDK."""
    code = """
import io, contextlib, sys
import rayvault.learning
from rayvault.learning import learning_gate
learning_gate("v1", "assets")
from rayvault.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    result["gate_code"] = main(["gate", "v1", "assets"])
result["before"] = sorted({m.split(".")[0] for m in sys.modules} & {"opentelemetry", "mcp"})
from rayvault.learning import run_stage
run_stage("v1", "assets", lambda ctx: None)
result["sdk"] = "opentelemetry.sdk" in sys.modules
"""
    report = probe(code, block=False)
    assert report["gate_code"] == 0
    assert report["before"] == []
    assert report["loaded"] == ["opentelemetry"]
    assert report["sdk"] is False
