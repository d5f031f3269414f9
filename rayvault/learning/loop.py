"""The closed loop as code: run one stage of one video through
``gate → execute → fail → diagnose → learn → apply → retry``.

Two ways in, the same loop:

- :func:`run_stage` ``(video_id, stage, fn, *, retries=1, diagnose=None, …) -> StageRun``;
- :func:`learning_stage` ``("assets", retries=1)``, a decorator: the decorated function is called
  with a video id and returns what the stage returns (or raises).

What one stage run does:

1. **gate** — :func:`~rayvault.learning.gate.learning_gate`. Blocked: :class:`GateBlocked`
   (carrying the result) is raised, or, with ``on_blocked="return"``, the blocked run returned.
2. **execute** — ``fn(ctx)``; the :class:`StageContext` carries the stage's agent, the rules
   rendered for its prompt (and the rules themselves) and the attempt number. The rules are
   ranked for the stage, the run's ``task`` and, on a retry, the failed attempt's error (its
   rule first: ``render_rules``), and why each was in or out is recorded on the ``execute``
   step (``selection``). The rules shown are counted as delivered (``applied_count`` and
   ``last_applied``, DESIGN.md §6): once per stage run, and not for a rule learned in this run
   (its creation already counted that use). When the attempt ends, it is counted on every rule
   it carried (``deliveries``, and ``successes`` or, failing with the rule's own pattern,
   ``recurrences``), with the attempt kept on the rule as evidence
   (``rayvault.learning.efficacy``); the rule ids and the sha256 of the rendered block are
   recorded with the attempt (its ``execute`` step, a failed attempt's error-log entry).
3. **fail** — the exception goes to the error log with its traceback and fingerprint (a
   :class:`StepFailed` with its own text and exit code instead: an external step's failure).
4. **diagnose** — a diagnoser (``Callable[[Failure], Diagnosis | None]``) gives a root cause and a
   fix, or nothing. The default, :func:`diagnose_from_history`, reuses a resolution of the same
   fingerprint (a verified event or an error-log lesson) the evidence has not refuted: never a
   fix whose rule text failed while delivered, so a chained LLM is asked instead.
5. **learn + apply** — with a diagnosis, ``create_event(…, agent=…, source_error_id=…)``: the rule
   is in the agent's memory before the retry, and the error is linked to its event (linked, not
   resolved: it is resolved only when a retry succeeds). When the pattern's rule text is losing
   (its failure recurred while delivered) and this diagnosis differs, the rule is revised then,
   so the retry carries the new text (``memory.apply_event``). Without a diagnosis, an open FAIL
   event records the failure and the loop stops there: nothing was learned, so a retry would
   repeat the same run, and the open event makes the gate hold the stage until a person
   resolves it.
   A failure whose fingerprint was already learned in this run is linked to that event (no
   second event, no second diagnosis) and retried.
6. **retry** — up to ``retries`` more attempts, each with the rules as they are now. On success
   every event of the run is verified (saying which attempt succeeded with which rules;
   ``verified_by: retry``, evidence rather than proof) and every error of the run resolved with
   its diagnosis, so the next occurrence is diagnosed from history.
   When retries run out, errors and events stay open and the last exception is raised (or, with
   ``on_failure="return"``, the failed run returned).

The loop never learns from the library's own failures: a :class:`LearningError` raised by the
stage itself (a bad video id passed on by the caller, a nested stage's :class:`GateBlocked`, …)
and any exception type listed in ``ignore=`` propagate at once, whatever ``on_failure`` says:
no error is logged, no event created, no rule learned.

If learning data cannot be written while a failure is handled, the ``LearningError`` naming the
file is raised (chained to the stage's exception); after a success it is only logged and
recorded, so the stage's result is never lost to bookkeeping.

Every step is recorded: in the returned :class:`StageRun`, through the ``progress`` callback, in
``logging.getLogger("rayvault.learning")`` (INFO), and on each event of the run (``loop_steps``,
shown by ``rayvault-learn events get ID``), so an operator can replay what the loop did. With
``opentelemetry-api`` installed, the run is also a span with a child span per attempt and the
gate's decision as an event (``rayvault.learning._telemetry``, docs/opentelemetry.md).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar

from rayvault.learning._idempotency import MAX_KEY_LENGTH
from rayvault.learning._ids import validate_identifier
from rayvault.learning._telemetry import SpanHandle, attempt_span, gate_event, stage_span
from rayvault.learning._time import compact_ts, format_ts, utcnow
from rayvault.learning._validate import checked
from rayvault.learning._words import counted, noun_for
from rayvault.learning.efficacy import (
    Figures,
    record_attempt,
    rule_revisions,
    rules_block_sha256,
)
from rayvault.learning.errors import (
    error_symptom,
    link_to_event,
    log_error,
    resolve_error,
)
from rayvault.learning.events import create_event, update_event
from rayvault.learning.exceptions import GateBlocked, InvalidInputError, LearningError, describe
from rayvault.learning.gate import learning_gate
from rayvault.learning.memory import (
    load_active_memory,
    mark_delivered,
    prompt_rules,
    rule_for_pattern,
    same_fix,
)
from rayvault.learning.models import (
    ErrorEntry,
    GateResult,
    LearningEvent,
    Rule,
    normalize_severity,
)
from rayvault.learning.stages import agent_for_stage, check_stage
from rayvault.learning.store import EventQuery, Store, get_store

__all__ = [
    "Diagnoser",
    "Diagnosis",
    "Failure",
    "LearningStage",
    "LoopStep",
    "StageContext",
    "StageRun",
    "StepFailed",
    "chain_diagnosers",
    "diagnose_from_history",
    "learning_stage",
    "run_stage",
]

log = logging.getLogger("rayvault.learning")

T = TypeVar("T")
P = ParamSpec("P")
Outcome = Literal["succeeded", "failed", "blocked"]
OnBlocked = Literal["raise", "return"]
OnFailure = Literal["raise", "return"]
#: Exception types a stage run lets through without learning from them (``ignore=``).
Ignore = type[BaseException] | tuple[type[BaseException], ...]
#: A work item's description for ``learning_stage``: the text, or a function of the video id.
TaskSource = str | Callable[[str], str | None]
#: Verified events looked at per fingerprint when diagnosing from history (some may have no fix).
_HISTORY_LOOKUP = 5


@dataclass(frozen=True)
class StageContext:
    """What the stage function receives on each attempt."""

    video_id: str
    stage: str
    #: The agent that runs the stage (``LEARNING_STAGE_AGENTS``), None for an unmapped stage.
    agent: str | None
    #: 1 for the first run, 2 for the first retry, …
    attempt: int
    max_attempts: int
    run_id: str
    #: The agent's active rules as a prompt-ready block (``render_rules``); "" when none.
    rendered_rules: str
    #: The rules that block shows, in its order: on a retry the failed attempt's rule first, then
    #: the stage's, the task's most relevant, the most severe (``render_rules``).
    rules: tuple[Rule, ...]
    store: Store
    #: The exception of the previous attempt (None on the first).
    previous_error: BaseException | None = None
    #: sha256 (hex) of ``rendered_rules`` (None when no rules were delivered): recorded with the
    #: attempt's outcome, on the rules it carried and on a failed attempt's error-log entry.
    rules_sha256: str | None = None

    @property
    def is_retry(self) -> bool:
        return self.attempt > 1

    def has_rule(self, text: str) -> bool:
        """Whether the rendered rules mention ``text`` (case and spacing ignored)."""
        wanted = " ".join(text.lower().split())
        return bool(wanted) and wanted in " ".join(self.rendered_rules.lower().split())


@dataclass(frozen=True)
class Failure:
    """One failed attempt, as a diagnoser sees it."""

    context: StageContext
    exception: BaseException
    #: The error-log entry written for it (id, traceback text, fingerprint, pattern).
    error: ErrorEntry
    #: Why diagnosers passed over what they found (``diagnose_from_history`` notes each history
    #: fix it skipped): recorded on the loop's ``diagnose`` step.
    notes: list[str] = field(default_factory=list)

    @property
    def video_id(self) -> str:
        return self.context.video_id

    @property
    def stage(self) -> str:
        return self.context.stage

    @property
    def agent(self) -> str | None:
        return self.context.agent

    @property
    def attempt(self) -> int:
        return self.context.attempt

    @property
    def store(self) -> Store:
        return self.context.store

    @property
    def fingerprint(self) -> str:
        assert self.error.fingerprint is not None  # log_error always computes it
        return self.error.fingerprint

    @property
    def symptom(self) -> str:
        """The failure line (a traceback's last line): the symptom of its learning event."""
        return error_symptom(self.error)


@dataclass(frozen=True)
class Diagnosis:
    """What a diagnoser concluded: why the stage failed and what to do about it."""

    root_cause: str
    fix: str
    #: Severity of the learning event (FAIL and BLOCKER hold the gate while unresolved).
    severity: str = "FAIL"
    #: Where the diagnosis came from, for people: ``"history"``, ``"llm"``, ``"runbook"``, …
    source: str = "custom"
    #: The event or error id it is based on, when there is one.
    reference: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.root_cause, str) or not isinstance(self.fix, str):
            raise InvalidInputError("a diagnosis needs text for its root cause and fix")
        if not self.root_cause.strip() and not self.fix.strip():
            raise InvalidInputError("a diagnosis needs a root cause or a fix")
        try:
            object.__setattr__(self, "severity", normalize_severity(self.severity))
        except ValueError as e:
            raise InvalidInputError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root_cause": self.root_cause,
            "fix": self.fix,
            "severity": self.severity,
            "source": self.source,
            "reference": self.reference,
        }


