"""Grouping version 2 as the stores write it: real variants of one failure are one pattern,
near-misses are not, merges are recorded durably and every query follows them, and ``regroup``
brings what version 1 wrote up to date (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from rayvault.learning._fingerprint import fingerprint as fingerprint_v1
from rayvault.learning._grouping import GROUPING_VERSION, MERGE_EVIDENCE, group_failures
from rayvault.learning.errors import get_patterns, log_error
from rayvault.learning.events import create_event, list_events
from rayvault.learning.gate import learning_gate
from rayvault.learning.memory import load_active_memory
from rayvault.learning.models import ErrorEntry, LearningEvent
from rayvault.learning.regroup import regroup
from rayvault.learning.store import EventQuery, FileStore, Store
from rayvault.learning.store.base import ErrorQuery

from .conftest import event_kwargs

#: A family of texts that differ in the words a Drain-like grouping learns to vary: the third
#: variant shows the positions vary, and the first two clusters merge.
FAMILY = [
    "user alice not found on host alpha",
    "user bob not found on host beta",
    "user carol not found on host gamma",
    "user dan not found on host delta",
]


def keys(texts: list[str], store: Store, stage: str = "assets") -> list[str]:
    return [str(log_error("v1", stage, t, store=store).fingerprint) for t in texts]


# -- what groups and what does not --------------------------------------------------------------
def test_real_variants_group_and_near_misses_do_not(store: Store) -> None:
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/srv/app/pipeline.py", line 88, in run\n'
        "    price = row['choices']\n"
        "KeyError: 'choices'"
    )
    choices, again, with_traceback, price = keys(
        ["KeyError: 'choices'", "KeyError: 'choices'", traceback, "KeyError: 'price'"], store
    )
    assert choices == again == with_traceback  # the same failure, with or without traceback
    assert price != choices  # another key of the mapping: another failure
    d1, d2, d3 = keys(["Timeout after 12s", "Timeout after 1.83s", "Timeout after 7m42.2s"], store)
    assert d1 == d2 == d3
    entry = store.get_error(log_error("v1", "assets", "Timeout after 3s", store=store).id)
    assert entry is not None and entry.fingerprint_version == GROUPING_VERSION
    assert entry.pattern == "Timeout after <dur>"


def test_the_store_assigns_what_group_failures_computes(store: Store) -> None:
    texts = [*FAMILY, "KeyError: 'choices'", "Timeout after 12s", "Timeout after 1.83s"]
    stored = [store.resolve_pattern(k) for k in keys(texts, store)]
    assert stored == group_failures(texts, "assets")


def test_an_event_made_from_an_error_gets_the_errors_key(store: Store) -> None:
    from rayvault.learning.errors import promote_to_learning

    text = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "ValueError: bad frame rate 29.97 for clip\n  in the second pass"
    )
    entry = log_error("v1", "assets", text, store=store)
    result = promote_to_learning(entry.id, root_cause="r", fix="f", store=store)
    assert result.event.fingerprint == entry.fingerprint
    assert result.event.fingerprint_version == GROUPING_VERSION


# -- merges: recorded, followed by every query ---------------------------------------------------
def test_merges_are_recorded_and_followed_by_every_query(store: Store) -> None:
    first, second = keys(FAMILY[:2], store)
    assert first != second  # two values at the varying positions: not yet evidence
    event = create_event(
        **event_kwargs(symptom=FAMILY[1], verification="", agent="dzine_producer"), store=store
    )  # type: ignore[arg-type]
    assert event.fingerprint == second
    third, fourth = keys(FAMILY[2:], store)
    # Three values are not yet evidence; the fourth (MERGE_EVIDENCE) merges the family.
    assert MERGE_EVIDENCE == 4 and third not in (first, second) and fourth == first
    merges = store.pattern_merges()
    assert [(m.source, m.target, m.reason) for m in merges] == [
        (second, first, "clusters"),
        (third, first, "clusters"),
    ]
    assert all(m.stage == "assets" and m.version == GROUPING_VERSION for m in merges)
    assert store.pattern_merges("assets") == merges and store.pattern_merges("tts") == []
    assert store.resolve_pattern(second) == first and store.resolve_pattern(first) == first
    assert store.resolve_pattern(third) == first
    # Stored records keep the key they were given; every query treats the merged key as its
    # target, asked by either key.
    assert store.get_error(store.query_errors(ErrorQuery())[1].id).fingerprint == second  # type: ignore[union-attr]
    for key in (first, second):
        assert len(store.query_errors(ErrorQuery(fingerprint=key))) == 4
        assert [e.event_id for e in store.query_events(EventQuery(fingerprint=key))] == [
            event.event_id
        ]
        assert store.count_events(EventQuery(fingerprint=key)) == 1
        assert store.latest_resolution(key) is None
        assert store.failing_fingerprints([key], ("assets",)) == {key}
        events, errors = store.open_occurrences(key, ("assets",), 10)
        assert events == [event.event_id] and len(errors) == 4
    [pattern] = store.error_patterns(1)
    assert pattern.fingerprint == first and pattern.count == 4
    [event_pattern] = store.event_patterns(EventQuery())
    assert event_pattern.fingerprint == first
    [known] = store.known_failures(("assets",), 3)
    assert known.fingerprint == first and known.occurrences == 5
    # Shown with the merged cluster's template, not an early record's narrower one.
    assert known.pattern == "user <*> not found on host <*>"
    assert [p.fingerprint for p in get_patterns(2, store=store)] == [first]


def test_rules_and_the_gate_follow_a_merge(store: Store) -> None:
    """A rule learned under a key merged since is re-applied, not written twice; the gate
    finds it for the merged pattern."""
    agent = "dzine_producer"

    def learn(symptom: str) -> LearningEvent:
        return create_event(  # type: ignore[arg-type]
            **event_kwargs(symptom=symptom, verification="", agent=agent), store=store
        )

    first, second, third = (learn(text) for text in FAMILY[:3])
    assert len(load_active_memory(agent, store=store).rules) == 3  # not yet one pattern
    fourth = learn(FAMILY[3])  # the fourth value merges the family
    assert fourth.fingerprint == first.fingerprint
    rules = load_active_memory(agent, store=store).rules
    assert len(rules) == 3  # the merged family's rule re-applied, not written again
    assert fourth.rule_id in {r.rule_id for r in rules}
    fifth = learn("user erin not found on host epsilon")
    assert fifth.fingerprint == first.fingerprint and fifth.rule_id == fourth.rule_id
    for event in (second, third):
        assert store.resolve_pattern(str(event.fingerprint)) == first.fingerprint
    result = learning_gate("v042", "assets", store=store)
    check = next(c for c in result.checks if c.name == "check_known_failures")
    assert "seen 5×" in check.reason


# -- the file store: durable merges, rebuild, doctor, concurrency --------------------------------
@pytest.mark.files_only("the merges log and the derived index are the file layout's")
def test_merges_are_durable_and_a_rebuilt_index_gives_the_same_patterns(root: Path) -> None:
    store = FileStore(root)
    keys(FAMILY, store)
    before = [(p.fingerprint, p.count) for p in store.error_patterns(1)]
    merges = store.pattern_merges()
    log = orjson.loads((root / "data/pattern_merges.json").read_bytes())
    assert [m["source"] for m in log] == [m.source for m in merges]
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root}/state/cache/index.sqlite3{suffix}").unlink(missing_ok=True)
    again = FileStore(root)
    assert [(p.fingerprint, p.count) for p in again.error_patterns(1)] == before
    assert again.pattern_merges() == merges
    # The clusters come back from the records: a new variant joins the family's pattern.
    [new] = keys(["user erin not found on host epsilon"], again)
    assert new == before[0][0]
    again.index.rebuild()
    assert [(p.fingerprint, p.count) for p in again.error_patterns(1)] == [(new, 5)]


@pytest.mark.files_only("the merges log is the file layout's")
def test_a_corrupt_merges_log_is_reported_by_name_and_never_overwritten(root: Path) -> None:
    from rayvault.learning.doctor import check_root

    store = FileStore(root)
    keys(FAMILY, store)
    create_event(**event_kwargs(symptom=FAMILY[1]), store=store)  # type: ignore[arg-type]
    assert check_root().clean  # merges applied: the index agrees with the logs
    path = root / "data/pattern_merges.json"
    data = path.read_bytes()
    damaged = data[:-4] + b"}garbage{\n]\n"  # damage inside the array, not a torn tail
    path.write_bytes(damaged)
    report = check_root()
    [finding] = [f for f in report.findings if f.path == "data/pattern_merges.json"]
    assert finding.code == "log-corrupt" and not finding.repairable
    check_root(repair=True)
    assert path.read_bytes() == damaged  # never overwritten


@pytest.mark.slow
@pytest.mark.files_only("processes share the file store's index")
def test_processes_logging_variants_of_one_failure_end_with_one_pattern(root: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        done = pool.starmap(_log_variants, [(str(root), w) for w in range(4)])
    assert sum(done) == 4 * 12
    store = FileStore(root)
    entries = store.query_errors(ErrorQuery())
    assert len(entries) == 48  # nothing lost
    patterns = store.error_patterns(1)
    assert len(patterns) == 1 and patterns[0].count == 48
    assert {store.resolve_pattern(str(e.fingerprint)) for e in entries} == {patterns[0].fingerprint}


def _log_variants(root: str, worker: int) -> int:
    store = FileStore(root)
    names = ["alice", "bob", "carol", "dan", "erin", "frank"]
    hosts = ["alpha", "beta", "gamma", "delta"]
    for i in range(12):
        text = f"user {names[(i + worker) % 6]} not found on host {hosts[(i * 3 + worker) % 4]}"
        log_error(f"v{worker}", "assets", text, store=store)
    store.close()
    return 12


# -- version 1 history: linked, regrouped ---------------------------------------------------------
def write_version_1(store: Store, stage: str, texts: list[str]) -> list[ErrorEntry]:
    """Error-log entries as version 1 wrote them: its key and template, no version."""
    from rayvault.learning._ids import new_error_id
    from rayvault.learning._time import utcnow

    entries = []
    for text in texts:
        fp = fingerprint_v1(stage, text)
        now = utcnow()
        entries.append(
            ErrorEntry(
                id=new_error_id(now),
                timestamp=now,
                stage=stage,
                error=text,
                fingerprint=fp.key,
                pattern=fp.template,
            )
        )
    store.append_errors(entries)
    return entries


def write_version_1_events(store: Store, texts: list[str]) -> list[LearningEvent]:
    from rayvault.learning._ids import new_event_id
    from rayvault.learning._time import utcnow

    events = []
    for text in texts:
        fp = fingerprint_v1("assets", text)
        now = utcnow()
        events.append(
            LearningEvent(
                event_id=new_event_id(now),
                timestamp=now,
                severity="FAIL",
                component="assets",
                symptom=text,
                fingerprint=fp.key,
                pattern=fp.template,
                agent="dzine_producer",
            )
        )
    store.append_events(events)
    return events


def test_a_new_version_does_not_split_history(store: Store) -> None:
    """Version 1 masked every quoted value: its key of ``KeyError: 'choices'`` is not version
    2's. The first version-2 occurrence links the old key to its new one."""
    [old] = write_version_1(store, "assets", ["KeyError: 'choices'"])
    new = log_error("v1", "assets", "KeyError: 'choices'", store=store)
    assert new.fingerprint != old.fingerprint
    [merge] = store.pattern_merges()
    assert (merge.source, merge.target, merge.reason) == (
        old.fingerprint,
        new.fingerprint,
        "version",
    )
    assert len(store.query_errors(ErrorQuery(fingerprint=str(old.fingerprint)))) == 2
    [pattern] = store.error_patterns(1)
    assert pattern.count == 2
    # A version-1 key with no history is not linked (nothing to follow).
    log_error("v1", "assets", "KeyError: 'price'", store=store)
    assert len(store.pattern_merges()) == 1


