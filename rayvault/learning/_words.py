"""Counts in words: ``1 warning``, ``2 warnings`` (the library's messages and the CLI's)."""

from __future__ import annotations


def noun_for(n: int, noun: str, plural: str | None = None) -> str:
    """``noun`` for one, else ``plural`` (default ``noun + "s"``; give it for irregular ones:
    entry/entries)."""
    return noun if n == 1 else plural or noun + "s"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 warning``, ``2 warnings``."""
    return f"{n} {noun_for(n, noun, plural)}"