class StepFailed(Exception):
    """A failed attempt reported as data rather than as a Python exception: the error log records
    ``text`` as it is (no traceback of the code that noticed the failure), with ``exit_code`` and
    ``context`` (merged under the loop's own keys). Raise it from a stage function that runs an
    external step (``rayvault-learn run`` does), so its real exit code and output are logged."""

    def __init__(
        self, text: str, *, exit_code: int = 1, context: dict[str, Any] | None = None
    ) -> None:
        super().__init__(text)
        self.text = text
        self.exit_code = exit_code
        self.context = dict(context or {})


#: A diagnoser: a root cause and fix for a failure, or None when it cannot tell.
Diagnoser = Callable[[Failure], Diagnosis | None]


@dataclass(frozen=True)
class LoopStep:
    """One recorded step of a stage run."""

    step: str
    at: datetime
    detail: str
    video_id: str
    stage: str
    run_id: str
    attempt: int | None = None
    #: Ids and values the step refers to (``event_id``, ``error_id``, ``rule_ids``, …).
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The step as stored on an event (``loop_steps``)."""
        return {
            "step": self.step,
            "at": format_ts(self.at),
            "attempt": self.attempt,
            "detail": self.detail,
            **self.data,
        }


@dataclass
class StageRun:
    """What one run of a stage did, and how it ended."""

    video_id: str
    stage: str
    agent: str | None
    run_id: str
    outcome: Outcome = "failed"
    #: Attempts made (0 when the gate blocked).
    attempts: int = 0
    #: What the stage function returned (on success).
    value: Any = None
    gate: GateResult | None = None
    #: The exception of the last failed attempt.
    error: BaseException | None = None
    error_ids: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    #: Rules learned (created or re-applied) in this run.
    rule_ids: list[str] = field(default_factory=list)
    #: Rules delivered into the run (and counted), by id.
    delivered_rule_ids: list[str] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    steps: list[LoopStep] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "succeeded"

    @property
    def blocked(self) -> bool:
        return self.outcome == "blocked"

    def result(self) -> Any:
        """The stage's value; raises :class:`GateBlocked` or the last exception otherwise."""
        if self.outcome == "blocked":
            assert self.gate is not None
            raise GateBlocked(self.gate)
        if self.outcome == "failed":
            assert self.error is not None
            raise self.error
        return self.value

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the value as its ``repr`` unless it is plain JSON)."""
        value = self.value
        if not isinstance(value, str | int | float | bool | type(None) | list | dict):
            value = repr(value)
        return {
            "video_id": self.video_id,
            "stage": self.stage,
            "agent": self.agent,
            "run_id": self.run_id,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "value": value,
            "gate": self.gate.to_dict() if self.gate else None,
            "error": describe(self.error) if self.error else None,
            "error_ids": list(self.error_ids),
            "event_ids": list(self.event_ids),
            "rule_ids": list(self.rule_ids),
            "delivered_rule_ids": list(self.delivered_rule_ids),
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "steps": [s.to_dict() for s in self.steps],
        }


# -- diagnosers ---------------------------------------------------------------------------------
@checked
def diagnose_from_history(failure: Failure) -> Diagnosis | None:
    """The default diagnoser: a fix of the same failure pattern that the evidence has not
    refuted.

    Candidates are, by fingerprint (indexed queries, no scan), the newest verified learning
    events with a root cause or fix (at most ``_HISTORY_LOOKUP``) and the newest resolved
    error-log entry (a lesson). Each is judged against the agent's rule for the pattern and its
    text history (:func:`classify_fix`): *failed* (its text is ineffective, overturned, or
    losing — this failure counted when the current text was delivered in this attempt),
    *succeeded* (successes, not losing) or *untried*. A failed fix is never returned (the reason
    is noted on ``failure.notes``, which the loop records); succeeded fixes come before untried
    ones, newest first. None when history holds no fix, or only failed ones: the next diagnoser
    of a chain (an LLM) is then asked.
    """
    store = failure.store
    fp = failure.fingerprint
    events = [
        e
        for e in store.query_events(
            EventQuery(
                fingerprint=fp,
                statuses=("verified",),
                newest_first=True,
                limit=_HISTORY_LOOKUP,
            )
        )
        if e.root_cause or e.fix_applied
    ]
    lesson = store.latest_resolution(fp)
    candidates: list[tuple[datetime, Diagnosis, str | None]] = [
        (
            e.resolved_at or e.updated or e.timestamp,
            Diagnosis(
                root_cause=e.root_cause,
                fix=e.fix_applied,
                severity=e.severity if e.severity in ("FAIL", "BLOCKER") else "FAIL",
                source="history",
                reference=e.event_id,
            ),
            e.promotion_rule,
        )
        for e in events
    ]
    if (
        lesson is not None
        and lesson.resolution is not None
        and (lesson.resolution.root_cause or lesson.resolution.fix)
    ):
        resolution = lesson.resolution
        candidates.append(
            (
                resolution.resolved_at,
                Diagnosis(
                    resolution.root_cause, resolution.fix, source="history", reference=lesson.id
                ),
                None,
            )
        )
    if not candidates:
        return None
    rule = _pattern_rule(failure)
    ranked: list[tuple[int, float, Diagnosis]] = []
    for at, diagnosis, text in candidates:
        verdict, why = classify_fix(rule, diagnosis, text, failure)
        if verdict == "failed":
            failure.notes.append(f"history fix from {diagnosis.reference} skipped: {why}")
            continue
        ranked.append((0 if verdict == "succeeded" else 1, -at.timestamp(), diagnosis))
    if not ranked:
        return None
    return min(ranked, key=lambda r: (r[0], r[1]))[2]


def _pattern_rule(failure: Failure) -> Rule | None:
    """The failing agent's rule for the failure's pattern (merges followed), or None."""
    if failure.agent is None:
        return None
    rules = failure.store.load_memory(failure.agent).rules
    return rule_for_pattern(rules, failure.fingerprint, failure.store) if rules else None


FixVerdict = Literal["failed", "succeeded", "untried"]


def classify_fix(
    rule: Rule | None, diagnosis: Diagnosis, text: str | None, failure: Failure
) -> tuple[FixVerdict, str]:
    """Judge one history fix by the evidence on the pattern's rule: the rule text it taught (the
    current text or an earlier revision, matched by ``text`` or by its diagnosis) and that text's
    own counters. The current failure counts as a recurrence of the current text when this
    attempt delivered it and it is not counted yet. Returns the verdict and why."""
    if rule is None:
        return "untried", "no rule of the pattern"
    policies = failure.store.policies
    for revision in reversed(rule_revisions(rule)):
        if not same_fix(revision.rule, diagnosis.root_cause, diagnosis.fix, text):
            continue
        own = Figures(
            revision.deliveries,
            revision.recurrences,
            revision.successes,
            revision.fix_tries,
            revision.fix_failures,
        )
        if revision.current and _uncounted_delivery(rule, failure):
            own = replace(own, deliveries=own.deliveries + 1, recurrences=own.recurrences + 1)
        state = revision.verified_by
        figures = own.describe()
        if state == "overturned":
            return "failed", f"its text was overturned ({figures})"
        if own.ineffective(policies):
            return "failed", f"its text is ineffective ({figures})"
        if own.losing(policies):
            return "failed", f"its text is losing ({figures})"
        if own.fix_successes or own.successes:
            return "succeeded", figures
        return "untried", figures
    return "untried", "its text was never delivered"


def _uncounted_delivery(rule: Rule, failure: Failure) -> bool:
    """Whether the failing attempt delivered ``rule`` and is not yet counted on it (the loop
    counts an attempt before diagnosing it; a diagnoser called on its own may come first)."""
    if not any(r.rule_id == rule.rule_id for r in failure.context.rules):
        return False
    return not any(a.get("error_id") == failure.error.id for a in rule.attempts)


@checked
def chain_diagnosers(*diagnosers: Diagnoser) -> Diagnoser:
    """A diagnoser that asks each of ``diagnosers`` in turn and returns the first diagnosis,
    e.g. ``chain_diagnosers(diagnose_from_history, ask_llm)``: history first, the LLM only for
    failures never resolved before, or whose known fixes failed."""

    def chained(failure: Failure) -> Diagnosis | None:
        for diagnoser in diagnosers:
            found = diagnoser(failure)
            if found is not None:
                return found
        return None

    return chained


# -- the loop -----------------------------------------------------------------------------------
@dataclass
class _Learned:
    """A failure pattern learned in this run: its event, and the fix it will be resolved with."""

    event_id: str
    attempt: int
    root_cause: str
    fix: str
    diagnosed: bool


def loop_key(run: StageRun, attempt: int, what: str) -> str:
    """The idempotency key of what the loop records for one attempt of a run (``error``,
    ``event``): the same run id, video, stage and attempt give the same key, so a run replayed
    with its run id after a store call that raised (and may have committed) records nothing
    twice. A new run needs a new run id (``run_stage`` makes one unless given)."""
    key = f"loop:{run.run_id}:{run.video_id}:{run.stage}:{attempt}:{what}"
    if len(key) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
        key = f"loop:{digest}:{attempt}:{what}"
    return key


def _named(ids: list[str], word: str) -> str:
    return f"{noun_for(len(ids), word)} {', '.join(ids)}"


def _choice(value: str, name: str) -> None:
    if value not in ("raise", "return"):
        raise InvalidInputError(f"{name} must be 'raise' or 'return' (got {value!r})")


def _ignored(ignore: object) -> tuple[type[BaseException], ...]:
    """``ignore=`` as a tuple of exception types (:class:`LearningError` always among them)."""
    types = ignore if isinstance(ignore, tuple) else () if ignore is None else (ignore,)
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise InvalidInputError(
                f"ignore must be an exception type or a tuple of them (got {item!r})"
            )
    return (LearningError, *types)


def _check_retries(retries: object) -> None:
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise InvalidInputError(f"retries must be a whole number ≥ 0 (got {retries!r})")


class _Loop:
    """One stage run in progress: its state, its recorded steps, and its events kept current."""

    def __init__(
        self,
        run: StageRun,
        store: Store,
        *,
        retries: int,
        diagnoser: Diagnoser,
        progress: Callable[[LoopStep], None] | None,
        task: str | None = None,
    ) -> None:
        self.run = run
        #: The work item's description: rules are ranked by their relevance to it.
        self.task = task
        #: The error-log entry of the last failed attempt: its rule comes first on the retry.
        self.last_error: ErrorEntry | None = None
        self.store = store
        self.max_attempts = retries + 1
        self.diagnoser = diagnoser
        self.progress = progress
        #: Rules delivered (and counted) in this run; rules learned in it are never counted.
        self.delivered: set[str] = set()
        #: The current attempt's rules held back by an unresolved conflict (held → delivered).
        self.held_back: dict[str, str] = {}
        self.learned_rules: set[str] = set()
        #: Failure patterns learned in this run, by fingerprint and by event id.
        self.learned: dict[str, _Learned] = {}
        self.learned_by_event: dict[str, _Learned] = {}
        #: Each error of the run, and the event it is linked to.
        self.error_events: dict[str, str] = {}

    # -- recording ----------------------------------------------------------------------------
    def record(
        self, step: str, detail: str, *, attempt: int | None = None, **data: Any
    ) -> LoopStep:
        entry = LoopStep(
            step=step,
            at=utcnow(),
            detail=detail,
            video_id=self.run.video_id,
            stage=self.run.stage,
            run_id=self.run.run_id,
            attempt=attempt,
            data=data,
        )
        self.run.steps.append(entry)
        log.info(
            "%s/%s %s%s: %s",
            self.run.video_id,
            self.run.stage,
            step,
            f" (attempt {attempt})" if attempt else "",
            detail,
        )
        if self.progress is not None:
            self.progress(entry)
        return entry

    def save_steps(self, **changes: Any) -> None:
        """Write the run's steps so far onto each of its events (a new version of each)."""
        steps = [s.to_dict() for s in self.run.steps]
        for event_id in self.run.event_ids:
            update_event(event_id, loop_steps=steps, store=self.store, **changes)

    # -- gate ---------------------------------------------------------------------------------
    def gate(self) -> bool:
        """Run the gate; whether the stage may run."""
        run = self.run
        gate = run.gate = learning_gate(run.video_id, run.stage, store=self.store)
        if not gate.enabled:
            self.record("gate", f"disabled: {gate.reason}", agent=run.agent)
        elif gate.blocked:
            failed = [c.name for c in gate.checks if not c.passed]
            self.record("gate", f"blocked: {gate.reason}", agent=run.agent, failed_checks=failed)
            run.outcome = "blocked"
            return False
        else:
            self.record("gate", f"passed: {gate.reason}", agent=run.agent)
        return True

    # -- execute ------------------------------------------------------------------------------
    def context(self, attempt: int, previous: BaseException | None) -> StageContext:
        """The context of one attempt; counts the delivery of rules new to this run."""
        run = self.run
        rules: list[Rule] = []
        text = ""
        held: dict[str, str] = {}
        selection: dict[str, Any] = {}
        if run.agent is not None:
            block = prompt_rules(
                run.agent,
                store=self.store,
                stage=run.stage,
                task=self.task,
                failure=self.last_error if attempt > 1 else None,
            )
            text, rules = block.text, list(block.rules)
            held = dict(block.held_back)
            selection = block.compact_selection()
            new = [r.rule_id for r in rules if r.rule_id not in self.delivered]
            self.delivered.update(new)
            run.delivered_rule_ids.extend(new)
            to_count = [i for i in new if i not in self.learned_rules]
            if to_count:
                updated = {
                    r.rule_id: r for r in mark_delivered(run.agent, to_count, store=self.store)
                }
                rules = [updated.get(r.rule_id, r) for r in rules]
        self.held_back = held
        ctx = StageContext(
            video_id=run.video_id,
            stage=run.stage,
            agent=run.agent,
            attempt=attempt,
            max_attempts=self.max_attempts,
            run_id=run.run_id,
            rendered_rules=text,
            rules=tuple(rules),
            store=self.store,
            previous_error=previous,
            rules_sha256=rules_block_sha256(text),
        )
        shown = [r.rule_id for r in rules]
        detail = (
            f"{counted(len(shown), 'rule')} delivered to {run.agent}"
            if run.agent
            else f"stage {run.stage!r} has no agent: no rules delivered"
        )
        if "failure_rule" in selection:
            cut = " (cut to fit the budget)" if selection.get("truncated") else ""
            detail += f"; the failed attempt's rule first: {selection['failure_rule']}{cut}"
        if held:
            detail += "; held back (unresolved conflict): " + ", ".join(
                f"{h} (in favour of {w})" for h, w in held.items()
            )
        self.record(
            "execute",
            detail,
            attempt=attempt,
            rule_ids=shown,
            rules_sha256=ctx.rules_sha256,
            **({"held_back_rule_ids": held} if held else {}),
            **({"selection": selection} if selection else {}),
        )
        return ctx

    def count_attempt(self, ctx: StageContext, entry: ErrorEntry | None = None) -> list[str]:
        """Count the attempt on the rules it delivered (deliveries, and successes or
        recurrences; fix tries for the rules of the previous attempt's failure:
        ``efficacy.record_attempt``); the ids of the rules it was a recurrence of. Called before
        ``last_error`` moves on to this attempt's error."""
        run = self.run
        if run.agent is None or not ctx.rules:
            return []
        previous = self.last_error if ctx.attempt > 1 else None
        counted = record_attempt(
            run.agent,
            [r.rule_id for r in ctx.rules],
            outcome="succeeded" if entry is None else "failed",
            run_id=run.run_id,
            video_id=run.video_id,
            stage=run.stage,
            attempt=ctx.attempt,
            rules_sha256=ctx.rules_sha256,
            fingerprint=entry.fingerprint if entry else None,
            error_id=entry.id if entry else None,
            answering=previous.fingerprint if previous is not None else None,
            store=self.store,
        )
        return [r.rule_id for r in counted if r.attempts and r.attempts[-1].get("recurred")]

    # -- fail ---------------------------------------------------------------------------------
    def fail(self, ctx: StageContext, exc: Exception) -> bool:
        """Log, diagnose, learn and apply one failure; whether to retry."""
        run = self.run
        run.error = exc
        logged: str | BaseException = exc
        exit_code, extra = 1, {}
        if isinstance(exc, StepFailed):
            logged, exit_code, extra = exc.text, exc.exit_code, exc.context
        entry = log_error(
            run.video_id,
            run.stage,
            logged,
            exit_code=exit_code,
            context={
                **extra,
                "run_id": run.run_id,
                "attempt": ctx.attempt,
                "agent": run.agent,
                "rule_ids": [r.rule_id for r in ctx.rules],
                "rules_sha256": ctx.rules_sha256,
                **({"held_back_rule_ids": dict(self.held_back)} if self.held_back else {}),
            },
            store=self.store,
            idempotency_key=loop_key(run, ctx.attempt, "error"),
        )
        run.error_ids.append(entry.id)
        failure = Failure(context=ctx, exception=exc, error=entry)
        recurred = self.count_attempt(ctx, entry)
        self.last_error = entry
        self.record(
            "fail",
            f"{failure.symptom} (error {entry.id})"
            + (f"; recurred while delivered: {', '.join(recurred)}" if recurred else ""),
            attempt=ctx.attempt,
            error_id=entry.id,
            fingerprint=entry.fingerprint,
            **({"recurred_rule_ids": recurred} if recurred else {}),
        )
        diagnosed = self.learn(failure)
        if diagnosed and ctx.attempt < self.max_attempts:
            self.record(
                "retry",
                f"attempt {ctx.attempt + 1} of {self.max_attempts}, with the rules as they are now",
                attempt=ctx.attempt + 1,
            )
            self.save_steps()
            return True
        why = (
            f"retries exhausted after {counted(ctx.attempt, 'attempt')}"
            if diagnosed
            else "no diagnosis: not retried"
        )
        self.record(
            "give_up",
            f"{why}; {_named(run.event_ids, 'event')} and {_named(run.error_ids, 'error')} "
            f"stay open, so the gate holds {run.video_id}/{run.stage} until they are resolved",
            attempt=ctx.attempt,
        )
        self.save_steps()
        run.outcome = "failed"
        return False

    # -- diagnose -----------------------------------------------------------------------------
    def diagnose(self, failure: Failure) -> Diagnosis | None:
        try:
            found = self.diagnoser(failure)
        except Exception as e:  # a diagnoser (an LLM call) failing must not hide the failure
            log.warning(
                "%s/%s: the diagnoser failed: %s: %s",
                failure.video_id,
                failure.stage,
                type(e).__name__,
                e,
            )
            self.record(
                "diagnose",
                f"the diagnoser failed ({type(e).__name__}: {e}): no diagnosis",
                attempt=failure.attempt,
                diagnoser_error=describe(e),
            )
            return None
        if found is not None and not isinstance(found, Diagnosis):
            raise InvalidInputError(
                f"a diagnoser must return a Diagnosis or None, got {type(found).__name__}"
            )
        skipped = {"history_skipped": list(failure.notes)} if failure.notes else {}
        notes = "".join(f" ({note})" for note in failure.notes)
        if found is None:
            why = (
                "no diagnosis: every fix in history failed and no diagnoser knew better"
                if failure.notes
                else "no diagnosis: this failure was never resolved before and no diagnoser knew it"
            )
            self.record("diagnose", why + notes, attempt=failure.attempt, **skipped)
        else:
            source = found.source + (f" {found.reference}" if found.reference else "")
            self.record(
                "diagnose",
                f"from {source}: root cause: {found.root_cause or '-'}; fix: {found.fix or '-'}"
                + notes,
                attempt=failure.attempt,
                diagnosis=found.to_dict(),
                **skipped,
            )
        return found

    # -- learn + apply ------------------------------------------------------------------------
    def learn(self, failure: Failure) -> bool:
        """Turn a failure into a learning event (and a rule); whether it was diagnosed."""
        run, store = self.run, self.store
        fp, entry, attempt = failure.fingerprint, failure.error, failure.attempt
        seen = self.learned.get(fp)
        if seen is None and self.learned:  # one pattern under two keys, merged since?
            target = store.resolve_pattern(fp)
            seen = next(
                (v for k, v in self.learned.items() if store.resolve_pattern(k) == target), None
            )
        if seen is not None:  # the same failure again in this run: its event holds the fix
            link_to_event(entry.id, seen.event_id, store=store)
            self.error_events[entry.id] = seen.event_id
            self.record(
                "learn",
                f"same failure as attempt {seen.attempt}: error linked to event "
                f"{seen.event_id}, whose rule is already applied",
                attempt=attempt,
                event_id=seen.event_id,
                error_id=entry.id,
            )
            return seen.diagnosed

        diagnosis = self.diagnose(failure)
        if diagnosis is not None:
            run.diagnoses.append(diagnosis)
        event = create_event(
            run_id=run.run_id,
            severity=diagnosis.severity if diagnosis else "FAIL",
            component=run.stage,
            symptom=failure.symptom,
            root_cause=diagnosis.root_cause if diagnosis else "",
            fix_applied=diagnosis.fix if diagnosis else "",
            video_id=run.video_id,
            # Only a diagnosed failure becomes a rule: "Avoid: X" without a fix teaches nothing.
            agent=run.agent if diagnosis else None,
            source_error_id=entry.id,
            store=store,
            idempotency_key=loop_key(run, attempt, "event"),
        )
        link_to_event(entry.id, event.event_id, store=store)
        run.event_ids.append(event.event_id)
        self.error_events[entry.id] = event.event_id
        item = _Learned(
            event.event_id,
            attempt,
            diagnosis.root_cause if diagnosis else "",
            diagnosis.fix if diagnosis else "",
            diagnosed=diagnosis is not None,
        )
        self.learned[fp] = self.learned_by_event[event.event_id] = item
        if diagnosis is None:
            self.record(
                "learn",
                f"open event {event.event_id} ({event.severity}) records the failure for a "
                "person to diagnose",
                attempt=attempt,
                event_id=event.event_id,
                error_id=entry.id,
            )
            return False
        self.record(
            "learn",
            f"event {event.event_id} ({event.severity}) from error {entry.id}",
            attempt=attempt,
            event_id=event.event_id,
            error_id=entry.id,
        )
        self.apply(event)
        return True

    def apply(self, event: LearningEvent) -> None:
        run = self.run
        attempt = run.attempts
        if event.rule_id and run.agent:
            run.rule_ids.append(event.rule_id)
            self.learned_rules.add(event.rule_id)
            memory = load_active_memory(run.agent, store=self.store)
            rule = next((r for r in memory.rules if r.rule_id == event.rule_id), None)
            revised = (
                rule is not None
                and bool(rule.revisions)
                and (rule.revisions[-1].get("source_event_id") == event.event_id)
            )
            if rule is not None and revised:
                # Its text was losing and this diagnosis differs: the rule follows the evidence.
                detail = (
                    f"rule {rule.rule_id} revised in {run.agent}'s memory "
                    f"({rule.revisions[-1].get('reason')}), now {rule.applied_count}×: "
                    f"{rule.rule}"
                )
            elif rule is not None and rule.source_event_id != event.event_id:
                # The same failure was learned before: the existing rule was applied again.
                detail = (
                    f"rule {rule.rule_id} (learned from {rule.source_event_id}) applied again in "
                    f"{run.agent}'s memory, now {rule.applied_count}×: {rule.rule}"
                )
            else:
                detail = (
                    f"new rule {event.rule_id} active in {run.agent}'s memory: "
                    f"{rule.rule if rule else event.promotion_rule}"
                )
            conflicts = event.rule_conflicts_with
            if conflicts:
                detail += (
                    f" — conflicts with {_named(conflicts, 'active rule')}: only one of each "
                    "pair is delivered until a person resolves it (rules resolve-conflict)"
                )
            self.record(
                "apply",
                detail,
                attempt=attempt,
                rule_id=event.rule_id,
            )
        elif run.agent is None:
            self.record(
                "apply",
                f"stage {run.stage!r} has no agent: the fix is recorded on the event only",
                attempt=attempt,
            )
        else:
            problems = "; ".join(f"{p['step']}: {p['message']}" for p in event.loop_errors)
            self.record("apply", f"the rule could not be applied ({problems})", attempt=attempt)

    # -- success ------------------------------------------------------------------------------
    def succeed(self, ctx: StageContext, value: Any) -> None:
        """Record the success; verify the run's events and resolve its errors."""
        run, attempt = self.run, ctx.attempt
        run.value = value
        run.outcome = "succeeded"
        self.record(
            "succeed", f"attempt {attempt} of {self.max_attempts} succeeded", attempt=attempt
        )
        try:
            self.count_attempt(ctx)
        except (LearningError, OSError) as e:
            log.warning(
                "%s/%s succeeded, but the success could not be counted on its rules: %s",
                run.video_id,
                run.stage,
                e,
            )
            self.record(
                "count",
                f"the stage succeeded, but its rules' counters could not be updated: {e}",
                attempt=attempt,
                count_error=describe(e),
            )
        if not run.event_ids:
            return
        try:
            self._verify(ctx)
        except (LearningError, OSError) as e:
            # The stage's work is done and must not be lost to bookkeeping: say so, loudly.
            log.warning(
                "%s/%s succeeded, but its learning events could not be verified: %s",
                run.video_id,
                run.stage,
                e,
            )
            self.record(
                "verify",
                f"the stage succeeded, but its events could not be verified: {e}",
                attempt=attempt,
                verify_error=describe(e),
            )

    def _verify(self, ctx: StageContext) -> None:
        run, store, attempt = self.run, self.store, ctx.attempt
        for error_id, event_id in self.error_events.items():
            item = self.learned_by_event[event_id]
            # Every error of a run that goes on to succeed was diagnosed (an undiagnosed failure
            # ends the run), so its event holds the root cause and fix it is resolved with.
            if item.diagnosed:
                resolve_error(error_id, item.root_cause, item.fix, cascade=False, store=store)
        rules = ", ".join(r.rule_id for r in ctx.rules) or "no rules"
        verification = (
            f"closed loop: {run.stage} of {run.video_id} succeeded on attempt {attempt} of "
            f"{self.max_attempts} (run {run.run_id}) with {rules} delivered to "
            f"{run.agent or 'no agent'}"
        )
        # Recorded before the events are written, so their record ends with it.
        self.record(
            "verify",
            f"{_named(run.event_ids, 'event')} verified; {_named(run.error_ids, 'error')} resolved",
            attempt=attempt,
            event_ids=list(run.event_ids),
            error_ids=list(run.error_ids),
        )
        # A retry's success is evidence, not proof (a transient failure goes away whatever the
        # fix): recorded as such, so later recurrences while delivered can overturn it.
        self.save_steps(status="verified", verification=verification, verified_by="retry")


