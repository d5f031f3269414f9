"""Functions run in child processes by the concurrency tests (importable by spawned workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def letters(worker: int, i: int) -> str:
    """A word unique to (worker, i) with no digits, so every failure has its own fingerprint."""
    return "".join(chr(97 + int(d)) for d in f"{worker:02d}{i:05d}")


def distinct_failure(worker: int, i: int) -> str:
    """A failure text of its own for (worker, i): two of its words are unique to it, so no
    grouping takes two of them for variants of one failure (one word that varies in an
    otherwise equal text is exactly what it groups)."""
    word = letters(worker, i)
    return f"{word} kind of failure {word[::-1]}"


def create_many(
    root: str, worker: int, count: int, severity: str = "WARN", url: str | None = None
) -> list[str]:
    """Create ``count`` events with an agent, each a distinct failure; return their ids.
    ``url``: a PostgreSQL store (default: the file store of ``root``)."""
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore, open_store

    store = open_store(root, url) if url else FileStore(root)
    ids = []
    for i in range(count):
        event = create_event(
            run_id=f"w{worker}",
            severity=severity,
            component="assets",
            symptom=distinct_failure(worker, i),
            root_cause="cause",
            fix_applied="fix",
            video_id=f"v{worker}",
            agent="dzine_producer",
            store=store,
        )
        ids.append(event.event_id)
    store.close()
    return ids


def assign_variants(root: str, url: str, worker: int, count: int) -> list[str]:
    """Group ``count`` variants of one failure (a host name that varies) under the PostgreSQL
    store's ``pattern_book``, each logged as an error-log entry with the key it got, as
    ``log_error`` does; return the keys."""
    from datetime import UTC, datetime

    from rayvault.learning._grouping import assign
    from rayvault.learning.models import ErrorEntry
    from rayvault.learning.store.postgres import PostgresStore

    store = PostgresStore(root, url)
    keys = []
    for i in range(count):
        text = f"cannot reach host {letters(worker, i)} for upload"
        with store.pattern_book("assets") as book:
            grouping = assign(book, "assets", text)
        entry = ErrorEntry(
            id=f"e-{letters(worker, i)}",
            timestamp=datetime.now(UTC),
            stage="assets",
            error=text,
            fingerprint=grouping.key,
            pattern=grouping.template,
        )
        store.append_errors([entry])
        keys.append(grouping.key)
    store.close()
    return keys


def write_forever(root: str) -> None:
    """Create events until killed, printing each id once ``create_event`` has returned."""
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore

    store = FileStore(root)
    i = 0
    while True:
        event = create_event(
            run_id="crash",
            severity="FAIL",
            component="research",
            symptom=f"crash test {letters(0, i)} " + "x" * (i % 500),
            video_id="v1",
            agent="researcher",
            store=store,
        )
        sys.stdout.write(event.event_id + "\n")
        sys.stdout.flush()
        i += 1


def evict_forever(root: str, url: str | None, acknowledged: str) -> None:
    """Create WARN events of one agent until killed (each a new rule, so at the cap each evicts
    one into the tombstones), appending each id to the file ``acknowledged`` once
    ``create_event`` has returned."""
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore, open_store

    store = open_store(root, url) if url else FileStore(root)
    with open(acknowledged, "a", encoding="utf-8") as out:
        for i in range(100_000):
            event = create_event(
                run_id="evict",
                severity="WARN",
                component="assets",
                symptom=distinct_failure(1, i),
                agent="dzine_producer",
                store=store,
            )
            out.write(event.event_id + "\n")
            out.flush()


def start_writer(root: Path) -> subprocess.Popen[str]:
    """This module run as a process of its own: ``write_forever(root)``, ids on its stdout (the
    crash tests kill it)."""
    repo = Path(__file__).resolve().parents[1]
    return subprocess.Popen(
        [sys.executable, str(repo / "tests/_workers.py"), str(root)],
        stdout=subprocess.PIPE,
        cwd=repo,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    write_forever(sys.argv[1])


def promote(root: str, error_id: str, url: str | None = None) -> tuple[bool, str]:
    """Promote one error (run by several processes at once)."""
    from rayvault.learning.errors import promote_to_learning
    from rayvault.learning.store import FileStore, open_store

    store = open_store(root, url) if url else FileStore(root)
    try:
        result = promote_to_learning(error_id, root_cause="cause", fix="fix", store=store)
    finally:
        store.close()
    return result.created, result.event.event_id


def create_counting(
    root: str, worker: int, count: int, severity: str
) -> tuple[list[str], list[str], int]:
    """Create ``count`` events like :func:`create_many`, but go on after an error: the ids
    created, the errors raised, and the index's full rebuilds in this process."""
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore

    store = FileStore(root)
    ids, errors = [], []
    for i in range(count):
        try:
            event = create_event(
                run_id=f"w{worker}",
                severity=severity,
                component="assets",
                symptom=distinct_failure(worker, i),
                video_id=f"v{worker}",
                agent="dzine_producer",
                store=store,
            )
            ids.append(event.event_id)
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    rebuilds = store.index.rebuilds
    store.close()
    return ids, errors, rebuilds


