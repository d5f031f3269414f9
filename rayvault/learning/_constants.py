"""The records' fixed vocabularies (severities, statuses), in a module that imports nothing.

``models`` re-exports them; the store and the gate's cold path import them from here, so
reading them does not import pydantic (issue 15 item 4: a cold ``rayvault-learn gate``).
"""

from __future__ import annotations

from typing import Literal

SEVERITIES: tuple[str, ...] = ("INFO", "WARN", "FAIL", "BLOCKER")
#: Higher is more severe.
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
#: Severities whose rules are never evicted and whose events hold the gate.
CRITICAL_SEVERITIES: frozenset[str] = frozenset({"FAIL", "BLOCKER"})
STATUSES: tuple[str, ...] = ("open", "applied", "verified", "archived")
#: An event is resolved when its fix is verified or it is archived (DESIGN.md §6); ``applied``
#: only means its rule is in memory, not that the failure is gone.
RESOLVED_STATUSES: frozenset[str] = frozenset({"verified", "archived"})

Severity = Literal["INFO", "WARN", "FAIL", "BLOCKER"]
Status = Literal["open", "applied", "verified", "archived"]
PatternState = Literal["new", "ongoing", "resolved", "regressed"]
