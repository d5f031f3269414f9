"""The Python examples of ``docs/opentelemetry.md`` run as written, each in a new Python (the
global tracer provider can be set once per process), from a folder that is not the
repository's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "opentelemetry.md"

#: The OTLP exporter package is not a dependency of the project: when it is not installed, the
#: OTLP example runs against a stand-in module with the exporter's constructor keywords, which
#: records what it was given and the spans it was handed.
_OTLP_STAND_IN = """
import sys, types
try:
    import opentelemetry.exporter.otlp.proto.http.trace_exporter
except ImportError:
    from opentelemetry.sdk.trace.export import SpanExportResult

    class OTLPSpanExporter:
        made = []

        def __init__(self, endpoint=None, headers=None, timeout=None, **others):
            self.endpoint, self.spans = endpoint, []
            OTLPSpanExporter.made.append(self)

        def export(self, spans):
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

        def force_flush(self, timeout_millis=30000):
            return True

    name = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    module = types.ModuleType(name)
    module.OTLPSpanExporter = OTLPSpanExporter
    parts = name.split(".")
    for i in range(2, len(parts)):
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    sys.modules[name] = module
"""


def blocks() -> list[str]:
    found = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(found) == 2, "docs/opentelemetry.md: the in-memory and the OTLP examples"
    return found


def run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_the_in_memory_example_runs(tmp_path: Path) -> None:
    done = run(blocks()[0], tmp_path)  # its asserts are the test
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "rayvault.attempt",
        "rayvault.attempt",
        "rayvault.stage",
    ]


def test_the_otlp_example_runs_and_exports_the_stage_spans(tmp_path: Path) -> None:
    """The set-up as written, then a stage run in place of ``# ... run your stages ...``: the
    exporter receives its spans when the provider shuts down."""
    setup, end = blocks()[1].split("# ... run your stages ...")
    stage = """
import tempfile
from rayvault.learning import open_store, run_stage
run_stage("v1", "assets", lambda ctx: "ok", store=open_store(tempfile.mkdtemp()))
"""
    check = """
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
if hasattr(OTLPSpanExporter, "made"):
    [exporter] = OTLPSpanExporter.made
    assert exporter.endpoint == "http://localhost:4318/v1/traces"
    names = [s.name for s in exporter.spans]
    assert names == ["rayvault.attempt", "rayvault.stage"], names
    assert exporter.spans[1].resource.attributes["service.name"] == "video-pipeline"
    print("exported", len(names))
"""
    done = run(_OTLP_STAND_IN + setup + stage + end + check, tmp_path)
    if "exported" not in done.stdout:
        pytest.skip("the real OTLP exporter is installed: its export needs a collector")
    assert done.stdout.strip() == "exported 2"
