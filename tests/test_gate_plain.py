"""The gate on plain data (issue 15 item 4): the hand shape checks of ``_plain`` accept only what
the records read to the same values, the plain state is written as the record writes it, and the
plain result converts to the same ``GateResult``."""

from __future__ import annotations

import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rayvault.learning import _plain, create_event
from rayvault.learning._plain import (
    EVENT_FIELDS,
    GATE_STATE_FIELDS,
    MEMORY_FIELDS,
    RULE_FIELDS,
    PlainGateState,
    conforms,
)
from rayvault.learning.exceptions import CorruptFileError
from rayvault.learning.gate import _gate_result, learning_gate, learning_gate_plain
from rayvault.learning.models import AgentMemory, GateState, LearningEvent, Record, Rule
from rayvault.learning.store import FileStore, get_store

from .conftest import event_kwargs

TABLES: list[tuple[dict[str, str], type[Record]]] = [
    (EVENT_FIELDS, LearningEvent),
    (RULE_FIELDS, Rule),
    (GATE_STATE_FIELDS, GateState),
]


def _kind(annotation: Any) -> str:
    """The ``_plain`` kind of a record field's annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = type(None) in typing.get_args(annotation)
    if optional:
        inner = args[0] if len(args) == 1 else annotation
        return "dict?" if typing.get_origin(inner) is dict else _kind(inner) + "?"
    if typing.get_origin(annotation) is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    if annotation is datetime:
        return "ts"
    if annotation is str:
        return "str"
    if annotation is int:
        return "int"
    if typing.get_origin(annotation) is typing.Literal:
        values = set(typing.get_args(annotation))
        return "sev" if "BLOCKER" in values else "status"
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return "strs" if item is str else "dicts"
    if typing.get_origin(annotation) is dict:
        return "dict-of-dicts"
    raise AssertionError(annotation)


@pytest.mark.parametrize(("table", "model"), TABLES, ids=lambda x: getattr(x, "__name__", ""))
def test_the_hand_check_tables_are_the_records_fields(
    table: dict[str, str], model: type[Record]
) -> None:
    # A field added to a record must be added to its table (else the plain path would keep a
    # value of the wrong type the record refuses).
    assert list(table) == list(model.model_fields)
    for name, info in model.model_fields.items():
        kind = table[name]
        assert kind.endswith("!") == info.is_required(), name
        assert kind.rstrip("!") == _kind(info.annotation), name
    assert list(MEMORY_FIELDS) == list(AgentMemory.model_fields)


def _event() -> dict[str, Any]:
    return {
        "event_id": "le-1",
        "timestamp": "2026-02-19T12:00:00.000000Z",
        "severity": "FAIL",
        "component": "assets",
        "symptom": "broken",
        "regression_of": "le-0",
    }


#: Values of every JSON type, and the forms the records coerce (lower-case severity, numbers as
#: text, naive and offset timestamps).
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(
        [
            "",
            "x",
            "fail",
            "FAIL",
            "open",
            "verified",
            "3",
            "2026-02-19T12:00:00Z",
            "2026-02-19T12:00:00+00:00",
            "2026-02-19 12:00:00",
            "20260219T120000Z",
            "not a date Z",
        ]
    ),
    st.lists(st.sampled_from(["a", 1, {"k": 1}]), max_size=2),
    st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from([1, {"k": 1}]), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(
    field=st.sampled_from([*EVENT_FIELDS, "regression_of"]),
    value=VALUES,
    drop=st.booleans(),
)
def test_what_the_hand_check_accepts_the_record_reads_to_the_same_values(
    field: str, value: Any, drop: bool
) -> None:
    raw = _event()
    if drop:
        raw.pop(field, None)
    else:
        raw[field] = value
    if not conforms(raw, EVENT_FIELDS):
        return  # read by the record instead: same values and errors as before, by construction
    event = LearningEvent.model_validate(raw)
    plain = _plain.PlainEvent(raw)
    for name in ("event_id", "severity", "symptom", "status", "video_id"):
        assert getattr(plain, name) == getattr(event, name)
    assert plain.timestamp == event.timestamp
    assert plain.regression_of == event.regression_of
    assert plain.regressed_after_seconds == event.regressed_after_seconds
    for name in EVENT_FIELDS:
        if name in raw and not EVENT_FIELDS[name].startswith("ts"):
            assert getattr(event, name) == raw[name], name  # kept as it was: no coercion


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(list(GATE_STATE_FIELDS)), value=VALUES)
def test_a_plain_gate_state_is_written_as_the_record_writes_it(field: str, value: Any) -> None:
    raw: dict[str, Any] = {
        "policies_sha": "abc",  # the original system's fields, kept as extra fields
        "video_id": "v1",
        "souls": {"a": {"sha256": None}},
        "runs": [{"at": "x"}],
        field: value,
        "other": [1, 2],
    }
    if not conforms(raw, GATE_STATE_FIELDS):
        return
    plain = PlainGateState.from_raw(raw)
    record = GateState.model_validate(raw)
    now = datetime(2026, 2, 19, 12, 0, 0, 123456, tzinfo=_plain.timestamp("2026-01-01Z").tzinfo)
    plain.updated = record.updated = now
    assert orjson.dumps(plain.to_dict()) == orjson.dumps(record.to_dict())


def test_rules_need_every_field_in_shape() -> None:
    rule = {
        "rule_id": "r1",
        "created": "2026-02-19T12:00:00.000000Z",
        "severity": "FAIL",
        "component": "assets",
        "rule": "do it",
    }
    assert conforms({"rules": [rule], "count": 1}, MEMORY_FIELDS)
    assert not conforms({"rules": [{**rule, "deliveries": "3"}]}, MEMORY_FIELDS)
    assert not conforms({"rules": [{**rule, "severity": "fail"}]}, MEMORY_FIELDS)
    assert not conforms(
        {"rules": [{k: v for k, v in rule.items() if k != "created"}]}, MEMORY_FIELDS
    )
    assert not conforms({"rules": [rule], "count": True}, MEMORY_FIELDS)
    assert not conforms([rule], MEMORY_FIELDS)


def _fail_event(**more: object) -> None:
    create_event(**event_kwargs(verification="", **more))  # type: ignore[arg-type]


def test_the_plain_result_converts_to_the_same_record(root: Path) -> None:
    for video in ("v040", "v041", "v042"):  # a recurring failure, open
        _fail_event(video_id=video)
    plain = learning_gate_plain("v042", "assets")
    assert plain.blocked is True
    assert {c.outcome for c in plain.checks} >= {"deny", "pass"}
    record = _gate_result(plain)
    assert orjson.dumps(record.to_dict()) == orjson.dumps(plain.to_dict())
    again = learning_gate("v042", "assets")  # the library's, a second run: baselines now read
    assert [c.to_dict() for c in again.checks[2:]] == [c.to_dict() for c in plain.checks[2:]]
    assert again.checks[0].reason == "policies unchanged"


def test_the_file_store_gate_reads_plain_data_and_falls_back_for_refused_files(
    root: Path,
) -> None:
    _fail_event()
    store = get_store()
    assert isinstance(store, FileStore)
    learning_gate("v042", "assets")
    reads = store.gate_reads()
    assert isinstance(reads.state("v042"), PlainGateState)
    assert all(isinstance(r, _plain.PlainRule) for r in reads.rules("dzine_producer"))
    # A rule whose counter is text: the record reads it (lax), the hand check does not.
    memory = store.agent_dir("dzine_producer") / "memory_active.json"
    data = orjson.loads(memory.read_bytes())
    data["rules"][0]["deliveries"] = "2"
    memory.write_bytes(orjson.dumps(data))
    (rule,) = reads.rules("dzine_producer")
    assert isinstance(rule, Rule) and rule.deliveries == 2
    # A corrupt gate state: the record's error, naming the file, and the file left as it is.
    path = store.gate_state_path("v042")
    path.write_bytes(b'{"runs": 3}')
    with pytest.raises(CorruptFileError, match="v042.json") as caught:
        learning_gate("v042", "assets")
    assert "runs" in str(caught.value)
    assert path.read_bytes() == b'{"runs": 3}'


@pytest.mark.slow
def test_importing_the_gate_imports_no_record() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rayvault.learning.gate as g, rayvault.cli._gate_fast; "
        "print('pydantic' in sys.modules, 'rayvault.learning.models' in sys.modules); "
        "print(g.Acknowledgement.__name__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False", "Acknowledgement"]


def test_known_failure_templates_are_read_in_chunks_with_the_same_rows(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The known failures' templates come from one ``IN (…)`` query per chunk of keys: chunks of
    one key give the rows one query for all does (the chunking is what holds a stage with more
    recurring patterns than SQLite takes parameters)."""
    from rayvault.learning import log_error
    from rayvault.learning.store.files import _indexreads

    for n, text in enumerate(
        ["Timeout after 30s on B0AB", "Voice engine returned 0 bytes", "HTTP 429 from offers API"]
    ):
        for video in range(3):
            log_error(f"v{n}{video}", "assets", f"{text} (attempt {video})")
    store = FileStore(root)
    whole = store.known_failure_rows(("assets",), 3)
    assert len(whole) == 3 and all(isinstance(row[1], str) for row in whole)
    monkeypatch.setattr(_indexreads, "_IN_CHUNK", 1)
    assert FileStore(root).known_failure_rows(("assets",), 3) == whole


