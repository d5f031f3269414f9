"""The command line: exit codes, messages, --json output, and the files it leaves.

Tests marked ``both_stores`` run on the file store and on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import create_event
from rayvault.learning.store import EventQuery, get_store
from rayvault.learning.store.transfer import MEMORY

from . import _raw
from .conftest import event_kwargs

REPO = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.both_stores
def test_events_create_list_get_stats(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "events", "create", "--severity", "FAIL", "--component", "assets",
        "--symptom", "Image hallucination", "--root-cause", "Changed angle",
        "--fix", "Reverted angle", "--video", "v042", "--agent", "dzine_producer",
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("Recorded le-")
    assert "is active for dzine_producer" in out
    listed = run_json(capsys, "events", "list")
    assert isinstance(listed, list) and len(listed) == 1
    event_id = listed[0]["event_id"]
    assert listed[0]["status"] == "applied"
    got = run_json(capsys, "events", "get", event_id)
    assert got == listed[0]
    stats = run_json(capsys, "events", "stats")
    assert stats["total"] == 1 and stats["unresolved"] == 1
    assert stats["by_severity"]["FAIL"] == 1

    code, out, _ = run(capsys, "events", "list")
    assert code == 0 and event_id in out and "Image hallucination" in out
    code, out, _ = run(capsys, "events", "get", event_id)
    assert code == 0 and "Changed angle" in out
    code, out, _ = run(capsys, "events", "stats")
    assert code == 0 and "1 event, 1 unresolved" in out  # singular (issue 16)

    code, out, _ = run(capsys, "events", "resolve", event_id, "--verification", "checked 5/5")
    assert code == 0 and f"{event_id} is now verified" in out
    assert run_json(capsys, "events", "get", event_id)["status"] == "verified"


@pytest.mark.both_stores
def test_events_get_versions(capsys: pytest.CaptureFixture[str]) -> None:
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    code, _, err = run(capsys, "events", "update", event.event_id, "--root-cause", "angle again")
    assert code == 0, err
    got = run_json(capsys, "events", "get", event.event_id, "--versions")
    assert isinstance(got, list) and len(got) >= 2
    assert {v["event_id"] for v in got} == {event.event_id}
    assert got[0]["root_cause"] == event.root_cause and got[-1]["root_cause"] == "angle again"
    code, out, err = run(capsys, "events", "get", event.event_id, "--versions")
    assert code == 0, err
    assert "Versions of learning event" in out and event.event_id in out
    assert "first recorded" in out and "root_cause" in out
    numbers = [line.split()[0] for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert numbers == [str(n) for n in range(1, len(got) + 1)]  # oldest first
    code, out, err = run(capsys, "events", "get", "le-nope", "--versions")
    assert code == 1 and out == ""
    assert err.splitlines()[0] == "Error: no learning event with id 'le-nope'"
    code, out, err = run(capsys, "events", "get", "../x", "--versions")
    assert code != 0 and out == "" and "invalid event id" in err


@pytest.mark.both_stores
def test_unknown_event_is_one_clear_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    get_store().count_events(EventQuery())  # an initialised store (a new schema is refused)
    code, out, err = run(capsys, "events", "get", "le-nope")
    assert code == 1
    assert out == ""
    assert err.splitlines()[0] == "Error: no learning event with id 'le-nope'"
    assert "Traceback" not in err


@pytest.mark.both_stores
def test_bad_input_exit_codes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    get_store().count_events(EventQuery())  # an initialised store (a new schema is refused)
    before = _raw.everything(get_store())
    code, _, err = run(
        capsys, "events", "create", "--severity", "CRITICAL", "--component", "a", "--symptom", "s"
    )
    assert code == 1
    assert "Error: severity must be one of INFO, WARN, FAIL, BLOCKER (got 'CRITICAL')" in err
    code, _, err = run(capsys, "memory", "show", "../x")
    assert code == 1 and "Error: invalid agent '../x'" in err
    code, _, err = run(capsys, "events", "list", "--bogus")
    assert code == 1 and "No such option: --bogus" in err  # usage errors are 1, not click's 2
    code, _, err = run(capsys, "events", "get")
    assert code == 1 and "Missing argument" in err
    assert not (root / "data").exists()
    assert _raw.everything(get_store()) == before


def test_corrupt_file_is_named_and_untouched(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    memory = root / "state/agents/researcher/memory_active.json"
    memory.parent.mkdir(parents=True)
    memory.write_text("{broken")
    code, _, err = run(capsys, "memory", "show", "researcher")
    assert code == 1
    assert f"Error: {memory} is corrupt: is not valid JSON" in err
    assert "hint: the file was left unchanged" in err
    assert memory.read_text() == "{broken"


@pytest.mark.both_stores
def test_record_of_the_wrong_shape_is_named_and_untouched(
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = get_store()
    _raw.put(store, MEMORY, ("researcher",), '{"rules": "nope"}')
    code, _, err = run(capsys, "memory", "show", "researcher")
    assert code == 1
    where = _raw.where(store, MEMORY, "researcher")
    assert f"Error: {where} is corrupt: agent memory does not match the expected shape" in err
    assert "was left unchanged" in err
    assert _raw.get(store, MEMORY, "researcher") == '{"rules": "nope"}'


@pytest.mark.both_stores
def test_create_reports_a_failed_loop_step(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _raw.put(get_store(), MEMORY, ("researcher",), '{"rules": "nope"}')
    code, out, err = run(
        capsys, "events", "create", "--severity", "FAIL", "--component", "research",
        "--symptom", "Price anomaly", "--agent", "researcher",
    )  # fmt: skip
    assert code == 1  # the event is recorded, but the rule is not in memory: say so
    assert out.startswith("Recorded le-")
    assert "apply step failed" in err and "is corrupt" in err
    assert len(run_json(capsys, "events", "list")) == 1


@pytest.mark.both_stores
def test_memory_commands(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = create_event(**event_kwargs())  # type: ignore[arg-type]
    shown = run_json(capsys, "memory", "show", "dzine_producer")
    assert [r["rule_id"] for r in shown["rules"]] == [event.rule_id]
    assert shown["status"] == {
        "agent": "dzine_producer",
        "rules": 1,
        "cap": 50,
        "critical": 1,
        "critical_over_cap": False,
        "updated": shown["status"]["updated"],
    }
    code, out, _ = run(capsys, "memory", "show", "dzine_producer")
    assert code == 0 and str(event.rule_id) in out and "1 active rule (cap 50)" in out
    rendered = run_json(capsys, "memory", "render", "dzine_producer")
    assert rendered["text"].startswith("Learned rules for dzine_producer")
    code, out, _ = run(
        capsys, "memory", "tombstone", "dzine_producer", str(event.rule_id),
        "--reason", "Superseded", "--evidence", event.event_id,
    )  # fmt: skip
    assert code == 0 and f"Tombstoned {event.rule_id} of dzine_producer: Superseded" in out
    stones = run_json(capsys, "memory", "tombstones", "dzine_producer")
    assert stones["count"] == 1 and stones["tombstones"][0]["evidence_ids"] == [event.event_id]
    code, out, _ = run(capsys, "memory", "show", "dzine_producer")
    assert "dzine_producer has no active rules." in out
    init = run_json(capsys, "memory", "init")
    assert init["researcher"] is True
    assert init["dzine_producer"] is False  # memory and tombstones exist already
    assert "researcher" in get_store().list_agents()
    assert _raw.get(get_store(), MEMORY, "researcher") is not None


@pytest.mark.files_only("--root chooses the file store's data root")
def test_root_option_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "elsewhere"
    code, _, err = run(
        capsys, "--root", str(other), "events", "create", "--severity", "INFO",
        "--component", "tts", "--symptom", "noted",
    )  # fmt: skip
    assert code == 0, err
    assert (other / "data/learning_events.json").exists()
    assert len(run_json(capsys, "events", "list", "--root", str(other))) == 1
    assert run_json(capsys, "events", "list") == []  # RAYVAULT_ROOT is still the test root


@pytest.mark.slow
@pytest.mark.both_stores
def test_tools_scripts_give_the_same_output(root: Path) -> None:
    """``python3 tools/learning_event.py …`` is ``rayvault-learn events …``, byte for byte."""
    create_event(**event_kwargs())  # type: ignore[arg-type]
    env = {**os.environ, "RAYVAULT_ROOT": str(root), "COLUMNS": "200"}

    def out(*cmd: str) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=True)
        return done.stdout

    cli = [sys.executable, "-m", "rayvault.cli"]
    assert out(sys.executable, "tools/learning_event.py", "list", "--json") == out(
        *cli, "events", "list", "--json"
    )
    assert out(sys.executable, "tools/learning_event.py", "stats") == out(*cli, "events", "stats")
    assert out(sys.executable, "tools/learning_apply.py", "show", "dzine_producer") == out(
        *cli, "memory", "show", "dzine_producer"
    )
    done = subprocess.run(
        [sys.executable, "tools/learning_event.py", "get", "le-missing"],
        capture_output=True, text=True, env=env, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Error: no learning event with id 'le-missing'" in done.stderr


@pytest.mark.slow
@pytest.mark.both_stores
def test_spec_import_paths_work_from_a_checkout(root: Path) -> None:
    code = (
        "from tools.learning_event import create_event\n"
        "from tools.learning_apply import apply_to_memory, tombstone_rule, load_active_memory\n"
        "evt = create_event(run_id='r', severity='FAIL', component='assets', symptom='s',"
        " video_id='v1', agent='dzine_producer')\n"
        "memory = load_active_memory('dzine_producer')\n"
        "print(memory.get('rules', [])[0]['rule_id'] == evt['rule_id'])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
        env={**os.environ, "RAYVAULT_ROOT": str(root)},
    )  # fmt: skip
    assert done.stdout.strip() == "True"


def _command_paths() -> list[tuple[str, object]]:
    import typer

    from rayvault.cli.app import app

    found: list[tuple[str, object]] = []

    def walk(command: object, path: str) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, f"{path} {name}")
        else:
            found.append((path, command))

    walk(typer.main.get_command(app), "rayvault-learn")
    return found


def _written_docs() -> str:
    """README.md and every docs page as written (the generated reference is not in them)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    return "\n".join(page.read_text(encoding="utf-8") for page in pages)


