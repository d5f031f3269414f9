"""The weekly revisit (spec path). Re-exports :mod:`rayvault.learning.revisit`.

Run as a script, it is ``rayvault-learn revisit``:
``python3 tools/learning_revisit.py --scope all --days 7``.
"""

if __name__ == "__main__":
    import _bootstrap  # noqa: F401

from rayvault.learning.models import RevisitReport, WeeklyReport
from rayvault.learning.registry import get_promotion_candidates, get_weekly_summary
from rayvault.learning.revisit import revisit
from rayvault.learning.soul import promote_rule

#: The earlier system's name for :func:`revisit` (``run_revisit(scope, days)``).
run_revisit = revisit

__all__ = [
    "RevisitReport",
    "WeeklyReport",
    "get_promotion_candidates",
    "get_weekly_summary",
    "promote_rule",
    "revisit",
    "run_revisit",
]

if __name__ == "__main__":
    from rayvault.cli import run_group

    raise SystemExit(run_group("revisit"))
