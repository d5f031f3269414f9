"""Failure fingerprints, by their public name: one stable key for the same failure under different
numbers and ids (``fingerprint(stage, text)``; what is masked and why is documented in
:mod:`rayvault.learning._fingerprint`).

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
