"""Validated records: learning events, rules, tombstones, agent memory, error-log entries, gate
results.

The shapes are those of the files earlier versions of the system wrote (DESIGN.md §3); fields
added since (``agent``, ``fingerprint``, …) are optional, and unknown fields are kept, not
dropped, so rewriting a file never loses what a newer or older writer put there. Records also
answer ``record["field"]`` and ``record.get("field")`` so code written against the old dict-based
API keeps working.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    model_serializer,
)

# The vocabularies live in a module without pydantic; re-exported here (``models.SEVERITIES``).
from rayvault.learning._constants import (
    CRITICAL_SEVERITIES as CRITICAL_SEVERITIES,  # noqa: PLC0414
)
from rayvault.learning._constants import (
    RESOLVED_STATUSES as RESOLVED_STATUSES,  # noqa: PLC0414
)
from rayvault.learning._constants import (
    SEVERITIES as SEVERITIES,  # noqa: PLC0414
)
from rayvault.learning._constants import (
    SEVERITY_RANK as SEVERITY_RANK,  # noqa: PLC0414
)
from rayvault.learning._constants import (
    STATUSES as STATUSES,  # noqa: PLC0414
)
from rayvault.learning._constants import (
    PatternState as PatternState,  # noqa: PLC0414
)
from rayvault.learning._constants import (
    Severity as Severity,  # noqa: PLC0414
)
from rayvault.learning._constants import (
    Status as Status,  # noqa: PLC0414
)
from rayvault.learning._time import format_ts, parse_ts


def normalize_severity(value: object) -> str:
    """``"fail"`` → ``"FAIL"``; anything outside INFO|WARN|FAIL|BLOCKER is refused."""
    if isinstance(value, str) and value in SEVERITY_RANK:  # the stored form: no work to do
        return value
    if isinstance(value, str) and value.strip().upper() in SEVERITY_RANK:
        return value.strip().upper()
    raise ValueError(f"severity must be one of INFO, WARN, FAIL, BLOCKER (got {value!r})")


def _timestamp(value: object) -> datetime:
    if type(value) is str and value.endswith("Z"):
        # The form this package writes: parsed in C to an aware UTC datetime. Anything else
        # (``+00:00``, naive, other offsets, compact ids) goes through parse_ts.
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value)
    if isinstance(value, str | datetime):
        return parse_ts(value)
    raise ValueError(f"not a timestamp: {value!r}")


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    PlainSerializer(format_ts, return_type=str, when_used="json"),
]
SeverityField = Annotated[Severity, BeforeValidator(normalize_severity)]


class Record(BaseModel):
    """Base of every record: keeps unknown fields and allows dict-style reads."""

    # Schemas are built on first use: a short process (the gate) pays only for what it touches.
    model_config = ConfigDict(extra="allow", validate_assignment=False, defer_build=True)

    def __getitem__(self, key: str) -> Any:
        if key in type(self).model_fields:
            return getattr(self, key)
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (
            key in type(self).model_fields or key in (self.__pydantic_extra__ or {})
        )

    def keys(self) -> Iterator[str]:
        yield from type(self).model_fields
        yield from self.__pydantic_extra__ or {}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ``…Z`` strings)."""
        return self.model_dump(mode="json")


