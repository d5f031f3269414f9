"""Helpers shared by the benchmark scripts: synthetic history and timing."""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from rayvault.learning._ids import new_event_id
from rayvault.learning._time import format_ts
from rayvault.learning.patterns import fingerprint
from rayvault.learning.store.files.layout import Layout

if TYPE_CHECKING:
    from rayvault.learning.store import Store

#: Where benchmark data roots are created: the system temp folder, or RAYVAULT_BENCH_DIR. File
#: creation cost varies a lot between folders of one disk on some virtual machines (seen here:
#: 0.03 ms in one folder, 0.3-0.5 ms in another), and every write creates a temp file: compare
#: figures measured in the same folder.
BENCH_DIR = os.environ.get("RAYVAULT_BENCH_DIR") or tempfile.gettempdir()
Path(BENCH_DIR).mkdir(parents=True, exist_ok=True)

#: The real notes and SOUL files: the repository's copy (``tests/data``, see its README), or another
#: folder of the same layout in RAYVAULT_SHARED_DATA.
REAL_DATA = Path(
    os.environ.get("RAYVAULT_SHARED_DATA") or Path(__file__).resolve().parents[1] / "tests" / "data"
)

STAGES = ["research", "script", "assets", "tts", "manifest", "render", "publish"]
AGENTS = {
    "research": "researcher",
    "script": "scriptwriter",
    "assets": "dzine_producer",
    "tts": "publisher",
    "manifest": "davinci_editor",
    "render": "davinci_editor",
    "publish": "publisher",
}
SEVERITIES = ["INFO", "WARN", "FAIL", "BLOCKER"]
STATUSES = ["open", "applied", "verified", "archived"]
SYMPTOMS = [
    "Timeout after {n}s fetching product {w}",
    "Image hallucination in variant {w}",
    "Price anomaly for {w}: below median",
    "Audio clipping at {n} dB in segment {w}",
    "Script word count {n} outside target for {w}",
    "Render failed with exit code {n} on {w}",
]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


def synthetic_events(
    count: int, *, seed: int = 7, videos: int = 2000, days: int = 90
) -> list[dict[str, object]]:
    """``count`` realistic event records spread over ``days`` days (ending now), videos, stages
    and patterns."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=days)
    events = []
    for i in range(count):
        stage = rng.choice(STAGES)
        symptom = rng.choice(SYMPTOMS).format(n=rng.randint(1, 999), w=rng.choice(WORDS))
        ts = start + timedelta(seconds=i * (days * 86400 / max(count, 1)))
        fp = fingerprint(stage, symptom)
        status = rng.choice(STATUSES)
        events.append(
            {
                "event_id": new_event_id(ts),
                "run_id": f"run-{i}",
                "timestamp": format_ts(ts),
                "severity": rng.choice(SEVERITIES),
                "component": stage,
                "symptom": symptom,
                "root_cause": "cause",
                "fix_applied": "fix",
                "verification": "checked" if status == "verified" else "",
                "status": status,
                "video_id": f"v{rng.randrange(videos):05d}",
                "source_error_id": None,
                "promotion_rule": None,
                "soul_update": None,
                "obsolete_rules_removed": [],
                "agent": AGENTS[stage],
                "fingerprint": fp.key,
                "pattern": fp.template,
            }
        )
        if status in ("verified", "archived"):  # resolved: when (0 to 71 hours later)
            events[-1]["resolved_at"] = format_ts(ts + timedelta(hours=i % 72))
    return events


def write_index(root: Path, events: list[dict[str, object]]) -> None:
    """Write an event index in the layout the file store appends to."""
    path = Layout(root).events_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(b"[\n")
        fh.write(b",\n".join(orjson.dumps(e) for e in events))
        fh.write(b"\n]\n")


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Wall times of ``repeat`` calls, in milliseconds."""
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


ERROR_TEXTS = [
    "Timeout after {n}.{m}s fetching https://www.amazon.com/dp/B0{w}",
    "Traceback (most recent call last):\n"
    '  File "/app/{w}.py", line {n}, in run\n'
    "KeyError: 'price'",
    "HTTP 503 from dzine.ai after {n} retries",
    "ffmpeg exited with code {n} on /tmp/v{m}/render.mp4",
]


