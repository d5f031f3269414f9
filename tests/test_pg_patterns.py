"""The PostgreSQL store's failure patterns (grouping version 2): the pattern book over its tables
(``m010_patterns``), merges recorded and followed by every query keyed by a pattern, the
migration of a schema holding data, and workers grouping one failure at once."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rayvault.learning import StoreError
from rayvault.learning._grouping import (
    MERGE_EVIDENCE,
    Cluster,
    Grouping,
    assign,
    group_failures,
    mask,
    pattern_key,
    signature,
)
from rayvault.learning.doctor import check_root
from rayvault.learning.models import ErrorEntry, ErrorResolution, LearningEvent, PatternMerge
from rayvault.learning.store.base import ErrorQuery, EventQuery
from rayvault.learning.store.postgres import PostgresStore
from rayvault.learning.store.postgres import schema as schema_sql
from rayvault.learning.store.transfer import export_store, import_root

from . import _workers
from ._raw import append_events_before_m012
from .conftest import PgSchemas

pytestmark = pytest.mark.postgres
STAGE = "assets"
HOSTS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda")
#: How many variants make a family one pattern: the first ``E - 1`` are clusters of their own,
#: the ``E``-th merges them (the algorithm's evidence threshold, tuned in ``_grouping``).
E = MERGE_EVIDENCE
T0 = datetime(2026, 3, 1, tzinfo=UTC)


def host(name: str) -> str:
    return f"cannot reach host {name} for upload"


@pytest.fixture
def pg(root: Path, pg_schemas: PgSchemas) -> Iterator[PostgresStore]:
    store = PostgresStore(root, pg_schemas.new_url())
    yield store
    store.close()


def group(store: PostgresStore, text: str, stage: str = STAGE) -> Grouping:
    with store.pattern_book(stage) as book:
        return assign(book, stage, text)


def sql(store: PostgresStore, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def findings(store: PostgresStore, *, repair: bool = False) -> dict[str, Any]:
    return {f.code: f for f in check_root(repair=repair, store=store).findings}


def event(event_id: str, key: str, text: str, **extra: Any) -> LearningEvent:
    return LearningEvent(
        event_id=event_id,
        timestamp=T0,
        severity="FAIL",
        component=STAGE,
        symptom=text,
        fingerprint=key,
        pattern=mask(text),
        **extra,
    )


def error(error_id: str, key: str, text: str, *, resolved: bool = False) -> ErrorEntry:
    resolution = ErrorResolution(resolved_at=T0, fix="retry") if resolved else None
    return ErrorEntry(
        id=error_id,
        timestamp=T0,
        stage=STAGE,
        error=text,
        fingerprint=key,
        pattern=mask(text),
        resolved=resolved,
        resolution=resolution,
    )


def family(store: PostgresStore, start: int = 0) -> list[Grouping]:
    """Group ``HOSTS[start:E]`` (the rest of a family whose first ``start`` were grouped)."""
    return [group(store, host(h)) for h in HOSTS[start:E]]


def key_of(text: str, stage: str = STAGE) -> str:
    """The key a text gets as the first of its cluster."""
    return pattern_key(stage, signature(stage, mask(text)))


# -- the book -------------------------------------------------------------------------------------
def test_the_book_groups_as_the_memory_book_does(pg: PostgresStore) -> None:
    """Variants of one failure become one pattern once the evidence shows the varying word;
    near-misses (another quoted key, another noun) stay apart; what the store assigns, merges
    followed, is what ``group_failures`` computes in memory."""
    near = [
        "KeyError: 'choices'",
        "KeyError: 'price'",
        "cannot reach bucket alpha for upload",
        "Traceback (most recent call last):\n  File \"x.py\", line 3\nKeyError: 'choices'",
    ]
    variants = [host(h) for h in HOSTS[: E + 1]]
    texts = [*variants[:2], *near[:2], *variants[2:E], near[2], variants[0], variants[E], near[3]]
    groupings: dict[str, list[Grouping]] = {}
    for text in texts:
        groupings.setdefault(text, []).append(group(pg, text))
    decisions = {text: [g.decision for g in found] for text, found in groupings.items()}
    assert [decisions[v] for v in variants] == [
        ["new", "known"],
        *[["new"]] * (E - 2),
        ["merged"],
        ["joined"],
    ]
    assert [decisions[t] for t in near] == [["new"], ["new"], ["new"], ["known"]]
    keys = [pg.resolve_pattern(g.key) for found in groupings.values() for g in found]
    in_order = [pg.resolve_pattern(group(pg, text).key) for text in texts]
    assert in_order == group_failures(texts, STAGE)
    assert {pg.resolve_pattern(group(pg, v).key) for v in variants} == {key_of(variants[0])}
    apart = {pg.resolve_pattern(group(pg, t).key) for t in (variants[0], *near[:3])}
    assert len(apart) == 4  # near-misses stay apart
    assert group(pg, near[3]).key == group(pg, near[0]).key  # with or without its traceback
    assert groupings[variants[E]][0].template == "cannot reach host <*> for upload"
    assert len(set(keys)) == 4


def test_merges_are_recorded_and_find_follows_them(pg: PostgresStore) -> None:
    a, *others, last = family(pg)
    assert last.decision == "merged" and last.key == a.key
    assert last.merged == tuple(g.key for g in others) and others
    merges = pg.pattern_merges()
    assert merges == [
        PatternMerge(source=g.key, target=a.key, stage=STAGE, at=m.at, version=2, reason="clusters")
        for g, m in zip(others, merges, strict=True)
    ]
    assert all(abs((datetime.now(UTC) - m.at).total_seconds()) < 60 for m in merges)
    assert pg.pattern_merges(STAGE) == merges and pg.pattern_merges("render") == []
    b = others[0]
    assert [pg.resolve_pattern(g.key) for g in others] == [a.key] * len(others)
    assert pg.resolve_pattern(a.key) == a.key
    assert pg.resolve_pattern("render:0123456789abcdef") == "render:0123456789abcdef"
    with pg.pattern_book(STAGE) as book:
        found = book.find(STAGE, b.sig)  # the merged cluster's own text: its target
        assert found is not None and found.key == a.key
        assert found.tokens == ("cannot", "reach", "host", "<*>", "for", "upload")
        assert [cl.key for cl in book.clusters(STAGE, 6)] == [a.key]  # live ones only
        assert book.find(STAGE, "0" * 16) is None
        assert book.find("render", a.sig) is None  # signatures are per stage


def test_a_chain_of_merges_is_followed_and_moves_every_row(pg: PostgresStore) -> None:
    """A key merged into one that is merged later resolves to the last; the rows of both follow."""
    x, y, z = (Cluster(f"{STAGE}:{n * 16}", STAGE, ("failure", n)) for n in "xyz")
    with pg.pattern_book(STAGE) as book:
        for cluster in (x, y, z):
            book.save(cluster, cluster.key[-16:])
    pg.append_events([event("le-x", x.key, "failure x"), event("le-y", y.key, "failure y")])
    with pg.pattern_book(STAGE) as book:
        book.merge(x, y)
    with pg.pattern_book(STAGE) as book:
        book.merge(y, z)
        assert book.find(STAGE, "x" * 16) == Cluster(z.key, STAGE, ("failure", "z"))
    assert [(m.source, m.target) for m in pg.pattern_merges()] == [(x.key, y.key), (y.key, z.key)]
    assert pg.resolve_pattern(x.key) == z.key
    assert sql(pg, "SELECT event_id, fingerprint FROM events ORDER BY event_id") == [
        ("le-x", z.key),
        ("le-y", z.key),
    ]
    assert sql(pg, "SELECT key, merged_into FROM pattern_clusters ORDER BY seq") == [
        (x.key, y.key),
        (y.key, z.key),
        (z.key, None),
    ]
    assert {e.event_id for e in pg.query_events(EventQuery(fingerprint=x.key))} == {"le-x", "le-y"}
    assert pg.get_event("le-x").fingerprint == x.key  # type: ignore[union-attr]  # the record stays


def test_clusters_are_listed_oldest_first_live_ones_of_that_length(pg: PostgresStore) -> None:
    made = [Cluster(f"{STAGE}:{k}", STAGE, ("a", k, "c")) for k in ("m", "a", "z", "b")]
    with pg.pattern_book(STAGE) as book:
        for cluster in made:
            book.save(cluster, cluster.key)
        book.save(Cluster(f"{STAGE}:short", STAGE, ("a", "b")), "short")
        book.save(Cluster("render:m", "render", ("a", "m", "c")), "m")
        made[0].tokens = ("a", "<*>", "c")  # a template only generalises: its place is kept
        book.save(made[0], "another")
    with pg.pattern_book(STAGE) as book:
        assert [c.key for c in book.clusters(STAGE, 3)] == [c.key for c in made]
        assert book.clusters(STAGE, 3)[0].tokens == ("a", "<*>", "c")
        book.merge(made[2], made[1])
        assert [c.key for c in book.clusters(STAGE, 3)] == [f"{STAGE}:{k}" for k in "mab"]
        assert [c.key for c in book.clusters("render", 3)] == ["render:m"]
        assert book.clusters(STAGE, 4) == []


def test_a_block_that_fails_saves_nothing_and_a_read_only_view_refuses(pg: PostgresStore) -> None:
    with pytest.raises(RuntimeError), pg.pattern_book(STAGE) as book:
        assert assign(book, STAGE, host("alpha")).decision == "new"
        raise RuntimeError("the caller failed")
    assert sql(pg, "SELECT count(*) FROM pattern_clusters") == [(0,)]
    assert group(pg, host("alpha")).decision == "new"  # made again, for real this time
    with pytest.raises(StoreError, match="read-only"), pg.read_only().pattern_book(STAGE):
        pass
    assert pg.read_only().resolve_pattern(key_of(host("alpha"))) == key_of(host("alpha"))
    assert pg.read_only().pattern_merges() == []


# -- queries follow merges ------------------------------------------------------------------------
def test_every_query_by_pattern_follows_merges(pg: PostgresStore) -> None:
    a, b = group(pg, host("alpha")), group(pg, host("beta"))
    pg.append_events(
        [event("le-a", a.key, host("alpha")), event("le-b", b.key, host("beta"), agent="x")]
    )
    pg.append_errors(
        [
            error("e-a", a.key, host("alpha")),
            error("e-b", b.key, host("beta"), resolved=True),
        ]
    )
    assert len(pg.error_patterns(1)) == 2
    assert b.key in family(pg, 2)[-1].merged  # b is merged into a

    for key in (a.key, b.key):  # by the source or by the target: both
        assert {e.event_id for e in pg.query_events(EventQuery(fingerprint=key))} == {
            "le-a",
            "le-b",
        }
        assert pg.count_events(EventQuery(fingerprint=key)) == 2
        assert pg.event_facets(EventQuery(fingerprint=key))["agent"] == {"x": 1}
        assert sum(pg.event_timeline(EventQuery(fingerprint=key))[T0.date()].values()) == 2
        assert {e.id for e in pg.query_errors(ErrorQuery(fingerprint=key))} == {"e-a", "e-b"}
        assert pg.failing_fingerprints([key, "assets:none"], (STAGE,)) == {key}
        events, errors = pg.open_occurrences(key, (STAGE,), 10)
        assert (sorted(events), errors) == (["le-a", "le-b"], ["e-a"])
        latest = pg.latest_resolution(key)
        assert latest is not None and latest.id == "e-b"
    [pattern] = pg.event_patterns(EventQuery())
    assert (pattern.fingerprint, pattern.count, pattern.open_count) == (a.key, 2, 2)
    [pattern] = pg.event_patterns(EventQuery(fingerprint=b.key))
    assert pattern.fingerprint == a.key
    [errors] = pg.error_patterns(1)
    assert (errors.fingerprint, errors.count, errors.unresolved) == (a.key, 2, 1)
    assert [e.id for e in pg.latest_resolutions()] == ["e-b"]
    [known] = pg.known_failures((STAGE,), 4)
    assert (known.fingerprint, known.occurrences, known.unresolved) == (a.key, 4, 3)
    # The records keep the key they were given; only the indexed column follows the merge.
    assert pg.get_event("le-b").fingerprint == b.key  # type: ignore[union-attr]
    assert pg.get_error("e-b").fingerprint == b.key  # type: ignore[union-attr]

    # Written after the merge with the merged key (a worker that grouped before it), or updated:
    # the row still takes the pattern's key.
    pg.append_events([event("le-late", b.key, host("beta"))])
    pg.update_event("le-b", lambda e: e.model_copy(update={"status": "verified"}))
    assert sql(pg, "SELECT DISTINCT fingerprint FROM events") == [(a.key,)]
    assert sql(pg, "SELECT DISTINCT fingerprint FROM errors") == [(a.key,)]
    assert pg.count_events(EventQuery(fingerprint=b.key)) == 3
    assert sql(pg, "SELECT fingerprint, total, open FROM fp_counts") == [(a.key, 5, 3)]
    assert findings(pg) == {}


def test_a_merge_waits_for_a_write_under_way_and_moves_its_row(pg: PostgresStore) -> None:
    """A writer that resolved the merged key before the merge and commits after it: the merge
    waits for it (its row would be invisible to the merge's update), so no row keeps the old
    key."""
    a, b = group(pg, host("alpha")), group(pg, host("beta"))
    for name in HOSTS[2 : E - 1]:  # all but the variant that merges the family
        group(pg, host(name))
    merged: list[Grouping] = []
    merging = threading.Thread(target=lambda: merged.append(group(pg, host(HOSTS[E - 1]))))
    writer = pg.connect()
    try:
        writer.execute("BEGIN")
        writer.execute(
            "INSERT INTO errors (id, seq, last_seq, ts, stage, fingerprint, resolved, data) "
            "VALUES ('e-late', 1, 1, 0, %s, %s, 0, '{}')",
            (STAGE, b.key),
        )
        merging.start()
        merging.join(0.5)
        assert merging.is_alive()  # waiting for the writer
        writer.execute("COMMIT")
    finally:
        writer.close()
        if merging.is_alive():
            merging.join(30)
    assert b.key in merged[0].merged
    assert sql(pg, "SELECT fingerprint FROM errors WHERE id = 'e-late'") == [(a.key,)]


def test_the_doctor_checks_the_pattern_tables_against_the_merges(pg: PostgresStore) -> None:
    a, b = group(pg, host("alpha")), group(pg, host("beta"))
    pg.append_events([event("le-b", b.key, host("beta"))])
    family(pg, 2)
    sql(pg, "UPDATE pattern_clusters SET merged_into = NULL WHERE key = %s", (b.key,))
    sql(pg, "UPDATE pattern_signatures SET key = %s WHERE sig = %s", (b.key, b.sig))
    sql(pg, "ALTER TABLE events DISABLE TRIGGER events_follow_merges")
    sql(pg, "UPDATE events SET fingerprint = %s", (b.key,))
    sql(pg, "ALTER TABLE events ENABLE TRIGGER events_follow_merges")
    found = findings(pg)
    assert set(found) == {"patterns-inconsistent", "events-table-inconsistent"}
    assert found["patterns-inconsistent"].message == (
        "the failure patterns disagree with the recorded merges: 1 clusters whose merged_into "
        "disagrees with pattern_merges"
    )
    assert "indexed columns that do not match the record: le-b" in (
        found["events-table-inconsistent"].message
    )
    repaired = findings(pg, repair=True)
    assert all(f.repaired for f in repaired.values() if f.repairable)
    assert findings(pg) == {}
    assert sql(pg, "SELECT fingerprint FROM events") == [(a.key,)]
    with pg.pattern_book(STAGE) as book:
        assert [c.key for c in book.clusters(STAGE, 6)] == [a.key]


# -- the migration --------------------------------------------------------------------------------
def test_a_schema_with_data_is_upgraded_and_its_rows_follow_later_merges(
    root: Path, pg_schemas: PgSchemas
) -> None:
    """m010 adds the pattern tables to a schema at m009 holding records keyed as version 2 keys
    them; merges made afterwards move those rows too."""
    url = pg_schemas.new_url()
    old = PostgresStore(root, url, migrate=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(schema_sql, "MIGRATIONS", schema_sql.MIGRATIONS[:9])
        assert old.init_schema()[-1] == "m009_idempotency_keys"
    ka, kb = key_of(host("alpha")), key_of(host("beta"))
    append_events_before_m012(
        old, [event("le-a", ka, host("alpha")), event("le-b", kb, host("beta"))]
    )
    old.append_errors([error("e-b", kb, host("beta"))])
    found = findings(old)
    assert found["schema-outdated"].message.startswith(
        "migrations of this version not applied: m010_patterns"
    )
    assert old.upgrade_schema()[:2] == ["m010_patterns", "m011_error_patterns"]
    old.close()

    pg = PostgresStore(root, url)
    assert pg.schema_status()["pending"] == []
    assert {t: pg.schema_status()["counts"][t] for t in ("pattern_clusters", "events")} == {
        "pattern_clusters": 0,
        "events": 2,
    }
    assert sql(pg, "SELECT event_id, fingerprint FROM events ORDER BY event_id") == [
        ("le-a", ka),
        ("le-b", kb),
    ]
    assert findings(pg) == {}
    assert [g.key for g in family(pg)] == [ka, kb, *(key_of(host(h)) for h in HOSTS[2 : E - 1]), ka]
    assert {e.event_id for e in pg.query_events(EventQuery(fingerprint=kb))} == {"le-a", "le-b"}
    assert [(k.fingerprint, k.occurrences) for k in pg.known_failures((STAGE,), 1)] == [(ka, 3)]
    assert findings(pg) == {}
    pg.close()


# -- transfer -------------------------------------------------------------------------------------
def test_an_export_carries_the_merges_and_an_import_builds_the_clusters_again(
    pg: PostgresStore, pg_schemas: PgSchemas, tmp_path: Path
) -> None:
    """The merges travel as items (the file store's merges log, byte for byte); the clusters are
    derived: an import makes them again from the records of grouping version 2 (template
    generalised over each pattern's members, each text's signature naming its record's key,
    merged ones marked), so texts seen before the export keep their patterns after it."""
    entries = []
    for i, name in enumerate((*HOSTS, "alpha")):
        g = group(pg, host(name))
        entry = error(f"e-{i}", g.key, host(name)).model_copy(update={"fingerprint_version": 2})
        entries.append(entry)
    entries.append(error("e-old", "assets:version-one", "disk full"))  # version 1: no cluster
    pg.append_errors(entries)
    export_store(pg, tmp_path / "exported")

    copy = PostgresStore(pg.root, pg_schemas.new_url())
    import_root(copy, tmp_path / "exported")
    ka, kb = key_of(host("alpha")), key_of(host("beta"))

    def merges(store: PostgresStore) -> list[tuple[str, str, str, int, str]]:
        return [(m.source, m.target, m.stage, m.version, m.reason) for m in store.pattern_merges()]

    assert merges(copy) == merges(pg) and kb in {m[0] for m in merges(copy)}
    with copy.pattern_book(STAGE) as book:
        assert [(c.key, c.template) for c in book.clusters(STAGE, 6)] == [
            (ka, "cannot reach host <*> for upload")
        ]
    assert sql(copy, "SELECT count(*), count(DISTINCT key) FROM pattern_signatures") == [
        (len(HOSTS), 1)
    ]
    assert [group(copy, host(h)).key for h in (*HOSTS, "omega")] == [ka] * (len(HOSTS) + 1)
    assert len(copy.query_errors(ErrorQuery(fingerprint=kb))) == len(HOSTS) + 1
    assert group(copy, "disk full").decision == "new"
    assert findings(copy) == {}
    export_store(copy, tmp_path / "again")
    [log] = (tmp_path / "exported").rglob("pattern_merges*")
    assert (tmp_path / "again" / log.relative_to(tmp_path / "exported")).read_bytes() == (
        log.read_bytes()
    )
    copy.close()


# -- workers at once ------------------------------------------------------------------------------
@pytest.mark.slow
def test_processes_grouping_one_failure_at_once_make_one_pattern(
    pg: PostgresStore,
) -> None:
    """Four processes group variants of one failure at once, each logging what it got: every
    cluster they were handed is kept (none lost, none made twice for one text), the family ends
    as one pattern, and every entry is found by it."""
    workers, count = 4, 15
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [
            pool.submit(_workers.assign_variants, str(pg.root), pg.url, w, count)
            for w in range(workers)
        ]
        keys = [k for f in futures for k in f.result()]
    assert len(keys) == workers * count
    [final] = {pg.resolve_pattern(k) for k in keys}
    clusters = dict(sql(pg, "SELECT key, merged_into FROM pattern_clusters"))
    assert set(keys) <= set(clusters)  # every key handed out is a cluster
    assert [k for k, into in clusters.items() if into is None] == [final]
    merges = pg.pattern_merges(STAGE)
    assert len(merges) == len(clusters) - 1  # every other cluster was merged, once
    assert {m.source for m in merges} == set(clusters) - {final}
    # One signature per distinct text, each naming the one live pattern.
    assert sql(pg, "SELECT count(*), count(DISTINCT key), min(key) FROM pattern_signatures") == [
        (workers * count, 1, final)
    ]
    [errors] = pg.error_patterns(1)
    assert (errors.fingerprint, errors.count) == (final, workers * count)
    assert len(pg.query_errors(ErrorQuery(fingerprint=keys[0]))) == workers * count
    assert findings(pg) == {}