class LearningEvent(Record):
    """A failure turned into a formal learning event."""

    event_id: str
    run_id: str = ""
    timestamp: Timestamp
    severity: SeverityField
    component: str
    symptom: str
    root_cause: str = ""
    fix_applied: str = ""
    verification: str = ""
    status: Status = "open"
    video_id: str | None = None
    source_error_id: str | None = None
    promotion_rule: str | None = None
    soul_update: str | None = None
    obsolete_rules_removed: list[str] = Field(default_factory=list)
    # -- added by rayvault-learning ---------------------------------------------------------
    agent: str | None = None
    fingerprint: str | None = None
    pattern: str | None = None
    rule_id: str | None = None
    skill_node: str | None = None
    #: Optional steps of the immediate loop that failed: ``{"step", "error", "at"}``.
    loop_errors: list[dict[str, Any]] = Field(default_factory=list)
    #: What the closed loop (``rayvault.learning.loop``) did in the stage run that recorded this
    #: event, step by step: ``{"step", "at", "attempt", "detail", …ids}``.
    loop_steps: list[dict[str, Any]] = Field(default_factory=list)
    updated: Timestamp | None = None
    resolved_at: Timestamp | None = None

    @property
    def resolved(self) -> bool:
        return self.status in RESOLVED_STATUSES

    @property
    def fingerprint_version(self) -> int | None:
        """The grouping version that computed ``fingerprint`` (None: version 1, or never
        grouped). An extra field, written only when set (as ``idempotency_key``), so records of
        version 1 keep their shape."""
        value = (self.__pydantic_extra__ or {}).get("fingerprint_version")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def regression_of(self) -> str | None:
        """The verified event of this pattern this failure came back after (every earlier
        occurrence was resolved when it was recorded), or None. An extra field, as above."""
        value = (self.__pydantic_extra__ or {}).get("regression_of")
        return value if isinstance(value, str) and value else None

    @property
    def rule_conflicts_with(self) -> list[str]:
        """Active rules the rule this event created conflicts with (marked at creation, both
        ways; ``memory.apply_event``). An extra field, written only when there are some."""
        value = (self.__pydantic_extra__ or {}).get("rule_conflicts_with")
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    @property
    def verified_by(self) -> str | None:
        """How the event's fix was verified: ``retry`` (a later attempt of the stage run that
        recorded it succeeded, ``run_stage``), ``person`` (through the API or the CLI:
        ``update_event``, ``resolve_event``, ``events resolve``, an error resolved with it) or
        ``later_runs``; None for events verified before this was recorded, or not verified. An
        extra field, written only when set (as :attr:`regression_of`)."""
        value = (self.__pydantic_extra__ or {}).get("verified_by")
        return value if isinstance(value, str) and value else None

    @property
    def regressed_after_seconds(self) -> int | None:
        """Seconds from that verification to this event (with :attr:`regression_of`)."""
        value = (self.__pydantic_extra__ or {}).get("regressed_after_seconds")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


RuleAttemptOutcome = Literal["succeeded", "failed"]
#: How a fix was verified: by a person (API/CLI), by a retry's success (evidence, not proof), or
#: by later runs that carried its rule and succeeded (``LEARNING_EFFICACY_MIN_DELIVERIES`` of
#: them, the rule not ineffective).
VERIFIED_BY: tuple[str, ...] = ("person", "retry", "later_runs")
#: A rule text's verification state: one of :data:`VERIFIED_BY`, or ``overturned`` (verified by a
#: retry, then its failure kept recurring while it was delivered).
TEXT_VERIFIED_STATES: tuple[str, ...] = (*VERIFIED_BY, "overturned")


class RuleAttempt(Record):
    """One ``run_stage`` attempt whose prompt carried a rule: the evidence behind the rule's
    ``deliveries``, ``recurrences`` and ``successes`` (kept on the rule, newest last, at most
    ``RULE_ATTEMPTS_KEPT`` of them)."""

    run_id: str
    video_id: str
    stage: str
    #: 1 for the stage run's first attempt, 2 for its first retry, …
    attempt: int
    outcome: RuleAttemptOutcome
    at: Timestamp
    #: sha256 (hex) of the rendered rules block the prompt received (the other rules it carried
    #: are on the attempt's ``execute`` step and, when it failed, in its error's context).
    rules_sha256: str | None = None
    #: The attempt failed with this rule's own pattern (merges followed): a recurrence.
    recurred: bool = False
    #: The attempt was the retry right after an attempt of the same run failed with this rule's
    #: pattern: the rule was delivered in answer to its own failure, its fix put to the test
    #: (counted in ``fix_tries``; a recurrence too counts in ``fix_failures``).
    answered: bool = False
    #: The error-log entry of a failed attempt, and its pattern key.
    error_id: str | None = None
    fingerprint: str | None = None


