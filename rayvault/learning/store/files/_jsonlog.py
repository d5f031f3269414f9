"""An append-only JSON array on disk: the event index and the error log.

Format contract (DESIGN.md §5):

- The file is always one JSON array. Elements we write are single-line JSON objects; files written
  by earlier versions (pretty-printed, multi-line) are read as they are and appended to.
- Appending writes ``,\\n{element}\\n]\\n`` in place, just after the last element (over the old
  closing bracket), in one ``pwrite``: the cost is the size of the element, not the size of the
  file, and readers see a valid array before and after. One element per line, comma-terminated.
- A later version of a record is appended like a new one; readers keep the last version per key.
- Readers never see an append in progress. An append rewrites the closing bracket, so a reader
  whose ``read`` calls straddle it could get the old bracket followed by the rest of the new
  element: not an array. Every change to an existing file (append, torn-tail cut) holds an
  exclusive ``flock`` on the data file itself for the few microseconds of its ``pwrite`` and
  ``ftruncate``; readers read without it and keep the result only when it is a complete array and
  the file did not change meanwhile, else they read again under a shared ``flock`` (see
  :func:`read_array`). Reads of what was appended since an offset always take the shared lock
  (:func:`read_from`). The lock is a leaf: nothing else is acquired while it is held.
- A crash can leave a *torn tail*: the closing bracket missing and at most one partial element
  (plus the NUL bytes some filesystems leave after a power cut). Readers ignore it; the next
  append cuts it off first. Anything else that does not parse is corruption: reported by name,
  never written to.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from rayvault.learning.exceptions import CorruptFileError, StoreError
from rayvault.learning.store._fs import (
    LOCK_TIMEOUT,
    atomic_write,
    fsync_enabled,
    open_nofollow,
    os_error,
    sync_file,
)

_WS = b" \t\r\n"
# What may follow the last complete element of a torn file: an optional comma and the start of
# one element on its own line (our appends always begin an element on a new line), never a
# second line of content.
_TORN_REST = re.compile(
    rb"\A[ \t\r\n]*(?:,(?:[ \t\r\n]*|[ \t\r]*\n[ \t\r\n]*\{[^\n]*|[ \t\r\n]*\][ \t\r\n]*))?\Z"
)
_TAIL_WINDOW = 4096


@dataclass(frozen=True)
class ParsedArray:
    items: list[Any]
    #: Byte offset just after the last complete element (or just after ``[`` when empty).
    end: int
    #: Where a torn tail starts (== ``end``), or None when the file is a complete array.
    torn_at: int | None


def parse_array(data: bytes, path: Path) -> ParsedArray:
    """Parse the whole file, tolerating a torn tail; :class:`CorruptFileError` otherwise."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = None
        cut = _find_torn_cut(data)
        if cut is None:
            if not data.strip(_WS + b"\x00"):
                raise CorruptFileError(path, "is empty, expected a JSON array") from None
            raise CorruptFileError(
                path, "is not a valid JSON array (and not a repairable torn tail)"
            ) from None
        items = _loads_list(data[:cut] + b"]", path)
        return ParsedArray(items, cut, cut)
    if not isinstance(value, list):
        raise CorruptFileError(path, f"holds a JSON {type(value).__name__}, expected an array")
    body = data.rstrip(_WS)
    end = len(body[:-1].rstrip(_WS))
    return ParsedArray(value, end, None)


