"""Error-log patterns read from aggregates kept on write (issue 15 item 3): ``get_patterns`` equals
a grouping of every entry computed here by brute force after logs, resolutions, merges, rebuilds
and rewritten logs, on both stores; a pattern lists its 50 most recent videos and counts them
all; and its cost does not grow with the number of entries behind the patterns."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.learning._ids import new_error_id
from rayvault.learning._time import format_ts
from rayvault.learning.doctor import check_root
from rayvault.learning.errors import get_patterns, log_error, resolve_error
from rayvault.learning.models import ErrorEntry, ErrorPattern
from rayvault.learning.store import FileStore, Store
from rayvault.learning.store._sql import ERROR_AGGREGATE_COLUMNS, error_aggregate_recounts
from rayvault.learning.store.base import ErrorQuery
from rayvault.learning.store.files._sqlindex import error_pattern_problems
from rayvault.learning.store.files.layout import Layout
from rayvault.learning.store.postgres import PostgresStore
from rayvault.learning.store.postgres import schema as schema_sql
from rayvault.learning.store.postgres.queries import ERROR_PATTERNS
from rayvault.learning.store.transfer import ERROR, Item

from .conftest import Clock, PgSchemas

LISTED = 50


# -- what get_patterns must equal -----------------------------------------------------------------
def brute_force(store: Store, min_count: int) -> list[ErrorPattern]:
    """Every entry grouped by its pattern (merges followed), in Python, from the entries."""
    groups: dict[str, list[ErrorEntry]] = defaultdict(list)
    for entry in store.query_errors(ErrorQuery()):
        if entry.fingerprint:
            groups[store.resolve_pattern(entry.fingerprint)].append(entry)
    found = []
    for fp, entries in groups.items():
        if len(entries) < min_count:
            continue
        last: dict[str, datetime] = {}
        for e in entries:
            if e.video_id:
                last[e.video_id] = max(last.get(e.video_id, e.timestamp), e.timestamp)
        recent = sorted(last, key=lambda v: (last[v], v), reverse=True)[:LISTED]
        example = max(entries, key=lambda e: e.id)
        found.append(
            ErrorPattern(
                fingerprint=fp,
                pattern=example.pattern or example.error[:200],
                stage=fp.split(":", 1)[0],
                count=len(entries),
                unresolved=sum(not e.resolved for e in entries),
                videos=sorted(recent),
                video_count=len(last),
                stages=sorted({e.stage for e in entries}),
                first_seen=min(e.timestamp for e in entries),
                last_seen=max(e.timestamp for e in entries),
                example_id=example.id,
            )
        )
    return sorted(found, key=lambda p: (p.count, p.last_seen, p.fingerprint), reverse=True)


def aggregate_problems(store: Store) -> list[str]:
    """How the stored aggregates differ from a recount of the entries (empty: they agree)."""
    if isinstance(store, FileStore):
        return error_pattern_problems(store.index.sync("errors"))
    problems = []
    with store.connect() as conn:  # type: ignore[attr-defined]
        for table, query in error_aggregate_recounts().items():
            counted = set(conn.execute(query))
            kept = set(conn.execute(f"SELECT {ERROR_AGGREGATE_COLUMNS[table]} FROM {table}"))
            if counted != kept:
                problems.append(f"{table}: {sorted(counted ^ kept)[:3]}")
    return problems


def assert_agrees(store: Store, min_count: int = 1) -> None:
    assert get_patterns(min_count, store=store) == brute_force(store, min_count)
    assert aggregate_problems(store) == []


def merge(store: Store, source: str, target: str) -> bool:
    with store.pattern_book(source.split(":", 1)[0]) as book:
        return book.link(source, target, "regroup")


TEXTS = [
    "Timeout after 3s fetching https://amazon.com/dp/B0ABC",
    "KeyError: 'price'",
    "HTTP 503 from dzine.ai after 4 retries",
    "ffmpeg exited with code 1 on /tmp/v1/render.mp4",
]


# -- the example paths --------------------------------------------------------------------------
def test_inserts_resolutions_and_merges_keep_the_aggregates_exact(
    store: Store, clock: Clock
) -> None:
    ids = []
    for i in range(12):
        clock.advance(minutes=1)
        entry = log_error(f"v{i % 5}", ["assets", "tts"][i % 2], TEXTS[i % 4], store=store)
        ids.append(entry.id)
    log_error(None, "assets", TEXTS[0], store=store)  # no video: counted, not listed
    assert_agrees(store)
    for error_id in ids[::3]:
        resolve_error(error_id, "cause", "fix", store=store)
    resolve_error(ids[0], "cause", "fix again", store=store)  # resolved twice: counted once
    assert_agrees(store)
    [timeout] = [p for p in get_patterns(1, store=store) if "Timeout" in p.pattern]
    assert (timeout.count, timeout.unresolved) == (4, 3)  # i = 0, 4, 8 and the one without video

    # A merge moves a whole pattern into another: one pattern, its counts summed.
    before = {p.fingerprint: p for p in get_patterns(1, store=store)}
    source = next(k for k, p in before.items() if "KeyError" in p.pattern)
    target = next(k for k, p in before.items() if "Timeout" in p.pattern)
    assert merge(store, source, target)
    after = {p.fingerprint: p for p in get_patterns(1, store=store)}
    assert source not in after
    assert after[target].count == before[source].count + before[target].count
    assert after[target].unresolved == before[source].unresolved + before[target].unresolved
    assert_agrees(store)
    # Entries logged later under the merged key land in the target.
    clock.advance(minutes=1)
    log_error("v9", "tts", TEXTS[1], store=store)  # the KeyError entries were all in tts
    later = {p.fingerprint: p for p in get_patterns(1, store=store)}
    assert set(later) == set(after)
    assert later[target].count == after[target].count + 1
    assert "v9" in later[target].videos and later[target].stages == ["assets", "tts"]
    assert_agrees(store)


def test_a_pattern_lists_its_50_most_recent_videos_and_counts_all(
    store: Store, clock: Clock
) -> None:
    start = clock.now
    for i in range(60):
        clock.set(start + timedelta(minutes=i))
        log_error(f"v{i:03d}", "render", TEXTS[3], store=store)
    clock.set(start + timedelta(minutes=100))
    log_error("v000", "render", TEXTS[3], store=store)  # the oldest video, seen again last
    [pattern] = get_patterns(1, store=store)
    assert pattern.count == 61 and pattern.video_count == 60
    assert len(pattern.videos) == LISTED
    assert pattern.videos == sorted(["v000", *(f"v{i:03d}" for i in range(11, 60))])
    assert pattern.stages == ["render"]
    assert_agrees(store)


def test_the_cli_shows_every_video_counted(
    store: Store, clock: Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    from rayvault.cli import main

    for i in range(55):
        clock.advance(seconds=1)
        log_error(f"v{i % 52:03d}", "render", TEXTS[3], store=store)
    assert main(["errors", "patterns", "--json"]) == 0
    [shown] = json.loads(capsys.readouterr().out)
    assert (shown["count"], shown["video_count"], len(shown["videos"])) == (55, 52, 50)
    assert main(["errors", "patterns"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "ffmpeg" in line)
    assert row.replace("│", " ").split()[:4] == ["55", "55", "render", "52"]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(
                st.just("log"),
                st.sampled_from(["v1", "v2", "v3", None]),
                st.sampled_from(["assets", "tts"]),
                st.integers(0, len(TEXTS) - 1),
            ),
            st.tuples(st.just("resolve"), st.integers(0, 1000)),
            st.tuples(st.just("merge"), st.integers(0, 1000), st.integers(0, 1000)),
            st.tuples(st.just("tick"), st.integers(0, 3)),
        ),
        max_size=25,
    ),
    min_count=st.integers(1, 3),
)
def test_random_sequences_agree_with_a_brute_force_grouping(
    store: Store, clock: Clock, ops: list[tuple[Any, ...]], min_count: int
) -> None:
    """Logs, resolutions, merges and time passing in any order (the store keeps what earlier
    examples wrote: the comparison is over all of it)."""
    for op in ops:
        entries = store.query_errors(ErrorQuery())
        if op[0] == "log":
            log_error(op[1], op[2], TEXTS[op[3]], store=store)
        elif op[0] == "resolve" and entries:
            resolve_error(entries[op[1] % len(entries)].id, "cause", "fix", store=store)
        elif op[0] == "merge" and entries:
            keys = sorted({store.resolve_pattern(str(e.fingerprint)) for e in entries})
            source, target = keys[op[1] % len(keys)], keys[op[2] % len(keys)]
            if source.split(":", 1)[0] == target.split(":", 1)[0]:
                merge(store, source, target)
        elif op[0] == "tick":
            clock.advance(seconds=op[1])
    assert_agrees(store, min_count)


# -- the file store's index: rebuilt, rewritten, stale ---------------------------------------------
@pytest.mark.files_only("the derived index and the log files are the file layout's")
def test_a_rebuilt_index_and_a_rewritten_log_give_the_same_patterns(
    root: Path, clock: Clock
) -> None:
    store = FileStore(root)
    for i in range(20):
        clock.advance(minutes=1)
        log_error(f"v{i % 7}", "assets", TEXTS[i % 3], store=store)
    keys = sorted({p.fingerprint for p in get_patterns(1, store=store)})
    merge(store, keys[0], keys[1])
    expected = get_patterns(1, store=store)
    assert_agrees(store)

    store.index.rebuild()  # the merges read again, every entry moved back and forth
    assert get_patterns(1, store=store) == expected
    assert_agrees(store)
    store.close()
    index = Layout(root).index_path
    for suffix in ("", "-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    store = FileStore(root)  # a new index, built from the logs
    assert get_patterns(1, store=store) == expected

    # The log replaced by one holding some of its entries (a new file: the index rebuilds).
    path = Layout(root).errors_path
    kept = orjson.loads(path.read_bytes())[::2]
    path.with_suffix(".tmp").write_bytes(orjson.dumps(kept))
    path.with_suffix(".tmp").replace(path)
    assert_agrees(store)
    assert sum(p.count for p in get_patterns(1, store=store)) == len(
        {e["id"] for e in kept if e.get("fingerprint")}
    )
    path.unlink()  # no log at all: no pattern left behind
    assert get_patterns(1, store=store) == []
    assert aggregate_problems(store) == []
    store.close()


@pytest.mark.files_only("the derived index is the file layout's")
def test_the_doctor_finds_and_repairs_wrong_aggregates(root: Path) -> None:
    store = FileStore(root)
    for i in range(6):
        log_error(f"v{i}", "assets", TEXTS[i % 2], store=store)
    conn = store.index.sync("errors")
    conn.execute("UPDATE error_patterns SET total = total + 5")
    [finding] = [f for f in store.check() if f.code == "index-inconsistent"]
    assert "error-log pattern aggregates (error_patterns) differ" in finding.message
    store.check(repair=True)
    assert aggregate_problems(store) == []
    assert_agrees(store)
    store.close()


# -- the cost does not grow with the entries ---------------------------------------------------------
def _write_log(root: Path, count: int) -> None:
    """``count`` entries of 5 patterns over 200 videos, written as the error log."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    entries = []
    for i in range(count):
        ts = start + timedelta(seconds=i)
        entries.append(
            {
                "id": new_error_id(ts),
                "video_id": f"v{(i // 5) % 200:03d}",
                "timestamp": format_ts(ts),
                "stage": "assets",
                "exit_code": 1,
                "error": f"failure {i % 5}",
                "context": {},
                "resolved": i % 3 == 0,
                "resolution": None,
                "fingerprint": f"assets:{i % 5:016x}",
                "pattern": f"failure {i % 5}",
            }
        )
    path = Layout(root).errors_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(entries))


