"""The data root (issue 10, item 2) and errors at every entry point (item 9).

A wrong root is never created or accepted by a read; every command names the root or store it
used; no command, run in any way, ends in a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import create_event
from rayvault.learning.exceptions import ConfigError, StoreError
from rayvault.learning.store import (
    DATA_ROOT_MARKERS,
    EventQuery,
    FileStore,
    is_data_root,
    root_for_reading,
)

from .conftest import event_kwargs

REPO = Path(__file__).resolve().parents[1]

#: Commands that only read: on a missing root they exit 1 and create nothing.
READS = [
    ["events", "list"],
    ["events", "get", "le-x"],
    ["events", "stats"],
    ["gate", "v1", "research"],
    ["gate", "check", "v1", "research"],
    ["patterns"],
    ["report"],
    ["doctor"],
    ["memory", "show", "dzine_producer"],
    ["memory", "tombstones", "dzine_producer"],
    ["memory", "render", "dzine_producer"],
    ["errors", "list"],
    ["errors", "get", "err-x"],
    ["errors", "patterns"],
    ["errors", "lessons"],
    ["revisit", "--dry-run"],
    ["migrate", "--dry-run"],
    ["soul", "candidates"],
    ["store", "status"],
]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for folders)."""
    return {
        str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes())
        for p in sorted(folder.rglob("*"))
    }


# -- item 2: the data root ---------------------------------------------------------------------