@checked
def run_stage(
    video_id: str,
    stage: str,
    fn: Callable[[StageContext], T],
    *,
    retries: int = 1,
    diagnose: Diagnoser | None = None,
    agent: str | None = None,
    run_id: str | None = None,
    on_blocked: OnBlocked = "raise",
    on_failure: OnFailure = "raise",
    store: Store | None = None,
    progress: Callable[[LoopStep], None] | None = None,
    ignore: Ignore | None = None,
    task: str | None = None,
) -> StageRun:
    """Run ``fn`` as ``stage`` of ``video_id`` through the closed loop (see the module doc).

    ``retries``: attempts after the first (0: none). ``diagnose``: the diagnoser (default
    :func:`diagnose_from_history`). ``agent``: the agent whose rules the stage gets (default: the
    stage's agent in ``LEARNING_STAGE_AGENTS``). ``run_id``: the pipeline run id recorded on errors
    and events (default: a new one). What the loop records carries an idempotency key made of the
    run id, video, stage and attempt (:func:`loop_key`): a run replayed under its run id after a
    store call that raised returns what was recorded instead of recording it twice.
    ``on_blocked`` / ``on_failure``: ``"raise"`` (default) :class:`GateBlocked` / the last
    exception, or ``"return"`` the :class:`StageRun`. ``progress``: called with every
    :class:`LoopStep` as it happens. A ``stage`` no map knows (``LEARNING_STAGE_AGENTS``,
    ``LEARNING_STAGE_ALIASES``) is refused before anything runs or is written
    (:class:`InvalidInputError`, with a suggestion): the gate cannot judge it. ``ignore``:
    exception types (a type or a tuple) that are not failures of the stage to learn from: like a
    :class:`LearningError` raised inside ``fn``, they propagate at once, with nothing logged, no
    event and no rule. ``task``: the work item's description (the video's title, say): the
    agent's rules most relevant to it come right after the stage's own, and on a retry the rule
    learned from the failed attempt comes before everything (``render_rules``); why each rule
    was delivered or left out is recorded on the attempt's ``execute`` step (``selection``).

    Returns the :class:`StageRun`; its ``value`` is what ``fn`` returned.
    """
    store = store or get_store()
    validate_identifier(video_id, "video id")
    validate_identifier(stage, "stage")
    # The gate refuses a stage no map knows: refused here first, before anything is written.
    check_stage(stage, store.policies)
    _check_retries(retries)
    _choice(on_blocked, "on_blocked")
    _choice(on_failure, "on_failure")
    passthrough = _ignored(ignore)
    if agent is not None:
        validate_identifier(agent, "agent")
    else:
        agent = agent_for_stage(stage, store.policies)
    if run_id is None:
        run_id = f"{video_id}-{stage}-{compact_ts(utcnow())}-{secrets.token_hex(3)}"
    run = StageRun(video_id=video_id, stage=stage, agent=agent, run_id=run_id)
    loop = _Loop(
        run,
        store,
        retries=retries,
        diagnoser=diagnose or diagnose_from_history,
        progress=progress,
        task=task,
    )
    with stage_span(
        video_id, stage, agent=agent, run_id=run_id, max_attempts=loop.max_attempts
    ) as span:
        try:
            return _drive(
                loop,
                fn,
                passthrough=passthrough,
                on_blocked=on_blocked,
                on_failure=on_failure,
                span=span,
            )
        finally:
            span.set(
                attempts=run.attempts,
                rule_ids=run.delivered_rule_ids,
                learned_rule_ids=run.rule_ids,
                event_ids=run.event_ids,
                error_ids=run.error_ids,
            )


