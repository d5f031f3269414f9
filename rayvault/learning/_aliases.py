"""Folding a component or step name into its stage through an alias map.

In the base layer, so the stores' indexes (which hold the map, not the policies) fold names
without importing the domain; :mod:`rayvault.learning.stages` re-exports it beside
:func:`~rayvault.learning.stages.fold_stage`. Kept apart from the fingerprint's regexes, which the
gate's fast path does not load.
"""

from __future__ import annotations

from collections.abc import Mapping


def fold_name(name: str, aliases: Mapping[str, str]) -> str:
    """:func:`rayvault.learning.stages.fold_stage` over an alias map: the stage ``name`` belongs
    to (itself when it is not an alias)."""
    key = name.strip()
    return aliases.get(key) or key
