"""Idempotency keys: a retried call returns the first call's record and creates nothing
(issue 11, item 6), on both stores.

Decision pinned here: the first call with a key wins. A later call with the same key returns
the stored record whatever its own arguments (a retry need not repeat them byte for byte, and a
replayed key never creates a second record).
"""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from rayvault.cli import main
from rayvault.learning import create_event, list_events, load_active_memory, run_stage
from rayvault.learning.errors import list_errors, log_error, promote_to_learning
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.loop import StageRun, loop_key
from rayvault.learning.store import FileStore, Store

from . import _workers
from .conftest import event_kwargs

pytestmark = pytest.mark.both_stores


def test_same_key_twice_returns_the_first_event(store: Store) -> None:
    first = create_event(**event_kwargs(), store=store, idempotency_key="run-1:assets:1")
    again = create_event(**event_kwargs(), store=store, idempotency_key="run-1:assets:1")
    assert again == first
    assert [e.event_id for e in list_events(store=store)] == [first.event_id]
    assert first["idempotency_key"] == "run-1:assets:1"
    # The rule was applied once: the retry did not apply it again.
    [rule] = load_active_memory("dzine_producer", store=store).rules
    assert rule.applied_count == 1


def test_same_key_other_payload_returns_the_first(store: Store) -> None:
    first = create_event(**event_kwargs(), store=store, idempotency_key="k")
    other = create_event(
        **event_kwargs(symptom="Something else entirely", severity="WARN"),
        store=store,
        idempotency_key="k",
    )
    assert other.event_id == first.event_id
    assert other.symptom == first.symptom and other.severity == "FAIL"
    assert len(list_events(store=store)) == 1


def test_different_keys_and_no_key_create(store: Store) -> None:
    a = create_event(**event_kwargs(), store=store, idempotency_key="a")
    b = create_event(**event_kwargs(), store=store, idempotency_key="b")
    c = create_event(**event_kwargs(), store=store)
    d = create_event(**event_kwargs(), store=store)
    assert len({a.event_id, b.event_id, c.event_id, d.event_id}) == 4
    assert "idempotency_key" not in c  # records without a key keep their shape


def test_log_error_same_key(store: Store) -> None:
    first = log_error("v042", "assets", "boom", store=store, idempotency_key="e1")
    again = log_error("v042", "assets", "other text", store=store, idempotency_key="e1")
    assert again == first
    assert [e.id for e in list_errors(store=store)] == [first.id]
    # Keys of errors and of events are separate: the same key may name one of each.
    event = create_event(**event_kwargs(), store=store, idempotency_key="e1")
    assert event.source_error_id is None


def test_promote_to_learning_same_key(store: Store) -> None:
    entry = log_error("v042", "research", "Price anomaly: 0.01", store=store)
    first = promote_to_learning(
        entry.id, root_cause="cause", fix="fix", store=store, idempotency_key="p1"
    )
    again = promote_to_learning(
        entry.id, root_cause="cause", fix="fix", store=store, idempotency_key="p1"
    )
    assert first.created and not again.created
    assert again.event.event_id == first.event.event_id
    assert len(list_events(store=store)) == 1


def test_promote_after_the_event_was_made_but_not_linked(store: Store) -> None:
    """The retry of a promotion whose first call created the event and then failed (the
    error's update never happened) returns that event and completes the link."""
    entry = log_error("v042", "research", "Price anomaly: 0.01", store=store)
    made = create_event(
        **event_kwargs(component="research", symptom="Price anomaly: 0.01", agent=None),
        store=store,
        idempotency_key="p2",
    )
    result = promote_to_learning(
        entry.id, root_cause="cause", fix="fix", store=store, idempotency_key="p2"
    )
    assert not result.created and result.event.event_id == made.event_id
    assert result.error.learning_event_id == made.event_id and result.error.resolved
    assert len(list_events(store=store)) == 1


