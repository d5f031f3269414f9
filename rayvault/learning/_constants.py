"""The records' fixed vocabularies (severities, statuses), in a module that imports nothing.

``models`` re-exports them; the store and the gate's cold path import them from here, so
reading them does not import pydantic (issue 15 item 4: a cold ``rayvault-learn gate``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any, Literal

SEVERITIES: tuple[str, ...] = ("INFO", "WARN", "FAIL", "BLOCKER")
#: Higher is more severe.
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}
#: Severities whose rules are never evicted and whose events hold the gate.
CRITICAL_SEVERITIES: frozenset[str] = frozenset({"FAIL", "BLOCKER"})
STATUSES: tuple[str, ...] = ("open", "applied", "verified", "archived")
#: An event is resolved when its fix is verified or it is archived (DESIGN.md §6); ``applied``
#: only means its rule is in memory, not that the failure is gone.
RESOLVED_STATUSES: frozenset[str] = frozenset({"verified", "archived"})

_PATTERN_STATES: tuple[str, ...] = ("new", "ongoing", "resolved", "regressed")

if TYPE_CHECKING:
    Severity = Literal["INFO", "WARN", "FAIL", "BLOCKER"]
    Status = Literal["open", "applied", "verified", "archived"]
    PatternState = Literal["new", "ongoing", "resolved", "regressed"]

#: The vocabularies as ``Literal`` types (``Severity``, ``Status``, ``PatternState``), made on
#: first use (PEP 562): the records use them; a cold gate, which imports no ``typing``, does not.
_LITERALS = {"Severity": SEVERITIES, "Status": STATUSES, "PatternState": _PATTERN_STATES}


def __getattr__(name: str) -> Any:
    values = _LITERALS.get(name)
    if values is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from typing import Literal

    alias = Literal[values]  # type: ignore[valid-type]
    globals()[name] = alias
    return alias
