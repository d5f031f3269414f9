"""The append-only JSON array: in-place appends, torn tails, corruption never written over."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rayvault.learning.exceptions import CorruptFileError
from rayvault.learning.store.files._jsonlog import JsonArrayLog, parse_array, scan_after


def line(obj: dict[str, object]) -> bytes:
    return orjson.dumps(obj)


def test_first_append_creates_a_valid_array(tmp_path: Path) -> None:
    """Appending to a missing file creates a JSON array holding the element."""
    log = JsonArrayLog(tmp_path / "log.json")
    log.append([line({"id": "a"})])
    assert json.loads((tmp_path / "log.json").read_text()) == [{"id": "a"}]


def test_append_writes_in_place_without_touching_earlier_bytes(tmp_path: Path) -> None:
    """An append keeps the file (same inode) and every byte before the old closing bracket."""
    path = tmp_path / "log.json"
    log = JsonArrayLog(path)
    log.append([line({"id": str(i)}) for i in range(100)])
    before = path.read_bytes()
    inode = path.stat().st_ino
    log.append([line({"id": "new"})])
    after = path.read_bytes()
    assert path.stat().st_ino == inode
    last_element_end = len(before.rstrip()[:-1].rstrip())
    assert after[:last_element_end] == before[:last_element_end]
    assert json.loads(after)[-1] == {"id": "new"}
    assert len(json.loads(after)) == 101


def test_append_reads_only_the_tail(tmp_path: Path) -> None:
    """The append path never parses the whole file: garbage far from the end is not noticed
    (cost independent of size), while the full reader still reports it."""
    path = tmp_path / "log.json"
    log = JsonArrayLog(path)
    log.append([line({"id": str(i), "pad": "x" * 200}) for i in range(200)])
    data = bytearray(path.read_bytes())
    data[5:9] = b"@@@@"  # damage near the start
    path.write_bytes(bytes(data))
    log.append([line({"id": "tail"})])
    assert path.read_bytes().endswith(b'{"id":"tail"}\n]\n')
    with pytest.raises(CorruptFileError):
        log.read()


def test_appends_to_a_pretty_printed_legacy_file(tmp_path: Path) -> None:
    """Files written by the old system (json.dump indent=2) are appended to as they are."""
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{"id": "old", "nested": {"a": 1}}], indent=2))
    JsonArrayLog(path).append([line({"id": "new"})])
    assert json.loads(path.read_text()) == [{"id": "old", "nested": {"a": 1}}, {"id": "new"}]


def test_appends_to_an_empty_legacy_array(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text("[]")
    JsonArrayLog(path).append([line({"id": "x"})])
    assert json.loads(path.read_text()) == [{"id": "x"}]


@pytest.mark.parametrize(
    "tail",
    [
        b",\n",  # killed after the comma
        b',\n{"id": "half',  # killed inside the element
        b',\n{"id": "half", "nested": {"k": 1}, "s": "}',  # braces inside the torn element
        b"\n",  # closing bracket lost
        b"\x00\x00\x00\x00",  # NUL fill after a power cut
        b',\n{"id": "c", "x": 1\x00\x00',
    ],
)
def test_torn_tail_is_ignored_by_readers_and_repaired_by_the_next_append(
    tmp_path: Path, tail: bytes
) -> None:
    """A crash mid-append loses only the unacknowledged element; the next append repairs."""
    path = tmp_path / "log.json"
    log = JsonArrayLog(path)
    log.append([line({"id": "a"}), line({"id": "b"})])
    good = path.read_bytes().rstrip()
    assert good.endswith(b"]")
    path.write_bytes(good[:-1].rstrip() + tail)
    parsed = log.read()
    assert [x["id"] for x in parsed.items] == ["a", "b"]
    assert parsed.torn_at is not None
    log.append([line({"id": "c"})])
    assert [x["id"] for x in json.loads(path.read_text())] == ["a", "b", "c"]


def test_complete_element_without_bracket_is_kept(tmp_path: Path) -> None:
    """An element fully written before the crash (only ``]`` missing) survives the repair."""
    path = tmp_path / "log.json"
    path.write_bytes(b'[\n{"id": "a"}\n,\n{"id": "b"}\n')
    log = JsonArrayLog(path)
    assert [x["id"] for x in log.read().items] == ["a", "b"]
    log.append([line({"id": "c"})])
    assert [x["id"] for x in json.loads(path.read_text())] == ["a", "b", "c"]


def test_torn_first_element(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_bytes(b'[\n{"id": "a", "x')
    log = JsonArrayLog(path)
    assert log.read().items == []
    log.append([line({"id": "b"})])
    assert json.loads(path.read_text()) == [{"id": "b"}]


@pytest.mark.parametrize(
    "content",
    [
        b'[\n{"id": "a"}\n,\nGARBAGE\n,\n{"id": "b"}\n',  # damage, and no closing bracket
        b'{"id": "a"}',  # not an array
        b"",  # empty file
        b"   \n",
        b'[\n{"id": "a"}\n]\ntrailing junk\n',
        b"not json at all",
        b'[{"event_id": "le-1", "oops"',  # a foreign one-line writer cut short: not our torn tail
    ],
)
def test_corrupt_file_is_refused_by_name_and_left_unchanged(tmp_path: Path, content: bytes) -> None:
    """Anything but a torn tail is corruption: reading and appending raise, nothing is written.
    (Damage far from the tail of an otherwise well-formed file is found by full reads, see
    test_append_reads_only_the_tail.)"""
    path = tmp_path / "learning_events.json"
    path.write_bytes(content)
    log = JsonArrayLog(path)
    with pytest.raises(CorruptFileError) as info:
        log.read()
    assert str(path) in str(info.value)
    with pytest.raises(CorruptFileError):
        log.append([line({"id": "new"})])
    assert path.read_bytes() == content


def test_elements_must_be_single_line_objects(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="single-line"):
        JsonArrayLog(tmp_path / "x.json").append([b'{"a":\n1}'])


def test_scan_after_reads_only_new_complete_elements(tmp_path: Path) -> None:
    """The index's catch-up parses what was appended after an offset, and stops before an
    element still being written."""
    path = tmp_path / "log.json"
    log = JsonArrayLog(path)
    log.append([line({"id": "a"})])
    end = parse_array(path.read_bytes(), path).end
    log.append([line({"id": "b"}), line({"id": "c"})])
    data = path.read_bytes()
    scan = scan_after(data[end:], end)
    assert scan is not None
    assert [item["id"] for item, _ in scan.items] == ["b", "c"]
    assert scan.end == parse_array(data, path).end
    partial = data.rstrip()[:-1] + b',\n{"id": "d", "x'
    scan = scan_after(partial[end:], end)
    assert scan is not None and [item["id"] for item, _ in scan.items] == ["b", "c"]


records = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.text(min_size=1, max_size=12),
            "text": st.text(max_size=40),
            "n": st.integers(min_value=-(2**63), max_value=2**63 - 1),
            "nested": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        }
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(records, min_size=1, max_size=4))
def test_round_trip_of_appended_batches(tmp_path_factory: pytest.TempPathFactory, batches) -> None:  # type: ignore[no-untyped-def]
    """Whatever the content (braces, quotes, newlines in strings), appends read back in order."""
    path = tmp_path_factory.mktemp("rt") / "log.json"
    log = JsonArrayLog(path)
    for batch in batches:
        log.append([line(r) for r in batch])
    expected = [r for batch in batches for r in batch]
    assert json.loads(path.read_text()) == expected
    assert log.read().items == expected


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=records, data=st.data())
def test_any_crash_point_leaves_a_readable_prefix(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[dict[str, object]],
    data: st.DataObject,
) -> None:
    """Cut the file at any byte (a crash mid-append): readers get a prefix of the elements, and
    the next append yields that prefix plus the new element."""
    path = tmp_path_factory.mktemp("cut") / "log.json"
    log = JsonArrayLog(path)
    for item in items:
        log.append([line(item)])
    full = path.read_bytes()
    cut = data.draw(st.integers(min_value=1, max_value=len(full)))
    path.write_bytes(full[:cut])
    got = log.read().items
    assert got == items[: len(got)]
    log.append([line({"id": "after-crash"})])
    assert json.loads(path.read_text()) == [*got, {"id": "after-crash"}]


def test_a_read_that_straddles_an_append_is_read_again_under_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer appends between a reader's two ``read`` calls: the first call got the old
    closing bracket, the second the rest of the new element. The reader must not report that as
    corruption, nor return it: it reads again while no append is in progress."""
    path = tmp_path / "log.json"
    log = JsonArrayLog(path)
    log.append([line({"id": "a"})])
    real_pread = os.pread
    straddled: list[bytes] = []

    def racing_pread(fd: int, n: int, offset: int) -> bytes:
        data = real_pread(fd, n, offset)
        if not straddled:
            monkeypatch.setattr(os, "pread", real_pread)
            JsonArrayLog(path).append([line({"id": "b", "text": "x" * 100})])
            straddled.append(data + real_pread(fd, 1 << 20, len(data)))
            monkeypatch.setattr(os, "pread", racing_pread)
        return data

    monkeypatch.setattr(os, "pread", racing_pread)
    items = log.read().items
    assert straddled, "the reader's first read was not interrupted"
    with pytest.raises(CorruptFileError):  # what the straddling read alone would have reported
        parse_array(straddled[0], path)
    assert [item["id"] for item in items] == ["a", "b"]


