"""The CLI behaves like the tools people know (issue 16 items 5–7): ``--version``, ``-h``, shell
completion, help without ``<bool>`` and with every option explained, one-line usage errors,
output that scripts can trust (byte-exact ``memory render``, full-width tables to a pipe, paths
never wrapped), ``-`` for stdin, the two ``patterns`` commands alike, ``events update
--component``. Each through Typer's ``CliRunner`` and through a real process."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from rayvault import __version__
from rayvault.cli import _help_fast, main
from rayvault.cli._common import reset_consoles
from rayvault.cli.app import app
from rayvault.learning import create_event, get_event, list_events, render_rules
from rayvault.learning.store import Store

from .conftest import event_kwargs

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "rayvault.cli"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: A failure whose rule is longer than any terminal line: Rich would wrap it.
LONG_SYMPTOM = (
    "Image hallucination in Product Background: the generated frame shows a top-down "
    "product shot although the brief asks for the 3/4 reference angle of every listing"
)


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command and group of the tree, as (path, click command)."""

    def walk(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def invoke(*args: str, input: str | None = None, **env: str) -> Any:
    """The app through Typer's CliRunner (stdout and stderr apart)."""
    reset_consoles()
    return CliRunner().invoke(app, list(args), input=input, env=env or None)


def plain_env(**extra: str) -> dict[str, str]:
    """This environment without layout variables (no COLUMNS: a pipe gets its own width)."""
    return {**_help_fast.plain_environment(), **extra}


def process(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env if env is not None else plain_env(),
        cwd=cwd,
        check=False,
    )


def on_terminal(*args: str, columns: int = 80, env: dict[str, str] | None = None) -> str:
    """What the CLI writes to a terminal of ``columns`` (a pty), newlines as written."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # keep "\n" as written (a terminal would show "\r\n")
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(
        [*CLI, *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env=env if env is not None else plain_env(TERM="xterm"),
        cwd=REPO,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8")


# -- 5. help, version, completion, usage errors ---------------------------------------------------
def test_every_option_and_argument_has_help() -> None:
    missing = [
        f"{' '.join(path) or 'rayvault-learn'} {param.name}"
        for path, command in commands()
        for param in command.params
        if not getattr(param, "hidden", False) and not (getattr(param, "help", None) or "").strip()
    ]
    assert missing == []


def test_arguments_are_named_as_the_docs_write_them() -> None:
    arguments = {
        " ".join(path): [p.metavar for p in command.params if p.param_type_name == "argument"]
        for path, command in commands()
    }
    for path, names in arguments.items():
        for name in names:
            assert name and re.fullmatch(r"[A-Z][A-Z_]*", name), (path, name)
    assert arguments["gate check"] == ["VIDEO", "STAGE"]
    assert arguments["events update"] == ["EVENT_ID"]
    assert arguments["events resolve"] == ["EVENT_ID"]
    assert arguments["memory init"] == ["AGENT"]
    assert arguments["rules history"] == ["AGENT", "RULE_ID"]
    assert arguments["errors log"] == ["STAGE", "ERROR"]
    out = invoke("events", "update", "-h").stdout
    assert "Usage: rayvault-learn events update [OPTIONS] EVENT_ID" in out
    out = invoke("memory", "init", "-h").stdout
    assert "Usage: rayvault-learn memory init [OPTIONS] [AGENT]..." in out
    out = invoke("gate", "check", "-h").stdout
    assert "Usage: rayvault-learn gate check [OPTIONS] VIDEO STAGE" in out


def test_help_at_80_columns_cuts_no_word_and_shows_no_bool() -> None:
    for path, command in commands():
        result = invoke(*path, "--help", COLUMNS="80")
        assert result.exit_code == 0, path
        out = result.stdout
        assert max(len(line) for line in out.splitlines()) <= 80, path
        assert "<bool>" not in out, path
        words = set(re.split(r"[\s│╭╮╰╯─]+", out))
        texts = [command.help or "", *(getattr(p, "help", "") or "" for p in command.params)]
        for text in texts:
            for word in text.replace("\\[", "[").split():  # Rich markup: \[ prints [
                assert word in words, (path, word)
        if path == ["memory", "render"]:
            assert "--explain " in out and "--json " in out


def test_dash_h_is_help_everywhere() -> None:
    for path, _ in commands():
        short, long = invoke(*path, "-h"), invoke(*path, "--help")
        assert short.exit_code == 0 and long.exit_code == 0, path
        assert short.stdout == long.stdout and "Usage: rayvault-learn" in short.stdout


def test_version_through_the_runner_and_main(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--version"], ["--root", "/nowhere", "--version"]):
        result = invoke(*args)
        assert (result.exit_code, result.stdout) == (0, f"rayvault-learn {__version__}\n")
        assert main(args) == 0
        assert capsys.readouterr().out == f"rayvault-learn {__version__}\n"


@pytest.mark.slow
def test_version_and_help_in_a_process() -> None:
    done = process("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"rayvault-learn {__version__}\n", "")
    done = process("events", "update", "-h")
    assert done.returncode == 0 and "Usage: rayvault-learn events update" in done.stdout
    assert "<bool>" not in done.stdout


USAGE_ERRORS = [
    (
        ["events", "update"],
        "Error: Missing argument 'EVENT_ID'.",
        "Try 'rayvault-learn events update -h' for help.",
    ),
    (
        ["events", "list", "--bogus"],
        "Error: No such option: --bogus",
        "Try 'rayvault-learn events list -h' for help.",
    ),
    (
        ["errors", "list", "--limit", "x"],
        "Error: Invalid value for '--limit': Input should be a valid integer, unable to parse "
        "string as an integer",
        "Try 'rayvault-learn errors list -h' for help.",
    ),
    (["nosuch"], "Error: No such command 'nosuch'.", "Try 'rayvault-learn -h' for help."),
]


@pytest.mark.parametrize(("args", "error", "hint"), USAGE_ERRORS)
def test_a_usage_error_is_one_line_and_a_hint(
    args: list[str], error: str, hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = invoke(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", f"{error}\n{hint}\n")
    assert main(args) == 1
    assert capsys.readouterr() == ("", f"{error}\n{hint}\n")


@pytest.mark.slow
def test_a_usage_error_in_a_process() -> None:
    for args, error, hint in USAGE_ERRORS:
        done = process(*args)
        assert (done.returncode, done.stdout, done.stderr) == (1, "", f"{error}\n{hint}\n")


def test_completion_options_through_the_runner() -> None:
    result = invoke("--show-completion", "bash")
    assert result.exit_code == 0 and "_RAYVAULT_LEARN_COMPLETE=complete_bash" in result.stdout
    assert "--install-completion" in invoke("-h", COLUMNS="100").stdout


@pytest.mark.slow
def test_completion_in_a_process(tmp_path: Path) -> None:
    done = process("--show-completion", "bash")
    assert done.returncode == 0 and "complete -o default -F" in done.stdout
    env = plain_env(_RAYVAULT_LEARN_COMPLETE="complete_bash", COMP_WORDS="rayvault-learn ev")
    done = process(env={**env, "COMP_CWORD": "1"})
    assert done.stdout.split() == ["events"]
    env = plain_env(_RAYVAULT_LEARN_COMPLETE="complete_bash", COMP_WORDS="rayvault-learn gate ")
    done = process(env={**env, "COMP_CWORD": "2"})
    assert set(done.stdout.split()) >= {"check", "ack"}
    done = process("--install-completion", "bash", env=plain_env(HOME=str(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert (
        "_RAYVAULT_LEARN_COMPLETE" in (tmp_path / ".bash_completions/rayvault-learn.sh").read_text()
    )
    assert ".bash_completions/rayvault-learn.sh" in (tmp_path / ".bashrc").read_text()


@pytest.mark.slow
def test_the_revisit_script_names_itself() -> None:
    done = subprocess.run(
        [sys.executable, "tools/learning_revisit.py", "--help"],
        capture_output=True, text=True, env=plain_env(), cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout.splitlines()[1].strip() == "Usage: learning_revisit.py [OPTIONS]"
    done = subprocess.run(
        [sys.executable, "tools/learning_event.py", "list", "--bogus"],
        capture_output=True, text=True, env=plain_env(), cwd=REPO, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        1,
        "Error: No such option: --bogus\nTry 'learning_event.py list -h' for help.\n",
    )


# -- 6. output scripts can trust -----------------------------------------------------------------
def long_rule(root: Path) -> str:
    """An agent rule longer than a terminal line; the block render_rules gives for it."""
    create_event(**event_kwargs(symptom=LONG_SYMPTOM))  # type: ignore[arg-type]
    block = render_rules("dzine_producer")
    assert max(len(line) for line in block.splitlines()) > 120
    return block


def test_memory_render_is_the_block_byte_for_byte(root: Path) -> None:
    block = long_rule(root)
    result = invoke("memory", "render", "dzine_producer")
    assert result.exit_code == 0 and result.stdout == block
    result = invoke("memory", "render", "dzine_producer", "--json")
    assert json.loads(result.stdout)["text"] == block  # the JSON keeps its shape


@pytest.mark.slow
def test_memory_render_byte_for_byte_to_a_pipe_and_a_terminal(root: Path) -> None:
    block = long_rule(root)
    env = plain_env(RAYVAULT_ROOT=str(root))
    done = process("memory", "render", "dzine_producer", env=env)
    assert done.returncode == 0 and done.stdout == block
    assert on_terminal("memory", "render", "dzine_producer", env={**env, "TERM": "xterm"}) == block


def test_an_agent_without_rules_renders_nothing(root: Path) -> None:
    create_event(**event_kwargs())  # type: ignore[arg-type]
    main(["memory", "init", "researcher"])
    result = invoke("memory", "render", "researcher")
    assert (result.exit_code, result.stdout) == (0, "")
    assert "researcher has no active rules." in result.stderr


@pytest.mark.slow
def test_tables_to_a_pipe_are_whole_and_fit_a_terminal(root: Path) -> None:
    event = create_event(**event_kwargs(symptom=LONG_SYMPTOM, verification=""))  # type: ignore[arg-type]
    assert main(["errors", "log", "assets", LONG_SYMPTOM]) == 0
    env = plain_env(RAYVAULT_ROOT=str(root))
    done = process("events", "list", env=env)
    assert done.returncode == 0
    [row] = [line for line in done.stdout.splitlines() if event.event_id in line]
    assert LONG_SYMPTOM[:119] + "…" in row  # the symptom as `short` cuts it, on one line
    assert "v042" in row and "dzine_producer" in row  # the wide columns too
    for args in (["errors", "list", "--all"], ["memory", "show", "dzine_producer"]):
        done = process(*args, env=env)
        assert done.returncode == 0 and max(map(len, done.stdout.splitlines())) > 120, args
    shown = ANSI.sub("", on_terminal("events", "list", env={**env, "TERM": "xterm"}))
    assert max(len(line) for line in shown.splitlines()) <= 80
    assert event.event_id in shown
    # COLUMNS still sets a width, piped or not.
    done = process("events", "list", env={**env, "COLUMNS": "90"})
    assert max(len(line) for line in done.stdout.splitlines()) <= 90


@pytest.mark.slow
def test_paths_are_never_wrapped(tmp_path: Path) -> None:
    deep = tmp_path / ("a-folder-with-a-long-name-" * 4) / "root"
    deep.mkdir(parents=True)
    env = plain_env(RAYVAULT_ROOT=str(deep), TERM="xterm")
    assert process("memory", "init", env=env).returncode == 0
    reports = deep / "data" / "learning_reports"
    for output in (process("revisit", env=env).stdout, on_terminal("revisit", env=env)):
        [json_path] = re.findall(r"^Report: (.*)$", ANSI.sub("", output), re.MULTILINE)
        assert Path(json_path).parent == reports and Path(json_path).is_file()
    # `report` names its HTML page, whole, as its last line.
    for output in (process("report", env=env).stdout, on_terminal("report", env=env)):
        last = ANSI.sub("", output).rstrip("\n").splitlines()[-1]
        assert last.startswith("HTML: ") and Path(last[6:]).parent == reports
        assert Path(last[6:]).is_file()


def test_report_prints_its_html_page_and_opens_it(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_event(**event_kwargs())  # type: ignore[arg-type]
    assert main(["revisit", "--json"]) == 0
    written = json.loads(capsys.readouterr().out)["report_files"]["html"]
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    result = invoke("report")
    assert result.exit_code == 0 and result.stdout.splitlines()[-1] == f"HTML: {written}"
    assert opened == []
    result = invoke("report", "--open")
    assert result.exit_code == 0 and len(opened) == 1
    page = Path(opened[0].removeprefix("file://"))
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    if Path(written).is_file():  # the file store: its own page
        assert page == Path(written)
    result = invoke("report", "--json")
    assert "HTML" not in result.stdout and json.loads(result.stdout)["events_total"] == 1


# -- 7. small inconsistencies --------------------------------------------------------------------
def test_both_patterns_commands_share_their_defaults(root: Path) -> None:
    def defaults(*path: str) -> dict[str, object]:
        [command] = [c for p, c in commands() if p == list(path)]
        return {p.name: p.default for p in command.params if p.name in ("min_count", "limit")}

    assert defaults("patterns") == defaults("errors", "patterns") == {"min_count": 2, "limit": 30}
    for _ in range(2):
        create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]
        assert main(["errors", "log", "assets", "Timeout after 31s on B0ABC12345"]) == 0
    events = json.loads(invoke("patterns", "--json").stdout)
    errors = json.loads(invoke("errors", "patterns", "--json").stdout)
    assert [p["count"] for p in events] == [2] and [p["count"] for p in errors] == [2]
    out = invoke("errors", "patterns").stdout
    assert "Error-log patterns that occurred 2+ times (1 of 1)" in out
    out = invoke("patterns").stdout
    assert "Learning-event patterns that occurred 2+ times (1 of 1)" in out


def test_dash_reads_stdin_for_every_text_argument(root: Path) -> None:
    result = invoke(
        "events", "create", "--severity", "FAIL", "--component", "assets",
        "--symptom", "-", "--json", input="Symptom from a pipe\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["symptom"] == "Symptom from a pipe"
    result = invoke(
        "errors", "log", "assets", "Timeout", "--context", "-", "--json",
        input='{"run_id": "r7"}',
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["context"]["run_id"] == "r7"
    result = invoke("patterns", "explain", "assets", "-", "--empty", input="Timeout after 3s")
    assert result.exit_code == 0 and "Timeout after" in result.stdout
    result = invoke("memory", "render", "dzine_producer", "--failure", "-", input="Timeout")
    assert result.exit_code == 0


def test_stdin_is_read_once(root: Path) -> None:
    before = len(list_events())
    result = invoke("errors", "log", "assets", "-", "--context", "-", input="{}")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: ERROR and --context-json are both '-': only one of them can be read from stdin"
    )
    result = invoke("memory", "render", "dzine_producer", "--task", "-", "--failure", "-")
    assert result.exit_code == 1 and "both '-'" in result.stderr
    assert len(list_events()) == before


@pytest.mark.slow
def test_dash_reads_stdin_in_a_process(root: Path) -> None:
    env = plain_env(RAYVAULT_ROOT=str(root))
    done = process(
        "errors", "log", "assets", "Timeout", "--context", "-", "--json",
        input='{"run_id": "r9"}', env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["context"]["run_id"] == "r9"


def test_events_update_corrects_the_component(store: Store) -> None:
    unknown = create_event(
        **event_kwargs(component="unknown", verification="", agent=None, store=store)
    )  # type: ignore[arg-type]
    fresh = create_event(**event_kwargs(verification="", agent=None, store=store))  # type: ignore[arg-type]
    assert unknown.fingerprint != fresh.fingerprint  # grouped among unknown's patterns
    result = invoke("events", "update", unknown.event_id, "--component", "assets")
    assert result.exit_code == 0, result.stderr
    assert f"{unknown.event_id} updated (status open, component assets)" in result.stdout
    moved = get_event(unknown.event_id, store=store)
    assert moved.component == "assets"
    assert moved.fingerprint == fresh.fingerprint  # now one failure with its twin in assets
    assert moved.symptom == unknown.symptom and moved.status == "open"
    listed = json.loads(invoke("events", "list", "--component", "assets", "--json").stdout)
    assert unknown.event_id in {e["event_id"] for e in listed}
    # Checked as create_event checks it: nothing written on a bad name.
    result = invoke("events", "update", unknown.event_id, "--component", "../x")
    assert result.exit_code == 1 and result.stderr.startswith("Error: invalid component")
    assert get_event(unknown.event_id, store=store) == moved


def test_events_update_within_a_stage_keeps_the_fingerprint(store: Store) -> None:
    event = create_event(**event_kwargs(verification="", store=store))  # type: ignore[arg-type]
    # "assets" and its step name fold to one stage: the pattern stays.
    from rayvault.learning import update_event

    aliases = store.policies.LEARNING_STAGE_ALIASES
    step = next((k for k, v in aliases.items() if v == "assets"), None)
    if step is None:
        pytest.skip("no step name of assets in the default policies")
    updated = update_event(event.event_id, component=step, store=store)
    assert updated.component == step and updated.fingerprint == event.fingerprint


def _command_paths(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, sub in getattr(command, "commands", {}).items():
        yield (*path, name)
        yield from _command_paths(sub, (*path, name))


def test_a_command_run_from_the_pruned_tree_behaves_as_in_the_whole_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` builds only the top-level command it runs (``app.tree_for``): every command's
    help, and a usage error inside a group, read as the whole tree gives them."""
    from rayvault.cli import app as app_module

    paths = list(_command_paths(typer.main.get_command(app)))
    assert len(paths) > 40 and ("events", "list") in paths
    forms = [[*p, "--help"] for p in paths] + [
        ["events", "lst"],
        ["--root", "/nowhere", "gate", "--bogus"],
        ["--json", "memory"],
    ]

    def outputs() -> list[tuple[int, str, str]]:
        found = []
        for args in forms:
            code = app_module.run(args)
            out, err = capsys.readouterr()
            found.append((code, out, err))
        return found

    pruned = outputs()
    assert app_module.tree_for(["--root", "r", "events", "list"]).registered_groups[0].name == (
        "events"
    )
    for root_form in ([], ["--help"], ["--json"], ["evnts", "list"], ["--root", "r", "-h"]):
        assert app_module.tree_for(root_form) is app, root_form
    monkeypatch.setattr(app_module, "tree_for", lambda args, prog=None: app)
    whole = outputs()
    for args, a, b in zip(forms, pruned, whole, strict=True):
        assert a == b, args
    assert pruned[-3][0] == 1 and "No such command 'lst'" in pruned[-3][2]
