"""The gate's records as plain data, for a process that must not import pydantic (issue 15 item 4).

``rayvault-learn gate VIDEO STAGE`` runs before every pipeline stage; importing pydantic and
defining the records costs it more than everything else it does. So the gate reads the files it
needs (its state, the agent's memory, the open events) as plain JSON, and each is checked here by
hand against the shape of its record (:data:`GATE_STATE_FIELDS`, :data:`RULE_FIELDS`,
:data:`EVENT_FIELDS`; ``tests/test_gate_plain.py`` pins these tables to the records' fields).
The check is strict: anything it is not sure pydantic reads to the very same values (a
lower-case severity, a number given as text, a missing field) fails it, and the caller then
validates the data with the record as before, with the same errors for a corrupt file. The
checks and the result are plain classes too, whose ``to_dict`` is what the records'
``to_dict`` gives; the library converts them to :class:`~rayvault.learning.models.GateResult`.
"""

from __future__ import annotations

from collections.abc import Mapping

from rayvault.learning._constants import SEVERITIES, STATUSES
from rayvault.learning._time import datetime, format_ts, parse_ts, timedelta

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from typing import Any, Protocol

# -- shape checks ------------------------------------------------------------------------------
#: Field → kind; a kind ending in ``!`` is required. Kinds: ``str``, ``str?`` (text or null),
#: ``int`` (not a bool), ``ts`` / ``ts?`` (a timestamp), ``sev``, ``status``, ``dict?``,
#: ``dicts`` (a list of objects), ``strs`` (a list of texts), ``dict-of-dicts``.
GATE_STATE_FIELDS: dict[str, str] = {
    "video_id": "str?",
    "policies": "dict?",
    "souls": "dict-of-dicts",
    "runs": "dicts",
    "acks": "dicts",
    "updated": "ts?",
}
EVENT_FIELDS: dict[str, str] = {
    "event_id": "str!",
    "run_id": "str",
    "timestamp": "ts!",
    "severity": "sev!",
    "component": "str!",
    "symptom": "str!",
    "root_cause": "str",
    "fix_applied": "str",
    "verification": "str",
    "status": "status",
    "video_id": "str?",
    "source_error_id": "str?",
    "promotion_rule": "str?",
    "soul_update": "str?",
    "obsolete_rules_removed": "strs",
    "agent": "str?",
    "fingerprint": "str?",
    "pattern": "str?",
    "rule_id": "str?",
    "skill_node": "str?",
    "loop_errors": "dicts",
    "loop_steps": "dicts",
    "updated": "ts?",
    "resolved_at": "ts?",
}
RULE_FIELDS: dict[str, str] = {
    "rule_id": "str!",
    "source_event_id": "str?",
    "created": "ts!",
    "severity": "sev!",
    "component": "str!",
    "rule": "str!",
    "symptom": "str",
    "video_id": "str?",
    "applied_count": "int",
    "last_applied": "ts?",
    "fingerprint": "str?",
    "last_event_id": "str?",
    "occurrences": "int",
    "deliveries": "int",
    "recurrences": "int",
    "successes": "int",
    "fix_tries": "int",
    "fix_failures": "int",
    "attempts": "dicts",
    "conflicts_with": "strs",
    "verified_by": "str?",
    "overturned_at": "ts?",
    "revisions": "dicts",
    "alternatives": "dicts",
    "compatible_with": "strs",
    "last_learned": "ts?",
}
#: ``memory_active.json``: ``rules`` checked rule by rule (:data:`RULE_FIELDS`).
MEMORY_FIELDS: dict[str, str] = {"rules": "rules", "updated": "ts?", "count": "int"}


def timestamp(value: object) -> datetime:
    """A stored timestamp as the records read it (``models._timestamp``)."""
    if type(value) is str and value.endswith("Z"):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    if isinstance(value, str):
        return parse_ts(value)
    raise ValueError(f"not a timestamp: {value!r}")


def _is_ts(value: object) -> bool:
    try:
        timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return False
    return True


def _is_dicts(value: object) -> bool:
    return type(value) is list and all(type(v) is dict for v in value)