def test_every_command_has_help_with_an_example_and_is_in_the_docs() -> None:
    """Every command has help with an example and is mentioned in README.md or a docs page
    written by hand (beyond the reference generated from the tree)."""
    docs = _written_docs()
    paths = _command_paths()
    assert len(paths) >= 10
    for path, command in paths:
        help_text = getattr(command, "help", "") or ""
        assert help_text.strip(), f"{path} has no help"
        assert "Example:" in help_text, f"{path} help has no example"
        assert f"`{path}" in docs or f"{path} " in docs, f"{path} is not in README.md or docs/"


#: Options of ``rayvault-learn`` itself that take a value, as the docs write them before a command.
GLOBAL_VALUE_OPTIONS = {"--root", "--store"}


def test_every_command_the_docs_name_exists() -> None:
    """Each ``rayvault-learn WORD [WORD]`` in README.md and docs/ names a real command: the
    first word a command of the tree, the second (a lowercase word) a sub-command of a group."""
    import re

    import typer

    from rayvault.cli.app import app

    tree = typer.main.get_command(app)
    commands: dict[str, object] = dict(tree.commands)  # type: ignore[attr-defined]
    checked = 0
    for match in re.finditer(r"rayvault-learn[ \t]+([^`|\n)]*)", _written_docs()):
        words = match.group(1).replace("\\", " ").split()
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] in GLOBAL_VALUE_OPTIONS else words[1:]
        if not words or not re.fullmatch(r"[a-z][a-z-]*", words[0]):
            continue  # a placeholder (COMMAND), a variable, prose
        assert words[0] in commands, f"rayvault-learn {' '.join(words[:2])}: no such command"
        group = commands[words[0]]
        subcommands = getattr(group, "commands", None)
        if subcommands and len(words) > 1 and re.fullmatch(r"[a-z][a-z-]*", words[1]):
            default_group = type(group).__name__ == "DefaultGroup"  # gate VIDEO STAGE
            assert words[1] in subcommands or default_group, (
                f"rayvault-learn {words[0]} {words[1]}: no such command"
            )
        checked += 1
    assert checked >= 50