def test_reader_waits_for_an_append_in_progress(tmp_path: Path) -> None:
    """While a writer holds the data file's exclusive lock mid-append, a reader that finds no
    complete array waits for it, then sees the finished append."""
    path = tmp_path / "log.json"
    JsonArrayLog(path).append([line({"id": "a"})])
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        whole = path.read_bytes()
        os.pwrite(fd, b',\n{"id": "b", "te', len(whole) - 3)  # half of an append
        result: list[list[str]] = []
        reader = threading.Thread(
            target=lambda: result.append([i["id"] for i in JsonArrayLog(path).read().items])
        )
        reader.start()
        reader.join(0.3)
        assert reader.is_alive() and not result  # waiting, not reporting corruption
        os.pwrite(fd, b',\n{"id": "b", "text": "done"}\n]\n', len(whole) - 3)
        fcntl.flock(fd, fcntl.LOCK_UN)
        reader.join(10)
    finally:
        os.close(fd)
    assert result == [["a", "b"]]


def test_garbage_is_still_corruption_after_the_locked_read(tmp_path: Path) -> None:
    """Bytes that are no array stay corruption when read again under the lock, named."""
    path = tmp_path / "log.json"
    path.write_bytes(b'[\n{"id": "a"}\n]\n{"id": garbage}\n]\n')
    with pytest.raises(CorruptFileError, match=r"log\.json"):
        JsonArrayLog(path).read()
