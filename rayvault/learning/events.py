"""Learning events and the immediate learning loop.

``create_event`` is the loop's heart. In one call it:

1. keeps the event safe (``store.pending_event``: in the file store a pending file of its
   own, not a version in the log) — after this the event is safe, whatever happens next;
2. writes the skill-graph node (``record_learning``);
3. applies the rule to the agent's memory when ``agent`` is given, and marks the event applied.

Steps 2 and 3 are optional for the event's safety: if one fails, the event stays persisted, the
failure is logged and recorded on the event (``loop_errors``), never swallowed. A BLOCKER, or a
FAIL whose fingerprint was seen before, also gets a suggested SOUL addition (``soul_update``). A
failure back after every earlier occurrence of its pattern was resolved records
``regression_of`` and ``regressed_after_seconds`` (:mod:`rayvault.learning.regressions`).

Status: an event created with verification text is ``verified`` at once; one without stays
unresolved (``open``, then ``applied`` once its rule is in memory) until someone verifies the fix.
How it was verified is recorded (``verified_by``, an extra field written only when set):
``person`` for the API and the CLI (``create_event`` with a verification, ``update_event``,
``resolve_event``, bulk resolution, an error resolved with it), ``retry`` for ``run_stage``'s
later attempt succeeding (``update_event(…, verified_by="retry")``). A verification reaches the
event's rule too (``memory.record_verification``): it verifies the rule's text, or — a
differing diagnosis — revises the rule (a person) or is kept as an alternative (a retry).

4. persists the event's final version (global index, and the per-video file when a video id is
   given): one version per event whose loop ran.

A writer killed between steps 1 and 4 leaves its pending version: the next writer of the event
log appends it (``open`` with an agent, no ``rule_id`` and no ``loop_errors``, though its rule may
already be in memory), and the next touch of the event (``get_event``, ``update_event``,
``doctor --repair``) completes it (:func:`complete_event`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from rayvault.learning._assign import group_failure
from rayvault.learning._grouping import Grouping
from rayvault.learning._idempotency import lock_name, validate_key
from rayvault.learning._ids import new_event_id, validate_identifier
from rayvault.learning._time import format_ts, utcnow
from rayvault.learning._validate import cap_deep, checked, keep_capped
from rayvault.learning.exceptions import EventNotFoundError, InvalidInputError, describe
from rayvault.learning.memory import apply_event, follow_event, record_verification, rule_text
from rayvault.learning.models import (
    SEVERITIES,
    STATUSES,
    VERIFIED_BY,
    LearningEvent,
    normalize_severity,
)
from rayvault.learning.regressions import find_regression
from rayvault.learning.skill_graph import record_learning
from rayvault.learning.soul import suggest_soul_update
from rayvault.learning.stages import fold_stage, note_unknown_component, stage_names
from rayvault.learning.store import EventQuery, Store, get_store
from rayvault.policies import Policies

log = logging.getLogger("rayvault.learning")


def _severity(value: object) -> str:
    try:
        return normalize_severity(value)
    except ValueError as e:
        raise InvalidInputError(str(e)) from None


def _text(value: object, name: str, *, required: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidInputError(f"{name} must not be empty")
    return value.strip()


@checked
def create_event(
    *,
    run_id: str,
    severity: str,
    component: str,
    symptom: str,
    root_cause: str = "",
    fix_applied: str = "",
    verification: str = "",
    video_id: str | None = None,
    agent: str | None = None,
    source_error_id: str | None = None,
    store: Store | None = None,
    idempotency_key: str | None = None,
) -> LearningEvent:
    """Record a failure as a learning event and learn from it immediately (see module doc).

    Returns the event as stored last (with ``rule_id``, ``skill_node``, ``status``). With an
    ``idempotency_key`` already used by an event, returns that event as stored and creates
    nothing (see :mod:`rayvault.learning._idempotency`): a caller may retry a call that raised.
    """
    store = store or get_store()
    sev = _severity(severity)
    component = validate_identifier(_text(component, "component", required=True), "component")
    symptom = _text(symptom, "symptom", required=True)
    if video_id:
        validate_identifier(video_id, "video id")
    if agent:
        validate_identifier(agent, "agent")
    if source_error_id:
        validate_identifier(source_error_id, "error id")
    texts = [
        _text(run_id, "run_id"),
        _text(root_cause, "root_cause"),
        _text(fix_applied, "fix_applied"),
        _text(verification, "verification"),
    ]
    key = validate_key(idempotency_key)
    # Everything is valid: only now may a text too long be kept as an attachment.
    policies = store.policies  # loaded once: each load reads the environment (~16 µs)
    cap = policies.LEARNING_MAX_TEXT_CHARS
    symptom = keep_capped(store, symptom, cap)
    run_id, root_cause, fix_applied, verification = (keep_capped(store, t, cap) for t in texts)
    args: dict[str, Any] = {
        "run_id": run_id,
        "root_cause": root_cause,
        "fix_applied": fix_applied,
        "verification": verification,
        "video_id": video_id,
        "agent": agent,
        "source_error_id": source_error_id,
        "policies": policies,
    }
    if key is None:
        return _new_event(store, sev, component, symptom, **args)
    with store.exclusive(lock_name("event", key)):
        found = store.query_events(EventQuery(idempotency_key=key, limit=1))
        if found:
            log.info("idempotency key %r: event %s already created", key, found[0].event_id)
            return found[0]
        return _new_event(store, sev, component, symptom, **args, idempotency_key=key)


def _new_event(
    store: Store,
    sev: str,
    component: str,
    symptom: str,
    *,
    run_id: str,
    root_cause: str,
    fix_applied: str,
    verification: str,
    video_id: str | None,
    agent: str | None,
    source_error_id: str | None,
    policies: Policies,
    idempotency_key: str | None = None,
) -> LearningEvent:
    note_unknown_component(component, policies, "create_event")
    now = utcnow()
    stage = fold_stage(component, policies)
    fp = group_failure(store, stage, symptom)
    # Stored only when given (extra fields: records without them keep their shape).
    extra: dict[str, Any] = {"fingerprint_version": fp.version}
    if verification:
        extra["verified_by"] = "person"
    if idempotency_key:
        extra["idempotency_key"] = idempotency_key
    # Back after every earlier occurrence was resolved: ``regression_of`` (regressions.py).
    extra.update(find_regression(store, fp.key, now, stage_names(stage, policies)))
    event = LearningEvent(
        event_id=new_event_id(now),
        run_id=run_id,
        timestamp=now,
        severity=sev,
        component=component,
        symptom=symptom,
        root_cause=root_cause,
        fix_applied=fix_applied,
        verification=verification,
        status="verified" if verification else "open",
        video_id=video_id or None,
        source_error_id=source_error_id or None,
        agent=agent or None,
        fingerprint=fp.key,
        pattern=fp.template,
        resolved_at=now if verification else None,
        **extra,
    )
    event.promotion_rule = rule_text(event)
    if sev == "BLOCKER" or (
        sev == "FAIL" and store.count_events(EventQuery(fingerprint=fp.key)) > 0
    ):
        event.soul_update = suggest_soul_update(event, event.promotion_rule)

    # (a) From here on the event is safe: while the loop runs, the store keeps it pending (file
    # store: a file of its own, appended to the log by the next writer should this one stop);
    # the final version, written once the loop is done, is its one version in the log.
    with store.pending_event(event):
        final = _run_loop(event, agent, store)
        store.append_events([final])
    return final


def _run_loop(event: LearningEvent, agent: str | None, store: Store) -> LearningEvent:
    """Steps (b) and (c) of the immediate loop: the event's final version, with what each step
    did or why it failed."""
    changes: dict[str, Any] = {}
    loop_errors: list[dict[str, Any]] = []
    try:  # (b)
        changes["skill_node"] = record_learning(event, store=store)
    except Exception as e:  # an optional step: record and log the failure, keep the event
        log.warning("event %s: skill-graph node not written: %s", event.event_id, e)
        loop_errors.append({"step": "skill_graph", **describe(e), "at": format_ts(utcnow())})
    if agent:  # (c)
        try:
            result = apply_event(event, agent, store=store)
        except Exception as e:
            log.warning("event %s: rule not applied to %s: %s", event.event_id, agent, e)
            loop_errors.append({"step": "apply", **describe(e), "at": format_ts(utcnow())})
        else:
            changes["rule_id"] = result.rule.rule_id
            changes["obsolete_rules_removed"] = [r.rule_id for r in result.evicted]
            if result.conflicts:  # an extra field: events without conflicts keep their shape
                changes["rule_conflicts_with"] = list(result.conflicts)
            if event.status == "open":
                changes["status"] = "applied"
    if loop_errors:
        changes["loop_errors"] = loop_errors
    changes["updated"] = utcnow()
    return event.model_copy(update=changes)


#: An event whose loop is incomplete this long after it was created has lost its writer (a
#: ``create_event`` takes milliseconds; a writer may wait up to a minute for a lock).
INCOMPLETE_GRACE = timedelta(minutes=5)


def loop_incomplete(event: LearningEvent) -> bool:
    """True when ``create_event`` did not finish this event: it names an agent, its rule is not
    recorded, and no step failed."""
    return (
        event.status == "open"
        and bool(event.agent)
        and not event.rule_id
        and not event.loop_errors
        and event.updated is None
    )


def rule_in_memory(event: LearningEvent, store: Store) -> str | None:
    """The id of the agent's rule that came from (or was last applied by) ``event``."""
    assert event.agent
    for rule in store.load_memory(event.agent).rules:
        if event.event_id in (rule.source_event_id, rule.last_event_id):
            return rule.rule_id
    return None


