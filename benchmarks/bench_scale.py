"""Costs that must grow with the work asked for, not with the history a root holds (issue 15).

    python benchmarks/bench_scale.py [--samples 20] [--pg postgresql://USER@HOST/DB] [--only NAME]
                                     [--cold-rounds 15]

``--only tombstones`` runs the two measurements of item 1 (memory writes against the length of
the tombstone list).

Each measurement runs one operation against a small and a large history that differ only in how
much history they hold, prints the p50 at each, their ratio, and each target next to it with PASS
or FAIL; the exit status is 1 when a target fails. With ``--pg DSN`` every measurement also runs
on PostgreSQL (a schema of its own per history, dropped afterwards). Later items of the issue add
their measurements to ``MEASUREMENTS``.

Start-up (item 4) is a new process each time, so it is measured apart (``COLD_STARTS``, file
store): ``rayvault-learn gate VIDEO STAGE`` on a root of 1k and of 100k events, and
``rayvault-learn --help``, each against ``python -c pass`` run by the same interpreter (the one
the console script's ``#!`` line names), interleaved round by round; target p50 ≤ 2× that of
``python -c pass``. ``--only start-up`` runs just these.
"""

from __future__ import annotations

import argparse
import compileall
import itertools
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (
    BENCH_DIR,
    REAL_DATA,
    STAGES,
    bench_schema_url,
    create_event_times,
    drop_schema,
    open_history,
    p50,
    store_label,
    synthetic_errors,
    synthetic_events,
    timed,
    write_index,
)


@dataclass(frozen=True)
class Measurement:
    """One operation timed at two sizes of history, with its targets."""

    name: str
    #: What the sizes count ("error-log entries").
    unit: str
    sizes: tuple[int, int]
    #: Builds a store at the root (PostgreSQL when a URL is given) holding ``size`` of history.
    build: Callable[[Path, str | None, int], Any]
    #: The operation timed, on that store.
    run: Callable[[Any], object]
    #: p50 at the large size must not exceed this (ms); None: no absolute target.
    max_large_ms: float | None
    #: p50 at the large size over p50 at the small one must not exceed this.
    max_ratio: float
    #: Timed calls per size (None: ``--samples``), for operations that take seconds.
    samples: int | None = None


def _error_log(root: Path, url: str | None, size: int) -> Any:
    """``size`` error-log entries over 90 days (2,000 videos, 7 stages, 28 patterns)."""
    store = open_history(root, url, [], synthetic_errors(size))
    if url is not None:
        _vacuum(store)
    return store


def _vacuum(store: Any) -> None:
    """VACUUM ANALYZE the store's schema, as autovacuum soon does on a live server after a bulk
    load: index-only scans then skip the table's rows (their visibility map is set)."""
    with store.connect() as conn:
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


def _error_patterns(store: Any) -> object:
    from rayvault.learning.errors import get_patterns

    return get_patterns(2, store=store)