def _drive(
    loop: _Loop,
    fn: Callable[[StageContext], T],
    *,
    passthrough: tuple[type[BaseException], ...],
    on_blocked: OnBlocked,
    on_failure: OnFailure,
    span: SpanHandle,
) -> StageRun:
    """The gate, then the attempts, each in its span (``_telemetry``: no-ops without
    OpenTelemetry)."""
    run = loop.run
    allowed = loop.gate()
    gate_event(span, run.gate)
    if not allowed:
        span.outcome("blocked")
        if on_blocked == "raise":
            assert run.gate is not None
            raise GateBlocked(run.gate)
        return run
    previous: BaseException | None = None
    for attempt in range(1, loop.max_attempts + 1):
        run.attempts = attempt
        with attempt_span(span, attempt) as step:
            ctx = loop.context(attempt, previous)
            step.set(rule_ids=[r.rule_id for r in ctx.rules], rules_sha256=ctx.rules_sha256)
            try:
                value = fn(ctx)
            except passthrough as exc:
                log.info(
                    "%s/%s attempt %d: %s is not learned from (%s): propagated",
                    run.video_id,
                    run.stage,
                    attempt,
                    type(exc).__name__,
                    "the library's own error" if isinstance(exc, LearningError) else "ignore=",
                )
                raise
            except Exception as exc:
                previous = exc
                step.outcome("failed", error=exc)
                retry = loop.fail(ctx, exc)
                if loop.last_error is not None:
                    entry = loop.last_error
                    step.set(
                        error_id=entry.id,
                        pattern_key=entry.fingerprint,
                        event_id=loop.error_events.get(entry.id),
                    )
                if retry:
                    continue
                span.outcome("failed", error=exc)
                if on_failure == "raise":
                    raise
                return run
            loop.succeed(ctx, value)
            step.outcome("succeeded")
            span.outcome("succeeded")
            return run
    raise AssertionError("unreachable: the last attempt returns or raises")