@pytest.mark.parametrize("bad", ["", "   ", "x" * 201, "line\nbreak", "\x00", 5, b"key"])
def test_invalid_keys_are_refused_and_nothing_is_written(store: Store, bad: object) -> None:
    with pytest.raises(InvalidInputError, match="idempotency_key"):
        create_event(**event_kwargs(), store=store, idempotency_key=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="idempotency_key"):
        log_error("v042", "assets", "boom", store=store, idempotency_key=bad)  # type: ignore[arg-type]
    assert list_events(store=store) == []
    assert list_errors(store=store) == []


def test_the_loop_keys_what_it_records(store: Store) -> None:
    """The loop keys its error and event by run id, video, stage and attempt: the same run
    replayed (its first pass raised after the store committed) finds what it recorded."""

    def failing(ctx: object) -> None:
        raise RuntimeError("Image hallucination in Product Background")

    run = run_stage(
        "v042", "assets", failing, retries=0, run_id="r-1", on_failure="return", store=store
    )
    assert run.outcome == "failed"
    [entry] = list_errors(store=store)
    [event] = list_events(store=store)
    assert entry["idempotency_key"] == loop_key(run, 1, "error") == "loop:r-1:v042:assets:1:error"
    assert event["idempotency_key"] == loop_key(run, 1, "event")
    # What a replay of attempt 1 would call returns the same records.
    assert (
        log_error("v042", "assets", "x", store=store, idempotency_key=loop_key(run, 1, "error"))
        == entry
    )
    assert (
        create_event(
            **event_kwargs(), store=store, idempotency_key=loop_key(run, 1, "event")
        ).event_id
        == event.event_id
    )
    long = StageRun(video_id="v042", stage="assets", agent=None, run_id="r" * 300)
    assert len(loop_key(long, 1, "event")) <= 200


def test_the_key_survives_an_index_rebuild(root: Path, backend: str | None) -> None:
    if backend is not None:
        pytest.skip("the derived index is the file store's")
    store = FileStore(root)
    first = create_event(**event_kwargs(), store=store, idempotency_key="kept")
    store.close()
    for path in (root / "state" / "cache").iterdir():
        path.unlink()
    store = FileStore(root)
    assert create_event(**event_kwargs(), store=store, idempotency_key="kept") == first
    store.close()
    log = json.loads((root / "data" / "learning_events.json").read_text())
    assert {e["idempotency_key"] for e in log} == {"kept"}


@pytest.mark.slow
def test_processes_racing_with_one_key_create_one_event(root: Path, backend: str | None) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=4, mp_context=ctx) as pool:
        futures = [
            pool.submit(_workers.create_with_key, str(root), backend, "same-key", w)
            for w in range(6)
        ]
        ids = {f.result() for f in futures}
    assert len(ids) == 1
    from rayvault.learning.store import open_store

    store = open_store(root, backend)
    try:
        assert [e.event_id for e in list_events(store=store)] == list(ids)
    finally:
        store.close()


def test_cli_idempotency_key(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["events", "create", "--severity", "FAIL", "--component", "assets", "--json"]
    ids = []
    for symptom in ("Image hallucination", "retried"):
        code = main([*args, "--symptom", symptom, "--idempotency-key", "cli-1"])
        out = capsys.readouterr().out
        assert code == 0
        ids.append(json.loads(out)["event_id"])
    assert ids[0] == ids[1]
    errors = []
    for _ in range(2):
        code = main(["errors", "log", "assets", "boom", "--idempotency-key", "cli-e", "--json"])
        assert code == 0
        errors.append(json.loads(capsys.readouterr().out)["id"])
    assert errors[0] == errors[1]
    code = main(
        [
            "errors",
            "promote",
            errors[0],
            "--root-cause",
            "c",
            "--fix",
            "f",
            "--idempotency-key",
            "cli-p",
            "--json",
        ]
    )
    assert code == 0
    assert (
        main(
            [
                "events",
                "create",
                "--severity",
                "FAIL",
                "--component",
                "assets",
                "--symptom",
                "x",
                "--idempotency-key",
                "",
            ]
        )
        == 1
    )
    assert "idempotency_key must not be empty" in capsys.readouterr().err