def snapshot(root: Path, store: Store | None = None) -> dict[str, object]:
    """Every file's bytes under the root (the file store), and what the store holds."""
    files: dict[str, object] = {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "cache" not in p.parts and "locks" not in p.parts
    }
    if store is not None:
        files["<events>"] = [e.to_dict() for e in store.query_events(EventQuery())]
        files["<errors>"] = [e.to_dict() for e in store.query_errors(ErrorQuery())]
        files["<merges>"] = store.pattern_merges()
        files["<memory>"] = load_active_memory("dzine_producer", store=store).to_dict()
    return files


def test_regroup_reports_merges_and_splits_applies_and_is_idempotent(
    root: Path, store: Store
) -> None:
    # Version 1 kept the durations apart ("7m42.2s" was <id>) and put every quoted value in one
    # pattern; version 2 does the reverse.
    durations = ["Timeout after 12s", "Timeout after 1.83s", "Timeout after 7m42.2s"]
    quoted = ["KeyError: 'choices'", "KeyError: 'price'", "KeyError: 'choices'"]
    old_durations = write_version_1(store, "assets", durations)
    old_quoted = write_version_1(store, "assets", quoted)
    events = write_version_1_events(store, ["KeyError: 'price'"])
    from rayvault.learning.memory import apply_event

    apply_event(events[0], "dzine_producer", store=store)
    assert len({e.fingerprint for e in old_durations}) == 2
    assert len({e.fingerprint for e in old_quoted}) == 1

    before = snapshot(root, store)
    dry = regroup(dry_run=True, store=store)
    assert snapshot(root, store) == before  # a dry run writes nothing
    assert dry.events == 1 and dry.errors == 6
    [merge] = dry.merges
    assert set(merge.old) == {e.fingerprint for e in old_durations}
    assert sum(merge.old.values()) == 3 and merge.pattern == "Timeout after <dur>"
    [split] = dry.splits
    assert split.old == {old_quoted[0].fingerprint: 4}
    assert sorted(split.new.values()) == [2, 2]

    done = regroup(store=store)
    assert (done.merges, done.splits, done.links) == (dry.merges, dry.splits, dry.links)
    # "Timeout after <dur>" kept its key (its template did not change): the other old key of
    # the merge is linked to it; the split key is linked to nothing.
    [new_timeout] = merge.new
    assert done.links == {
        str(e.fingerprint): new_timeout for e in old_durations if e.fingerprint != new_timeout
    }
    assert done.rules_moved == 1
    entries = store.query_errors(ErrorQuery())
    assert all(e.fingerprint_version == GROUPING_VERSION for e in entries)
    assert len({e.fingerprint for e in entries if e.error.startswith("Timeout")}) == 1
    [event] = list_events(store=store)
    assert event.fingerprint_version == GROUPING_VERSION
    assert event.fingerprint == next(e.fingerprint for e in entries if "price" in e.error)
    [rule] = load_active_memory("dzine_producer", store=store).rules
    assert rule.fingerprint == event.fingerprint  # the split key's rule followed its event
    for old in old_durations:  # the old keys of the merge resolve to the new pattern
        assert len(store.query_errors(ErrorQuery(fingerprint=str(old.fingerprint)))) == 3

    after = snapshot(root, store)
    again = regroup(store=store)
    assert again.nothing_to_do and not again.merges and not again.splits
    assert snapshot(root, store) == after