def synthetic_errors(count: int, *, seed: int = 11, videos: int = 2000) -> list[dict[str, object]]:
    """``count`` error-log entries over 90 days; about half resolved."""
    from rayvault.learning._ids import new_error_id

    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=90)
    entries = []
    for i in range(count):
        stage = rng.choice(STAGES)
        text = rng.choice(ERROR_TEXTS).format(
            n=rng.randint(1, 99), m=rng.randint(0, 9), w="".join(rng.choices("ABCDEFGH12345", k=8))
        )
        ts = start + timedelta(seconds=i * (90 * 86400 / max(count, 1)))
        fp = fingerprint(stage, text)
        resolved = rng.random() < 0.5
        entries.append(
            {
                "id": new_error_id(ts),
                "video_id": f"v{rng.randrange(videos):05d}",
                "timestamp": format_ts(ts),
                "stage": stage,
                "exit_code": 1,
                "error": text,
                "context": {},
                "resolved": resolved,
                "resolution": {"resolved_at": format_ts(ts), "root_cause": "c", "fix": "f"}
                if resolved
                else None,
                "fingerprint": fp.key,
                "pattern": fp.template,
            }
        )
    return entries


def write_error_log(root: Path, entries: list[dict[str, object]]) -> None:
    path = Layout(root).errors_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(b"[\n")
        fh.write(b",\n".join(orjson.dumps(e) for e in entries))
        fh.write(b"\n]\n")


# -- stores -------------------------------------------------------------------------------------
def store_label(url: str | None) -> str:
    return "postgresql" if url else "file"


def bench_schema_url(url: str) -> str:
    """``url`` pointing at a new schema of its own (dropped by :func:`drop_schema`)."""
    import secrets

    from rayvault.learning.store.postgres import with_schema

    return with_schema(url, f"bench_{secrets.token_hex(6)}")


def drop_schema(url: str) -> None:
    from psycopg import sql

    from rayvault.learning.store.postgres import PostgresStore

    store = PostgresStore(Path(BENCH_DIR), url)
    with store.connect() as conn:
        conn.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(store.schema))
        )
    store.close()


def open_history(
    root: Path,
    url: str | None,
    events: list[dict[str, object]],
    errors: list[dict[str, object]] | None = None,
) -> object:
    """A store at ``root`` holding ``events`` (and ``errors``), ready as a running system has it:
    the file store with its derived index built; PostgreSQL loaded with COPY into a new schema
    (``url`` already names it)."""
    if url is None:
        from rayvault.learning.store import FileStore

        write_index(root, events)
        if errors:
            write_error_log(root, errors)
        store = FileStore(root)
        store.index.sync("events")
        store.index.sync("errors")
        return store

    from rayvault.learning.store.postgres import PostgresStore
    from rayvault.learning.store.transfer import ERROR, EVENT, Item

    pg = PostgresStore(root, url)
    pg.init_schema()
    items = [Item(EVENT, (str(e["event_id"]),), orjson.dumps(e).decode()) for e in events]
    items += [Item(ERROR, (str(e["id"]),), orjson.dumps(e).decode()) for e in errors or []]
    pg.load_items(items)
    with pg.connect() as conn:
        conn.execute("ANALYZE")  # fresh statistics, as autovacuum would soon give a live system
    return pg


def create_event_times(store: Store, samples: int) -> list[float]:
    """Times (ms) of ``samples`` ``create_event`` calls with an agent and a video (the loop's
    five files), on ``store``: 97 symptoms, 8 variants each, 50 videos."""
    from rayvault.learning import create_event

    return [
        timed(
            lambda i=i: create_event(
                run_id="bench",
                severity="WARN",
                component="assets",
                symptom=f"Benchmark failure {i % 97} variant {'abcdefgh'[i % 8]}",
                video_id=f"v{i % 50}",
                agent="dzine_producer",
                store=store,
            ),
            1,
        )[0]
        for i in range(samples)
    ]