def complete_event(
    event: LearningEvent, *, store: Store, force: bool = False
) -> LearningEvent | None:
    """Finish the loop of an event ``create_event`` left incomplete (see the module doc): record
    the rule already in memory, or, once the event is older than ``INCOMPLETE_GRACE`` (or with
    ``force``), apply it. None when there is nothing to do (yet)."""
    if not loop_incomplete(event):
        return None
    assert event.agent
    rule_id = rule_in_memory(event, store)
    how = "its rule was in memory"
    if rule_id is None:
        if not force and utcnow() - event.timestamp < INCOMPLETE_GRACE:
            return None  # perhaps its writer is still at work
        rule_id = apply_event(event, event.agent, store=store).rule.rule_id
        how = "its rule applied now"

    def change(current: LearningEvent) -> LearningEvent:
        if not loop_incomplete(current):
            return current  # completed meanwhile
        steps = [
            *current.loop_steps,
            {
                "step": "complete",
                "detail": f"completed after its writer stopped: {how}",
                "at": format_ts(utcnow()),
            },
        ]
        return current.model_copy(
            update={
                "rule_id": rule_id,
                "status": "applied",
                "loop_steps": steps,
                "updated": utcnow(),
            }
        )

    log.info("event %s: %s (its writer stopped before recording it)", event.event_id, how)
    return store.update_event(event.event_id, change)


