"""Any executable as a stage of the closed loop: what ``rayvault-learn run`` does.

:func:`run_command` ``(video_id, stage, ["./make_assets.sh", "v042"], retries=1,
diagnose="./diagnose.py") -> CommandRun`` runs the command through :func:`~rayvault.learning.loop
.run_stage` — one loop, whatever runs in it — with each attempt a child process:

1. **gate** — the stage's gate (``learning_gate``); blocked: the command never runs, the run's
   outcome is ``blocked`` (the CLI exits 2).
2. **rules** — the agent's rendered rules are handed to the child: the path of a file holding the
   block in ``RAYVAULT_RULES_FILE`` (always; the file is empty when there are no rules; it lives
   in a private temporary folder removed when the attempt ends) and the block itself in
   ``RAYVAULT_RULES`` when it is at most :data:`RULES_ENV_MAX_BYTES` bytes as UTF-8 (unset
   otherwise). ``RAYVAULT_VIDEO_ID``, ``RAYVAULT_STAGE``, ``RAYVAULT_AGENT`` (unset for a stage
   without agent), ``RAYVAULT_ATTEMPT`` and ``RAYVAULT_RUN_ID`` say where it runs.
3. **attempt + capture** — the child's stdout is the caller's (live, untouched); its stderr is
   read through a pipe by a thread that writes each chunk on at once (``stderr_sink``) and keeps
   the last ``tail_bytes`` of it; the exit code and the duration are measured. A command that
   cannot be found exits 127, one that cannot be executed 126, one killed by signal K 128+K, as
   in a shell.
4. **log** — a failed attempt becomes an error-log entry with the real exit code: its text is the
   stderr tail (or a line saying how the command ended when it wrote nothing), cut to
   ``LEARNING_MAX_ERROR_TEXT_CHARS`` with a marker by ``log_error``, never refused.
5. **diagnose + learn + retry** — as in ``run_stage``: history first
   (:func:`~rayvault.learning.loop.diagnose_from_history`), then the ``diagnose`` command, if
   any, which gets the failure as JSON on stdin (:func:`failure_document`) and may answer
   ``{"root_cause": …, "fix": …}`` on stdout; a diagnosis becomes a learning event with the
   agent (a rule in its memory) and the attempt is retried with the rules as they are then. A
   diagnoser that does not answer within ``diagnose_timeout`` seconds is killed (with its process
   group); one that answers something else, exits non-zero or cannot be started gives no
   diagnosis: each is said (a ``diagnose`` step of the run and a warning on the
   ``rayvault.learning`` logger) and the loop goes on without it.

Signals: while the run lasts, SIGINT and SIGTERM (main thread only, ``forward_signals``) are
passed to the running child, and the run ends as ``interrupted``: the attempt is not logged as a
failure, nothing is learned from it, and no retry follows. A SIGINT typed at a terminal already
reaches the child (it is in the terminal's foreground process group, as the wrapper is): the
first one is then not sent again, later ones are.

Efficacy: the rules delivered are counted (``mark_delivered``) and each finished attempt is counted
on them (``record_attempt``), by ``run_stage`` itself; an interrupted attempt is not counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from rayvault.learning._telemetry import annotate_current
from rayvault.learning._validate import cap_text, checked
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.loop import (
    Diagnoser,
    Diagnosis,
    Failure,
    LoopStep,
    StageContext,
    StageRun,
    StepFailed,
    chain_diagnosers,
    diagnose_from_history,
    run_stage,
)
from rayvault.learning.models import GateResult
from rayvault.learning.store import Store, get_store

__all__ = [
    "CommandAttempt",
    "CommandRun",
    "DiagnoserError",
    "failure_document",
    "run_command",
]

log = logging.getLogger("rayvault.learning")

#: The longest rules block (UTF-8 bytes) also put in ``RAYVAULT_RULES``; a longer one is only in
#: the file. 32 KiB is far below Linux's 128 KiB limit on one environment string.
RULES_ENV_MAX_BYTES = 32 * 1024
#: Stderr kept from each attempt by default (the last 64 KiB).
DEFAULT_TAIL_BYTES = 64 * 1024
#: Seconds a diagnoser may take by default before it is killed.
DEFAULT_DIAGNOSE_TIMEOUT = 60.0
#: Exit codes of a shell: command not found, found but not executable, killed by signal K: 128+K.
EXIT_NOT_FOUND = 127
EXIT_CANNOT_EXECUTE = 126
EXIT_SIGNAL_BASE = 128
#: The longest command line kept in an error's context (a huge argv must not make it refused).
_COMMAND_CHARS = 1000
#: The longest diagnoser answer quoted when it is refused.
_QUOTED = 200
#: Seconds to wait, after the child exited, for its stderr to end (a background grandchild may
#: hold the pipe open: its later output is still passed on, but the run does not wait for it).
_DRAIN_SECONDS = 2.0

CommandOutcome = Literal["succeeded", "failed", "blocked", "interrupted"]
AttemptOutcome = Literal["succeeded", "failed", "interrupted"]


class DiagnoserError(Exception):
    """The ``diagnose`` command gave no usable answer (timed out, exited non-zero, answered
    something other than a diagnosis, could not be started). The loop records it and goes on
    without a diagnosis."""


class CommandInterrupted(BaseException):
    """The run was interrupted by a signal (SIGINT, SIGTERM): a BaseException, so that neither the
    loop's failure handling nor its diagnoser guard takes it for a failure to learn from."""

    def __init__(self, signum: int, attempt: CommandAttempt | None) -> None:
        super().__init__(f"interrupted by {_signal_name(signum)}")
        self.signum = signum
        self.attempt = attempt


