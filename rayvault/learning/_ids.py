"""Identifiers: validation of anything that becomes a path part, and collision-free new ids.

Ids carry a timestamp for humans and 48 random bits for uniqueness, so two identical failures in
the same second still get different ids (the old ``timestamp+hash(symptom)`` scheme collided).
"""

from __future__ import annotations

import os
import re

from rayvault.learning._time import compact_ts, datetime
from rayvault.learning._validate import shown
from rayvault.learning.exceptions import InvalidIdentifierError

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_IDENTIFIER_LENGTH = 128


def is_safe_identifier(value: object) -> bool:
    """True when ``value`` can be used as one path component."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_IDENTIFIER_LENGTH
        and _SAFE.fullmatch(value) is not None
        and ".." not in value
    )


def validate_identifier(value: object, kind: str) -> str:
    """Return ``value`` if it is a safe identifier, else raise naming ``kind`` and the rule."""
    if is_safe_identifier(value):
        assert isinstance(value, str)
        return value
    raise InvalidIdentifierError(
        f"invalid {kind} {shown(value)}: use letters, digits, '.', '_' and '-', "
        f"starting with a letter or digit, without '..', at most {MAX_IDENTIFIER_LENGTH} characters"
    )


def _random_suffix() -> str:
    # What ``secrets.token_hex(6)`` is, without importing ``secrets`` (and ``random``) at start-up.
    return os.urandom(6).hex()


def new_event_id(now: datetime) -> str:
    """``le-20260219T120000Z-3f9a1c2b7d4e``."""
    return f"le-{compact_ts(now)}-{_random_suffix()}"


def new_rule_id(now: datetime) -> str:
    """``rule-20260219T120000Z-3f9a1c2b7d4e``."""
    return f"rule-{compact_ts(now)}-{_random_suffix()}"


def new_error_id(now: datetime) -> str:
    """``e-20260219T120000-3f9a1c2b7d4e``: the error log's historical prefix and layout."""
    return f"e-{compact_ts(now)[:-1]}-{_random_suffix()}"
