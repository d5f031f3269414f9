"""Learning events and the immediate loop (spec path). Re-exports :mod:`rayvault.learning.events`.

Run as a script, it is ``rayvault-learn events``: ``python3 tools/learning_event.py list``.
"""

if __name__ == "__main__":
    import _bootstrap  # noqa: F401

from rayvault.learning.events import (
    create_event,
    event_stats,
    get_event,
    list_events,
    resolve_event,
    update_event,
)
from rayvault.learning.skill_graph import record_learning

__all__ = [
    "create_event",
    "event_stats",
    "get_event",
    "list_events",
    "record_learning",
    "resolve_event",
    "update_event",
]

if __name__ == "__main__":
    from rayvault.cli import run_group

    raise SystemExit(run_group("events"))
