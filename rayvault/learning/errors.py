"""The raw error log (``data/error_log.json``) and its bridge to learning events.

Every stage failure lands here first (``log_error``), with its fingerprint computed once at write
time, so recurring failures group together however their numbers and ids differ. A resolved error
can be promoted to a formal learning event in one call (``promote_to_learning``): the error is
resolved and the event created (with ``source_error_id``) together, and promoting again returns
the same event instead of creating a second one.

The log follows the storage rules of the event index: locked appends in place, new versions of an
entry appended (the last one wins), a corrupt file refused by name and left untouched.
"""

from __future__ import annotations

import traceback
from typing import Any

import orjson

from rayvault.learning._assign import group_failure
from rayvault.learning._grouping import failure_text
from rayvault.learning._idempotency import lock_name, validate_key
from rayvault.learning._ids import new_error_id, validate_identifier
from rayvault.learning._time import utcnow
from rayvault.learning._validate import cap_text, checked, keep_capped
from rayvault.learning.events import create_event, get_event
from rayvault.learning.exceptions import (
    ErrorEntryNotFoundError,
    InvalidInputError,
    LearningError,
)
from rayvault.learning.models import (
    ErrorEntry,
    ErrorPattern,
    ErrorResolution,
    LearningEvent,
    Lesson,
    Record,
)
from rayvault.learning.patterns import fingerprint
from rayvault.learning.stages import fold_stage, note_unknown_component, stage_names
from rayvault.learning.store import EventQuery, Store, get_store
from rayvault.learning.store.base import ErrorQuery

#: Longest symptom an error becomes when promoted to an event: a failure's whole final message
#: (a traceback's exception with all its lines), so the event is grouped with the error.
MAX_SYMPTOM = 2000


class PromotionResult(Record):
    """What ``promote_to_learning`` did: the resolved error, the event, and whether the event
    was created now (False when the error had been promoted before)."""

    error: ErrorEntry
    event: LearningEvent
    created: bool


def _error_text(error: object) -> str:
    if isinstance(error, BaseException):
        text = "".join(traceback.format_exception(error)).strip()
        # Text the library derives itself (a file name read with surrogateescape, say) is made
        # storable; text the caller gives is refused instead (see _validate).
        text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    elif isinstance(error, str):
        text = error.strip()
    else:
        raise InvalidInputError(f"error must be text or an exception, got {type(error).__name__}")
    if not text:
        raise InvalidInputError("error text must not be empty")
    return text


@checked
def log_error(
    video_id: str | None,
    stage: str,
    error: str | BaseException,
    *,
    exit_code: int = 1,
    context: dict[str, Any] | None = None,
    store: Store | None = None,
    idempotency_key: str | None = None,
) -> ErrorEntry:
    """Record a stage failure in the error log; returns the entry (with its fingerprint).

    With an ``idempotency_key`` already used by an entry, returns that entry as stored and logs
    nothing (see :mod:`rayvault.learning._idempotency`)."""
    store = store or get_store()
    if video_id:
        validate_identifier(video_id, "video id")
    validate_identifier(stage, "stage")
    policies = store.policies  # loaded once: each load reads the environment (~16 µs)
    limit = policies.LEARNING_MAX_ERROR_TEXT_CHARS
    text = _error_text(error)
    if context is not None:
        if not isinstance(context, dict):
            raise InvalidInputError("context must be a mapping")
        try:
            size = len(orjson.dumps(context))
        except TypeError as e:
            raise InvalidInputError(f"context must be JSON-serialisable: {e}") from e
        if size > limit:
            raise InvalidInputError(
                f"context is {size} bytes as JSON, more than LEARNING_MAX_ERROR_TEXT_CHARS "
                f"({limit}): keep large output in a file and put its path in the context"
            )
    key = validate_key(idempotency_key)
    note_unknown_component(stage, policies, "log_error")
    # At most LEARNING_MAX_ERROR_TEXT_CHARS: a longer text keeps its start and its end (a
    # traceback's failure line, the fingerprint's source), and its full text as an attachment.
    # Grouped by the whole text: a cut one would be grouped by the cut's marker line.
    failure = text
    text = keep_capped(store, text, limit, keep_tail=True)
    args: dict[str, Any] = {
        "failure": failure,
        "group": fold_stage(stage, policies),
        "video_id": video_id,
        "stage": stage,
        "text": text,
        "exit_code": exit_code,
        "context": context,
    }
    if key is None:
        return _new_entry(store, **args, idempotency_key=None)
    with store.exclusive(lock_name("error", key)):
        found = store.query_errors(ErrorQuery(idempotency_key=key, limit=1))
        if found:
            return found[0]
        return _new_entry(store, **args, idempotency_key=key)


