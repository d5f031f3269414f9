"""Idempotency keys: a call retried with the key of a call that already created its record
returns that record and creates nothing.

A key names one operation (the loop derives it from the run, the stage and the attempt). The
first call with a key wins: a later call with the same key returns the first call's record as it
is stored now, whatever its own arguments (a retry never needs to repeat them exactly, and a
replayed key never creates a second record). Lookup and creation run under a named lock per key,
so two retries racing each other create one record; on PostgreSQL a unique index backs it.
"""

from __future__ import annotations

import hashlib

from rayvault.learning.exceptions import InvalidInputError

#: Longest accepted key, in characters.
MAX_KEY_LENGTH = 200


def validate_key(value: object, name: str = "idempotency_key") -> str | None:
    """The key as given (None when not given); :class:`InvalidInputError` when it is not a
    non-empty single line of printable text of at most :data:`MAX_KEY_LENGTH` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be text, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInputError(f"{name} must not be empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidInputError(f"{name} is longer than {MAX_KEY_LENGTH} characters")
    if not value.isprintable():
        raise InvalidInputError(f"{name} must be printable text on one line")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(f"{name} is not valid Unicode text") from None
    return value


def lock_name(kind: str, key: str) -> str:
    """The named lock (``Store.exclusive``) under which a call with ``key`` looks up and creates
    its ``kind`` of record."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return f"idempotency-{kind}-{digest}"