@dataclass(frozen=True)
class CommandAttempt:
    """One run of the command."""

    attempt: int
    #: The exit code as a shell reports it: 127 not found, 126 not executable, 128+K by signal K.
    exit_code: int
    outcome: AttemptOutcome
    duration_s: float
    #: The last ``tail_bytes`` of its stderr as text (a marker first when the start was cut).
    stderr_tail: str
    #: Bytes it wrote on stderr in all.
    stderr_bytes: int = 0
    #: The signal that killed it (``SIGKILL``), None when it exited.
    signal: str | None = None
    #: Why it could not be started (not found, not executable), None when it ran.
    start_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "exit_code": self.exit_code,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 6),
            "stderr_tail": self.stderr_tail,
            "stderr_bytes": self.stderr_bytes,
            "signal": self.signal,
            "start_error": self.start_error,
        }


@dataclass
class CommandRun:
    """What one ``run_command`` did, and the exit code it ends with."""

    video_id: str
    stage: str
    agent: str | None
    run_id: str
    command: list[str]
    outcome: CommandOutcome = "failed"
    #: 0 succeeded; 2 blocked by the gate; the last attempt's exit code when it failed; 128+K
    #: when interrupted by signal K (130 for Ctrl-C).
    exit_code: int = 1
    attempts: list[CommandAttempt] = field(default_factory=list)
    gate: GateResult | None = None
    #: The loop's record of the run (None when it was interrupted: the loop did not finish).
    stage_run: StageRun | None = None
    steps: list[LoopStep] = field(default_factory=list)
    #: The signal that interrupted the run (``SIGINT``), None otherwise.
    interrupted_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "succeeded"

    @property
    def error_ids(self) -> list[str]:
        return _step_ids(self.steps, "fail", "error_id")

    @property
    def event_ids(self) -> list[str]:
        return _step_ids(self.steps, "learn", "event_id")

    @property
    def delivered_rule_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for step in self.steps:
            if step.step == "execute":
                seen.update(dict.fromkeys(step.data.get("rule_ids", ())))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "stage": self.stage,
            "agent": self.agent,
            "run_id": self.run_id,
            "command": list(self.command),
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "interrupted_by": self.interrupted_by,
            "attempts": [a.to_dict() for a in self.attempts],
            "gate": self.gate.to_dict() if self.gate else None,
            "error_ids": self.error_ids,
            "event_ids": self.event_ids,
            "delivered_rule_ids": self.delivered_rule_ids,
            "steps": [s.to_dict() for s in self.steps],
        }