def _is_strs(value: object) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def _fits(kind: str, value: object) -> bool:
    """Whether ``value`` is of ``kind`` exactly (no coercion)."""
    if kind == "str":
        return type(value) is str
    if kind == "int":
        return type(value) is int
    if kind == "sev":
        return type(value) is str and value in SEVERITIES
    if kind == "status":
        return type(value) is str and value in STATUSES
    if kind == "ts":
        return _is_ts(value)
    if kind == "dicts":
        return _is_dicts(value)
    if kind == "strs":
        return _is_strs(value)
    if kind == "dict-of-dicts":
        return type(value) is dict and all(type(v) is dict for v in value.values())
    if kind == "rules":
        return type(value) is list and all(conforms(v, RULE_FIELDS) for v in value)
    if kind.endswith("?"):  # null, or the kind
        return value is None or _fits("dict" if kind == "dict?" else kind[:-1], value)
    if kind == "dict":
        return type(value) is dict
    raise ValueError(f"unknown kind {kind!r}")


def conforms(raw: object, fields: Mapping[str, str]) -> bool:
    """Whether ``raw`` is a JSON object whose known fields all have the shape ``fields`` gives
    (required ones present); other fields are kept as they are, as the records keep them."""
    if type(raw) is not dict:
        return False
    for name, kind in fields.items():
        if name not in raw:
            if kind.endswith("!"):
                return False
            continue
        if not _fits(kind.rstrip("!"), raw[name]):
            return False
    return True


# -- the records the gate reads ------------------------------------------------------------------
class _Plain:  # noqa: PLW1641 (mutable, so unhashable: as the dataclasses were)
    """Plain data with ``__eq__`` and ``__repr__`` over its ``__slots__`` (what the dataclasses
    these were gave; a cold gate imports no ``dataclasses``, whose ``inspect`` costs ~9 ms)."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class PlainGateState(_Plain):
    """:class:`~rayvault.learning.models.GateState` as plain data (``extra``: the fields it
    does not know, e.g. the original system's ``policies_sha``)."""

    __slots__ = ("acks", "extra", "policies", "runs", "souls", "updated", "video_id")

    def __init__(  # noqa: PLR0917 (the dataclass's signature)
        self,
        video_id: str | None = None,
        policies: dict[str, Any] | None = None,
        souls: dict[str, dict[str, Any]] | None = None,
        runs: list[dict[str, Any]] | None = None,
        acks: list[dict[str, Any]] | None = None,
        updated: datetime | str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.video_id = video_id
        self.policies = policies
        self.souls: dict[str, dict[str, Any]] = {} if souls is None else souls
        self.runs: list[dict[str, Any]] = [] if runs is None else runs
        self.acks: list[dict[str, Any]] = [] if acks is None else acks
        self.updated = updated
        self.extra: dict[str, Any] = {} if extra is None else extra

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> PlainGateState:
        """From data that :func:`conforms` to :data:`GATE_STATE_FIELDS`."""
        known = {name: raw[name] for name in GATE_STATE_FIELDS if name in raw}
        extra = {k: v for k, v in raw.items() if k not in GATE_STATE_FIELDS}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """What ``GateState.to_dict()`` gives: its fields in order, then the others."""
        updated = self.updated
        return {
            "video_id": self.video_id,
            "policies": self.policies,
            "souls": self.souls,
            "runs": self.runs,
            "acks": self.acks,
            "updated": format_ts(updated) if isinstance(updated, datetime) else updated,
            **self.extra,
        }


class PlainEvent:
    """A stored learning event (that :func:`conforms` to :data:`EVENT_FIELDS`), read-only, with
    the attributes of :class:`~rayvault.learning.models.LearningEvent` the gate reads."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    @property
    def event_id(self) -> str:
        return str(self.raw["event_id"])

    @property
    def severity(self) -> str:
        return str(self.raw["severity"])

    @property
    def symptom(self) -> str:
        return str(self.raw["symptom"])

    @property
    def status(self) -> str:
        return str(self.raw.get("status", "open"))

    @property
    def video_id(self) -> str | None:
        value = self.raw.get("video_id")
        return value if isinstance(value, str) else None

    @property
    def timestamp(self) -> datetime:
        return timestamp(self.raw["timestamp"])

    @property
    def regression_of(self) -> str | None:
        value = self.raw.get("regression_of")
        return value if isinstance(value, str) and value else None

    @property
    def regressed_after_seconds(self) -> int | None:
        value = self.raw.get("regressed_after_seconds")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class PlainRule:
    """A rule of an agent's memory (that :func:`conforms` to :data:`RULE_FIELDS`), read-only,
    with the attributes of :class:`~rayvault.learning.models.Rule` the gate reads."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    @property
    def rule_id(self) -> str:
        return str(self.raw["rule_id"])

    @property
    def deliveries(self) -> int:
        value = self.raw.get("deliveries", 0)
        return value if isinstance(value, int) else 0

    @property
    def fingerprint(self) -> str | None:
        value = self.raw.get("fingerprint")
        return value if isinstance(value, str) else None


class PlainKnownFailure(_Plain):
    """:class:`~rayvault.learning.models.KnownFailure` as plain data."""

    __slots__ = ("fingerprint", "occurrences", "pattern", "unresolved")

    def __init__(self, fingerprint: str, pattern: str, occurrences: int, unresolved: int) -> None:
        self.fingerprint = fingerprint
        self.pattern = pattern
        self.occurrences = occurrences
        self.unresolved = unresolved

    def __hash__(self) -> int:
        return hash((self.fingerprint, self.pattern, self.occurrences, self.unresolved))

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "pattern": self.pattern,
            "occurrences": self.occurrences,
            "unresolved": self.unresolved,
        }


# -- what the gate decides -----------------------------------------------------------------------
class PlainCheck(_Plain):
    """:class:`~rayvault.learning.models.GateCheck` as plain data (same fields, same order)."""

    __slots__ = ("clear", "details", "level", "name", "outcome", "passed", "reason")

    def __init__(  # noqa: PLR0917 (the dataclass's signature)
        self,
        name: str,
        passed: bool,
        reason: str,
        details: dict[str, Any] | None = None,
        level: str = "deny",
        outcome: str = "pass",
        clear: list[str] | None = None,
    ) -> None:
        self.name = name
        self.passed = passed
        self.reason = reason
        self.details: dict[str, Any] = {} if details is None else details
        self.level = level
        self.outcome = outcome
        self.clear: list[str] = [] if clear is None else clear

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "reason": self.reason,
            "details": self.details,
            "level": self.level,
            "outcome": self.outcome,
            "clear": self.clear,
        }