def _new_entry(
    store: Store,
    *,
    failure: str,
    group: str,
    video_id: str | None,
    stage: str,
    text: str,
    exit_code: int,
    context: dict[str, Any] | None,
    idempotency_key: str | None,
) -> ErrorEntry:
    now = utcnow()
    grouping = group_failure(store, group, failure)
    # Stored only when given (extra fields: records without them keep their shape).
    extra: dict[str, Any] = {"fingerprint_version": grouping.version}
    if idempotency_key:
        extra["idempotency_key"] = idempotency_key
    entry = ErrorEntry(
        id=new_error_id(now),
        video_id=video_id or None,
        timestamp=now,
        stage=stage,
        exit_code=exit_code,
        error=text,
        context=context or {},
        resolved=False,
        resolution=None,
        fingerprint=grouping.key,
        pattern=grouping.template,
        **extra,
    )
    store.append_errors([entry])
    return entry


def error_symptom(entry: ErrorEntry) -> str:
    """The symptom an error becomes on its learning event: the failure's whole final message
    (a traceback's last exception, every line of it), so the event gets the error's pattern."""
    return (failure_text(entry.error).strip() or entry.error.strip())[:MAX_SYMPTOM]


@checked
def link_to_event(error_id: str, event_id: str, *, store: Store | None = None) -> ErrorEntry:
    """Record that ``event_id`` is the learning event of an error, without resolving it.

    A linked entry counts toward its pattern through the event (the gate's known-failures check
    counts it once, not twice); :func:`promote_to_learning` returns that event later.
    """
    validate_identifier(error_id, "error id")
    validate_identifier(event_id, "event id")
    return (store or get_store()).update_error(
        error_id, lambda e: e.model_copy(update={"learning_event_id": event_id})
    )


@checked
def get_error(error_id: str, *, store: Store | None = None) -> ErrorEntry:
    """The latest version of an error-log entry; :class:`ErrorEntryNotFoundError` if none."""
    entry = (store or get_store()).get_error(error_id)
    if entry is None:
        raise ErrorEntryNotFoundError(error_id)
    return entry


def _resolution(root_cause: str, fix: str, limit: int) -> ErrorResolution:
    if not isinstance(root_cause, str) or not isinstance(fix, str):
        raise InvalidInputError("root cause and fix must be text")
    if not root_cause.strip() and not fix.strip():
        raise InvalidInputError("a resolution needs a root cause or a fix")
    return ErrorResolution(
        resolved_at=utcnow(),
        root_cause=cap_text(root_cause.strip(), limit),
        fix=cap_text(fix.strip(), limit),
    )


@checked
def resolve_error(
    error_id: str,
    root_cause: str,
    fix: str,
    *,
    cascade: bool = True,
    store: Store | None = None,
) -> ErrorEntry:
    """Mark an error resolved with its root cause and fix (appended as a new version).

    When the error has a learning event (it was promoted, or the loop linked it) that is still
    unresolved, the event is verified too, saying which error resolution verified it, with its
    other error-log entries (``cascade=False``: the error alone, for a caller that verifies the
    event itself).
    """
    store = store or get_store()
    resolution = _resolution(root_cause, fix, store.policies.LEARNING_MAX_TEXT_CHARS)
    entry = store.update_error(
        error_id, lambda e: e.model_copy(update={"resolved": True, "resolution": resolution})
    )
    if cascade:
        event = _promoted_event(entry, store)
        if event is not None and not event.resolved:
            from rayvault.learning.resolution import resolve_events

            how = resolution.fix or resolution.root_cause
            resolve_events(
                [event.event_id],
                verification=f"error {entry.id} resolved: {how}",
                apply=True,
                store=store,
            )
    return entry


@checked
def list_errors(
    *,
    stage: str | None = None,
    video_id: str | None = None,
    unresolved: bool | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    store: Store | None = None,
) -> list[ErrorEntry]:
    """Error-log entries, filtered; ``stage`` matches its step-name aliases too."""
    store = store or get_store()
    stages = stage_names(stage, store.policies) if stage else None
    return store.query_errors(
        ErrorQuery(
            stages=stages,
            video_id=video_id,
            unresolved=unresolved,
            limit=limit,
            newest_first=newest_first,
        )
    )