def _event_history(root: Path, url: str | None, size: int) -> Any:
    """``size`` events at the same rate whatever the size (10k over 90 days, 100k over 900): the
    last 7 days hold the same ~780 events at both sizes."""
    store = open_history(root, url, synthetic_events(size, days=size * 90 // 10_000))
    if url is not None:
        _vacuum(store)
    return store


def _weekly_revisit(store: Any) -> object:
    from rayvault.learning.revisit import revisit

    return revisit("all", 7, dry_run=True, store=store)


def _weekly_revisit_written(store: Any) -> object:
    """The revisit that writes its report (JSON and HTML; no tombstone is due in these
    histories): the report phase of the weekly run."""
    from rayvault.learning.revisit import revisit

    return revisit("all", 7, store=store)


#: The agent whose memory the tombstone measurements change, and the stage it runs.
TOMB_AGENT, TOMB_STAGE = "dzine_producer", "assets"


def _tombstone_history(root: Path, url: str | None, size: int) -> Any:
    """An agent at the 50-rule cap whose tombstone list holds ``size`` tombstones, written as
    the original system writes ``memory_tombstones.json`` (one document: a root it hands over, or
    one right after the weekly sweep). Every new rule of the agent then evicts one."""
    from rayvault.learning.events import create_event
    from rayvault.learning.models import Tombstone, TombstoneFile
    from rayvault.learning.store._fs import atomic_write, dump_json

    store = open_history(root, url, [])
    for i in range(50):
        create_event(
            run_id="bench-seed",
            severity="WARN",
            component=TOMB_STAGE,
            symptom=f"Seeded failure {i} of the tombstone benchmark",
            agent=TOMB_AGENT,
            store=store,
        )
    template = store.load_memory(TOMB_AGENT).rules[0].model_dump()
    now = datetime.now(UTC)
    stones = [
        Tombstone(
            **(template | {"rule_id": f"rule-bench-{i:06d}"}),
            tombstoned_at=now - timedelta(seconds=size - i),
            reason="evicted: over LEARNING_MAX_ACTIVE_RULES_PER_AGENT=50",
            kind="evicted",
        )
        for i in range(size)
    ]
    document = dump_json(TombstoneFile(tombstones=stones, updated=now).model_dump(mode="json"))
    if url is None:
        atomic_write(store.layout.tombstones_path(TOMB_AGENT), document)
    else:
        with store.connect() as conn:
            conn.execute(
                "UPDATE agents SET tombstones = %s WHERE agent = %s",
                (document.decode(), TOMB_AGENT),
            )
    assert len(store.load_tombstones(TOMB_AGENT).tombstones) == size
    return store


_new_rules = itertools.count()


def _evicting_create_event(store: Any) -> object:
    """A new failure of the agent: a new rule, so the least recently used one is evicted (one
    more tombstone)."""
    from rayvault.learning.events import create_event

    return create_event(
        run_id="bench",
        severity="WARN",
        component=TOMB_STAGE,
        symptom=f"New failure {next(_new_rules)} of the tombstone benchmark",
        agent=TOMB_AGENT,
        store=store,
    )


def _succeeding_stage(store: Any) -> object:
    """A stage run that succeeds at once: the gate, the agent's 50 rules rendered and their
    deliveries counted in its memory (``record_attempt``)."""
    from rayvault.learning.loop import run_stage

    return run_stage(
        f"vid-{next(_new_rules)}", TOMB_STAGE, lambda ctx: "ok", agent=TOMB_AGENT, store=store
    )


MEASUREMENTS = [
    Measurement(
        name="error-log get_patterns(min_count=2)",
        unit="error-log entries",
        sizes=(10_000, 100_000),
        build=_error_log,
        run=_error_patterns,
        max_large_ms=100.0,
        max_ratio=1.5,
    ),
    Measurement(
        name='revisit("all", 7, dry_run=True)',
        unit="events (same 7-day window)",
        sizes=(10_000, 100_000),
        build=_event_history,
        run=_weekly_revisit,
        max_large_ms=None,
        max_ratio=1.3,
        samples=25,
    ),
    Measurement(
        name='revisit("all", 7) writing its report',
        unit="events (same 7-day window)",
        sizes=(10_000, 100_000),
        build=_event_history,
        run=_weekly_revisit_written,
        max_large_ms=None,
        max_ratio=1.3,
        samples=25,
    ),
    Measurement(
        name="create_event(agent=…) evicting a rule",
        unit="tombstones",
        sizes=(20, 10_000),
        build=_tombstone_history,
        run=_evicting_create_event,
        max_large_ms=None,
        max_ratio=1.2,
    ),
    Measurement(
        name="run_stage succeeding (record_attempt)",
        unit="tombstones",
        sizes=(20, 10_000),
        build=_tombstone_history,
        run=_succeeding_stage,
        max_large_ms=None,
        max_ratio=1.2,
    ),
]


# -- item 5: disk per event; item 6: what durable writes cost ------------------------------------
#: The fields of an event as the original system wrote them (tests/fixtures/original).
ORIGINAL_FIELDS = (
    "event_id", "run_id", "timestamp", "severity", "component", "symptom", "root_cause",
    "fix_applied", "verification", "status", "video_id", "source_error_id", "promotion_rule",
    "soul_update", "obsolete_rules_removed",
)  # fmt: skip


def created_events(count: int) -> list[dict[str, Any]]:
    """``synthetic_events`` as ``create_event`` stores them: every field of the model, with the
    loop's results (rule, skill-graph node, update time) and the rule text filled in."""
    from rayvault.learning._time import parse_ts
    from rayvault.learning.models import LearningEvent

    shaped = []
    for i, raw in enumerate(synthetic_events(count, days=max(1, count * 90 // 10_000))):
        event = LearningEvent.model_validate(raw)
        slug = str(raw["symptom"]).lower().replace(" ", "-")[:60]
        stamp = parse_ts(str(raw["timestamp"]))
        update = {
            "promotion_rule": f"Avoid: {raw['symptom']}. Cause: cause. Do: fix.",
            "rule_id": f"rule-{stamp:%Y%m%dT%H%M%SZ}-{i:012x}",
            "skill_node": f"agents/skills/learnings/{stamp:%Y-%m-%d}-{raw['severity']}-"
            f"{raw['component']}-{slug}-{i:012x}.md".lower(),
            "updated": stamp,
            "fingerprint_version": 2,
        }
        shaped.append(orjson.loads(event.model_copy(update=update).model_dump_json()))
    return shaped


def original_bytes(events: list[dict[str, Any]]) -> int:
    """What the original system writes for these events: its global log (a JSON array indented
    by 2, as ``json.dump(..., indent=2)`` writes it) and one per-video file each (indented by 2,
    a final newline), with the fields it knew."""
    import json

    records = [{k: e.get(k) for k in ORIGINAL_FIELDS} for e in events]
    log = len(json.dumps(records, indent=2).encode())
    files = sum(len(json.dumps(r, indent=2).encode()) + 1 for r in records)
    return log + files


@dataclass
class Footprint:
    """Bytes per event of the event log and the derived index, against the original's."""

    events: int
    log: int
    index: int
    video_files: int
    original: int
    max_ratio: float = 1.5

    @property
    def ratio(self) -> float:
        return (self.log + self.index) / self.original


def measure_footprint(count: int) -> Footprint:
    """Write ``count`` events' log (one version each, as ``create_event`` does), build the
    derived index from it, and count the bytes of both (the index checkpointed: its WAL folded
    in, as after any quiet moment), and the per-video files ``create_event`` writes."""
    from rayvault.learning.store import FileStore
    from rayvault.learning.store._fs import dump_json

    events = created_events(count)
    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    try:
        write_index(root, events)
        store = FileStore(root)
        store.index.sync("events")
        store.index.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.close()
        cache = store.layout.index_path.parent
        index = sum(p.stat().st_size for p in cache.glob(store.layout.index_path.name + "*"))
        video_files = sum(len(dump_json(e)) for e in events)
        return Footprint(
            count, store.events_path.stat().st_size, index, video_files, original_bytes(events)
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def create_event_p50s(samples: int, rounds: int = 5) -> tuple[float, float]:
    """``create_event`` p50 (agent and video, the loop's five files) with durable writes and
    without (``RAYVAULT_FSYNC=0``), in alternating rounds in fresh roots; the median of the
    rounds' p50s, in ms."""
    import os

    from rayvault.learning.store import FileStore

    def one_round(fsync: str) -> float:
        os.environ["RAYVAULT_FSYNC"] = fsync
        store = FileStore(tempfile.mkdtemp(dir=BENCH_DIR))
        try:
            return p50(create_event_times(store, samples))
        finally:
            store.close()
            shutil.rmtree(store.root, ignore_errors=True)

    before = os.environ.get("RAYVAULT_FSYNC")
    durable: list[float] = []
    fast: list[float] = []
    try:
        for _ in range(rounds):
            durable.append(one_round("1"))
            fast.append(one_round("0"))
    finally:
        if before is None:
            os.environ.pop("RAYVAULT_FSYNC", None)
        else:
            os.environ["RAYVAULT_FSYNC"] = before
    return p50(durable), p50(fast)


@dataclass(frozen=True)
class ColdStart:
    """A command run as a new process, timed against ``python -c pass`` (issue 15 item 4)."""

    name: str
    #: Events in the root it runs on (None: it reads no root).
    events: int | None
    #: The command's arguments after the executable (``{root}`` and ``{video}``/``{stage}``
    #: filled in per run).
    args: tuple[str, ...]
    #: p50 over p50 of ``python -c pass`` must not exceed this.
    max_ratio: float = 2.0


_GATE = ("--root", "{root}", "gate", "{video}", "{stage}")
COLD_STARTS = [
    ColdStart("cold `gate VIDEO STAGE`", 1_000, _GATE),
    ColdStart("cold `gate VIDEO STAGE`", 100_000, _GATE),
    ColdStart("cold `--help`", None, ("--help",)),
]
#: Runs each process a small launcher times: forking this one (its heap grew while building the
#: histories) would add the parent's size to every run.
_LAUNCHER = """
import json, subprocess, sys, time
out = []
for argv in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    code = subprocess.run(argv, capture_output=True).returncode
    out.append(((time.perf_counter() - t0) * 1000, code))
print(json.dumps(out))
"""


def _console_script() -> list[str]:
    """``rayvault-learn`` next to this interpreter (what a pipeline runs), else ``-m``."""
    exe = Path(sys.executable).with_name("rayvault-learn")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "rayvault.cli"]


def _start_up_root(events: int) -> Path:
    """A file-store root of ``events`` events (with the real SOUL files), index built."""
    root = Path(tempfile.mkdtemp(dir=BENCH_DIR))
    if (REAL_DATA / "agents").is_dir():
        shutil.copytree(REAL_DATA / "agents", root / "agents")
    t0 = time.perf_counter()
    open_history(root, None, synthetic_events(events)).close()  # type: ignore[attr-defined]
    print(
        f"[file] {events:,} events: history built in {time.perf_counter() - t0:.1f} s", flush=True
    )
    return root


def measure_start_up(rounds: int) -> list[tuple[ColdStart, float, float]]:
    """Per cold start: its p50 and the p50 of ``python -c pass``, all run interleaved (pass, each
    command, pass, …) for ``rounds`` rounds after one unmeasured round. Bytecode is compiled
    first, as an installed package has it (``PYTHONDONTWRITEBYTECODE`` would otherwise make every
    run compile the package)."""
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "rayvault", quiet=1)
    roots = {c.events: _start_up_root(c.events) for c in COLD_STARTS if c.events is not None}
    rng = random.Random(5)
    pairs = [(f"v{rng.randrange(2000):05d}", rng.choice(STAGES)) for _ in range(8)]
    try:
        argvs: list[list[str]] = []
        for i in range(rounds + 1):
            video, stage = pairs[i % len(pairs)]
            argvs.append([sys.executable, "-c", "pass"])
            for c in COLD_STARTS:
                root = str(roots.get(c.events, ""))
                fill = {"root": root, "video": video, "stage": stage}
                argvs.append([*_console_script(), *(a.format(**fill) for a in c.args)])
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, json.dumps(argvs)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs = json.loads(done.stdout)
    finally:
        for root in roots.values():
            shutil.rmtree(root, ignore_errors=True)
    width = len(COLD_STARTS) + 1
    bad = [(argvs[i], code) for i, (_, code) in enumerate(runs) if code not in (0, 2)]
    assert not bad, f"a cold start failed: {bad[:2]}"
    timed_runs = runs[width:]  # the first round warms the disk cache
    base = p50([ms for ms, _ in timed_runs[0::width]])
    results = []
    for k, c in enumerate(COLD_STARTS, 1):
        ms = p50([t for t, _ in timed_runs[k::width]])
        where = f" at {c.events:,} events" if c.events else ""
        print(f"[file] {c.name}{where}: p50 {ms:.1f} ms (python -c pass {base:.1f} ms)")
        results.append((c, ms, base))
    return results


@dataclass
class Result:
    measurement: Measurement
    store: str
    p50s: tuple[float, float]

    @property
    def ratio(self) -> float:
        small, large = self.p50s
        return large / small if small else float("inf")

    def verdicts(self) -> list[tuple[str, bool]]:
        m = self.measurement
        found = [(f"ratio ≤ {m.max_ratio:g}×", self.ratio <= m.max_ratio)]
        if m.max_large_ms is not None:
            what = f"p50 at {m.sizes[1]:,} ≤ {m.max_large_ms:g} ms"
            found.insert(0, (what, self.p50s[1] <= m.max_large_ms))
        return found


def measure(m: Measurement, url: str | None, samples: int) -> Result:
    """Build both histories, then time the operation on them alternately (small, large, small,
    …): a machine whose load drifts during the run weighs on both sizes alike."""
    label = store_label(url)
    roots, schema_urls, stores = [], [], []
    try:
        for size in m.sizes:
            roots.append(Path(tempfile.mkdtemp(dir=BENCH_DIR)))
            schema_urls.append(bench_schema_url(url) if url else None)
            t0 = time.perf_counter()
            stores.append(m.build(roots[-1], schema_urls[-1], size))
            built = time.perf_counter() - t0
            print(f"[{label}] {size:,} {m.unit}: history built in {built:.1f} s", flush=True)
        for store in stores:
            m.run(store)  # warm: the first call pays for imports and caches
        times: list[list[float]] = [[], []]
        for _ in range(m.samples or samples):
            for i, store in enumerate(stores):
                times[i] += timed(partial(m.run, store), 1)
        for size, ms in zip(m.sizes, times, strict=True):
            print(f"[{label}] {m.name} at {size:,} {m.unit}: p50 {p50(ms):.2f} ms", flush=True)
    finally:
        for store in stores:
            store.close()
        for schema_url in schema_urls:
            if schema_url:
                drop_schema(schema_url)
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    return Result(m, label, (p50(times[0]), p50(times[1])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50, help="timed calls per size")
    parser.add_argument("--pg", default=None, help="also measure PostgreSQL at this DSN")
    parser.add_argument(
        "--only", default=None, help="only measurements whose name or unit has this"
    )
    parser.add_argument(
        "--cold-rounds", type=int, default=15, help="interleaved rounds of the start-up runs"
    )
    parser.add_argument("--events", type=int, default=100_000, help="events for the disk figure")
    args = parser.parse_args()
    chosen = [m for m in MEASUREMENTS if args.only is None or args.only in f"{m.name} {m.unit}"]
    urls = [None, args.pg] if args.pg else [None]
    results = [measure(m, url, args.samples) for url in urls for m in chosen]
    only = args.only or ""
    footprint = measure_footprint(args.events) if only in "disk per event" else None
    durability = create_event_p50s(max(args.samples, 50)) if only in "create_event fsync" else None
    start_up = []
    if args.only is None or args.only in "start-up":
        start_up = measure_start_up(args.cold_rounds)
    print()
    if results:
        header = f"{'measurement':<38} {'small':>10} {'large':>10} {'ratio':>6}  targets"
        print(f"{'store':<11} {header}")
    failed = False
    for r in results:
        verdicts = r.verdicts()
        failed |= not all(ok for _, ok in verdicts)
        shown = "; ".join(f"{what} {'PASS' if ok else 'FAIL'}" for what, ok in verdicts)
        small, large = r.p50s
        print(
            f"{r.store:<11} {r.measurement.name:<38} {small:>8.1f}ms {large:>8.1f}ms "
            f"{r.ratio:>5.2f}×  {shown}"
        )
    if footprint is not None:
        f = footprint
        n = f.events
        ok = f.ratio <= f.max_ratio
        failed |= not ok
        print(
            f"{'file':<11} {'disk per event: original, log + index':<38} {f.original / n:>8.0f} B "
            f"{(f.log + f.index) / n:>8.0f} B {f.ratio:>5.2f}×  ≤ {f.max_ratio:g}× the "
            f"original's bytes at {n:,} events {'PASS' if ok else 'FAIL'}"
        )
        print(
            f"{'':<11}   log {f.log / n:.0f} B + index {f.index / n:.0f} B per event; the "
            f"original: log + per-video file {f.original / n:.0f} B; per-video files (both) "
            f"{f.video_files / n:.0f} B here"
        )
    if durability is not None:
        durable, fast = durability
        ok = durable < 10.0
        failed |= not ok
        print(
            f"{'file':<11} {'create_event p50, fsync on / off':<38} {durable:>8.1f}ms "
            f"{fast:>8.1f}ms {durable / fast:>5.2f}×  fsync on < 10 ms {'PASS' if ok else 'FAIL'}"
        )
    if start_up:
        print(f"{'store':<11} {'start-up':<38} {'py -c pass':>10} {'command':>10} {'ratio':>6}")
    for c, ms, base in start_up:
        ratio = ms / base
        ok = ratio <= c.max_ratio
        failed |= not ok
        where = f"{c.events:,} ev" if c.events else "-"
        print(
            f"{'file':<11} {c.name + ' (' + where + ')':<38} {base:>8.1f}ms {ms:>8.1f}ms "
            f"{ratio:>5.2f}×  ratio to `python -c pass` ≤ {c.max_ratio:g}× "
            f"{'PASS' if ok else 'FAIL'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