class PlainGateResult(_Plain):
    """:class:`~rayvault.learning.models.GateResult` as plain data (same fields, same order)."""

    __slots__ = (
        "agent",
        "blocked",
        "checks",
        "enabled",
        "outcome",
        "reason",
        "stage",
        "timestamp",
        "video_id",
    )  # fmt: skip

    def __init__(  # noqa: PLR0917 (the dataclass's signature)
        self,
        video_id: str,
        stage: str,
        blocked: bool,
        reason: str,
        timestamp: datetime,
        checks: list[PlainCheck] | None = None,
        outcome: str = "pass",
        agent: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.video_id = video_id
        self.stage = stage
        self.blocked = blocked
        self.reason = reason
        self.timestamp = timestamp
        self.checks: list[PlainCheck] = [] if checks is None else checks
        self.outcome = outcome
        self.agent = agent
        self.enabled = enabled

    def to_dict(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "stage": self.stage,
            "blocked": self.blocked,
            "reason": self.reason,
            "checks": [c.to_dict() for c in self.checks],
            "outcome": self.outcome,
            "agent": self.agent,
            "enabled": self.enabled,
            "timestamp": format_ts(self.timestamp),
        }


if TYPE_CHECKING:

    class _MaybeRegression(Protocol):
        @property
        def regression_of(self) -> str | None: ...
        @property
        def regressed_after_seconds(self) -> int | None: ...
        @property
        def timestamp(self) -> datetime: ...
        @property
        def video_id(self) -> str | None: ...


def regression_text(event: _MaybeRegression) -> str:
    """``regressed: fixed 2026-11-20 by le-…, back in v107`` for a regression event, else ``""``
    (the date is when the earlier event was verified; ``back in`` names the video, or the day
    when the event has none). For a :class:`~rayvault.learning.models.LearningEvent` or a
    :class:`PlainEvent` (re-exported by ``rayvault.learning.regressions``)."""
    if event.regression_of is None:
        return ""
    fixed = event.timestamp - timedelta(seconds=event.regressed_after_seconds or 0)
    back = event.video_id or f"run of {event.timestamp.date().isoformat()}"
    return f"regressed: fixed {fixed.date().isoformat()} by {event.regression_of}, back in {back}"