#: The efficacy fields of a rule, written only when they hold something, so a rule the closed
#: loop never counted keeps the shape the original system wrote (DESIGN.md §3).
_RULE_EVIDENCE_FIELDS: tuple[str, ...] = (
    "occurrences",
    "deliveries",
    "recurrences",
    "successes",
    "fix_tries",
    "fix_failures",
    "attempts",
    "conflicts_with",
    "verified_by",
    "overturned_at",
    "revisions",
    "alternatives",
    "compatible_with",
    "last_learned",
)


class Rule(Record):
    """An active rule in an agent's memory, derived from a learning event.

    Counters, each with one meaning (the efficacy fields are 0 on rules written before they
    existed, e.g. by the original system, and count from then on):

    - ``applied_count`` keeps its seed meaning (DESIGN.md §6, "Applied count"): 1 at creation,
      +1 each time the same failure is learned again for the agent, +1 each time the rule is
      delivered into a stage run (once per run, not for a rule learned in that run). It mixes
      learning and delivery, which is what promotion has always counted.
    - ``occurrences``: times the rule's failure was learned (each ``create_event`` that created
      or re-applied the rule).
    - ``deliveries``: ``run_stage`` attempts whose prompt carried the rule (every attempt,
      retries included).
    - ``recurrences``: of those, attempts that still failed with the rule's own pattern.
    - ``successes``: of those, attempts that succeeded.
    - ``fix_tries``: of those, the retries right after an attempt of the same run failed with
      the rule's pattern: the rule delivered *in answer to its own failure*, its fix put to the
      test. ``fix_failures``: of the fix tries, those that failed with its pattern again.

    Why both: a rule is delivered to every run of its agent, and its failure shows up in few of
    them, so ``recurrences / deliveries`` stays small even for a rule that cannot work (its
    failure recurs at its base rate whatever is delivered). A fix try is the one delivery known
    to face the failure: a rule that cannot work fails there every time, one that works
    seldom does. The *ineffective* and *losing* verdicts rest on fix tries once there are enough
    (``efficacy``).

    ``attempts`` keeps the most recent of those attempts as evidence (shaped as
    :class:`RuleAttempt`).

    The counters above are lifetime counters. A rule's text can be revised when the evidence
    says so (``memory.apply_event``, ``memory.record_verification``): ``revisions`` then keeps
    every text it has had, oldest first, the last being the current one, each with the lifetime
    counters at the moment it became current, so each text's own figures are derivable
    (``efficacy.text_counters``) and the *ineffective* verdict judges the current text alone.
    """

    rule_id: str
    source_event_id: str | None = None
    created: Timestamp
    severity: SeverityField
    component: str
    rule: str
    symptom: str = ""
    video_id: str | None = None
    applied_count: int = 1
    last_applied: Timestamp | None = None
    # -- added by rayvault-learning ---------------------------------------------------------
    fingerprint: str | None = None
    last_event_id: str | None = None
    occurrences: int = 0
    deliveries: int = 0
    recurrences: int = 0
    successes: int = 0
    fix_tries: int = 0
    fix_failures: int = 0
    #: The most recent attempts that carried the rule, oldest first, in :class:`RuleAttempt`'s
    #: JSON shape. Plain dicts, not records: memory is parsed for every prompt, and validating
    #: them each time cost more than the rest of the rule (``rule_history`` validates them).
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    #: Active rules of the same agent this rule conflicts with, marked when the later of the two
    #: was learned (``memory.apply_event``) and cleared when a person resolves the pair
    #: (``memory.resolve_conflict``) or one of them leaves active memory. Until then
    #: ``render_rules`` delivers only one of the pair (``LEARNING_CONFLICT_PREFERENCE``).
    conflicts_with: list[str] = Field(default_factory=list)
    #: How the current text was verified (:data:`TEXT_VERIFIED_STATES`); None while it is not.
    verified_by: str | None = None
    #: When the current text, verified by a retry, was overturned by recurrences while delivered.
    overturned_at: Timestamp | None = None
    #: The texts the rule has had, oldest first, the current one last (empty until its first
    #: revision): ``{"rule", "source_event_id", "at", "reason", "verified_by", "overturned_at",
    #: "deliveries", "recurrences", "successes"}``, the counters being the rule's lifetime
    #: counters when that text became current. Plain dicts, as ``attempts``.
    revisions: list[dict[str, Any]] = Field(default_factory=list)
    #: Differing diagnoses verified by a retry while the current text was not losing: recorded,
    #: not adopted (``{"rule", "source_event_id", "at", "verified_by", "reason"}``).
    alternatives: list[dict[str, Any]] = Field(default_factory=list)
    #: Rules of the same agent a person judged compatible with this one
    #: (``resolve_conflict(keep_both=True)``): the pair is never marked or flagged as
    #: conflicting again, at creation or by the weekly revisit.
    compatible_with: list[str] = Field(default_factory=list)
    #: When the rule's failure was last learned again (``memory.apply_event``), never moved by
    #: a delivery: what ``render_rules`` ranks recency by, so a rule the budget left out does
    #: not age out for good (``last_applied`` moves with every delivery). None until the failure
    #: is learned a second time, and on rules written before it existed (:attr:`learned_at`
    #: falls back to ``created``).
    last_learned: Timestamp | None = None

    @model_serializer(mode="wrap")
    def _without_empty_evidence(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in _RULE_EVIDENCE_FIELDS:
            if name in data and not data[name]:
                del data[name]
        return data

    @property
    def last_used(self) -> datetime:
        """When the rule was last applied (its creation when it never was again)."""
        return self.last_applied or self.created

    @property
    def learned_at(self) -> datetime:
        """When the rule's failure was last learned: ``last_learned``, else its creation (not
        ``last_applied``, which deliveries move too)."""
        return self.last_learned or self.created


class Tombstone(Rule):
    """A rule removed from active memory, with why and on what evidence."""

    tombstoned_at: Timestamp
    reason: str
    evidence_ids: list[str] = Field(default_factory=list)
    superseded_by: str | None = None
    #: ``tombstoned`` by a person or the revisit; ``evicted`` by the cap on active rules.
    kind: Literal["tombstoned", "evicted"] = "tombstoned"


class _Counted(Record):
    """A file with a list and a ``count`` that is always written as the list's length."""

    _counted: ClassVar[str]

    @model_serializer(mode="wrap")
    def _with_count(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data["count"] = len(getattr(self, self._counted))
        return data


class AgentMemory(_Counted):
    """``memory_active.json``."""

    _counted: ClassVar[str] = "rules"
    rules: list[Rule] = Field(default_factory=list)
    updated: Timestamp | None = None
    count: int = 0


class TombstoneFile(_Counted):
    """``memory_tombstones.json``."""

    _counted: ClassVar[str] = "tombstones"
    tombstones: list[Tombstone] = Field(default_factory=list)
    updated: Timestamp | None = None
    count: int = 0


class ErrorResolution(Record):
    resolved_at: Timestamp
    root_cause: str = ""
    fix: str = ""


class ErrorEntry(Record):
    """One entry of the raw error log ``data/error_log.json``."""

    id: str
    video_id: str | None = None
    timestamp: Timestamp
    stage: str
    exit_code: int = 1
    error: str
    context: dict[str, Any] = Field(default_factory=dict)
    resolved: bool = False
    resolution: ErrorResolution | None = None
    # -- added by rayvault-learning ---------------------------------------------------------
    fingerprint: str | None = None
    pattern: str | None = None
    learning_event_id: str | None = None

    @property
    def fingerprint_version(self) -> int | None:
        """The grouping version that computed ``fingerprint`` (None: version 1, or never
        grouped). An extra field, written only when set (as ``idempotency_key``), so records of
        version 1 keep their shape."""
        value = (self.__pydantic_extra__ or {}).get("fingerprint_version")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class PatternMerge(Record):
    """A recorded merge of two failure patterns: queries treat ``source`` as ``target`` from
    then on (a pattern key once handed out is never reused for something else, so history keyed
    by it follows the merge instead of being rewritten)."""

    source: str
    target: str
    stage: str
    at: Timestamp
    #: The grouping version that merged them.
    version: int
    #: ``clusters`` (grouping found them one), ``regroup`` (re-fingerprinting with a newer
    #: version made them one), ``version`` (a text's version-1 key joined its new key).
    reason: Literal["clusters", "regroup", "version"]


class ErrorPattern(Record):
    """Error-log entries grouped by fingerprint. ``videos`` lists the most recently affected
    (up to 50, sorted), ``video_count`` counts them all."""

    fingerprint: str
    pattern: str
    stage: str
    count: int
    unresolved: int
    videos: list[str] = Field(default_factory=list)
    video_count: int = 0
    stages: list[str] = Field(default_factory=list)
    first_seen: Timestamp
    last_seen: Timestamp
    example_id: str


class Lesson(Record):
    """The latest resolution recorded for a failure pattern."""

    fingerprint: str
    pattern: str
    stage: str
    root_cause: str
    fix: str
    resolved_at: Timestamp
    error_id: str
    occurrences: int


class KnownFailure(Record):
    """A fingerprint seen often in a stage (events and error log), with some unresolved."""

    fingerprint: str
    pattern: str
    occurrences: int
    unresolved: int


class GateState(Record):
    """``state/learning_gate/<video_id>.json``: what the gate last saw for one video.

    The original system wrote ``{"policies_sha", "soul_shas", "last_passed"}`` and no
    ``video_id`` (the file name holds it): read as a baseline (kept as extra fields here), and
    upgraded by the gate's next run (``rayvault.learning.gate``)."""

    video_id: str | None = None
    #: ``{"sha256": …, "values": {constant: value}}`` of the effective policies.
    policies: dict[str, Any] | None = None
    #: ``{agent: {"path": …, "sha256": … | None}}`` of the SOUL files seen.
    souls: dict[str, dict[str, Any]] = Field(default_factory=dict)
    runs: list[dict[str, Any]] = Field(default_factory=list)
    acks: list[dict[str, Any]] = Field(default_factory=list)
    updated: Timestamp | None = None


GateOutcome = Literal["pass", "warn", "deny"]


class GateCheck(Record):
    """One of the gate's four checks. ``passed`` is False only when it denies (blocks);
    ``outcome`` tells a warning apart, ``level`` is the check's level for this stage
    (``LEARNING_GATE_LEVELS``) and ``clear`` the commands that clear a denial."""

    name: str
    passed: bool
    reason: str
    details: dict[str, Any] = Field(default_factory=dict)
    level: Literal["deny", "warn"] = "deny"
    outcome: GateOutcome = "pass"
    clear: list[str] = Field(default_factory=list)


class GateResult(Record):
    """What the learning gate decided for one video and stage."""

    video_id: str
    stage: str
    blocked: bool
    reason: str
    checks: list[GateCheck] = Field(default_factory=list)
    #: ``deny`` when blocked, ``warn`` when a check warned, else ``pass``.
    outcome: GateOutcome = "pass"
    agent: str | None = None
    enabled: bool = True
    timestamp: Timestamp


class Acknowledgement(Record):
    """A policies/SOUL change accepted for one video and stage, as recorded in the gate state
    (returned by ``rayvault.learning.gate.acknowledge``)."""

    video_id: str
    stage: str
    at: str
    agent: str | None = None
    policies: list[str]
    soul: str | None = None
    note: str | None = None


# -- the review side: registry results and the weekly report ------------------------------------
class Pattern(Record):
    """A recurring failure: every event sharing one fingerprint, aggregated."""

    fingerprint: str
    #: The gate stage the fingerprint belongs to (its key's prefix).
    stage: str
    #: The masked text people read (``Timeout after <dur> on <id>``).
    pattern: str = ""
    count: int
    #: Unresolved occurrences (neither verified nor archived).
    open_count: int = 0
    #: Occurrences at or after the window start, when the query had one.
    recent_count: int | None = None
    severities: dict[str, int] = Field(default_factory=dict)
    components: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    #: Distinct video ids (possibly trimmed in reports; ``video_count`` is always the full count).
    videos: list[str] = Field(default_factory=list)
    video_count: int = 0
    first_seen: Timestamp
    last_seen: Timestamp
    #: new / ongoing / resolved / regressed (``regressions.pattern_states``); set by
    #: ``get_patterns``, None where a pattern is listed without it (reports).
    state: PatternState | None = None


class PromotionCandidate(Record):
    """An active rule applied often enough to be proposed for the agent's SOUL."""

    agent: str
    rule_id: str
    severity: SeverityField
    component: str
    rule: str
    applied_count: int
    last_applied: Timestamp | None = None
    source_event_id: str | None = None
    #: Attempts that carried the rule and succeeded (what a candidate needs at the threshold;
    #: 0 for a rule written before the counters, judged by ``applied_count``).
    successes: int = 0
    #: The ready-to-paste SOUL section (``soul.promotion_section``).
    soul_section: str
    #: The agent's SOUL file relative to the data root, or None when it has none.
    soul_file: str | None = None
    #: True when the SOUL file already holds this rule's marked section.
    promoted: bool = False


class StaleRule(Record):
    """An active rule the revisit flags as stale, and why."""

    agent: str
    rule_id: str
    severity: SeverityField
    component: str
    rule: str
    created: Timestamp
    last_used: Timestamp
    applied_count: int
    reason: str


class IneffectiveRule(Record):
    """An active rule whose failure keeps recurring while it is delivered: at least
    ``LEARNING_EFFICACY_MIN_DELIVERIES`` deliveries, ``recurrences / deliveries`` at least
    ``LEARNING_EFFICACY_MAX_RECURRENCE_RATE``. Flagged with its evidence for a person (the
    revisit proposes ``tombstone or rewrite``); never removed automatically."""

    agent: str
    rule_id: str
    severity: SeverityField
    component: str
    rule: str
    deliveries: int
    recurrences: int
    successes: int
    #: The current text's fix put to the test (retries right after its own failure), and how
    #: often its failure came back on them (``efficacy.is_ineffective``).
    fix_tries: int = 0
    fix_failures: int = 0
    #: The rate the verdict rests on: ``fix_failures / fix_tries`` when the fix was tried often
    #: enough, else ``recurrences / deliveries``; rounded to 3 places.
    recurrence_rate: float
    #: The thresholds it was judged by (the effective policies).
    min_deliveries: int
    max_recurrence_rate: float
    #: The most recent attempts that carried it, newest first (:class:`RuleAttempt`).
    attempts: list[RuleAttempt] = Field(default_factory=list)
    proposal: str = "tombstone or rewrite"
    reason: str


class RuleRevision(Record):
    """One text a rule has had (``rules history``): when and why it became the rule's text, how
    it was verified, and its own counters (deliveries, recurrences, successes while it was the
    current text)."""

    rule: str
    source_event_id: str | None = None
    at: Timestamp
    reason: str = ""
    verified_by: str | None = None
    overturned_at: Timestamp | None = None
    #: Deliveries, recurrences and successes of this text alone, and its fix tries (retries
    #: right after its failure) and how many of them failed again.
    deliveries: int = 0
    recurrences: int = 0
    successes: int = 0
    fix_tries: int = 0
    fix_failures: int = 0
    current: bool = False


class RuleHistory(Record):
    """A rule's counters and the attempts that carried it (``rules history``), newest first."""

    agent: str
    rule_id: str
    #: ``active``, or ``tombstoned`` / ``evicted`` for a rule removed from memory.
    state: Literal["active", "tombstoned", "evicted"]
    severity: SeverityField
    component: str
    rule: str
    created: Timestamp
    fingerprint: str | None = None
    source_event_id: str | None = None
    last_event_id: str | None = None
    applied_count: int
    occurrences: int = 0
    deliveries: int = 0
    recurrences: int = 0
    successes: int = 0
    fix_tries: int = 0
    fix_failures: int = 0
    #: The attempts kept on the rule, newest first (at most ``RULE_ATTEMPTS_KEPT``).
    attempts: list[RuleAttempt] = Field(default_factory=list)
    #: Deliveries whose attempt record was dropped to keep the rule small.
    attempts_dropped: int = 0
    #: How the current text was verified (``person`` / ``retry`` / ``later_runs`` /
    #: ``overturned``), and when a retry-verified text was overturned.
    verified_by: str | None = None
    overturned_at: Timestamp | None = None
    #: Every text the rule has had, oldest first, with its own counters (one entry, the current
    #: text, for a rule never revised).
    revisions: list[RuleRevision] = Field(default_factory=list)
    #: Differing diagnoses verified by a retry and not adopted (the current text was not losing).
    alternatives: list[dict[str, Any]] = Field(default_factory=list)


class RuleConflict(Record):
    """Two active rules of one agent that prescribe incompatible actions."""

    agent: str
    rule_ids: list[str]
    #: ``negation`` | ``direction`` | ``revert`` | ``value`` | ``instead_of``
    kind: str
    #: What the two rules share: ``same fingerprint`` or ``same stage <stage>``.
    scope: str
    reason: str
    #: When the pair is marked (``Rule.conflicts_with``): the rule ``render_rules`` holds back
    #: until a person resolves it. None for a pair the revisit found that was never marked.
    held_back: str | None = None


class ConflictResolution(Record):
    """What ``rules resolve-conflict`` did to a pair of conflicting rules."""

    agent: str
    #: The pair, as named: the rule given, then its partner.
    rule_ids: list[str]
    #: The rules that stay active (both with ``--keep-both``).
    kept: list[str]
    #: The rule tombstoned, or None when both were kept.
    tombstoned: str | None = None
    reason: str


class Revalidation(Record):
    """The revisit's first phase: rules flagged for a person to review (nothing is removed)."""

    stale: list[StaleRule] = Field(default_factory=list)
    conflicts: list[RuleConflict] = Field(default_factory=list)
    #: Rules whose failure recurs while delivered (``efficacy.ineffective_rule``).
    ineffective: list[IneffectiveRule] = Field(default_factory=list)


class WeeklyReport(Record):
    """``data/learning_reports/weekly-YYYY-MM-DD.json``.

    The first fields are those the earlier system wrote (``by_*`` count the events of the
    window); the rest were added by rayvault-learning and are optional, so older reports load.
    """

    generated_at: Timestamp
    period_days: int
    scope: str
    events_total: int = 0
    events_recent: int = 0
    by_severity: dict[str, int] = Field(default_factory=dict)
    by_component: dict[str, int] = Field(default_factory=dict)
    by_status: dict[str, int] = Field(default_factory=dict)
    agent_summaries: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # -- added by rayvault-learning ---------------------------------------------------------
    window_start: Timestamp | None = None
    events_by_day: list[dict[str, Any]] = Field(default_factory=list)
    top_patterns: list[Pattern] = Field(default_factory=list)
    failures: dict[str, Any] = Field(default_factory=dict)
    open_failures: dict[str, Any] = Field(default_factory=dict)
    rules: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    resolution: dict[str, Any] = Field(default_factory=dict)
    revalidation: Revalidation = Field(default_factory=Revalidation)
    promotions: list[PromotionCandidate] = Field(default_factory=list)
    #: Patterns that came back in the window after every occurrence was resolved
    #: (``revisit.regressions``).
    regressions: list[dict[str, Any]] = Field(default_factory=list)


class SoulPromotion(Record):
    """What ``soul promote`` did to an agent's SOUL file."""

    agent: str
    rule_id: str
    #: The SOUL file, relative to the data root.
    soul_file: str
    #: ``added`` (new section), ``updated`` (the section's evidence changed) or ``unchanged``.
    action: Literal["added", "updated", "unchanged"]
    section: str
    applied_count: int
    #: LEARNING_PROMOTION_THRESHOLD_OCCURRENCES when it was promoted.
    threshold: int
    #: The rule's efficacy when it was promoted: attempts that carried it, and of those the
    #: ones that succeeded (what promotion counts: ``registry.promotable``).
    deliveries: int = 0
    successes: int = 0
    #: Whether the rule had earned its promotion (``registry.promotable``): a person may
    #: promote any rule, and the CLI says when it had not.
    earned: bool = True
    #: Why it had not (below the threshold, or flagged ineffective); empty when earned.
    not_earned_reason: str = ""


class AgentSweep(Record):
    """The revisit's tombstone sweep for one agent (under a dry run: what it would do)."""

    agent: str
    #: Tombstones older than LEARNING_TOMBSTONE_GRACE_DAYS moved to the dated archive.
    tombstones_archived: int = 0
    tombstones_kept: int = 0
    #: Where they went (None when nothing was archived, or under a dry run).
    tombstone_archive: str | None = None
    #: Memory snapshots older than LEARNING_ARCHIVE_RETENTION_DAYS removed.
    snapshots_pruned: list[str] = Field(default_factory=list)


class RevisitReport(Record):
    """Everything one revisit found and did (``revisit()``'s result, ``revisit --json``)."""

    scope: str
    days: int
    generated_at: Timestamp
    window_start: Timestamp
    dry_run: bool
    agents: list[str] = Field(default_factory=list)
    revalidation: Revalidation = Field(default_factory=Revalidation)
    promotions: list[PromotionCandidate] = Field(default_factory=list)
    #: The weekly report (written unless ``dry_run``).
    report: WeeklyReport
    #: ``weekly-YYYY-MM-DD`` (``-N`` for the N-th of a day); None under a dry run.
    report_name: str | None = None
    #: ``{"json": location, "html": location}``; None under a dry run.
    report_files: dict[str, str] | None = None
    tombstone_sweep: list[AgentSweep] = Field(default_factory=list)


FindingLevel = Literal["error", "warning", "info"]


class Finding(Record):
    """One problem the doctor found in a data root (or a note about it, level ``info``)."""

    #: A stable short name for scripts, e.g. ``index-torn-tail``, ``memory-corrupt``.
    code: str
    #: The file at fault, relative to the data root when it is inside it.
    path: str
    message: str
    #: ``error``: data cannot be read or is wrong; ``warning``: inconsistent or untidy, nothing
    #: lost; ``info``: worth knowing, not a problem (e.g. a lock held by a running process).
    level: FindingLevel = "error"
    #: Whether ``doctor --repair`` can fix it without losing anything.
    repairable: bool = False
    repaired: bool = False
    #: What the repair did (``re-written from the index``, ``moved to state/doctor-archive/…``).
    action: str | None = None

    @property
    def open(self) -> bool:
        """Still a problem: not repaired, and not merely informational."""
        return not self.repaired and self.level != "info"


class CompactResult(Record):
    """What compacting the event index did."""

    path: str
    #: Where the old file was kept (None when nothing needed compacting).
    archive: str | None = None
    compacted: bool
    versions_before: int
    events_after: int
    bytes_before: int
    bytes_after: int
    #: A torn tail (a half-written element) was left out; it stays in the archived file.
    torn_tail_dropped: bool = False