@pytest.mark.files_only("the gate state file of the file store")
def test_a_run_record_alone_flushes_the_state_but_not_its_folder(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable writes: a gate run whose baselines are unchanged flushes the new state file
    before it replaces the old one (so either is whole after a power cut) but not the folder;
    a run that sets a baseline, and an acknowledgement, flush both."""
    import os

    from rayvault.learning import acknowledge
    from rayvault.learning.store import _fs

    monkeypatch.setenv("RAYVAULT_FSYNC", "1")
    folders: list[Path] = []
    files: list[int] = []
    real_dir, real_file = _fs.fsync_dir, os.fsync
    monkeypatch.setattr(_fs, "fsync_dir", lambda p: (folders.append(Path(p)), real_dir(p))[-1])
    monkeypatch.setattr(os, "fsync", lambda fd: (files.append(fd), real_file(fd))[-1])
    _fail_event()
    store = FileStore(root)
    state_dir = store.gate_state_path("v042").parent
    folders.clear()

    learning_gate_plain("v042", "assets")  # the first run: baselines set
    assert state_dir in folders
    first = store.gate_state_path("v042").read_bytes()

    folders.clear(), files.clear()
    learning_gate_plain("v042", "assets")  # the same baselines: one more run record
    assert state_dir not in folders and files  # the file flushed, its folder not
    again = orjson.loads(store.gate_state_path("v042").read_bytes())
    assert len(again["runs"]) == len(orjson.loads(first)["runs"]) + 1
    assert {k: v for k, v in again.items() if k not in ("runs", "updated")} == {
        k: v for k, v in orjson.loads(first).items() if k not in ("runs", "updated")
    }

    folders.clear()
    acknowledge("v042", "assets", note="checked")
    assert state_dir in folders