def read_until(root: str, stop: str) -> tuple[int, list[str], int]:
    """Read the event log whole and through the index until the file ``stop`` exists: the
    number of reads, the errors raised, and the index's full rebuilds in this process."""
    import time
    from pathlib import Path

    from rayvault.learning.store import EventQuery, FileStore
    from rayvault.learning.store.files._jsonlog import JsonArrayLog

    store = FileStore(root)
    log = JsonArrayLog(store.events_path)
    reads, errors = 0, []
    while not Path(stop).exists():
        try:
            log.read()
            store.count_events(EventQuery(components=("assets",)))
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        reads += 1
        time.sleep(0.002)
    rebuilds = store.index.rebuilds
    store.close()
    return reads, errors, rebuilds


def append_many(path: str, worker: int, count: int) -> int:
    """Append ``count`` records to a JSON-array log under its lock, one append each."""
    from pathlib import Path

    import orjson

    from rayvault.learning.store._fs import locked
    from rayvault.learning.store.files._jsonlog import JsonArrayLog

    log = JsonArrayLog(Path(path))
    for i in range(count):
        record = {"id": f"{worker}-{i}", "pad": "x" * (i * 97 % 3000)}
        with locked(log.path):
            log.append([orjson.dumps(record)])
    return count


def create_with_key(root: str, url: str | None, key: str, worker: int) -> str:
    """Create one event with the idempotency ``key`` (all workers share it); return its id."""
    from rayvault.learning import create_event
    from rayvault.learning.store import FileStore, open_store

    store = open_store(root, url) if url else FileStore(root)
    try:
        event = create_event(
            run_id=f"w{worker}",
            severity="FAIL",
            component="assets",
            symptom=distinct_failure(worker, 0),
            video_id="v042",
            agent="dzine_producer",
            store=store,
            idempotency_key=key,
        )
    finally:
        store.close()
    return event.event_id


def count_attempts(
    root: str, url: str | None, worker: int, count: int, *, rule_id: str, pattern: str
) -> int:
    """``count`` attempts that deliver ``rule_id`` to dzine_producer: even ones through
    ``run_stage`` (a stage that succeeds, on a video of its own), odd ones recorded as failures
    with the rule's pattern (``record_attempt``). Returns how many were made."""
    from rayvault.learning import record_attempt, run_stage
    from rayvault.learning.store import FileStore, open_store

    store = open_store(root, url) if url else FileStore(root)
    for i in range(count):
        if i % 2 == 0:
            run = run_stage(f"v{worker}-{i}", "assets", lambda ctx: "ok", store=store)
            assert rule_id in run.delivered_rule_ids
        else:
            record_attempt(
                "dzine_producer",
                [rule_id],
                outcome="failed",
                run_id=f"w{worker}-{i}",
                video_id=f"v{worker}-{i}",
                stage="assets",
                attempt=1,
                fingerprint=pattern,
                store=store,
            )
    store.close()
    return count


def log_through_handler(root: str, url: str | None, worker: int, count: int) -> int:
    """Log ``count`` errors through a ``LearningLogHandler`` on a logger of this process; return
    how many records were emitted. ``url``: a PostgreSQL store (default: the file store)."""
    import logging

    from rayvault.learning import LearningLogHandler

    if url:
        os.environ["RAYVAULT_STORE"] = url
    handler = LearningLogHandler("v042", "assets", root=root)
    logger = logging.getLogger(f"pipeline.worker{worker}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(count):
            logger.error("worker %d failed item %d: %s", worker, i, distinct_failure(worker, i))
    finally:
        logger.removeHandler(handler)
        handler.close()
    return count
