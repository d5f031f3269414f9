"""Which data root and store a command used, as every command reports it: one ``root: DIR``
(or ``store: URL (schema S), root: DIR``) line on stderr for people, a ``location`` field in
JSON objects. Light on purpose: the gate's fast path uses it without Typer or Rich."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any

    from rayvault.learning.store import Store


def store_location(store: Store) -> dict[str, str]:
    """``{"root": DIR, "store": "file" | "URL (schema S)"}``; passwords never shown."""
    target: Any = getattr(store, "target", None)
    if target is None:
        return {"root": str(store.root), "store": "file"}
    return {"root": str(store.root), "store": f"{target.display} (schema {target.schema})"}


def location_line(location: dict[str, str]) -> str:
    if location["store"] == "file":
        return f"root: {location['root']}"
    return f"store: {location['store']}, root: {location['root']}"


def write_location(location: dict[str, str]) -> None:
    sys.stderr.write(location_line(location) + "\n")
    sys.stderr.flush()


def with_location(data: Any, location: dict[str, str] | None) -> tuple[Any, bool]:
    """JSON output with the location added when it is an object (lists keep their shape: the
    line goes to stderr for them); also whether it was added."""
    if location is not None and isinstance(data, dict) and "location" not in data:
        return {**data, "location": location}, True
    return data, False