@checked
def get_event(event_id: str, *, store: Store | None = None) -> LearningEvent:
    """The latest version of an event; :class:`EventNotFoundError` when there is none."""
    store = store or get_store()
    event = store.get_event(event_id)
    if event is None:
        raise EventNotFoundError(event_id)
    if loop_incomplete(event) and not getattr(store, "is_read_only", False):
        return complete_event(event, store=store) or event
    return event


@checked
def event_versions(event_id: str, *, store: Store | None = None) -> list[LearningEvent]:
    """Every version of an event the store still holds, oldest first: the first as recorded,
    then one per change (``update_event``, ``resolve_event``, …). [] for an unknown id;
    :class:`InvalidIdentifierError` for an unsafe one.

    Compaction (``rayvault-learn events compact``) keeps only the latest version of each event,
    so the versions it dropped are not returned. On the file store this scans the event log (a
    cold path: an event page, a CLI command).
    """
    validate_identifier(event_id, "event id")
    store = store or get_store()
    return store.event_versions(event_id)


#: Left out of :func:`changed_fields`: every new version sets it.
_UNCOMPARED = frozenset({"updated"})


def changed_fields(versions: Sequence[LearningEvent]) -> list[list[str]]:
    """For each version (as :func:`event_versions` returns them, oldest first), the fields whose
    values differ from the version before it, sorted ([] for the first); ``updated`` is left out
    (every version sets it). Used by the event page and ``events get --versions``."""
    result: list[list[str]] = []
    before: dict[str, Any] | None = None
    for version in versions:
        data = version.model_dump(mode="json")
        if before is None:
            result.append([])
        else:
            keys = data.keys() | before.keys()
            result.append(
                sorted(k for k in keys if k not in _UNCOMPARED and data.get(k) != before.get(k))
            )
        before = data
    return result


