"""Agent memory and tombstoning (spec path). Re-exports :mod:`rayvault.learning.memory`.

Run as a script, it is ``rayvault-learn memory``: ``python3 tools/learning_apply.py show AGENT``.
"""

if __name__ == "__main__":
    import _bootstrap  # noqa: F401

from rayvault.learning.memory import (
    apply_to_memory,
    init_memory,
    load_active_memory,
    load_tombstones,
    render_rules,
    tombstone_rule,
)

__all__ = [
    "apply_to_memory",
    "init_memory",
    "load_active_memory",
    "load_tombstones",
    "render_rules",
    "tombstone_rule",
]

if __name__ == "__main__":
    from rayvault.cli import run_group

    raise SystemExit(run_group("memory"))