def _loads_list(data: bytes, path: Path) -> list[Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CorruptFileError(path, f"is not a valid JSON array ({e})") from e
    if not isinstance(value, list):
        raise CorruptFileError(path, "is not a JSON array")
    return value


def _find_torn_cut(data: bytes) -> int | None:
    """The offset just after the last complete element, if what follows it is a torn tail."""
    body = data.rstrip(b"\x00")
    start = body.find(b"[")
    if start < 0 or body[:start].strip(_WS):
        return None
    limit = len(body)
    while True:
        j = body.rfind(b"}", start, limit)
        if j < 0:
            break
        rest = body[j + 1 :]
        if _TORN_REST.match(rest):
            try:
                if isinstance(orjson.loads(body[: j + 1] + b"]"), list):
                    return j + 1
            except orjson.JSONDecodeError:
                pass
        elif rest.count(b"\n") > 4:
            # More than one element's worth of lines after this point: not a torn append.
            return None
        limit = j
    # No complete element: the torn part is the first element itself.
    if _TORN_REST.match(b"," + body[start + 1 :]):
        return start + 1
    return None


@contextlib.contextmanager
def _flocked(fd: int, path: Path, *, shared: bool) -> Iterator[None]:
    """Hold ``flock`` on the open data file ``fd``: shared to read, exclusive to change it."""
    op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    deadline = time.monotonic() + LOCK_TIMEOUT
    delay = 0.0001
    while True:
        try:
            fcntl.flock(fd, op | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"timed out after {LOCK_TIMEOUT:.0f}s waiting to "
                    f"{'read' if shared else 'append to'} {path}",
                    hint="another process holds it and does not let go",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.005)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_fd(fd: int, offset: int) -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = os.pread(fd, max(1 << 20, os.fstat(fd).st_size - offset + 1), offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def read_from(path: Path, offset: int) -> tuple[bytes, os.stat_result] | None:
    """The bytes of ``path`` from ``offset`` on, read while no append is in progress, with the
    file's stat taken under the same lock; None when the file is absent (``OSError`` otherwise)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        with _flocked(fd, path, shared=True):
            return _read_fd(fd, offset), os.fstat(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ArrayFile:
    """A whole log as read by :func:`read_array`."""

    data: bytes
    stat: os.stat_result
    parsed: ParsedArray


def read_array(path: Path) -> ArrayFile | None:
    """Read and parse the whole log as it is between appends; None when it is absent
    (``OSError`` when it cannot be read).

    The first read takes no lock, so readers never hold up writers. It is kept only when it
    parses as a complete array and the file's identity, size and change time are the same before
    and after it: a read that straddled an append sees either a torn tail or no array at all (the
    old closing bracket followed by the rest of the new element), and a file that changed. Any
    other outcome is read again under the shared lock, which excludes appends: what that read
    finds (a complete array, a torn tail left by a crash, or corruption) is the file's state.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        return _read_array(fd, path)
    finally:
        os.close(fd)


def _read_array(fd: int, path: Path) -> ArrayFile:
    before = os.fstat(fd)
    data = _read_fd(fd, 0)
    after = os.fstat(fd)
    if _same(before, after) and len(data) == after.st_size:
        try:
            parsed = parse_array(data, path)
        except CorruptFileError:
            pass
        else:
            if parsed.torn_at is None:
                return ArrayFile(data, after, parsed)
    with _flocked(fd, path, shared=True):
        data = _read_fd(fd, 0)
        st = os.fstat(fd)
    return ArrayFile(data, st, parse_array(data, path))


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (
        b.st_ino,
        b.st_size,
        b.st_mtime_ns,
        b.st_ctime_ns,
    )


class JsonArrayLog:
    """One append-only JSON array file. Callers hold the file's lock around :meth:`append`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> ParsedArray:
        """All elements (every version), ignoring a torn tail; empty when the file is absent.
        Never sees an append in progress (see :func:`read_array`)."""
        try:
            whole = read_array(self.path)
        except OSError as e:
            raise os_error(self.path, e, "read") from e
        return ParsedArray([], 0, None) if whole is None else whole.parsed

    def append(self, elements: Sequence[bytes]) -> None:
        """Append single-line JSON objects, repairing a torn tail first. Caller holds the lock."""
        if not elements:
            return
        for element in elements:
            if b"\n" in element or not element.startswith(b"{"):
                raise ValueError("elements must be single-line JSON objects")
        body = b",\n".join(elements)
        durable = fsync_enabled()
        try:
            fd = open_nofollow(self.path, os.O_RDWR)
        except FileNotFoundError:
            atomic_write(self.path, b"[\n" + body + b"\n]\n")
            return
        except OSError as e:
            raise os_error(self.path, e) from e
        try:
            with _flocked(fd, self.path, shared=False):
                pos, empty = self._end_of_elements(fd)
                payload = (b"\n" if empty else b",\n") + body + b"\n]\n"
                os.pwrite(fd, payload, pos)
                new_size = pos + len(payload)
                if os.fstat(fd).st_size > new_size:
                    os.ftruncate(fd, new_size)
            if durable:
                sync_file(fd, self.path)
        finally:
            os.close(fd)

    def cut_torn_tail(self) -> bytes | None:
        """Cut a torn tail off and close the array again; returns the bytes cut off, or None
        when the file is absent or whole. Caller holds the lock. :class:`CorruptFileError`
        (nothing written) when the damage is more than a torn tail."""
        try:
            fd = open_nofollow(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise os_error(self.path, e) from e
        try:
            with _flocked(fd, self.path, shared=False):
                data = os.pread(fd, os.fstat(fd).st_size, 0)
                parsed = parse_array(data, self.path)
                if parsed.torn_at is None:
                    return None
                closing = b"\n]\n"
                os.pwrite(fd, closing, parsed.torn_at)
                os.ftruncate(fd, parsed.torn_at + len(closing))
            if fsync_enabled():
                os.fsync(fd)
            return data[parsed.torn_at :]
        finally:
            os.close(fd)

    def _end_of_elements(self, fd: int) -> tuple[int, bool]:
        """Where to write: just after the last element (cutting a torn tail first), and whether
        the array is empty. Reads only the tail of the file on the normal path."""
        size = os.fstat(fd).st_size
        window = min(size, _TAIL_WINDOW)
        while window:
            tail = os.pread(fd, window, size - window)
            stripped = tail.rstrip(_WS)
            before = stripped[:-1].rstrip(_WS)
            if stripped.endswith(b"]") and before.endswith(b"}"):
                return size - window + len(before), False
            if stripped.endswith(b"]") and before == b"[" and window == size:
                return size - window + len(before), True
            if window == size or (stripped and not stripped.endswith(b"]")):
                break
            window = min(size, window * 4)  # only whitespace seen so far: look further back
        return self._repair(fd)

    def _repair(self, fd: int) -> tuple[int, bool]:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
        parsed = parse_array(data, self.path)  # raises CorruptFileError: nothing is written
        if parsed.torn_at is not None:
            os.ftruncate(fd, parsed.torn_at)
        return parsed.end, not parsed.items


def latest_versions(items: list[Any], key: str, path: Path) -> dict[str, dict[str, Any]]:
    """The last version of each record, keyed by ``key``, in the order records first appeared.

    :class:`CorruptFileError` when an element is not a record with a string ``key``.
    """
    latest: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(key), str):
            raise CorruptFileError(path, f"element {i} is not a record with a {key!r}")
        latest[item[key]] = item  # an existing key keeps its first position
    return latest


@dataclass(frozen=True)
class Scan:
    """Elements read after a known offset (see :func:`scan_after`)."""

    items: list[tuple[Any, bytes]]
    end: int


def scan_after(data: bytes, base: int) -> Scan | None:
    """Read the elements our appends wrote after offset ``base`` (``data`` starts there).

    Returns None when the bytes are not in the single-line layout (a rewrite, a legacy writer):
    the caller then re-reads the whole file.
    """
    items: list[tuple[Any, bytes]] = []
    pos, end, n = 0, base, len(data)
    while True:
        while pos < n and data[pos] in b" \t\r\n,":
            pos += 1
        if pos >= n or data[pos] == ord("]"):
            return Scan(items, end)
        if data[pos] != ord("{"):
            return None
        nl = data.find(b"\n", pos)
        if nl < 0:
            return Scan(items, end)  # an element being written, or a torn tail
        line = data[pos:nl].rstrip(_WS).removesuffix(b",")
        try:
            items.append((orjson.loads(line), line))
        except orjson.JSONDecodeError:
            return None
        end = base + pos + len(line)
        pos = nl


def versions_of(path: Path, key: str, value: str) -> list[dict[str, Any]]:
    """Every version of the record whose ``key`` is ``value``, in the order written; [] when
    the file is absent or holds none.

    A cold-path scan that parses only candidate elements: the file is mapped and searched for
    ``value`` quoted (``"value"``, the bytes JSON writes for it; a safe identifier needs no
    escaping); each hit's line is parsed and kept only when its ``key`` is ``value`` (the id
    quoted in another record's text is not a version of it). The scan holds the shared lock, so
    no append (nor the cut of a torn tail) changes the mapped bytes meanwhile: writers wait for
    it, which suits a cold path (an event page, a CLI command) and nothing hot. When a candidate
    line is not one whole element (a torn tail, a file in the legacy multi-line layout) the file
    is read whole with :func:`read_array` and filtered instead.
    """
    needle = orjson.dumps(value)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise os_error(path, e, "read") from e
    try:
        with _flocked(fd, path, shared=True):
            size = os.fstat(fd).st_size
            if size == 0:
                found: list[dict[str, Any]] | None = None
            else:
                with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
                    found = _scan_lines(data, needle, key, value)
    except OSError as e:
        raise os_error(path, e, "read") from e
    finally:
        os.close(fd)
    if found is not None:
        return found
    try:
        whole = read_array(path)
    except OSError as e:
        raise os_error(path, e, "read") from e
    if whole is None:
        return []
    return [
        item for item in whole.parsed.items if isinstance(item, dict) and item.get(key) == value
    ]


def _scan_lines(
    data: mmap.mmap, needle: bytes, key: str, value: str
) -> list[dict[str, Any]] | None:
    """The elements holding ``needle`` whose ``key`` is ``value``, or None when a candidate
    line is not one whole element (the caller then reads the file whole)."""
    found: list[dict[str, Any]] = []
    pos = data.find(needle)
    while pos >= 0:
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        if end < 0:
            return None  # an element being written, or a torn tail
        line = data[start:end].strip(_WS).removesuffix(b",")
        if line.startswith(b"[") or not line.startswith(b"{"):
            return None  # not the single-line layout
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(item, dict):
            return None
        if item.get(key) == value:
            found.append(item)
        pos = data.find(needle, end)
    return found
