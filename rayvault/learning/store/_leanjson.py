"""JSON through the standard library's ``json``, for a cold ``rayvault-learn gate``.

``orjson`` costs a new process ~15 ms to import (its extension module loads ``dataclasses``,
``inspect``, ``uuid``, ``platform``… when it starts), more than the gate's whole run; the
standard ``json`` costs ~1 ms. Both must give the same answers, so only what they agree on is
taken this way, and anything else goes to ``_fs.parse_json``/``_fs.dump_json`` (``orjson``):

- :func:`loads`: strict UTF-8 with no escaped surrogate, no ``NaN``/``Infinity``, integers
  within 64 bits and finite floats — for such text both give equal values. Anything else
  (including JSON that does not parse) is read by ``parse_json``, which returns what it always
  did or raises its :class:`~rayvault.learning.exceptions.CorruptFileError` naming the file.
- :func:`dumps`: ``dump_json``'s bytes (2-space indent, UTF-8, a final newline) for data made of
  dicts with text keys, lists, text, integers within 64 bits, floats whose ``repr`` has no
  exponent, booleans and None; anything else is written by ``dump_json``
  (``tests/test_leanjson.py`` pins the bytes against it).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from rayvault.learning.exceptions import CorruptFileError

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class _NotPlain(ValueError):
    """The text holds something the two parsers might read differently."""


def _constant(name: str) -> Any:
    raise _NotPlain(name)


def _int(text: str) -> int:
    value = int(text)
    if not _INT_MIN <= value <= _INT_MAX:
        raise _NotPlain(text)
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotPlain(text)
    return value


_DECODER = json.JSONDecoder(parse_constant=_constant, parse_int=_int, parse_float=_float)


def loads(data: bytes, path: Path) -> Any:
    """The JSON value of ``data`` read from ``path`` (as ``_fs.parse_json`` reads it)."""
    try:
        text = data.decode("utf-8")
        if "\\u" in text and _SURROGATE.search(text):
            raise _NotPlain("an escaped surrogate")
        return _DECODER.decode(text)
    except ValueError:  # not plain, or not JSON: the same reader as everywhere else decides
        from rayvault.learning.store._fs import parse_json

        return parse_json(data, path)


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes; None when it does not exist; :class:`CorruptFileError` when it cannot
    be read (``_fs.read_json`` reads through this too)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CorruptFileError(path, f"cannot be read ({e.strerror or e})") from e


def read(path: Path) -> Any | None:
    """``_fs.read_json``: the file's JSON value; None when it does not exist."""
    data = read_bytes(path)
    return None if data is None else loads(data, path)


def _plain(value: Any) -> bool:
    """Whether ``json`` writes ``value`` as ``orjson`` does (text with a lone surrogate is
    caught by the final UTF-8 encoding, see :func:`dumps`)."""
    kind = type(value)
    if kind is str:
        return True
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())
    if kind is list:
        return all(_plain(v) for v in value)
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if kind is float:
        return math.isfinite(value) and "e" not in repr(value)
    return value is None or kind is bool


def dumps(value: Any) -> bytes:
    """``_fs.dump_json(value)``: the same bytes."""
    if _plain(value):
        try:
            return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: orjson refuses it, with its error
            pass
    from rayvault.learning.store._fs import dump_json

    return dump_json(value)


def loads_value(data: bytes | str) -> Any:
    """``orjson.loads(data)``: the same value, and the same error for what it refuses."""
    try:
        text = data if isinstance(data, str) else data.decode("utf-8")
        if "\\u" in text and _SURROGATE.search(text):
            raise _NotPlain("an escaped surrogate")
        return _DECODER.decode(text)
    except ValueError:
        import orjson

        return orjson.loads(data)
