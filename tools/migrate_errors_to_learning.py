"""Migration of existing learnings (spec path). Re-exports :mod:`rayvault.learning.migrate` (and
the note reader, :func:`rayvault.learning.skill_graph.parse_note`).

Run as a script, it is ``rayvault-learn migrate``:
``python3 tools/migrate_errors_to_learning.py --dry-run --verbose`` (the default is a dry run),
``python3 tools/migrate_errors_to_learning.py --apply``.
"""

if __name__ == "__main__":
    import _bootstrap  # noqa: F401

from rayvault.learning.migrate import (
    SEVERITY_WORDS,
    MigrationItem,
    MigrationReport,
    map_severity,
    migrate_learnings,
)
from rayvault.learning.skill_graph import parse_note

__all__ = [
    "SEVERITY_WORDS",
    "MigrationItem",
    "MigrationReport",
    "map_severity",
    "migrate_learnings",
    "parse_note",
]

if __name__ == "__main__":
    from rayvault.cli import run_group

    raise SystemExit(run_group("migrate"))