@checked
def get_unresolved(
    stage: str | None = None, video_id: str | None = None, *, store: Store | None = None
) -> list[ErrorEntry]:
    """Unresolved errors, optionally of one stage (and its step names) and one video."""
    return list_errors(stage=stage, video_id=video_id, unresolved=True, store=store)


@checked
def get_patterns(min_count: int = 2, *, store: Store | None = None) -> list[ErrorPattern]:
    """Error-log entries grouped by fingerprint, with at least ``min_count`` occurrences."""
    if min_count < 1:
        raise InvalidInputError("min_count must be at least 1")
    return (store or get_store()).error_patterns(min_count)


@checked
def get_lessons(*, store: Store | None = None) -> list[Lesson]:
    """The latest resolution of every failure pattern: what was learned, newest first."""
    store = store or get_store()
    counts = {p.fingerprint: p.count for p in store.error_patterns(1)}
    lessons = []
    for entry in store.latest_resolutions():
        if entry.resolution is None:
            continue  # ``resolved`` without a resolution: nothing was learned
        if entry.fingerprint is None:
            # The original system stored no fingerprint: key it as the store's index does.
            fp = fingerprint(fold_stage(entry.stage, store.policies), entry.error)
            key, pattern = fp.key, entry.pattern or fp.template
        else:
            key, pattern = entry.fingerprint, entry.pattern or entry.error[:200]
        key = store.resolve_pattern(key)  # the pattern it belongs to now (merges followed)
        lessons.append(
            Lesson(
                fingerprint=key,
                pattern=pattern,
                stage=entry.stage,
                root_cause=entry.resolution.root_cause,
                fix=entry.resolution.fix,
                resolved_at=entry.resolution.resolved_at,
                error_id=entry.id,
                occurrences=counts.get(key, 1),
            )
        )
    return lessons


@checked
def promote_to_learning(
    error_id: str,
    *,
    root_cause: str,
    fix: str,
    severity: str = "FAIL",
    component: str | None = None,
    agent: str | None = None,
    verification: str = "",
    store: Store | None = None,
    idempotency_key: str | None = None,
) -> PromotionResult:
    """Resolve an error and create the learning event for it, in one call.

    The event carries ``source_error_id``; its symptom is the error's failure line and its
    component the error's stage unless given. Promoting an error again returns the event
    created the first time (``created=False``) and creates nothing. ``idempotency_key`` is
    given to the event's :func:`create_event`: a call retried after a failure between the
    event and the error's update returns that event, as does one whose key created it.
    """
    store = store or get_store()
    validate_identifier(error_id, "error id")
    resolution = _resolution(root_cause, fix, store.policies.LEARNING_MAX_TEXT_CHARS)
    key = validate_key(idempotency_key)
    with store.exclusive(f"promote-{error_id}"):
        entry = get_error(error_id, store=store)
        existing = _promoted_event(entry, store)
        if existing is None and key is not None:
            found = store.query_events(EventQuery(idempotency_key=key, limit=1))
            existing = found[0] if found else None
        created = existing is None
        if existing is None:
            existing = create_event(
                run_id=str(entry.context.get("run_id", "")),
                severity=severity,
                component=component or entry.stage,
                symptom=error_symptom(entry),
                root_cause=resolution.root_cause,
                fix_applied=resolution.fix,
                verification=verification,
                video_id=entry.video_id,
                agent=agent,
                source_error_id=entry.id,
                store=store,
                idempotency_key=key,
            )
        if not (entry.resolved and entry.learning_event_id == existing.event_id):
            event_id = existing.event_id
            entry = store.update_error(
                error_id,
                lambda e: e.model_copy(
                    update={
                        "resolved": True,
                        "resolution": e.resolution if e.resolved and e.resolution else resolution,
                        "learning_event_id": event_id,
                    }
                ),
            )
    return PromotionResult(error=entry, event=existing, created=created)


def _promoted_event(entry: ErrorEntry, store: Store) -> LearningEvent | None:
    if entry.learning_event_id:
        try:
            return get_event(entry.learning_event_id, store=store)
        except LearningError:
            pass  # the link is dangling: fall back to the event's own back-reference
    found = store.query_events(EventQuery(source_error_id=entry.id, limit=1))
    return found[0] if found else None