# -- the decorator ------------------------------------------------------------------------------
class LearningStage(Generic[P, T]):
    """A stage function wrapped in the closed loop (made by :func:`learning_stage`).

    Calling it with a video id (then the function's own arguments) runs the loop and returns
    what the function returned, or raises :class:`GateBlocked` / the last exception.
    :meth:`run` returns the whole :class:`StageRun` instead, without raising for a blocked or
    failed stage.
    """

    def __init__(
        self,
        fn: Callable[Concatenate[StageContext, P], T],
        stage: str,
        *,
        retries: int,
        diagnose: Diagnoser | None,
        agent: str | None,
        store: Store | None,
        progress: Callable[[LoopStep], None] | None,
        ignore: Ignore | None = None,
        task: TaskSource | None = None,
    ) -> None:
        _ignored(ignore)
        self.fn = fn
        self.stage = validate_identifier(stage, "stage")
        self.retries = retries
        self.diagnose = diagnose
        self.agent = agent
        self.store = store
        self.progress = progress
        self.ignore = ignore
        self.task = task
        functools.update_wrapper(self, fn)

    def _run(
        self, video_id: str, mode: Literal["raise", "return"], *args: P.args, **kwargs: P.kwargs
    ) -> StageRun:
        def call(ctx: StageContext) -> T:
            return self.fn(ctx, *args, **kwargs)

        return run_stage(
            video_id,
            self.stage,
            call,
            retries=self.retries,
            diagnose=self.diagnose,
            agent=self.agent,
            on_blocked=mode,
            on_failure=mode,
            store=self.store,
            progress=self.progress,
            ignore=self.ignore,
            task=self.task(video_id) if callable(self.task) else self.task,
        )

    def __call__(self, video_id: str, *args: P.args, **kwargs: P.kwargs) -> T:
        result: T = self._run(video_id, "raise", *args, **kwargs).value
        return result

    def run(self, video_id: str, *args: P.args, **kwargs: P.kwargs) -> StageRun:
        """Run the loop and return the :class:`StageRun` (blocked and failed runs included)."""
        return self._run(video_id, "return", *args, **kwargs)

    def __repr__(self) -> str:
        return f"<learning_stage {self.stage!r} {getattr(self.fn, '__qualname__', self.fn)!r}>"