@pytest.mark.both_stores
@pytest.mark.parametrize("command", READS, ids=" ".join)
def test_a_read_on_a_missing_root_exits_1_and_creates_nothing(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent" / "xx"
    before = tree(tmp_path)
    code, out, err = run(capsys, "--root", str(missing), *command)
    assert code == 1
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert errors == [f"Error: data root {missing} does not exist (from --root)"]
    assert "Traceback" not in err
    assert not missing.parent.exists()
    assert tree(tmp_path) == before


def test_a_missing_root_from_the_environment_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAYVAULT_ROOT", str(tmp_path / "typo"))
    code, _, err = run(capsys, "events", "list")
    assert code == 1
    assert f"Error: data root {tmp_path / 'typo'} does not exist (from RAYVAULT_ROOT)" in err
    assert not (tmp_path / "typo").exists()


@pytest.mark.slow
def test_the_fast_gate_refuses_a_missing_root_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for extra in ([], ["--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "rayvault.cli", "gate", "v1", "research", "--root",
             str(missing), *extra],
            capture_output=True, text=True, cwd=tmp_path, check=False,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert done.stdout == ""
        assert done.stderr.splitlines()[0] == (
            f"Error: data root {missing} does not exist (from --root)"
        )
        assert not missing.exists()


def test_a_write_creates_the_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new" / "root"
    code, out, err = run(
        capsys, "--root", str(new), "events", "create", "--severity", "FAIL",
        "--component", "assets", "--symptom", "Image hallucination", "--video", "v1",
    )  # fmt: skip
    assert code == 0, err
    assert (new / "data" / "learning_events.json").is_file()
    assert err.splitlines()[-1] == f"root: {new}"
    code, out, err = run(capsys, "--root", str(new), "events", "list")
    assert code == 0 and "Image hallucination" in out


def test_the_library_reads_a_missing_root_as_empty_and_creates_nothing(tmp_path: Path) -> None:
    from rayvault.learning import check_root, get_weekly_summary
    from rayvault.learning.errors import get_lessons, get_patterns
    from rayvault.learning.memory import load_tombstones, render_rules
    from rayvault.learning.revisit import revisit

    missing = tmp_path / "missing"
    store = FileStore(missing)
    assert store.query_events(EventQuery()) == []
    assert get_patterns(store=store) == []
    assert get_lessons(store=store) == []
    assert get_weekly_summary(store=store) is None
    assert load_tombstones("dzine_producer", store=store).tombstones == []
    assert render_rules("dzine_producer", store=store) == ""
    assert check_root(store=store).findings == []
    revisit("all", None, dry_run=True, store=store)
    assert not missing.exists()
    # The first write creates it; reads then see what was written, through the on-disk index.
    event = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    assert [e.event_id for e in store.query_events(EventQuery())] == [event.event_id]
    assert (missing / "state" / "cache" / "index.sqlite3").is_file()
    store.close()


@pytest.mark.parametrize("marker", DATA_ROOT_MARKERS)
def test_what_counts_as_a_data_root(tmp_path: Path, marker: str) -> None:
    assert not is_data_root(tmp_path)
    assert not is_data_root(tmp_path / "missing")
    if marker.endswith(".py"):
        (tmp_path / marker).write_text("")
    else:
        (tmp_path / marker).mkdir()
    assert is_data_root(tmp_path)


def test_a_current_directory_that_is_not_a_data_root_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    here = tmp_path / "elsewhere"
    here.mkdir()
    monkeypatch.delenv("RAYVAULT_ROOT")
    monkeypatch.chdir(here)
    code, out, err = run(capsys, "events", "list")
    assert code == 1 and out == ""
    assert err.startswith(f"Error: no data root found: looked in the current directory {here}")
    assert "RAYVAULT_ROOT is not set" in err and "hint: pass --root DIR" in err
    with pytest.raises(StoreError, match="looked in the current directory"):
        root_for_reading()
    assert list(here.iterdir()) == []
    # A write makes it one, and says so; then reads work from there.
    code, _, err = run(capsys, "memory", "init", "dzine_producer")
    assert code == 0, err
    assert f"the current directory {here} is not a data root yet" in err
    assert is_data_root(here)
    code, _, err = run(capsys, "memory", "show", "dzine_producer")
    assert code == 0, err
    assert err.splitlines()[-1] == f"root: {here}"


@pytest.mark.both_stores
def test_every_output_names_the_root_or_store(
    root: Path, backend: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    create_event(**event_kwargs())  # type: ignore[arg-type]
    if backend is None:
        expected = f"root: {root}"
        store = "file"
    else:
        from rayvault.learning.store.postgres import parse_url

        target = parse_url(backend)
        store = f"{target.display} (schema {target.schema})"
        expected = f"store: {store}, root: {root}"
    for command in (["events", "list"], ["events", "stats"], ["patterns"], ["report"]):
        code, out, err = run(capsys, *command)
        assert code == 0, err
        assert err.splitlines().count(expected) == 1, (command, err)
    # JSON objects carry it as a field (stderr stays clean) …
    code, out, err = run(capsys, "events", "stats", "--json")
    assert code == 0
    assert json.loads(out)["location"] == {"root": str(root), "store": store}
    assert expected not in err
    # … JSON lists and records (the stored shape) keep their shape; the line goes to stderr.
    code, out, err = run(capsys, "events", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert isinstance(listed, list)
    assert err.splitlines() == [expected]
    code, out, err = run(capsys, "events", "get", listed[0]["event_id"], "--json")
    assert code == 0
    assert json.loads(out) == listed[0]
    assert err.splitlines() == [expected]
    # An error names the root too, after the one Error line.
    code, out, err = run(capsys, "events", "get", "le-nope")
    assert code == 1
    assert err.splitlines()[0].startswith("Error: no learning event")
    assert err.splitlines()[-1] == expected


@pytest.mark.slow
def test_the_fast_gate_names_the_root(root: Path) -> None:
    env = {**os.environ, "RAYVAULT_ROOT": str(root)}
    cmd = [sys.executable, "-m", "rayvault.cli", "gate", "v1", "research"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("PASSED")
    assert done.stderr.splitlines() == [f"root: {root}"]
    done = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["location"] == {"root": str(root), "store": "file"}
    assert done.stderr == ""


def test_a_server_store_password_is_never_shown() -> None:
    from rayvault.cli._location import location_line, store_location
    from rayvault.learning.store.postgres import PostgresStore

    store = PostgresStore(Path("/srv/data"), "postgresql://bob:s3cret@db.internal/pipe?schema=x")
    location = store_location(store)
    assert "s3cret" not in json.dumps(location)
    assert location_line(location) == (
        "store: postgresql://bob:***@db.internal/pipe?schema=x (schema x), root: /srv/data"
    )


# -- item 9: no traceback from any entry point ------------------------------------------------

ENTRY_POINTS = {
    "python -m rayvault.cli": [sys.executable, "-m", "rayvault.cli", "gate"],
    "tools/learning_gate.py": [sys.executable, str(REPO / "tools" / "learning_gate.py")],
    "rayvault-learn": [str(Path(sys.executable).with_name("rayvault-learn")), "gate"],
}


def _broken_now(root: Path) -> dict[str, str]:
    return {"RAYVAULT_NOW": "not-a-date"}


def _gate_state_is_a_file(root: Path) -> dict[str, str]:
    (root / "state").mkdir()
    (root / "state" / "learning_gate").write_text("I am a file")
    return {}


def _data_is_a_file(root: Path) -> dict[str, str]:
    (root / "data").write_text("I am a file")
    return {}


def _log_is_a_folder(root: Path) -> dict[str, str]:
    # Unreadable: a folder where the event log belongs (chmod 000 does not stop root).
    (root / "data" / "learning_events.json").mkdir(parents=True)
    return {}


def _policies_is_a_folder(root: Path) -> dict[str, str]:
    (root / "policies.py").mkdir()
    return {}


BROKEN = {
    "malformed RAYVAULT_NOW": (_broken_now, "RAYVAULT_NOW='not-a-date' is not a timestamp"),
    "state/learning_gate is a file": (
        _gate_state_is_a_file,
        "state/learning_gate is a file where the layout",
    ),
    "data/ is a file": (_data_is_a_file, "/data is a file where the layout has a folder"),
    "the event log is a folder": (
        _log_is_a_folder,
        "learning_events.json is a folder where the layout",
    ),
    "policies.py is a folder": (_policies_is_a_folder, "policies.py cannot be read"),
}


def _check_one_error_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert expected in errors[0]
    assert "unexpected" not in errors[0]  # turned into a named error at its source


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
@pytest.mark.parametrize("case", BROKEN, ids=str)
def test_no_traceback_from_a_broken_root(root: Path, entry: str, case: str) -> None:
    make, expected = BROKEN[case]
    env = {**os.environ, "RAYVAULT_ROOT": str(root), **make(root)}
    before = tree(root)
    done = subprocess.run(
        [*ENTRY_POINTS[entry], "v1", "research"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    _check_one_error_line(done, expected)
    assert tree(root) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["events", "list"],
        ["events", "create", "--severity", "FAIL", "--component", "assets", "--symptom", "s"],
        ["errors", "log", "--stage", "assets", "--error", "boom"],
        ["errors", "list"],
    ],
    ids=" ".join,
)
def test_no_traceback_from_other_commands_on_a_broken_root(root: Path, command: list[str]) -> None:
    _data_is_a_file(root)
    before = tree(root)
    done = subprocess.run(
        [sys.executable, "-m", "rayvault.cli", *command],
        capture_output=True, text=True, env={**os.environ, "RAYVAULT_ROOT": str(root)},
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("Error:")]) == 1
    assert tree(root) == before


@pytest.mark.slow
def test_the_doctor_reports_an_unreadable_log(root: Path) -> None:
    _data_is_a_file(root)
    before = tree(root)
    done = subprocess.run(
        [sys.executable, "-m", "rayvault.cli", "doctor", "--json"],
        capture_output=True, text=True, env={**os.environ, "RAYVAULT_ROOT": str(root)},
        check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    codes = {(f["code"], f["path"]) for f in json.loads(done.stdout)["findings"]}
    assert ("file-unreadable", "data/learning_events.json") in codes
    assert tree(root) == before


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_a_non_utf8_argument_is_one_error_line(root: Path, entry: str) -> None:
    before = tree(root.parent)
    argv = [os.fsencode(a) for a in ENTRY_POINTS[entry]]
    done = subprocess.run(
        [*argv, b"v\xff", b"research"],
        capture_output=True, env={**os.environ, "RAYVAULT_ROOT": str(root)}, check=False,
    )  # fmt: skip
    text = subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )
    _check_one_error_line(text, "'v\\xff' is not valid UTF-8")
    assert tree(root.parent) == before


@pytest.mark.slow
def test_a_non_utf8_root_variable_is_one_error_line(tmp_path: Path) -> None:
    env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
    env[b"RAYVAULT_ROOT"] = os.fsencode(str(tmp_path)) + b"/r\xff"
    done = subprocess.run(
        [sys.executable, "-m", "rayvault.cli", "events", "list"],
        capture_output=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.decode().startswith("Error: RAYVAULT_ROOT=")
    assert b"Traceback" not in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["root"]


@pytest.mark.slow
def test_debug_shows_the_traceback(root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "rayvault.cli", "--debug", "gate", "v1", "research"],
        capture_output=True, text=True, check=False,
        env={**os.environ, "RAYVAULT_ROOT": str(root), "RAYVAULT_NOW": "garbage"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ConfigError" in done.stderr


def test_the_last_resort_boundary_catches_the_unexpected(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rayvault.learning import gate

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(gate, "learning_gate", explode)
    monkeypatch.setattr(gate, "learning_gate_plain", explode)  # the CLI's fast path
    for args in (["gate", "v1", "research"], ["gate", "check", "v1", "research", "--json"]):
        code, out, err = run(capsys, *args)
        assert code == 1 and out == ""
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert errors == ["Error: unexpected RuntimeError: boom (run with --debug for details)"]
    with pytest.raises(RuntimeError):
        main(["--debug", "gate", "v1", "research"])


def test_malformed_clock_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from rayvault.learning._time import utcnow

    monkeypatch.setenv("RAYVAULT_NOW", "yesterday")
    with pytest.raises(ConfigError, match="RAYVAULT_NOW='yesterday' is not a timestamp"):
        utcnow()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_log_is_one_error_line(root: Path) -> None:
    log = root / "data" / "learning_events.json"
    log.parent.mkdir()
    log.write_text("[\n]\n")
    log.chmod(0)
    done = subprocess.run(
        [sys.executable, "-m", "rayvault.cli", "events", "list"],
        capture_output=True, text=True, env={**os.environ, "RAYVAULT_ROOT": str(root)},
        check=False,
    )  # fmt: skip
    _check_one_error_line(done, "learning_events.json: Permission denied")
    assert not (root / "state").exists()
