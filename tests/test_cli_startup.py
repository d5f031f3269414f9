"""Start-up of ``rayvault-learn`` as a new process (issue 15 item 4): what the plain gate and the
top-level ``--help`` import, and that the kept ``--help`` text is the Typer app's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rayvault.cli import _help_fast, main
from rayvault.cli._help_text import TOP_HELP
from rayvault.learning import create_event, log_error

from .conftest import event_kwargs

REPO = Path(__file__).resolve().parents[1]
#: Prints, after running the CLI in-process, its exit code, the heavy packages it imported and
#: whether pydantic ran its plugin discovery (``_plugins`` is filled by the discovery).
_PROBE = """
import json, sys
# Jinja2 (the report's templates) and the web extra are imported only to render or serve.
HEAVY = {"typer", "rich", "click", "pydantic", "jinja2", "starlette", "uvicorn"}
from rayvault.cli import main
code = main(sys.argv[1:])
loader = sys.modules.get("pydantic.plugin._loader")
sys.stderr.write("\\n" + json.dumps({
    "code": code,
    "heavy": sorted({m.split(".")[0] for m in sys.modules} & HEAVY),
    "models": "rayvault.learning.models" in sys.modules,
    "plugins_discovered": loader is not None and loader._plugins is not None,
}))
"""


def python(
    code: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -c code args…`` in a new process, from the repository, in a plain
    environment unless ``env`` is given."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=REPO,
        env=env if env is not None else _help_fast.plain_environment(),
        check=False,
    )


def probe(*args: str, env: dict[str, str] | None = None) -> tuple[str, dict[str, object]]:
    """Run the CLI in a new process with ``args``: its stdout and what it imported."""
    done = python(_PROBE, *args, env=env)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return done.stdout, report


@pytest.mark.slow
def test_the_kept_help_is_what_the_typer_app_prints() -> None:
    # Regenerate with `python -m rayvault.cli._help_fast --write` after changing a command.
    assert _help_fast.render_typer_help() == TOP_HELP
    assert TOP_HELP.splitlines()[1].strip() == "Usage: rayvault-learn [OPTIONS] COMMAND [ARGS]..."


@pytest.mark.slow
@pytest.mark.parametrize("form", ["--help", "-h"])
def test_help_to_a_pipe_imports_neither_typer_nor_pydantic(form: str) -> None:
    out, report = probe(form)
    assert out == TOP_HELP
    assert report == {
        "code": 0,
        "heavy": [],
        "models": False,
        "plugins_discovered": False,
    }


@pytest.mark.slow
def test_version_imports_neither_typer_nor_pydantic() -> None:
    from rayvault import __version__

    out, report = probe("--version")
    assert out == f"rayvault-learn {__version__}\n"
    assert report == {"code": 0, "heavy": [], "models": False, "plugins_discovered": False}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "value"), [("COLUMNS", "100"), ("FORCE_COLOR", "1"), ("TERMINAL_WIDTH", "100")]
)
def test_help_goes_through_typer_when_the_layout_differs(variable: str, value: str) -> None:
    out, report = probe("--help", env={**_help_fast.plain_environment(), variable: value})
    assert report["code"] == 0
    assert "typer" in report["heavy"]
    assert "Usage:" in out and "rayvault-learn" in out
    assert out != TOP_HELP  # 100 columns, or colours


def test_fast_help_only_for_the_plain_top_level_form(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in _help_fast.LAYOUT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for form in (["--help"], ["-h"]):  # -h is --help (issue 16)
        assert _help_fast.run_help_fast(form) == 0
        assert capsys.readouterr().out == TOP_HELP
    for args in (["gate", "--help"], ["--help", "--json"], [], ["-h", "-h"], ["gate", "-h"]):
        assert _help_fast.run_help_fast(args) is None
    monkeypatch.setenv("COLUMNS", "80")
    assert _help_fast.run_help_fast(["--help"]) is None
    assert capsys.readouterr().out == ""


def test_help_through_main_with_a_layout_variable_is_typers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The test fixture sets COLUMNS=200: the Typer app renders the help, 200 columns wide.
    assert os.environ["COLUMNS"] == "200"
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out != TOP_HELP
    assert max(len(line) for line in out.splitlines()) > 80


@pytest.mark.slow
def test_the_plain_gate_imports_neither_typer_nor_pydantic(root: Path) -> None:
    # An open FAIL event of the stage and a rule in its agent's memory: every file the gate
    # reads exists, and the gate blocks (its longest output).
    create_event(**event_kwargs(video_id="v042", verification=""))  # type: ignore[arg-type]
    env = _help_fast.plain_environment()
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    for _ in range(2):  # the first run records the baselines, the second reads them
        out, report = probe("--root", str(root), "gate", "v042", "assets", env=env)
        assert out.startswith("BLOCKED: ")
        assert "[FAIL] check_regressions: 1 unresolved FAIL/BLOCKER event" in out
        assert report == {"code": 2, "heavy": [], "models": False, "plugins_discovered": False}
    out, report = probe("--root", str(root), "gate", "v042", "assets", "--json", env=env)
    assert json.loads(out)["blocked"] is True
    assert report == {"code": 2, "heavy": [], "models": False, "plugins_discovered": False}


@pytest.mark.slow
def test_the_gate_reads_a_file_its_hand_check_refuses_with_the_records(root: Path) -> None:
    # A gate state the hand check refuses is read through the records: a corrupt one is
    # reported as before (by name, and left as it is), one that is well-formed again is read
    # without pydantic.
    create_event(**event_kwargs(video_id="v042", verification=""))  # type: ignore[arg-type]
    env = _help_fast.plain_environment()
    out, report = probe("--root", str(root), "gate", "v042", "assets", env=env)
    assert report["heavy"] == [] and report["code"] == 2
    state_path = root / "state" / "learning_gate" / "v042.json"
    state = json.loads(state_path.read_text(encoding="utf-8"))
    state["updated"] = 12  # not a timestamp: refused by both
    state_path.write_text(json.dumps(state), encoding="utf-8")
    out, report = probe("--root", str(root), "gate", "v042", "assets", env=env)
    assert report["code"] == 1 and "models" in report and report["models"] is True
    assert json.loads(state_path.read_text(encoding="utf-8"))["updated"] == 12  # not rewritten
    state["updated"] = None
    state["runs"] = [{"at": "x", "stage": "assets"}]
    state_path.write_text(json.dumps(state), encoding="utf-8")
    out, report = probe("--root", str(root), "gate", "v042", "assets", env=env)
    assert out.startswith("BLOCKED: ")
    assert report == {"code": 2, "heavy": [], "models": False, "plugins_discovered": False}


@pytest.mark.slow
def test_a_caller_choosing_pydantic_plugins_is_respected(root: Path) -> None:
    # The plain gate imports no pydantic; `gate ack` goes through the Typer app and the records.
    create_event(**event_kwargs(video_id="v041"))  # type: ignore[arg-type]
    env = {**_help_fast.plain_environment(), "PYDANTIC_DISABLE_PLUGINS": "0"}
    out, report = probe("--root", str(root), "gate", "ack", "v042", "assets", env=env)
    assert out.startswith("Nothing to acknowledge") and report["code"] == 0
    assert report["plugins_discovered"] is True


#: Runs the CLI in-process like ``_PROBE``, then prints every module the process imported.
_MODULES_PROBE = """
import json, sys
from rayvault.cli import main
code = main(sys.argv[1:])
sys.stderr.write("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
#: What a cold ``rayvault-learn gate VIDEO STAGE`` on a file store must not import (issue 15
#: item 4: each costs the process more than the gate's own run).
_NOT_ON_THE_GATE_PATH = {
    "orjson", "dataclasses", "inspect", "logging", "pydantic", "typer", "rich", "click",
    "_hashlib", "shutil", "ctypes", "rayvault.learning.models",
    "rayvault.learning.store.files.store", "rayvault.learning.store.base",
    # The C types and driver, without their modules' pure-Python set-up (1.7 ms together), and
    # the names of dated records (their patterns compiled on import).
    "datetime", "sqlite3", "rayvault.learning.store._names",
}  # fmt: skip


def _cold_gate(root: Path, *args: str) -> tuple[str, int, set[str]]:
    done = python(_MODULES_PROBE, "--root", str(root), "gate", *args)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return done.stdout, report["code"], set(report["modules"])


def _typer_gate(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[str, int]:
    from rayvault.cli.app import run

    capsys.readouterr()
    code = run(["--root", str(root), "gate", *args])
    return capsys.readouterr().out, code


@pytest.mark.slow
def test_the_cold_gate_imports_only_what_it_needs_and_prints_what_the_app_prints(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Open FAIL events of the stage (one of this video), a rule in the agent's memory, and a
    # failure seen three times with open occurrences: every check reads something, and blocks.
    for video in ("v040", "v041", "v042"):
        create_event(**event_kwargs(video_id=video, verification=""))  # type: ignore[arg-type]
    assert (root / "state" / "agents" / "dzine_producer" / "memory_active.json").is_file()
    # The first run records the baselines; a writer catches the index up after its write, so
    # even the gate right after it reads the index as it is, without the file store.
    out, code, modules = _cold_gate(root, "v042", "assets")
    assert code == 2 and out.startswith("BLOCKED: ")
    assert modules & _NOT_ON_THE_GATE_PATH == set()
    log_error("v043", "assets", "Timeout after 30s on B0AB")  # an error-log write: the same
    out, code, modules = _cold_gate(root, "v042", "assets")
    assert modules & _NOT_ON_THE_GATE_PATH == set()
    assert "[FAIL] check_regressions: 1 unresolved FAIL/BLOCKER event" in out
    assert "check_known_failures: 1 recurring failure" in out
    assert "[PASS] check_diff_policies: policies unchanged" in out
    assert (out, code) == _typer_gate(capsys, root, "v042", "assets")
    json_out, code, modules = _cold_gate(root, "v042", "assets", "--json")
    assert code == 2 and json.loads(json_out)["blocked"] is True
    # An index behind its logs (here: removed) is caught up by the file store, as always: the
    # same answer, with the file store's imports.
    shutil.rmtree(root / "state" / "cache")
    behind, code, modules = _cold_gate(root, "v042", "assets")
    assert code == 2 and "rayvault.learning.store.files.store" in modules
    assert behind == out
    again, code, modules = _cold_gate(root, "v042", "assets")
    assert again == out and modules & _NOT_ON_THE_GATE_PATH == set()


@pytest.mark.slow
def test_the_cold_gate_of_a_video_without_failures_passes_like_the_app(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    create_event(**event_kwargs(video_id="v041"))  # type: ignore[arg-type]
    _cold_gate(root, "v050", "assets")  # the baselines; the index caught up
    out, code, modules = _cold_gate(root, "v050", "assets")
    assert code == 0 and out.startswith("PASSED: ")
    assert modules & _NOT_ON_THE_GATE_PATH == set()
    assert (out, code) == _typer_gate(capsys, root, "v050", "assets")


#: The console script's entry (``cli.script``) with an ``atexit`` handler that says whether the
#: interpreter's tear-down ran.
_SCRIPT_PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("torn down\\n"))
from rayvault.cli import script
sys.exit(script())
"""


@pytest.mark.slow
def test_the_console_script_ends_a_file_store_gate_once_its_output_is_flushed(
    root: Path,
) -> None:
    """``rayvault-learn`` is ``cli.script``: a gate on a file store leaves without the tear-down
    (its output whole through a pipe, its exit code kept); other commands end as usual."""
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "rayvault-learn"]
    assert script.value == "rayvault.cli:script"
    for video in ("v040", "v041", "v042"):
        create_event(**event_kwargs(video_id=video, verification=""))  # type: ignore[arg-type]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return python(_SCRIPT_PROBE, *args)

    for _ in range(2):  # the first run catches the index up through the file store
        done = run("--root", str(root), "gate", "v042", "assets")
        assert done.returncode == 2 and done.stdout.startswith("BLOCKED: ")
        assert done.stdout.endswith("\n") and "to clear: rayvault-learn" in done.stdout
        assert done.stderr == f"root: {root}\n"  # flushed, and no tear-down
    done = run("--root", str(root), "gate", "v042", "assets", "--json")
    assert done.returncode == 2 and json.loads(done.stdout)["blocked"] is True
    assert "torn down" not in done.stderr
    done = run("--root", str(root), "gate", "v050", "assets")
    assert done.returncode == 0 and done.stdout.startswith("PASSED: ")
    for args in (["--version"], ["--root", str(root), "events", "list"]):
        done = run(*args)
        assert done.returncode == 0 and done.stderr.endswith("torn down\n"), args
    done = run("--root", str(root / "missing"), "gate", "v042", "assets")
    assert done.returncode == 1 and done.stderr.startswith("Error: ")