# -- the CLI ------------------------------------------------------------------------------------
def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from rayvault.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.files_only("version 1 records are written in the file layout")
def test_patterns_regroup_cli(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = FileStore(root)
    write_version_1(store, "assets", ["Timeout after 12s", "Timeout after 7m42.2s"])
    write_version_1(store, "assets", ["KeyError: 'choices'", "KeyError: 'price'"])
    before = snapshot(root)
    code, out, _ = cli(capsys, "patterns", "regroup", "--dry-run")
    assert code == 0 and "merge" in out and "split" in out and "dry run" in out
    assert snapshot(root) == before
    code, out, _ = cli(capsys, "patterns", "regroup", "--json")
    data = json.loads(out)
    assert code == 0 and data["errors"] == 4 and not data["dry_run"]
    assert len(data["merges"]) == 1 and len(data["splits"]) == 1
    code, out, _ = cli(capsys, "patterns", "regroup")
    assert code == 0 and "Nothing to do" in out
    code, out, _ = cli(capsys, "store", "upgrade", "--json")
    assert code == 0 and json.loads(out)["regroup"]["errors"] == 0
    code, out, _ = cli(capsys, "patterns", "--min-count", "1", "--json")
    assert code == 0 and isinstance(json.loads(out), list)


def test_cli_queries_by_pattern_follow_merges(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``events resolve --pattern`` with a merged key selects the whole pattern's events;
    ``errors patterns`` shows the merged family as one pattern."""
    from rayvault.learning.store import get_store

    store = get_store()
    events = [
        create_event(**event_kwargs(symptom=text, verification="", agent=None), store=store)  # type: ignore[arg-type]
        for text in FAMILY
    ]
    keys(FAMILY, store)
    merged = str(events[1].fingerprint)
    assert store.resolve_pattern(merged) != merged
    code, out, _ = cli(capsys, "events", "resolve", "--pattern", merged, "--dry-run", "--json")
    assert code == 0 and all(e.event_id in out for e in events)
    code, out, _ = cli(capsys, "errors", "patterns", "--min-count", "1", "--json")
    [pattern] = json.loads(out)
    assert code == 0 and pattern["count"] == 4


@pytest.mark.files_only("the merges log is the file layout's")
def test_a_merge_in_the_log_but_not_the_index_is_applied_on_the_next_read(root: Path) -> None:
    """A writer killed between making a merge durable and its index update loses nothing: the
    next reader catches the index up with the merges log."""
    store = FileStore(root)
    first, second = keys(FAMILY[:2], store)
    assert store.pattern_merges() == []
    record = {
        "source": second,
        "target": first,
        "stage": "assets",
        "at": "2026-02-19T12:00:00.000000Z",
        "version": GROUPING_VERSION,
        "reason": "clusters",
    }
    store.merges_log.append([orjson.dumps(record)])  # durable; the index not told
    reader = FileStore(root)
    assert reader.resolve_pattern(second) == first
    [pattern] = reader.error_patterns(1)
    assert pattern.fingerprint == first and pattern.count == 2


@pytest.mark.files_only("exports a file root to a folder")
def test_merges_are_exported_and_imported(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = FileStore(root)
    keys(FAMILY, store)
    dest = tmp_path / "exported"
    code, _, err = cli(capsys, "store", "export", "--to", str(dest))
    assert code == 0, err
    copy = FileStore(dest)
    assert copy.pattern_merges() == store.pattern_merges() != []
    assert [(p.fingerprint, p.count) for p in copy.error_patterns(1)] == [
        (p.fingerprint, p.count) for p in store.error_patterns(1)
    ]


def test_patterns_explain_cli_reads_the_stores_clusters_and_writes_nothing(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = FileStore(root)
    first, *_ = keys(FAMILY[:3], store)
    store.close()
    before = snapshot(root)
    code, out, _ = cli(capsys, "patterns", "explain", "assets", FAMILY[3])
    assert code == 0 and "decision: merged" in out and "user <*> not found on host <*>" in out
    code, out, _ = cli(capsys, "patterns", "explain", "assets", FAMILY[3], "--json")
    data = json.loads(out)
    assert data["decision"] == "merged" and data["key"] == first
    assert len(data["merged"]) == 2
    code, out, _ = cli(capsys, "patterns", "explain", "assets", FAMILY[3], "--empty", "--json")
    assert json.loads(out)["decision"] == "new"
    code, out, _ = cli(capsys, "patterns", "explain", "assets", "Timeout after 1.83s", "--json")
    assert code == 0 and json.loads(out)["masked"] == "Timeout after <dur>"
    assert snapshot(root) == before  # nothing written


def test_clusters_derived_again_from_records_have_the_live_templates() -> None:
    """What a rebuilt index or an import derives from the records is what assignment made:
    the same keys, signatures and templates (shapes such as ``rhost=<*>`` included)."""
    from rayvault.learning._grouping import MemoryBook, assign
    from rayvault.learning.store._patterns import rebuild_clusters

    texts = [
        *FAMILY,
        "authentication failure; rhost=10.0.0.1 user=root",
        "authentication failure; rhost=csnsu.nsuok.edu user=root",
        "Timeout after 1.83s on B0ABC12345",
        "Timeout after 7m42.2s on B0XYZ99999",
    ]
    book = MemoryBook()
    members = [(t, assign(book, "assets", t).key) for t in texts]
    clusters, signatures = rebuild_clusters([("assets", t, k) for t, k in members], book.merges())
    live = {c.key: c.tokens for c in clusters if c.key not in book.merges()}
    assert live == {
        k: book.find("assets", g.sig).tokens  # type: ignore[union-attr]
        for t, k in members
        if k not in book.merges()
        for g in [assign(MemoryBook(), "assets", t)]
    }
    assert "rhost=<*>" in live[members[4][1]]
    assert {(s, sig) for s, sig, _ in signatures} == {
        ("assets", assign(MemoryBook(), "assets", t).sig) for t in texts
    }


def test_patterns_explain_on_a_missing_root_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    code, _, err = cli(capsys, "patterns", "explain", "assets", "x 1", "--root", str(missing))
    assert code == 1 and "does not exist" in err and not missing.exists()
    code, out, _ = cli(
        capsys, "patterns", "explain", "assets", "x 1", "--root", str(missing), "--empty"
    )
    assert code == 0 and "decision: new" in out and not missing.exists()
