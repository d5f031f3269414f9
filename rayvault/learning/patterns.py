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

The code lives in the base layer (``rayvault.learning._fingerprint``), where the stores can reach it
without importing the domain; this module is its public name.
"""

from __future__ import annotations

from rayvault.learning._fingerprint import (
    TEMPLATE_LIMIT,
    Fingerprint,
    failure_text,
    fingerprint,
    mask,
)

__all__ = ["TEMPLATE_LIMIT", "Fingerprint", "failure_text", "fingerprint", "mask"]
