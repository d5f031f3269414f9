"""The cold gate's JSON (``store._leanjson``: the standard ``json``) reads and writes exactly what
``orjson`` does (``_fs.parse_json``/``_fs.dump_json``), so the gate state a cold gate writes has
the same bytes as one the file store writes (issue 15 item 4)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from rayvault.learning import learning_gate
from rayvault.learning.exceptions import CorruptFileError
from rayvault.learning.store._fs import dump_json, parse_json
from rayvault.learning.store._leanjson import dumps, loads, loads_value, read
from rayvault.learning.store.files._gatestore import GateFileStore

SAMPLES: list[object] = [
    {},
    [],
    {"video_id": "v042", "policies": None, "souls": {}, "runs": [], "acks": []},
    {"text": "café — ünïcödé ✓ 日本語 😀", "nested": {"list": [1, -2, 0.5, True, False, None]}},
    {"control": '\x00\x01\x1f\x7f "quoted" back\\slash /slash \u2028\u2029 \t\n\r'},
    {"big": 2**63 - 1, "neg": -(2**63), "unsigned": 2**64 - 1, "float": 123456.789},
    {"exponent": 1e16, "small": 1e-7, "neg_zero": -0.0},  # orjson's own notation: its bytes
    {"deep": [[[{"a": [{}]}]]]},
    {"tuple": (1, "two")},  # not json's: written by orjson
]


@pytest.mark.parametrize("value", SAMPLES)
def test_dumps_writes_dump_jsons_bytes(value: object) -> None:
    assert dumps(value) == dump_json(value)


@pytest.mark.parametrize("value", SAMPLES)
def test_loads_reads_what_orjson_reads(value: object) -> None:
    data = dump_json(value)
    assert loads(data, Path("x.json")) == orjson.loads(data)
    assert loads_value(data) == orjson.loads(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"a": NaN}', b"[Infinity]", b'"\\ud800"', b"\xff\xfe", b"[1e400]", b"[1] x"],
)
def test_what_orjson_refuses_is_refused_the_same_way(data: bytes) -> None:
    with pytest.raises(CorruptFileError) as lean:
        loads(data, Path("state.json"))
    with pytest.raises(CorruptFileError) as fast:
        parse_json(data, Path("state.json"))
    assert str(lean.value) == str(fast.value)
    with pytest.raises(orjson.JSONDecodeError):
        loads_value(data)


def test_big_integers_and_surrogate_pairs_are_read_as_orjson_reads_them() -> None:
    for data in (b"[18446744073709551616]", b'["\\ud83d\\ude00"]'):
        try:
            expected: object = orjson.loads(data)
        except orjson.JSONDecodeError:
            with pytest.raises(CorruptFileError):
                loads(data, Path("x.json"))
        else:
            assert loads(data, Path("x.json")) == expected


def test_text_orjson_cannot_write_is_refused_with_its_error() -> None:
    for value in ({"a": "\ud800"}, {"\udfff": 1}, {1: "int key"}):
        with pytest.raises(orjson.JSONEncodeError) as lean:
            dumps(value)
        with pytest.raises(orjson.JSONEncodeError) as fast:
            dump_json(value)
        assert str(lean.value) == str(fast.value)


def test_read_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert read(tmp_path / "missing.json") is None


def test_the_cold_gates_state_file_has_the_file_stores_bytes(root: Path) -> None:
    (root / "agents" / "dzine_producer").mkdir(parents=True)
    (root / "agents" / "dzine_producer" / "SOUL.md").write_text("Prüfe — ✓ 日本\n", "utf-8")
    # Non-ASCII text in the state (the policies' values are kept in it), and a float whose
    # notation differs between the two libraries (written by orjson: the same bytes either way).
    (root / "policies.py").write_text(
        'LEARNING_SKILL_GRAPH_DIR = "agents/skills/lérnings-日本"\n'
        "LEARNING_EFFICACY_MAX_RECURRENCE_RATE = 1e-05\n",
        "utf-8",
    )
    store = GateFileStore(root)
    learning_gate("v042", "assets", store=store)  # type: ignore[arg-type]
    path = root / "state" / "learning_gate" / "v042.json"
    data = path.read_bytes()
    assert data == dump_json(orjson.loads(data))
    values = orjson.loads(data)["policies"]["values"]
    assert "lérnings-日本".encode() in data
    assert values["LEARNING_EFFICACY_MAX_RECURRENCE_RATE"] == 1e-05
    learning_gate("v042", "assets", store=store)  # type: ignore[arg-type]
    data = path.read_bytes()
    assert data == dump_json(orjson.loads(data)) and len(orjson.loads(data)["runs"]) == 2