def _step_ids(steps: list[LoopStep], name: str, key: str) -> list[str]:
    return list(dict.fromkeys(str(s.data[key]) for s in steps if s.step == name and key in s.data))


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# -- the command's failure as the loop sees it ----------------------------------------------------
class CommandFailed(StepFailed):
    """A failed attempt of the command: logged with its stderr tail and real exit code."""

    def __init__(self, command: Sequence[str], attempt: CommandAttempt) -> None:
        self.command = list(command)
        self.attempt = attempt
        shown = cap_text(shlex.join(command), _COMMAND_CHARS)
        super().__init__(
            _error_text(shown, attempt),
            exit_code=attempt.exit_code,
            context={
                "command": shown,
                "duration_s": round(attempt.duration_s, 3),
                "stderr_bytes": attempt.stderr_bytes,
                **({"signal": attempt.signal} if attempt.signal else {}),
                **({"start_error": attempt.start_error} if attempt.start_error else {}),
            },
        )


def _error_text(shown: str, attempt: CommandAttempt) -> str:
    """What the error log records: the command's own words (its stderr tail), or, when it wrote
    nothing, how it ended."""
    if attempt.stderr_tail.strip():
        return attempt.stderr_tail
    if attempt.start_error:
        return attempt.start_error
    if attempt.signal:
        return f"{shown}: killed by {attempt.signal} (exit code {attempt.exit_code})"
    return f"{shown}: exited with code {attempt.exit_code} and wrote nothing on stderr"


# -- the diagnose command -------------------------------------------------------------------------
@checked
def failure_document(failure: Failure) -> dict[str, Any]:
    """The failure as the ``diagnose`` command reads it on stdin (one JSON object): ``video_id,
    stage, agent, attempt, max_attempts, run_id, exit_code, signal, stderr_tail, duration_s,
    command`` (the argument list), ``error_id``, ``fingerprint`` and ``rules`` (the block the
    attempt was given). For a failure that is not a command's, ``stderr_tail`` is the logged
    error text and the command fields are None."""
    exc = failure.exception
    attempt = exc.attempt if isinstance(exc, CommandFailed) else None
    return {
        "video_id": failure.video_id,
        "stage": failure.stage,
        "agent": failure.agent,
        "attempt": failure.attempt,
        "max_attempts": failure.context.max_attempts,
        "run_id": failure.context.run_id,
        "exit_code": failure.error.exit_code,
        "signal": attempt.signal if attempt else None,
        "stderr_tail": attempt.stderr_tail if attempt else failure.error.error,
        "duration_s": round(attempt.duration_s, 6) if attempt else None,
        "command": exc.command if isinstance(exc, CommandFailed) else None,
        "error_id": failure.error.id,
        "fingerprint": failure.fingerprint,
        "rules": failure.context.rendered_rules,
    }


def _quoted(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= _QUOTED else text[:_QUOTED] + "…")


def _parse_answer(out: bytes) -> Diagnosis | None:
    """The diagnoser's stdout as a diagnosis: empty or ``null`` is "no diagnosis"; anything but a
    JSON object with a text ``root_cause`` or ``fix`` (and optionally ``severity``) is refused."""
    if not out.strip():
        return None
    try:
        answer = orjson.loads(out)
    except orjson.JSONDecodeError:
        raise DiagnoserError(f"answered something that is not JSON: {_quoted(out)}") from None
    if answer is None:
        return None
    if not isinstance(answer, dict):
        raise DiagnoserError(f"answered JSON that is not an object: {_quoted(out)}")
    root_cause, fix = answer.get("root_cause", ""), answer.get("fix", "")
    severity = answer.get("severity", "FAIL")
    if not isinstance(root_cause, str) or not isinstance(fix, str):
        raise DiagnoserError(f"root_cause and fix must be text: {_quoted(out)}")
    if not root_cause.strip() and not fix.strip():
        raise DiagnoserError(f"answered an object without root_cause or fix: {_quoted(out)}")
    if not isinstance(severity, str):
        raise DiagnoserError(f"severity must be text: {_quoted(out)}")
    for name, text in (("root_cause", root_cause), ("fix", fix), ("severity", severity)):
        if "\x00" in text:
            raise DiagnoserError(f"{name} contains a NUL character")
    try:
        return Diagnosis(root_cause.strip(), fix.strip(), severity=severity, source="diagnoser")
    except InvalidInputError as e:
        raise DiagnoserError(f"answered an unusable diagnosis: {e}") from None