@checked
def learning_stage(
    stage: str,
    *,
    retries: int = 1,
    diagnose: Diagnoser | None = None,
    agent: str | None = None,
    store: Store | None = None,
    progress: Callable[[LoopStep], None] | None = None,
    ignore: Ignore | None = None,
    task: TaskSource | None = None,
) -> Callable[[Callable[Concatenate[StageContext, P], T]], LearningStage[P, T]]:
    """Decorate a stage function ``fn(ctx, *args, **kwargs)`` so that calling it as
    ``fn(video_id, *args, **kwargs)`` runs it through the closed loop (see :func:`run_stage`
    for the options)::

        @learning_stage("assets", retries=2)
        def make_assets(ctx: StageContext, product: str) -> list[str]:
            prompt = BASE_PROMPT + ctx.rendered_rules
            ...

        images = make_assets("v042", "B0ABC")  # or make_assets.run("v042", "B0ABC") → StageRun

    ``task``: the work item's description the rules are ranked against (see :func:`run_stage`),
    or a function of the video id returning it (``task=titles.get``).
    """
    _check_retries(retries)
    _ignored(ignore)

    def wrap(fn: Callable[Concatenate[StageContext, P], T]) -> LearningStage[P, T]:
        return LearningStage(
            fn,
            stage,
            retries=retries,
            diagnose=diagnose,
            agent=agent,
            store=store,
            progress=progress,
            ignore=ignore,
            task=task,
        )

    return wrap
