"""A failure cluster's template as people read it, in a module that imports nothing (the cold
gate's known-failures check shows it; ``_patternbook`` re-exports it)."""

from __future__ import annotations

from collections.abc import Sequence

#: Longest template kept for display (the signature still covers the whole masked text).
TEMPLATE_LIMIT = 240


def template_of(tokens: Sequence[str]) -> str:
    """A cluster's tokens as the template people read (cut to :data:`TEMPLATE_LIMIT`)."""
    text = " ".join(tokens)
    return text if len(text) <= TEMPLATE_LIMIT else text[: TEMPLATE_LIMIT - 1] + "…"
