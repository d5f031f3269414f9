"""Errors logged from anywhere: ``LearningLogHandler`` in a real logger (messages, exceptions,
threads, a pool of processes) and ``rayvault-learn errors log -`` with ``--exit-code`` and
``--context-json``."""

from __future__ import annotations

import io
import logging
import multiprocessing
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import InvalidInputError, LearningLogHandler
from rayvault.learning.errors import list_errors
from rayvault.learning.store import Store

from ._workers import log_through_handler


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A logger of the test's own that does not propagate to the root logger."""
    log = logging.getLogger("pipeline.test")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def test_error_records_and_exceptions_reach_the_error_log(
    store: Store, logger: logging.Logger
) -> None:
    """ERROR records become entries for the handler's video and stage: a message as it is, an
    exception with its traceback (grouped by its failure line); WARNING and below do not."""
    logger.addHandler(LearningLogHandler("v042", "assets", store=store))
    logger.warning("only a warning")
    logger.error("upload of %s failed", "frame.png")
    try:
        raise TimeoutError("render timed out after 30s on B0ABC")
    except TimeoutError:
        logger.exception("render failed")
    entries = list_errors(store=store)
    assert [e.error.splitlines()[0] for e in entries] == [
        "upload of frame.png failed",
        "render failed",
    ]
    message, exception = entries
    assert message.video_id == exception.video_id == "v042"
    assert message.stage == "assets" and message.exit_code == 1
    assert message.context["logger"] == "pipeline.test"
    assert message.context["level"] == "ERROR"
    path, line = message.context["source"].rsplit(":", 1)
    assert path.endswith("test_log_handler.py") and int(line) > 0
    assert message.context["function"] == "test_error_records_and_exceptions_reach_the_error_log"
    assert "Traceback (most recent call last):" in exception.error
    assert exception.error.rstrip().endswith("TimeoutError: render timed out after 30s on B0ABC")
    assert exception.pattern is not None and "TimeoutError" in exception.pattern
    assert exception.context["level"] == "ERROR"


def test_options_level_exit_code_context_and_root(
    root: Path, tmp_path: Path, logger: logging.Logger
) -> None:
    """``level``, ``exit_code`` and ``context`` are used; ``root`` writes to that data root."""
    other = tmp_path / "other-root"
    handler = LearningLogHandler(
        None, "tts", root=other, level=logging.WARNING, exit_code=7, context={"run_id": "r1"}
    )
    logger.addHandler(handler)
    logger.info("not logged")
    logger.warning("voice %s missing", "v2")
    logger.critical("")  # an empty message still says what happened
    handler.close()
    from rayvault.learning.store import FileStore

    entries = list_errors(store=FileStore(other))
    assert [e.error for e in entries] == [
        "voice v2 missing",
        "CRITICAL logged by pipeline.test with an empty message",
    ]
    assert all(e.exit_code == 7 and e.context["run_id"] == "r1" for e in entries)
    assert entries[0].video_id is None
    assert list_errors() == []  # nothing in the default root