def _choice(value: str | None, allowed: tuple[str, ...], name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    normal = value.upper() if name == "severity" else value.lower()
    if normal not in allowed:
        raise InvalidInputError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
    return (normal,)


def build_query(
    store: Store,
    *,
    video_id: str | None = None,
    component: str | None = None,
    severity: str | None = None,
    status: str | None = None,
    agent: str | None = None,
    **more: Any,
) -> EventQuery:
    """An :class:`EventQuery` from user-level filters. ``component`` may be a stage or a step
    name; every name that folds into the same stage matches."""
    return EventQuery(
        video_id=video_id,
        components=stage_names(component, store.policies) if component else None,
        severities=_choice(severity, SEVERITIES, "severity"),
        statuses=_choice(status, STATUSES, "status"),
        agent=agent,
        **more,
    )


@checked
def list_events(
    *,
    video_id: str | None = None,
    component: str | None = None,
    severity: str | None = None,
    status: str | None = None,
    agent: str | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    store: Store | None = None,
) -> list[LearningEvent]:
    """The latest version of every event matching all the given filters, oldest first."""
    store = store or get_store()
    query = build_query(
        store,
        video_id=video_id,
        component=component,
        severity=severity,
        status=status,
        agent=agent,
        limit=limit,
        newest_first=newest_first,
    )
    return store.query_events(query)


@checked
def update_event(
    event_id: str,
    *,
    status: str | None = None,
    verification: str | None = None,
    root_cause: str | None = None,
    fix_applied: str | None = None,
    loop_steps: Sequence[Mapping[str, Any]] | None = None,
    verified_by: str | None = None,
    component: str | None = None,
    store: Store | None = None,
) -> LearningEvent:
    """Append a new version of an event with the given fields changed.

    ``component`` corrects where the failure happened (e.g. an event ``migrate`` filed under
    ``unknown``); checked as :func:`create_event` checks it. When it moves the event to another
    stage, the failure is grouped again among that stage's patterns (a new ``fingerprint`` and
    ``pattern``), as if it had been recorded there. The rule learned from the event moves with
    it (its component and pattern become the event's: ``memory.follow_event``).

    ``loop_steps`` replaces the record of what the closed loop did (see
    :mod:`rayvault.learning.loop`). An event that becomes ``verified`` records how
    (``verified_by``: ``person`` unless told — ``run_stage`` says ``retry``), and its rule learns
    of it (``memory.record_verification``). ``verified_by`` is refused outside
    ``person``/``retry``/``later_runs``, or for an event that is not (or does not become)
    verified.
    """
    store = store or get_store()
    if verified_by is not None and verified_by not in VERIFIED_BY:
        raise InvalidInputError(
            f"verified_by must be one of {', '.join(VERIFIED_BY)} (got {verified_by!r})"
        )
    cap = store.policies.LEARNING_MAX_TEXT_CHARS
    current = store.get_event(event_id)
    if current is not None and loop_incomplete(current):
        complete_event(current, store=store)
    changes = _steps_change(loop_steps, cap)
    changes.update(
        _field_changes(
            status=status,
            verification=verification,
            root_cause=root_cause,
            fix_applied=fix_applied,
            component=component,
        )
    )
    if not changes and verified_by is None:
        raise InvalidInputError(
            "nothing to update: give a status, verification, root cause, fix, component or "
            "loop steps"
        )
    if verified_by is not None and changes.get("status", "verified") != "verified":
        raise InvalidInputError(
            f"verified_by says how a fix was verified: it needs status verified "
            f"(got {changes['status']!r})"
        )
    long_texts = [n for n, v in changes.items() if isinstance(v, str) and len(v) > cap]
    if long_texts:
        get_event(event_id, store=store)  # an unknown id keeps no attachment behind
        for name in long_texts:
            changes[name] = keep_capped(store, changes[name], cap)

    regrouped = _regroup_for(current, changes.get("component"), store)
    if regrouped is not None:
        changes.update(fingerprint=regrouped.key, pattern=regrouped.template)

    newly_verified: list[str] = []

    def change(current: LearningEvent) -> LearningEvent:
        now = utcnow()
        update = {**changes, "updated": now}
        new_status = update.get("status", current.status)
        if verified_by is not None and new_status != "verified":
            raise InvalidInputError(
                f"event {event_id} is {new_status}: verified_by needs status verified"
            )
        if new_status in ("verified", "archived") and current.resolved_at is None:
            update["resolved_at"] = now
        elif new_status in ("open", "applied"):
            update["resolved_at"] = None
        updated = current.model_copy(update=update)
        extra = updated.__pydantic_extra__
        assert extra is not None  # records keep unknown fields
        if regrouped is not None:
            extra["fingerprint_version"] = regrouped.version
        if new_status == "verified" and (current.status != "verified" or verified_by):
            how = verified_by or "person"
            if extra.get("verified_by") != how:
                newly_verified.append(how)
            extra["verified_by"] = how
        elif new_status != "verified":
            extra.pop("verified_by", None)
        return updated

    event = store.update_event(event_id, change)
    if current is not None and event.component != current.component:
        _moved_rule(event, store)
    if newly_verified:
        _verified_rule(event, newly_verified[-1], store)
    return event


def _steps_change(loop_steps: Sequence[Mapping[str, Any]] | None, cap: int) -> dict[str, Any]:
    """``{"loop_steps": …}`` when the steps are given (each capped), else nothing."""
    if loop_steps is None:
        return {}
    if isinstance(loop_steps, str | bytes) or not all(
        isinstance(step, Mapping) for step in loop_steps
    ):
        raise InvalidInputError("loop_steps must be a list of mappings")
    return {"loop_steps": [cap_deep(dict(step), cap) for step in loop_steps]}


def _field_changes(**given: str | None) -> dict[str, Any]:
    """The checked values of the fields :func:`update_event` was given (None: unchanged)."""
    changes: dict[str, Any] = {}
    for name, value in given.items():
        if value is None:
            continue
        if name == "status":
            changes[name] = _choice(value, STATUSES, "status")[0]  # type: ignore[index]
        elif name == "component":
            changes[name] = validate_identifier(_text(value, name, required=True), name)
        else:
            changes[name] = _text(value, name)
    return changes


def _regroup_for(
    current: LearningEvent | None, component: str | None, store: Store
) -> Grouping | None:
    """The grouping of ``current``'s symptom among the patterns of ``component``'s stage, when
    the new component moves the event to another stage; else None."""
    if current is None or component is None:
        return None
    policies = store.policies
    note_unknown_component(component, policies, "update_event")
    stage = fold_stage(component, policies)
    if stage == fold_stage(current.component, policies):
        return None
    return group_failure(store, stage, current.symptom)


def _moved_rule(event: LearningEvent, store: Store) -> None:
    """The event's rule follows it to its new component (``memory.follow_event``); a failure
    there is logged, never raised: the event's new version is written and stays."""
    try:
        follow_event(event, store=store)
    except Exception as e:
        log.warning(
            "event %s: its rule did not follow it to %s: %s", event.event_id, event.component, e
        )


def _verified_rule(event: LearningEvent, how: str, store: Store) -> None:
    """Tell the event's rule how its fix was verified; a failure there is logged, never
    raised: the event's verification is written and stays."""
    try:
        record_verification(event, how, store=store)
    except Exception as e:
        log.warning("event %s: its rule did not record the verification: %s", event.event_id, e)


def record_rule_verifications(events: Sequence[LearningEvent], how: str, *, store: Store) -> None:
    """:func:`_verified_rule` for each verified event with a rule (bulk resolution)."""
    for event in events:
        if event.status == "verified" and event.agent and event.rule_id:
            _verified_rule(event, how, store)


@checked
def resolve_event(
    event_id: str,
    verification: str,
    *,
    verified_by: str = "person",
    store: Store | None = None,
) -> LearningEvent:
    """Mark an event's fix as verified (``status: verified``), saying how it was checked
    (``verified_by``: ``person`` unless told); its unresolved error-log entries are resolved
    with it (many at once: :func:`rayvault.learning.resolution.resolve_events`)."""
    from rayvault.learning.resolution import resolve_linked_errors

    store = store or get_store()
    text = _text(verification, "verification", required=True)
    # The errors first: should the event's write fail, resolving it again finishes the job.
    resolve_linked_errors([get_event(event_id, store=store)], text, store=store)
    if verified_by not in VERIFIED_BY:
        raise InvalidInputError(
            f"verified_by must be one of {', '.join(VERIFIED_BY)} (got {verified_by!r})"
        )
    return update_event(
        event_id, status="verified", verification=text, verified_by=verified_by, store=store
    )


@checked
def event_stats(
    *,
    video_id: str | None = None,
    component: str | None = None,
    severity: str | None = None,
    status: str | None = None,
    agent: str | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """Totals of the events by severity, status, component and agent, and how many are open;
    the filters are those of :func:`list_events`."""
    store = store or get_store()
    query = build_query(
        store,
        video_id=video_id,
        component=component,
        severity=severity,
        status=status,
        agent=agent,
    )
    facets = store.event_facets(query)
    total = sum(facets["severity"].values())
    unresolved = store.count_events(replace(query, unresolved=True))
    return {
        "total": total,
        "unresolved": unresolved,
        "by_severity": {s: facets["severity"].get(s, 0) for s in SEVERITIES},
        "by_status": {s: facets["status"].get(s, 0) for s in STATUSES},
        "by_component": facets["component"],
        "by_agent": facets["agent"],
    }