def _work(root: Path) -> tuple[int, int, list[ErrorPattern]]:
    """SQLite virtual-machine steps (in hundreds) and statements run by one ``error_patterns``
    on an index already caught up, and what it returned."""
    store = FileStore(root)
    conn: sqlite3.Connection = store.index.sync("errors")
    steps, statements = [0], []

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    conn.set_trace_callback(statements.append)
    try:
        patterns = store.error_patterns(1)
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_trace_callback(None)
        store.close()
    return steps[0], len(statements), patterns


@pytest.mark.files_only("counts the work of the file store's SQLite index")
def test_the_work_of_get_patterns_does_not_grow_with_entries(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    _write_log(small, 1_000)
    _write_log(large, 10_000)
    small_steps, small_statements, small_patterns = _work(small)
    large_steps, large_statements, large_patterns = _work(large)
    assert [p.count for p in small_patterns] == [200] * 5
    assert [p.count for p in large_patterns] == [2_000] * 5
    assert all(len(p.videos) == LISTED for p in small_patterns + large_patterns)
    assert [p.video_count for p in small_patterns + large_patterns] == [200] * 10
    # Ten times the entries, the same statements and (within a few pages' walk) the same steps:
    # a GROUP BY over the entries would take about ten times as many.
    assert large_statements == small_statements
    assert large_steps <= small_steps * 1.25 + 5, (small_steps, large_steps)


# -- PostgreSQL: the migration's backfill, the doctor, the work per call ----------------------------
@pytest.fixture
def pg(root: Path, pg_schemas: PgSchemas) -> Iterator[PostgresStore]:
    store = PostgresStore(root, pg_schemas.new_url())
    yield store
    store.close()


def _entries(count: int, *, videos: int = 200) -> list[ErrorEntry]:
    """``count`` entries of 5 patterns, a second apart, each pattern over ``videos`` videos."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        ErrorEntry(
            id=new_error_id(start + timedelta(seconds=i)),
            video_id=f"v{(i // 5) % videos:03d}",
            timestamp=start + timedelta(seconds=i),
            stage="assets",
            error=f"failure {i % 5}",
            fingerprint=f"assets:{i % 5:016x}",
            pattern=f"failure {i % 5}",
            resolved=i % 3 == 0,
        )
        for i in range(count)
    ]


def test_the_migration_fills_the_aggregates_of_a_schema_with_entries(
    root: Path, pg_schemas: PgSchemas
) -> None:
    url = pg_schemas.new_url()
    old = PostgresStore(root, url, migrate=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema_sql, "MIGRATIONS", schema_sql.MIGRATIONS[:10])
        assert old.init_schema()[-1] == "m010_patterns"
    old.append_errors(_entries(120, videos=60))
    assert old.upgrade_schema() == [m.name for m in schema_sql.MIGRATIONS[10:]]
    assert schema_sql.MIGRATIONS[10].name == "m011_error_patterns"
    old.close()
    pg = PostgresStore(root, url)
    assert aggregate_problems(pg) == []
    patterns = get_patterns(1, store=pg)
    assert patterns == brute_force(pg, 1)
    assert [(p.count, p.video_count, len(p.videos)) for p in patterns] == [(24, 24, 24)] * 5
    pg.append_errors(_entries(300, videos=60)[120:])  # the triggers take over from there
    assert_agrees(pg)
    assert [(p.count, p.video_count, len(p.videos)) for p in get_patterns(1, store=pg)] == [
        (60, 60, 50)
    ] * 5
    pg.close()


def test_the_doctor_finds_and_repairs_wrong_aggregates_on_postgresql(pg: PostgresStore) -> None:
    pg.append_errors(_entries(30))
    with pg.connect() as conn:
        conn.execute("UPDATE error_patterns SET videos = videos + 1")
        conn.execute("DELETE FROM error_pattern_stages")
    found = {f.code: f for f in check_root(store=pg).findings}
    message = found["failure-counts-wrong"].message
    assert message.startswith("10 failure counts")  # 5 patterns, 5 of their stage rows
    assert "error_patterns/assets:0000000000000000" in message
    repaired = {f.code: f for f in check_root(repair=True, store=pg).findings}
    assert repaired["failure-counts-wrong"].repaired
    assert check_root(store=pg).findings == []
    assert_agrees(pg)


def _buffers(pg: PostgresStore) -> int:
    """Shared buffers the server touched to answer ``error_patterns`` (its one statement)."""
    params = {"min_count": 1, "videos": LISTED}
    with pg.connect() as conn:
        [(plan,)] = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + ERROR_PATTERNS, params
        ).fetchall()
    top = plan[0]["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"])


def test_the_work_of_get_patterns_on_postgresql_does_not_grow_with_entries(
    root: Path, pg_schemas: PgSchemas
) -> None:
    touched = []
    for count in (1_000, 10_000):
        pg = PostgresStore(root, pg_schemas.new_url())
        pg.load_items(
            [Item(ERROR, (e.id,), e.model_dump_json()) for e in _entries(count)]
        )  # a bulk load: the aggregates are recounted once
        patterns = get_patterns(1, store=pg)
        assert patterns == brute_force(pg, 1)
        assert [(p.count, p.video_count) for p in patterns] == [(count // 5, 200)] * 5
        touched.append(_buffers(pg))
        pg.close()
    small, large = touched
    # Ten times the entries: the same pages within a level of the B-trees (a GROUP BY over the
    # entries touches ten times as many).
    assert large <= small * 1.25 + 20, touched


# -- other ways entries change ----------------------------------------------------------------------
def test_an_entry_moved_to_another_video_or_pattern_is_counted_where_it_is(
    store: Store, clock: Clock
) -> None:
    """A new version of an entry with another video, time or fingerprint (``regroup`` rewrites
    fingerprints so) leaves its old place: both patterns are recounted."""
    ids = []
    for i in range(8):
        clock.advance(minutes=1)
        ids.append(log_error(f"v{i % 3}", "assets", TEXTS[i % 2], store=store).id)
    other = str(store.get_error(ids[1]).fingerprint)  # type: ignore[union-attr]
    store.update_error(ids[0], lambda e: e.model_copy(update={"video_id": "v-moved"}))
    store.update_error(ids[2], lambda e: e.model_copy(update={"fingerprint": other}))
    store.update_error(
        ids[4], lambda e: e.model_copy(update={"timestamp": e.timestamp - timedelta(days=3)})
    )
    assert_agrees(store)
    counts = sorted(p.count for p in get_patterns(1, store=store))
    assert counts == [3, 5]


@pytest.mark.files_only("read-only views and the index's schema version are the file store's")
def test_a_read_only_view_and_an_index_of_an_older_version_give_the_same_patterns(
    root: Path, clock: Clock
) -> None:
    store = FileStore(root)
    for i in range(9):
        clock.advance(minutes=1)
        log_error(f"v{i}", "assets", TEXTS[i % 3], store=store)
    expected = brute_force(store, 1)
    assert get_patterns(1, store=store) == expected
    view = FileStore(root, read_only=True)  # its index lives in memory, built from the logs
    assert get_patterns(1, store=view) == expected
    view.close()
    store.index.connection().execute("PRAGMA user_version = 7")  # written by the version before
    store.close()
    again = FileStore(root)
    assert get_patterns(1, store=again) == expected
    assert aggregate_problems(again) == []
    again.close()