def test_a_failing_write_never_raises_into_the_callers_logging(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """If the error log cannot be written, emit goes to handleError (printed on stderr) and
    the caller's logging call returns normally."""
    from rayvault.learning import log_handler
    from rayvault.learning.exceptions import StoreError

    def broken(*args: object, **kwargs: object) -> None:
        raise StoreError("the disk is full")

    monkeypatch.setattr(log_handler, "log_error", broken)
    logger.addHandler(LearningLogHandler("v042", "assets"))
    logger.error("boom")  # does not raise
    assert "--- Logging error ---" in capsys.readouterr().err
    monkeypatch.setattr(logging, "raiseExceptions", False)
    logger.error("boom again")
    assert capsys.readouterr().err == ""


def test_records_logged_while_writing_are_not_written_again(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record logged by the error log itself during a write (to a logger the handler also
    listens to) does not recurse into a second write."""
    from rayvault.learning import log_handler

    real = log_handler.log_error
    calls: list[str] = []

    def noisy(*args: object, **kwargs: object) -> object:
        calls.append(str(args[2]))
        logger.error("the error log complains while writing")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(log_handler, "log_error", noisy)
    logger.addHandler(LearningLogHandler("v042", "assets"))
    logger.error("the pipeline's failure")
    assert calls == ["the pipeline's failure"]
    assert [e.error for e in list_errors()] == ["the pipeline's failure"]


def test_bad_arguments_are_refused_when_the_handler_is_made() -> None:
    """A path-escaping video id, a bad stage, both root and store, a context that is not JSON:
    refused at construction, not at the first error."""
    with pytest.raises(InvalidInputError):
        LearningLogHandler("../etc", "assets")
    with pytest.raises(InvalidInputError):
        LearningLogHandler("v1", "")
    with pytest.raises(InvalidInputError):
        LearningLogHandler("v1", "assets", context={"when": object()})
    with pytest.raises(InvalidInputError):
        LearningLogHandler("v1", "assets", exit_code=True)


def test_threads_share_one_handler_and_lose_nothing(store: Store, logger: logging.Logger) -> None:
    """Eight threads logging through one handler: every record is in the log once."""
    logger.addHandler(LearningLogHandler("v042", "assets", store=store))

    def work(worker: int) -> None:
        for i in range(15):
            logger.error("thread %d item %d failed", worker, i)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    texts = sorted(e.error for e in list_errors(store=store))
    assert texts == sorted(f"thread {w} item {i} failed" for w in range(8) for i in range(15))


@pytest.mark.slow
def test_a_pool_of_processes_loses_nothing(store: Store, root: Path, backend: str | None) -> None:
    """Four processes, each with its own handler on the same data root, 25 errors each: all 100
    are in the log, each once (the store's locks, a store per process)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        done = list(
            pool.map(log_through_handler, [str(root)] * 4, [backend] * 4, range(4), [25] * 4)
        )
    assert done == [25] * 4
    entries = list_errors(store=store)
    assert len(entries) == 100
    assert len({e.id for e in entries}) == 100
    assert {e.context["process"] for e in entries}.isdisjoint({__import__("os").getpid()})


@pytest.mark.slow
def test_the_package_import_stays_light() -> None:
    """``import rayvault.learning`` loads neither the handler nor the wrapper; asking for the
    handler loads it (and not the wrapper)."""
    code = (
        "import sys, rayvault.learning as l\n"
        "assert 'rayvault.learning.log_handler' not in sys.modules\n"
        "assert 'rayvault.learning.wrapper' not in sys.modules\n"
        "l.LearningLogHandler\n"
        "assert 'rayvault.learning.log_handler' in sys.modules\n"
        "assert 'rayvault.learning.wrapper' not in sys.modules\n"
        "print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout == "ok\n", done.stderr


# -- rayvault-learn errors log -------------------------------------------------------------------


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: bytes, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_errors_log_reads_stdin_with_exit_code_and_context_json(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``errors log STAGE -`` takes the text from stdin, with --exit-code and --context-json."""
    code, out, err = run_cli(
        monkeypatch, capsys, b"ffmpeg: codec not found\n",
        "errors", "log", "render", "-", "--video", "v042", "--exit-code", "7",
        "--context-json", '{"run_id": "r1", "step": "encode"}',
    )  # fmt: skip
    assert code == 0, err
    [entry] = list_errors(store=store)
    assert entry.error == "ffmpeg: codec not found"
    assert entry.exit_code == 7
    assert entry.context == {"run_id": "r1", "step": "encode"}
    assert out.startswith(f"Logged {entry.id}")


@pytest.mark.parametrize(
    ("context", "said"),
    [
        ("{nope", "--context-json (--context) is not valid JSON"),
        ("[1, 2]", "--context-json (--context) must be a JSON object, got list"),
        ('"text"', "--context-json (--context) must be a JSON object, got str"),
    ],
)
def test_errors_log_refuses_a_bad_context_and_writes_nothing(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    context: str,
    said: str,
) -> None:
    """Context that is not a JSON object: exit 1, one Error line, nothing logged."""
    code, _, err = run_cli(
        monkeypatch, capsys, b"boom\n", "errors", "log", "render", "-", "--context-json", context
    )
    assert code == 1
    assert err.startswith(f"Error: {said}")
    assert list_errors(store=store) == []


def test_errors_log_cuts_an_oversized_error_with_a_marker_and_keeps_it_whole(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A megabyte on stdin is logged, not refused: cut to LEARNING_MAX_ERROR_TEXT_CHARS with a
    marker, its start and its end kept."""
    text = "START " + "x" * 1_000_000 + " END"
    code, _, err = run_cli(
        monkeypatch, capsys, text.encode(), "errors", "log", "render", "-", "--exit-code", "3"
    )
    assert code == 0, err
    [entry] = list_errors(store=store)
    limit = store.policies.LEARNING_MAX_ERROR_TEXT_CHARS
    assert len(entry.error) <= limit
    assert entry.error.startswith("START ") and entry.error.endswith(" END")
    assert "[… truncated by rayvault: 1000010 characters" in entry.error
    assert entry.exit_code == 3
