"""The learning gate (spec path). Re-exports :mod:`rayvault.learning.gate`.

Run as a script, it is ``rayvault-learn gate``: ``python3 tools/learning_gate.py VIDEO STAGE``
(exit 0 passed, 2 blocked, 1 error).
"""

if __name__ == "__main__":
    import _bootstrap  # noqa: F401

from rayvault.learning.gate import (
    acknowledge,
    check_diff_policies,
    check_diff_soul,
    check_known_failures,
    check_regressions,
    learning_gate,
)

__all__ = [
    "acknowledge",
    "check_diff_policies",
    "check_diff_soul",
    "check_known_failures",
    "check_regressions",
    "learning_gate",
]

if __name__ == "__main__":
    from rayvault.cli import run_group

    raise SystemExit(run_group("gate"))
