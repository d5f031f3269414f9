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

import orjson

from rayvault.learning._ids import new_event_id
from rayvault.learning._time import format_ts
from rayvault.learning.patterns import fingerprint

#: Where benchmark data roots are created: the system temp folder, or RAYVAULT_BENCH_DIR. File
#: creation cost varies a lot between folders of one disk on some virtual machines (seen here:
#: 0.03 ms in one folder, 0.3-0.5 ms in another), and every write creates a temp file: compare
#: figures measured in the same folder.
BENCH_DIR = os.environ.get("RAYVAULT_BENCH_DIR") or tempfile.gettempdir()
Path(BENCH_DIR).mkdir(parents=True, exist_ok=True)

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


def synthetic_events(count: int, *, seed: int = 7, videos: int = 2000) -> list[dict[str, object]]:
    """``count`` realistic event records spread over 90 days, videos, stages and patterns."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(days=90)
    events = []
    for i in range(count):
        stage = rng.choice(STAGES)
        symptom = rng.choice(SYMPTOMS).format(n=rng.randint(1, 999), w=rng.choice(WORDS))
        ts = start + timedelta(seconds=i * (90 * 86400 / max(count, 1)))
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
    return events


def write_index(root: Path, events: list[dict[str, object]]) -> None:
    """Write an event index in the layout the file store appends to."""
    path = root / "data" / "learning_events.json"
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
