"""``rayvault-learn run``: any command as a stage of the closed loop, with real child processes —
exit codes passed through and logged, output streamed live, signals forwarded, the rules handed
over in the environment, a diagnoser command learned from (or timed out, or ignored when it
answers garbage), the gate refusing to run the command at all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from rayvault.learning import (
    InvalidInputError,
    create_event,
    get_event,
    list_events,
    load_active_memory,
    run_command,
)
from rayvault.learning.errors import list_errors
from rayvault.learning.loop import StageContext
from rayvault.learning.store import Store
from rayvault.learning.wrapper import (
    RULES_ENV_MAX_BYTES,
    DiagnoserError,
    _child_env,
    _parse_answer,
    _Tail,
)

pytestmark = pytest.mark.slow

PY = sys.executable


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def cli_args(*args: str) -> list[str]:
    return [PY, "-m", "rayvault.cli", "run", *args]


def wrapper(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``rayvault-learn run ARGS`` in a process of its own (the test's RAYVAULT_ROOT/STORE)."""
    return subprocess.run(
        cli_args(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def report(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# -- exit codes ---------------------------------------------------------------------------------

EXIT_SCRIPTS = {
    0: "print('done')",
    1: "import sys; print('bad input file frame.png', file=sys.stderr); sys.exit(1)",
    3: "import sys; print('Timeout after 30s on B0ABC', file=sys.stderr); sys.exit(3)",
    137: "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
}


@pytest.mark.parametrize("code", sorted(EXIT_SCRIPTS))
def test_the_command_exit_code_is_the_wrappers_and_a_failure_is_logged_with_it(
    store: Store, tmp_path: Path, code: int
) -> None:
    """0, 1, 3 and a SIGKILL (137, as a shell reports it) come back as the wrapper's exit code;
    a failure is in the error log with that exit code, the command and its stderr."""
    out = tmp_path / "run.json"
    done = wrapper(
        "--video", "v042", "--stage", "assets", "--report", str(out),
        "--", PY, "-c", EXIT_SCRIPTS[code],
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    errors = list_errors(store=store)
    result = report(out)
    assert result["exit_code"] == code
    assert [a["exit_code"] for a in result["attempts"]] == [code]
    if code == 0:
        assert done.stdout == "done\n"
        assert errors == []
        assert result["outcome"] == "succeeded"
        return
    assert result["outcome"] == "failed"
    assert len(errors) == 1
    entry = errors[0]
    assert entry.exit_code == code
    assert entry.video_id == "v042" and entry.stage == "assets"
    assert entry.context["command"].startswith(PY)
    assert entry.context["attempt"] == 1
    if code == 137:
        assert entry.context["signal"] == "SIGKILL"
        assert "killed by SIGKILL (exit code 137)" in entry.error
    else:
        assert entry.error == EXIT_SCRIPTS[code].split("'")[1]
        assert entry.error in done.stderr  # passed through as well as kept
    # Not diagnosed (nothing in history, no diagnoser): an open event records it.
    events = list_events(store=store)
    assert [e.status for e in events] == ["open"]
    assert "give_up: no diagnosis" in done.stderr


def test_a_command_that_does_not_exist_exits_127_and_is_logged_as_such(
    store: Store, tmp_path: Path
) -> None:
    """Not found: exit 127 as in a shell, said on stderr, and logged with exit code 127."""
    missing = str(tmp_path / "no-such-step")
    done = wrapper("--video", "v042", "--stage", "tts", "--", missing, "--flag")
    assert done.returncode == 127
    assert f"rayvault-learn run: {missing}: command not found" in done.stderr
    [entry] = list_errors(store=store)
    assert entry.exit_code == 127
    assert entry.error == f"{missing}: command not found"
    assert entry.context["start_error"] == entry.error


def test_a_file_that_cannot_be_executed_exits_126(tmp_path: Path) -> None:
    """Found but not executable: 126, as in a shell."""
    plain = script(tmp_path, "plain.sh", "echo hi\n")
    done = wrapper("--video", "v042", "--stage", "tts", "--", str(plain))
    assert done.returncode == 126
    assert "cannot execute" in done.stderr
    assert list_errors()[0].exit_code == 126


# -- streaming and signals ----------------------------------------------------------------------


def test_output_streams_live_before_the_command_ends(tmp_path: Path) -> None:
    """The child's stdout and stderr reach the caller while it still runs: the first lines are
    read before the child is allowed to finish."""
    go = tmp_path / "go"
    child = script(
        tmp_path,
        "slow.py",
        f"""
        import sys, time, pathlib
        print("err line", file=sys.stderr, flush=True)
        print("first line", flush=True)
        go = pathlib.Path({str(go)!r})
        deadline = time.monotonic() + 60
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        print("last line", flush=True)
        """,
    )
    proc = subprocess.Popen(
        cli_args("--video", "v042", "--stage", "assets", "--", PY, str(child)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        assert proc.stderr.readline() == "err line\n"
        assert proc.stdout.readline() == "first line\n"
        assert proc.poll() is None  # still running: the lines came live
        go.touch()
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert rest == "last line\n"


SLEEPER = """
import pathlib, sys, time
marker = pathlib.Path(sys.argv[1])
try:
    print("ready", flush=True)  # inside the try: a signal right after it is still seen
    time.sleep(60)
except KeyboardInterrupt:
    marker.write_text("interrupted")
    raise
"""


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_wrapper_reaches_the_child_and_is_not_learned_from(
    store: Store, tmp_path: Path, signum: int, code: int
) -> None:
    """SIGINT (Ctrl-C) or SIGTERM sent to the wrapper is forwarded to the child, which stops;
    the run ends as interrupted with 128+K, and nothing is logged or learned."""
    marker = tmp_path / "marker"
    child = script(tmp_path, "sleeper.py", SLEEPER)
    out = tmp_path / "run.json"
    proc = subprocess.Popen(
        cli_args(
            "--video", "v042", "--stage", "assets", "--report", str(out),
            "--", PY, str(child), str(marker),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # no terminal: the signal reaches the child only through us
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        started = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 20  # not the child's 60 s: it was stopped
    assert proc.returncode == code, err
    name = signal.Signals(signum).name
    assert f"interrupted by {name}: not logged, not learned from (exit {code})" in err
    if signum == signal.SIGINT:
        assert marker.read_text() == "interrupted"  # the child saw the Ctrl-C itself
    result = report(out)
    assert result["outcome"] == "interrupted"
    assert result["interrupted_by"] == name
    assert [a["outcome"] for a in result["attempts"]] == ["interrupted"]
    assert list_errors(store=store) == []
    assert list_events(store=store) == []


# -- the gate -----------------------------------------------------------------------------------


def test_a_blocked_gate_exits_2_and_the_command_never_runs(store: Store, tmp_path: Path) -> None:
    """An open FAIL event holds the stage: exit 2, the gate's reason on stderr, no marker file
    (the command did not run), nothing logged."""
    create_event(
        run_id="r1",
        severity="FAIL",
        component="assets",
        symptom="Render crashed at frame 12",
        video_id="v042",
        store=store,
    )
    marker = tmp_path / "ran"
    done = wrapper(
        "--video", "v042", "--stage", "assets",
        "--", PY, "-c", f"open({str(marker)!r}, 'w').write('ran')",
    )  # fmt: skip
    assert done.returncode == 2
    assert not marker.exists()
    assert "rayvault-learn run: not run: the gate blocked v042/assets" in done.stderr
    assert "BLOCKED: check_regressions" in done.stderr
    assert list_errors(store=store) == []


def test_an_unknown_stage_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """Bad input to the wrapper itself is exit 1 with one Error line; the command never runs."""
    marker = tmp_path / "ran"
    command = ["--", PY, "-c", f"open({str(marker)!r}, 'w')"]
    done = wrapper("--video", "v042", "--stage", "no-such-stage", *command)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ")
    assert "Traceback" not in done.stderr
    missing_video = wrapper("--stage", "assets", *command)
    assert missing_video.returncode == 1
    assert "--video" in missing_video.stderr
    bad_video = wrapper("--video", "../x", "--stage", "assets", *command)
    assert bad_video.returncode == 1 and "video id" in bad_video.stderr
    assert not marker.exists()


def test_the_command_may_follow_the_options_without_a_double_dash(tmp_path: Path) -> None:
    """Options after the command's name are the command's (``-c`` is Python's here)."""
    done = wrapper("--video", "v042", "--stage", "assets", PY, "-c", "print('mine')")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "mine\n"


# -- the rules ----------------------------------------------------------------------------------

ENV_DUMP = """
import json, os, pathlib, sys
path = os.environ["RAYVAULT_RULES_FILE"]
pathlib.Path(sys.argv[1]).write_text(json.dumps({
    "env": {k: v for k, v in os.environ.items() if k.startswith("RAYVAULT_")},
    "file": pathlib.Path(path).read_text(encoding="utf-8"),
    "mode": oct(os.stat(path).st_mode & 0o777),
    "folder_mode": oct(os.stat(os.path.dirname(path)).st_mode & 0o777),
}))
"""


def test_the_agents_rules_reach_the_command_in_its_environment(
    store: Store, tmp_path: Path
) -> None:
    """The agent's rendered rules are in the file named by RAYVAULT_RULES_FILE (private, removed
    afterwards) and in RAYVAULT_RULES; the delivery and the success are counted on the rule."""
    event = create_event(
        run_id="r0",
        severity="FAIL",
        component="assets",
        symptom="Image prompt too long",
        root_cause="prompt over 1000 characters",
        fix_applied="cut prompts to 900 characters",
        verification="re-ran v041",
        agent="dzine_producer",
        video_id="v041",
        store=store,
    )
    dump = tmp_path / "env.json"
    child = script(tmp_path, "dump.py", ENV_DUMP)
    done = wrapper("--video", "v042", "--stage", "assets", "--", PY, str(child), str(dump))
    assert done.returncode == 0, done.stderr
    seen = json.loads(dump.read_text())
    env = seen["env"]
    assert "cut prompts to 900 characters" in seen["file"]
    assert env["RAYVAULT_RULES"] == seen["file"]
    assert seen["mode"] == "0o600" and seen["folder_mode"] == "0o700"
    assert not Path(env["RAYVAULT_RULES_FILE"]).exists()  # removed after the attempt
    assert not Path(env["RAYVAULT_RULES_FILE"]).parent.exists()
    assert env["RAYVAULT_VIDEO_ID"] == "v042"
    assert env["RAYVAULT_STAGE"] == "assets"
    assert env["RAYVAULT_AGENT"] == "dzine_producer"
    assert env["RAYVAULT_ATTEMPT"] == "1"
    assert env["RAYVAULT_RUN_ID"].startswith("v042-assets-")
    [rule] = load_active_memory("dzine_producer", store=store).rules
    assert rule.source_event_id == event.event_id
    assert rule.applied_count == 2  # learned once, delivered once (mark_delivered)
    assert (rule.deliveries, rule.successes) == (1, 1)  # record_attempt
    assert rule.attempts[-1]["video_id"] == "v042"


def _ctx(rules: str, agent: str | None = "dzine_producer") -> StageContext:
    return StageContext(
        video_id="v1",
        stage="assets",
        agent=agent,
        attempt=2,
        max_attempts=3,
        run_id="run-1",
        rendered_rules=rules,
        rules=(),
        store=None,  # type: ignore[arg-type]
    )


def test_a_long_rules_block_is_only_in_the_file_and_no_stale_block_leaks(tmp_path: Path) -> None:
    """Over 32 KiB of rules: RAYVAULT_RULES is unset (even if the caller had one), the file
    still carries it; a stage without agent unsets RAYVAULT_AGENT."""
    base = {"RAYVAULT_RULES": "stale", "RAYVAULT_AGENT": "stale", "PATH": "/bin"}
    path = tmp_path / "rules.md"
    long = "x" * (RULES_ENV_MAX_BYTES + 1)
    env = _child_env(base, _ctx(long, agent=None), path)
    assert "RAYVAULT_RULES" not in env and "RAYVAULT_AGENT" not in env
    assert env["RAYVAULT_RULES_FILE"] == str(path)
    assert env["RAYVAULT_ATTEMPT"] == "2" and env["PATH"] == "/bin"
    short = "é" * (RULES_ENV_MAX_BYTES // 2)  # exactly 32 KiB as UTF-8
    assert _child_env(base, _ctx(short), path)["RAYVAULT_RULES"] == short
    assert _child_env(base, _ctx(short + "é"), path).get("RAYVAULT_RULES") is None


# -- diagnosing ---------------------------------------------------------------------------------

FLAKY = """
import os, sys
if "use --fast" in os.environ.get("RAYVAULT_RULES", ""):
    print("rendered")
    sys.exit(0)
print("Error: render of video v042 needs --fast", file=sys.stderr)
sys.exit(5)
"""

DIAGNOSER = """
import json, pathlib, sys
failure = json.load(sys.stdin)
pathlib.Path(sys.argv[1]).write_text(json.dumps(failure))
print(json.dumps({"root_cause": "slow render mode", "fix": "use --fast"}))
"""


def test_a_diagnosis_is_learned_and_the_retry_succeeds(store: Store, tmp_path: Path) -> None:
    """The diagnoser gets the failure as JSON; its answer becomes a learning event with a rule
    in the agent's memory; the retry carries the rule and succeeds; the event is verified and
    the error resolved."""
    seen = tmp_path / "failure.json"
    child = script(tmp_path, "flaky.py", FLAKY)
    diagnoser = script(tmp_path, "diagnose.py", DIAGNOSER)
    out = tmp_path / "run.json"
    done = wrapper(
        "--video", "v042", "--stage", "assets", "--retries", "2", "--report", str(out),
        "--diagnose", f"{PY} {diagnoser} {seen}",
        "--", PY, str(child),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == "rendered\n"
    failure = json.loads(seen.read_text())
    assert failure["video_id"] == "v042" and failure["stage"] == "assets"
    assert failure["agent"] == "dzine_producer"
    assert failure["attempt"] == 1 and failure["max_attempts"] == 3
    assert failure["exit_code"] == 5
    assert failure["stderr_tail"] == "Error: render of video v042 needs --fast\n"
    assert failure["command"] == [PY, str(child)]
    assert failure["duration_s"] > 0
    assert failure["error_id"].startswith("e-")
    result = report(out)
    assert [(a["attempt"], a["exit_code"]) for a in result["attempts"]] == [(1, 5), (2, 0)]
    [event] = list_events(store=store)
    assert result["event_ids"] == [event.event_id]
    assert event.agent == "dzine_producer"
    assert event.fix_applied == "use --fast"
    assert get_event(event.event_id, store=store).status == "verified"
    [entry] = list_errors(store=store)
    assert entry.exit_code == 5 and entry.resolved
    [rule] = load_active_memory("dzine_producer", store=store).rules
    assert "use --fast" in rule.rule
    assert "retry: attempt 2 of 3" in done.stderr


def test_a_diagnoser_that_hangs_is_killed_after_the_timeout(store: Store, tmp_path: Path) -> None:
    """A diagnoser that does not answer is killed with its children after --diagnose-timeout,
    said on stderr, and the run goes on without a diagnosis (no retry)."""
    started = time.monotonic()
    done = wrapper(
        "--video", "v042", "--stage", "assets", "--retries", "2",
        "--diagnose", "sh -c 'sleep 60; echo {}'", "--diagnose-timeout", "1",
        "--", PY, "-c", "import sys; sys.exit(4)",
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert done.returncode == 4
    assert "did not answer within 1 s and was killed" in done.stderr
    assert "give_up: no diagnosis: not retried" in done.stderr
    assert [e.status for e in list_events(store=store)] == ["open"]
    assert len(list_errors(store=store)) == 1


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (
            "print('the cache, probably')",
            "answered something that is not JSON: 'the cache, probably'",
        ),
        ("print('[1, 2]')", "answered JSON that is not an object"),
        ("print('{\"fix\": 3}')", "root_cause and fix must be text"),
        ("import sys; print('{}'); sys.exit(2)", "exited with code 2"),
        (None, "could not be started"),
    ],
)
def test_a_diagnoser_answering_garbage_is_ignored_and_said(
    tmp_path: Path, answer: str, said: str
) -> None:
    """Garbage from the diagnoser (or none: it cannot be started) is no diagnosis: the run goes
    on without it and says why."""
    if answer is None:
        diagnose = str(tmp_path / "no-such-diagnoser")
    else:
        diagnose = f"{PY} {script(tmp_path, 'diagnose.py', answer)}"
    done = wrapper(
        "--video", "v042", "--stage", "assets",
        "--diagnose", diagnose,
        "--", PY, "-c", "import sys; sys.exit(6)",
    )  # fmt: skip
    assert done.returncode == 6
    assert said in done.stderr
    assert "warning:" in done.stderr
    assert len(list_errors()) == 1
    assert [e.status for e in list_events()] == ["open"]


def test_ctrl_c_while_diagnosing_stops_the_diagnoser_and_learns_nothing(
    store: Store, tmp_path: Path
) -> None:
    """SIGINT while the diagnoser runs: the diagnoser (in a process group of its own) gets it,
    the run ends as interrupted (130); the failure stays logged, no event is created."""
    ready = tmp_path / "diagnosing"
    diagnoser = script(
        tmp_path,
        "slow_diagnoser.py",
        f"""
        import pathlib, sys, time
        sys.stdin.read()
        pathlib.Path({str(ready)!r}).touch()
        time.sleep(60)
        """,
    )
    proc = subprocess.Popen(
        cli_args(
            "--video", "v042", "--stage", "assets", "--diagnose", f"{PY} {diagnoser}",
            "--", PY, "-c", "import sys; sys.exit(3)",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 20
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err
    assert [e.exit_code for e in list_errors(store=store)] == [3]
    assert list_events(store=store) == []


class _FakeChild:
    def __init__(self) -> None:
        self.returncode: int | None = None
        self.pid = -1
        self.sent: list[int] = []

    def send_signal(self, signum: int) -> None:
        self.sent.append(signum)


def test_a_terminals_first_ctrl_c_is_not_sent_twice() -> None:
    """In the terminal's foreground group the child gets Ctrl-C from the terminal itself: the
    first SIGINT is not resent, a second one is; SIGTERM always is."""
    from rayvault.learning.wrapper import _Signals

    signals = _Signals(terminal_sigint=True)
    child = _FakeChild()
    signals.child = child  # type: ignore[assignment]
    signals.handle(signal.SIGINT, None)
    assert child.sent == [] and signals.interrupted == signal.SIGINT
    signals.handle(signal.SIGINT, None)
    signals.handle(signal.SIGTERM, None)
    assert child.sent == [signal.SIGINT, signal.SIGTERM]
    detached = _Signals(terminal_sigint=False)
    other = _FakeChild()
    detached.child = other  # type: ignore[assignment]
    detached.handle(signal.SIGINT, None)
    assert other.sent == [signal.SIGINT]
    other.returncode = 0  # exited: nothing more is sent
    detached.handle(signal.SIGTERM, None)
    assert other.sent == [signal.SIGINT]


def test_diagnoser_answers_are_parsed_strictly() -> None:
    """Empty and null are "no diagnosis"; anything but a usable object is refused."""
    assert _parse_answer(b"") is None
    assert _parse_answer(b"null\n") is None
    found = _parse_answer(b'{"root_cause": " x ", "fix": "y", "severity": "blocker"}')
    assert found is not None
    assert (found.root_cause, found.fix, found.severity) == ("x", "y", "BLOCKER")
    for bad in (b"{", b'"text"', b"{}", b'{"fix": ""}', b'{"fix": "y", "severity": "HUGE"}'):
        with pytest.raises(DiagnoserError):
            _parse_answer(bad)


# -- big output ---------------------------------------------------------------------------------


def test_a_huge_stderr_is_passed_on_whole_and_logged_cut_with_a_marker(tmp_path: Path) -> None:
    """300 KB of stderr: all of it reaches the caller; the last --tail-kb are kept, marked, and
    the log entry is capped by LEARNING_MAX_ERROR_TEXT_CHARS with its own marker, not refused."""
    child = (
        "import sys\n"
        "for i in range(3000): sys.stderr.write(f'line {i:05d} ' + 'x' * 90 + '\\n')\n"
        "sys.stderr.write('Fatal: out of memory\\n'); sys.exit(9)"
    )
    done = wrapper("--video", "v042", "--stage", "assets", "--tail-kb", "8", "--", PY, "-c", child)
    assert done.returncode == 9
    assert "line 00000 " in done.stderr and "Fatal: out of memory" in done.stderr
    [entry] = list_errors()
    assert entry.exit_code == 9
    assert "earlier bytes of stderr not kept" in entry.error
    assert entry.error.rstrip().endswith("Fatal: out of memory")
    assert "line 00000 " not in entry.error
    assert entry.context["stderr_bytes"] > 290_000


def test_the_tail_keeps_the_last_bytes_and_never_starts_inside_a_character() -> None:
    """The kept tail starts at a whole character and says how much was dropped."""
    tail = _Tail(5)
    tail.add("aé".encode())
    tail.add("ééé".encode())  # 9 bytes in all, the last 5 kept: half of an é, then "éé"
    text = tail.text()
    assert text.endswith("\néé")
    assert text.startswith("[… 5 earlier bytes of stderr not kept: the last 4 follow …]")
    small = _Tail(100)
    small.add(b"a\x00b")
    assert small.text() == "a\ufffdb"


# -- the library --------------------------------------------------------------------------------


def test_run_command_returns_what_it_did(store: Store, tmp_path: Path) -> None:
    """In a program: stderr reaches the sink chunk by chunk, every loop step the progress
    callback, and the CommandRun says how it ended."""
    chunks: list[bytes] = []
    steps: list[str] = []
    result = run_command(
        "v042",
        "tts",
        [PY, "-c", "import sys; print('voice missing', file=sys.stderr); sys.exit(2)"],
        retries=0,
        store=store,
        stdout=subprocess.DEVNULL,
        stderr_sink=chunks.append,
        progress=lambda step: steps.append(step.step),
    )
    assert result.exit_code == 2 and result.outcome == "failed"
    assert b"".join(chunks) == b"voice missing\n"
    assert steps == ["gate", "execute", "fail", "diagnose", "learn", "give_up"]
    assert result.agent == "publisher"
    assert result.error_ids == [list_errors(store=store)[0].id]
    assert result.stage_run is not None and result.stage_run.error_ids == result.error_ids
    assert result.to_dict()["attempts"][0]["stderr_tail"] == "voice missing\n"


def test_run_command_refuses_bad_commands_before_anything_runs(store: Store) -> None:
    """An empty command, an unsplittable diagnoser, a bad timeout: InvalidInputError, nothing
    written."""
    for kwargs in (
        {"command": []},
        {"command": [""]},
        {"command": ["true"], "diagnose": "sh -c 'unclosed"},
        {"command": ["true"], "diagnose": ""},
        {"command": ["true"], "diagnose_timeout": 0.0},
        {"command": ["true"], "tail_bytes": 0},
    ):
        with pytest.raises(InvalidInputError):
            run_command("v042", "assets", store=store, **kwargs)  # type: ignore[arg-type]
    assert list_errors(store=store) == [] and list_events(store=store) == []


def test_the_child_environment_is_the_callers_plus_the_rules(tmp_path: Path) -> None:
    """``env=`` replaces the caller's environment (the RAYVAULT_* variables are added)."""
    dump = tmp_path / "env.json"
    child = script(tmp_path, "dump.py", ENV_DUMP)
    result = run_command(
        "v042",
        "assets",
        [PY, str(child), str(dump)],
        env={"PATH": os.environ["PATH"], "RAYVAULT_EXTRA": "kept"},
    )
    assert result.exit_code == 0
    env = json.loads(dump.read_text())["env"]
    assert env["RAYVAULT_EXTRA"] == "kept"
    assert env["RAYVAULT_RULES"] == ""
    assert "RAYVAULT_ROOT" not in env