class _Signals:
    """The signals received while a run lasts, and the child they go to."""

    def __init__(self, terminal_sigint: bool) -> None:
        self.received: list[int] = []
        self.child: subprocess.Popen[bytes] | None = None
        #: The child is in its own process group (a diagnoser): signal the group.
        self.child_group = False
        #: A SIGINT typed at the terminal reaches the child by itself: the first is not resent.
        self.terminal_sigint = terminal_sigint

    def handle(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        first_sigint = signum == signal.SIGINT and self.received.count(signal.SIGINT) == 1
        if first_sigint and self.terminal_sigint and not self.child_group:
            return
        self.send(signum)

    def send(self, signum: int) -> None:
        child = self.child
        if child is None or child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.child_group:
                os.killpg(child.pid, signum)
            else:
                child.send_signal(signum)

    @property
    def interrupted(self) -> int | None:
        return self.received[0] if self.received else None


def _terminal_delivers_sigint() -> bool:
    """Whether this process is in its terminal's foreground process group: then a Ctrl-C reaches
    the child (same group) without us."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


@contextlib.contextmanager
def _forwarding(signals: _Signals, enabled: bool) -> Iterator[None]:
    """SIGINT and SIGTERM handled by ``signals`` for the block (main thread only), then the
    previous handlers back."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signals.handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _command_diagnoser(argv: list[str], timeout: float, signals: _Signals) -> Diagnoser:
    def diagnose(failure: Failure) -> Diagnosis | None:
        if signals.interrupted is not None:
            raise CommandInterrupted(signals.interrupted, None)
        document = orjson.dumps(failure_document(failure))
        try:
            # Its own session: on a timeout the whole group is killed (a shell script's children
            # would otherwise keep its stdout open, and the wait would never end).
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise DiagnoserError(f"{shlex.join(argv)} could not be started: {e}") from None
        signals.child, signals.child_group = proc, True
        try:
            out, _ = proc.communicate(document, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise DiagnoserError(
                f"{shlex.join(argv)} did not answer within {timeout:g} s and was killed"
            ) from None
        finally:
            signals.child, signals.child_group = None, False
        if signals.interrupted is not None:
            raise CommandInterrupted(signals.interrupted, None)
        if proc.returncode != 0:
            raise DiagnoserError(
                f"{shlex.join(argv)} exited with code {_exit_code(proc.returncode)}"
                + (f" after answering {_quoted(out)}" if out.strip() else "")
            )
        return _parse_answer(out)

    return diagnose


# -- one attempt ----------------------------------------------------------------------------------
class _Tail:
    """The last ``limit`` bytes written, and how many were written in all."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self.data += chunk
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        data = bytes(self.data)
        dropped = self.total - len(data)
        if dropped:
            # Cut inside a character: start at the next one.
            start = 0
            while start < min(len(data), 4) and data[start] & 0xC0 == 0x80:
                start += 1
            dropped += start
            data = data[start:]
        text = data.decode("utf-8", "replace").replace("\x00", "\ufffd")
        if dropped:
            text = (
                f"[… {dropped} earlier bytes of stderr not kept: the last {len(data)} follow …]\n"
                + text
            )
        return text


def _pump(stream: IO[bytes], sink: Callable[[bytes], object] | None, tail: _Tail) -> None:
    """Read the child's stderr as it comes, pass each chunk on at once, keep the tail."""
    fd = stream.fileno()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        if sink is not None:
            try:
                sink(chunk)
            except (OSError, ValueError):
                sink = None  # our stderr is gone: keep reading, or the child blocks on a full pipe
        tail.add(chunk)
    stream.close()


def _exit_code(returncode: int) -> int:
    return EXIT_SIGNAL_BASE - returncode if returncode < 0 else returncode


@contextlib.contextmanager
def _rules_file(text: str) -> Iterator[Path]:
    """The rules block in a file of a private temporary folder, removed afterwards."""
    folder = tempfile.mkdtemp(prefix="rayvault-rules-")
    try:
        path = Path(folder) / "rules.md"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _child_env(base: Mapping[str, str], ctx: StageContext, rules_path: Path) -> dict[str, str]:
    env = dict(base)
    env["RAYVAULT_RULES_FILE"] = str(rules_path)
    if len(ctx.rendered_rules.encode("utf-8")) <= RULES_ENV_MAX_BYTES:
        env["RAYVAULT_RULES"] = ctx.rendered_rules
    else:
        env.pop("RAYVAULT_RULES", None)  # never a stale block from the caller's environment
    env["RAYVAULT_VIDEO_ID"] = ctx.video_id
    env["RAYVAULT_STAGE"] = ctx.stage
    if ctx.agent:
        env["RAYVAULT_AGENT"] = ctx.agent
    else:
        env.pop("RAYVAULT_AGENT", None)
    env["RAYVAULT_ATTEMPT"] = str(ctx.attempt)
    env["RAYVAULT_RUN_ID"] = ctx.run_id
    return env


def _spawn_and_wait(
    argv: list[str],
    *,
    attempt: int,
    env: dict[str, str],
    cwd: str | None,
    stdout: int | None,
    stderr_sink: Callable[[bytes], object] | None,
    tail_bytes: int,
    signals: _Signals,
) -> CommandAttempt:
    """Run the command once: stdout as given, stderr passed on and its tail kept."""
    tail = _Tail(tail_bytes)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env, cwd=cwd)
    except OSError as e:
        not_found = isinstance(e, FileNotFoundError)
        why = "command not found" if not_found else f"cannot execute: {e.strerror or e}"
        message = f"{argv[0]}: {why}"
        if stderr_sink is not None:
            with contextlib.suppress(OSError, ValueError):
                stderr_sink(f"rayvault-learn run: {message}\n".encode())
        return CommandAttempt(
            attempt=attempt,
            exit_code=EXIT_NOT_FOUND if not_found else EXIT_CANNOT_EXECUTE,
            outcome="failed",
            duration_s=time.monotonic() - start,
            stderr_tail="",
            start_error=message,
        )
    assert proc.stderr is not None
    reader = threading.Thread(
        target=_pump, args=(proc.stderr, stderr_sink, tail), name="rayvault-stderr", daemon=True
    )
    reader.start()
    signals.child, signals.child_group = proc, False
    if signals.interrupted is not None:  # a signal came while it started
        signals.send(signals.interrupted)
    try:
        returncode = proc.wait()
    finally:
        signals.child = None
    duration = time.monotonic() - start
    reader.join(_DRAIN_SECONDS)
    code = _exit_code(returncode)
    interrupted = signals.interrupted is not None
    return CommandAttempt(
        attempt=attempt,
        exit_code=code,
        outcome="interrupted" if interrupted else "succeeded" if code == 0 else "failed",
        duration_s=duration,
        stderr_tail=tail.text(),
        stderr_bytes=tail.total,
        signal=_signal_name(-returncode) if returncode < 0 else None,
    )


def _check_command(command: str | Sequence[str], name: str) -> list[str]:
    if isinstance(command, str):
        try:
            argv = shlex.split(command)
        except ValueError as e:
            raise InvalidInputError(f"{name} cannot be split into arguments: {e}") from None
    else:
        argv = list(command)
    if not argv or not argv[0]:
        raise InvalidInputError(f"{name} is empty: give the program to run and its arguments")
    return argv


# -- the run --------------------------------------------------------------------------------------
@checked
def run_command(
    video_id: str,
    stage: str,
    command: Sequence[str],
    *,
    retries: int = 1,
    diagnose: str | Sequence[str] | None = None,
    diagnose_timeout: float = DEFAULT_DIAGNOSE_TIMEOUT,
    agent: str | None = None,
    run_id: str | None = None,
    tail_bytes: int = DEFAULT_TAIL_BYTES,
    store: Store | None = None,
    stdout: int | None = None,
    stderr_sink: Callable[[bytes], object] | None = None,
    progress: Callable[[LoopStep], None] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    forward_signals: bool = True,
) -> CommandRun:
    """Run ``command`` (a program and its arguments; no shell) as ``stage`` of ``video_id``
    through the closed loop (see the module doc); returns the :class:`CommandRun`, whose
    ``exit_code`` is what the caller should exit with.

    ``retries``, ``agent``, ``run_id``, ``progress``: as for :func:`run_stage`. ``diagnose``: the
    diagnoser command (an argument list, or a command line split like a shell's words, never run
    by a shell), asked after history. ``diagnose_timeout``: seconds before it is killed.
    ``tail_bytes``: the stderr kept per attempt. ``stdout``: the child's stdout as a file
    descriptor (or ``subprocess.DEVNULL``; default: ours).
    ``stderr_sink``: called with each chunk of the child's stderr as it comes (default: not
    passed on, only kept). ``env``: the child's environment before the ``RAYVAULT_*`` variables
    are added (default: ours). ``forward_signals``: pass SIGINT/SIGTERM to the child (only from
    the main thread). Bad arguments (an empty command, an unknown stage) are refused before
    anything runs or is written (:class:`InvalidInputError`).
    """
    argv = _check_command(command, "command")
    diagnoser_argv = _check_command(diagnose, "diagnose") if diagnose is not None else None
    if not diagnose_timeout > 0:
        raise InvalidInputError(f"diagnose_timeout must be > 0 seconds (got {diagnose_timeout})")
    if tail_bytes < 1:
        raise InvalidInputError(f"tail_bytes must be at least 1 (got {tail_bytes})")
    store = store or get_store()
    signals = _Signals(_terminal_delivers_sigint() if forward_signals else False)
    diagnoser: Diagnoser = diagnose_from_history
    if diagnoser_argv is not None:
        diagnoser = chain_diagnosers(
            diagnose_from_history, _command_diagnoser(diagnoser_argv, diagnose_timeout, signals)
        )
    base_env = dict(os.environ if env is None else env)
    steps: list[LoopStep] = []
    attempts: list[CommandAttempt] = []

    def record(step: LoopStep) -> None:
        steps.append(step)
        if progress is not None:
            progress(step)

    def attempt(ctx: StageContext) -> CommandAttempt:
        if signals.interrupted is not None:
            raise CommandInterrupted(signals.interrupted, None)
        with _rules_file(ctx.rendered_rules) as rules_path:
            done = _spawn_and_wait(
                argv,
                attempt=ctx.attempt,
                env=_child_env(base_env, ctx, rules_path),
                cwd=cwd,
                stdout=stdout,
                stderr_sink=stderr_sink,
                tail_bytes=tail_bytes,
                signals=signals,
            )
        attempts.append(done)
        annotate_current(
            command=argv[0],
            exit_code=done.exit_code,
            duration_s=round(done.duration_s, 6),
            signal=done.signal,
            stderr_bytes=done.stderr_bytes,
        )
        if signals.interrupted is not None:
            raise CommandInterrupted(signals.interrupted, done)
        if done.exit_code != 0:
            raise CommandFailed(argv, done)
        return done

    with _forwarding(signals, forward_signals):
        try:
            stage_run = run_stage(
                video_id,
                stage,
                attempt,
                retries=retries,
                diagnose=diagnoser,
                agent=agent,
                run_id=run_id,
                on_blocked="return",
                on_failure="return",
                store=store,
                progress=record,
                ignore=CommandInterrupted,
            )
        except CommandInterrupted as stop:
            return _interrupted(
                video_id=video_id,
                stage=stage,
                agent=agent,
                run_id=run_id,
                argv=argv,
                steps=steps,
                attempts=attempts,
                stop=stop,
            )
    result = CommandRun(
        video_id=video_id,
        stage=stage,
        agent=stage_run.agent,
        run_id=stage_run.run_id,
        command=argv,
        outcome=stage_run.outcome,
        attempts=attempts,
        gate=stage_run.gate,
        stage_run=stage_run,
        steps=steps,
    )
    if stage_run.outcome == "blocked":
        result.exit_code = 2
    elif stage_run.outcome == "succeeded":
        result.exit_code = 0
    else:
        result.exit_code = attempts[-1].exit_code if attempts else 1
    return result


def _interrupted(
    *,
    video_id: str,
    stage: str,
    agent: str | None,
    run_id: str | None,
    argv: list[str],
    steps: list[LoopStep],
    attempts: list[CommandAttempt],
    stop: CommandInterrupted,
) -> CommandRun:
    name = _signal_name(stop.signum)
    log.info("%s/%s: interrupted by %s: not learned from", video_id, stage, name)
    gate_steps = [s for s in steps if s.step == "gate"]
    return CommandRun(
        video_id=video_id,
        stage=stage,
        agent=gate_steps[0].data.get("agent") if gate_steps else agent,
        run_id=steps[0].run_id if steps else run_id or "",
        command=argv,
        outcome="interrupted",
        exit_code=EXIT_SIGNAL_BASE + stop.signum,
        attempts=attempts,
        steps=steps,
        interrupted_by=name,
    )
