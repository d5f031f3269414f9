"""Failure fingerprints: one stable key for the same failure under different numbers and ids.

``fingerprint(stage, text)`` masks the variable parts of an error or symptom text — URLs,
timestamps, dates, UUIDs, learning/error ids, ASIN-like and other mixed letter-digit tokens, hex,
paths, quoted values, durations and numbers — and hashes the stage plus the masked template. So
"Timeout after 30.2s on B0ABC" and "Timeout after 31.7s on B0XYZ" are one pattern, which grouping
by the first 80 characters (the old way) missed. For a Python traceback only the final
``Type: message`` line counts: the frames differ between call sites of the same failure.

A text that masking would turn entirely into placeholders (``E404``, ``ERR_429``, ``429``,
``s2``) has nothing constant left to group by: its literal text is the template, so ``E404`` and
``ERR_429`` stay two failures instead of one ``<id>``.

It is computed once, when an error or event is written, and stored on it (a key stored by an
earlier version is kept; a record stored without one is fingerprinted on read).

This module is in the base layer (it imports nothing above the exceptions), so the stores compute
the key of a record stored without one without importing the domain;
:mod:`rayvault.learning.patterns` is its public name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from rayvault.learning.exceptions import InvalidInputError

#: Longest template kept (the key still covers the whole masked text).
TEMPLATE_LIMIT = 240

_MASKS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, flags), replacement)
    for pattern, flags, replacement in (
        (r"\b(?:https?|ftp|s3|gs)://[^\s'\"<>)\]]+", re.I, "<url>"),
        (r"\b(?:le|evt|rule|e)-\d{8}T\d{6}Z?-[0-9A-Za-z]+\b", 0, "<id>"),
        (
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?",
            re.I,
            "<ts>",
        ),
        (r"\b\d{8}T\d{6}Z?\b", re.I, "<ts>"),
        (r"\b\d{4}-\d{2}-\d{2}\b", 0, "<date>"),
        (r"\b\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\b", 0, "<time>"),
        (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I, "<uuid>"),
        # Paths: rooted (/, ~/, ./, ../) or ending in a file extension; not "3/4".
        (r"(?:(?<![\w/])(?:~|\.{1,2})?/(?:[\w.@+-]+/)*[\w.@+-]+)", 0, "<path>"),
        (r"\b(?:[\w.@+-]+/)+[\w@+-]+\.[A-Za-z]\w{0,5}\b", 0, "<path>"),
        (r"\"[^\"\n]{0,400}\"", 0, "<str>"),
        (r"(?<!\w)'[^'\n]{0,400}'(?!\w)", 0, "<str>"),
        (r"\b0x[0-9a-f]+\b", re.I, "<hex>"),
        (r"\bB0[A-Z0-9]{8}\b", re.I, "<asin>"),
        (
            r"\b\d+(?:\.\d+)?\s?(?:ms|s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?)\b",
            re.I,
            "<dur>",
        ),
        (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b", re.I, "<hex>"),
        (r"\b(?=\w*\d)(?=\w*[^\W\d_])\w+\b", 0, "<id>"),
        (r"\d+(?:[.,]\d+)*", 0, "<n>"),
    )
)
_SPACE = re.compile(r"\s+")
_PLACEHOLDERS = "url|id|ts|date|time|uuid|path|str|hex|asin|dur|n"
#: A template of placeholders and punctuation only.
_ONLY_PLACEHOLDERS = re.compile(rf"(?:[\W_]*<(?:{_PLACEHOLDERS})>)+[\W_]*")
_TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Fingerprint:
    """A failure's pattern: ``key`` groups occurrences, ``template`` is what people read."""

    key: str
    template: str
    stage: str


def failure_text(text: str) -> str:
    """The part of an error text that identifies the failure (a traceback's last line)."""
    if _TRACEBACK in text:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for line in reversed(lines):
            if not line.startswith(("File ", "^", "~")):
                return line
    return text


def mask(text: str) -> str:
    """The text with its variable parts replaced by ``<placeholders>``, whitespace collapsed."""
    masked = failure_text(text)
    for pattern, replacement in _MASKS:
        masked = pattern.sub(replacement, masked)
    return _SPACE.sub(" ", masked).strip()


def fingerprint(stage: str, text: str) -> Fingerprint:
    """The fingerprint of a failure of ``stage`` (already folded) described by ``text``.

    Total over all text (it stores nothing, so it is not checked like the storing API): a lone
    surrogate is hashed as its code point, never an error."""
    if not isinstance(stage, str) or not isinstance(text, str):
        raise InvalidInputError(
            f"fingerprint takes text, got {type(stage).__name__} and {type(text).__name__}"
        )
    template = mask(text)
    if _ONLY_PLACEHOLDERS.fullmatch(template):
        # Nothing constant is left to group by: the literal token(s) are the failure.
        template = _SPACE.sub(" ", failure_text(text)).strip()
    normal = template.lower().rstrip(" .:;!")
    key = f"{stage.strip().lower()}\n{normal}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(key).hexdigest()[:16]
    if len(template) > TEMPLATE_LIMIT:
        template = template[: TEMPLATE_LIMIT - 1] + "…"
    return Fingerprint(key=f"{stage.strip()}:{digest}", template=template, stage=stage.strip())
