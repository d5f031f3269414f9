"""Resolving learning events in bulk, and keeping events and their error-log entries in step.

:func:`resolve_events` selects events by id, or by filters (pattern, component, video, severity,
a date they are older than, migrated or not), and marks them ``verified`` with one verification
text. It is a dry run unless ``apply=True``: the result says what would be resolved.

An event and the error-log entries it came from are resolved together: resolving an event also
resolves its unresolved error-log entries (those whose ``learning_event_id`` names it, and the
entry it was promoted from, ``source_error_id``), and resolving an error-log entry that has a
learning event resolves that event (:func:`rayvault.learning.errors.resolve_error`).

Cost: one indexed query for the events, one for the unresolved error-log entries, then one
locked batch write per log (one transaction each on PostgreSQL), whatever the number of events.
The error-log entries are written first: if the process dies between the two writes, running
the command again still selects the events (still open) and finishes the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rayvault.learning._ids import validate_identifier
from rayvault.learning._time import format_ts, utcnow
from rayvault.learning._validate import cap_text, checked, clean_actor
from rayvault.learning.events import build_query, record_rule_verifications
from rayvault.learning.exceptions import EventNotFoundError, InvalidInputError
from rayvault.learning.models import ErrorEntry, ErrorResolution, LearningEvent
from rayvault.learning.registry import DateLike, to_datetime
from rayvault.learning.store import Store, get_store
from rayvault.learning.store.base import ErrorQuery

__all__ = ["BulkResolution", "resolve_events", "resolve_linked_errors"]

#: Keys per error-log query (well under the bound-parameter limits of SQLite and PostgreSQL).
_KEYS_PER_QUERY = 500


@dataclass
class BulkResolution:
    """What :func:`resolve_events` resolved, or (``applied`` False) would resolve."""

    applied: bool
    verification: str
    #: How the events were chosen: ``{"event_ids": […]}`` or the filters given.
    selection: dict[str, Any]
    #: The events resolved (as written), or to resolve (as they are, in a dry run).
    events: list[LearningEvent] = field(default_factory=list)
    #: Their unresolved error-log entries, resolved with them (as written, or as they are).
    errors: list[ErrorEntry] = field(default_factory=list)
    #: Ids given that were resolved already: left as they are.
    already_resolved: list[str] = field(default_factory=list)

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for e in self.events]

    @property
    def error_ids(self) -> list[str]:
        return [e.id for e in self.errors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "verification": self.verification,
            "selection": self.selection,
            "count": len(self.events),
            "events": [
                {
                    "event_id": e.event_id,
                    "timestamp": format_ts(e.timestamp),
                    "severity": e.severity,
                    "component": e.component,
                    "video_id": e.video_id,
                    "status": e.status,
                    "fingerprint": e.fingerprint,
                    "migrated": bool(e.get("migrated_at")),
                    "symptom": e.symptom,
                }
                for e in self.events
            ],
            "error_ids": self.error_ids,
            "already_resolved": self.already_resolved,
        }


def _clean(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be non-empty text (got {value!r})")
    return value.strip()


@checked
def resolve_events(
    event_ids: Sequence[str] = (),
    *,
    verification: str | None = None,
    pattern: str | None = None,
    component: str | None = None,
    video_id: str | None = None,
    severity: str | None = None,
    before: DateLike | None = None,
    migrated: bool | None = None,
    apply: bool = False,
    actor: str | None = None,
    store: Store | None = None,
) -> BulkResolution:
    """Resolve events given by id, or every unresolved event matching all the given filters.

    Filters: ``pattern`` (a fingerprint, as ``patterns`` and ``events get`` show it),
    ``component`` (a stage or a step name folding into it), ``video_id``, ``severity``,
    ``before`` (events whose timestamp is earlier: a date alone means its start, UTC), and
    ``migrated`` (True: only events brought in by ``rayvault-learn migrate``; False: only the
    others). Ids and filters do not mix. An id that is resolved already is reported in
    ``already_resolved`` and left as it is.

    A dry run unless ``apply``; writing needs ``verification``, the text recorded on every
    event (how the fixes were checked). Bad input (no ids and no filter, an unknown id, an
    unknown severity, a bad date, …) raises before anything is written.

    ``actor`` (who resolved them: a user name) is recorded on every event written, as
    ``resolved_by``, beside its ``resolved_at``.
    """
    store = store or get_store()
    if isinstance(event_ids, str) or not all(isinstance(i, str) for i in event_ids):
        raise InvalidInputError("event ids must be a list of ids")
    ids = [validate_identifier(i, "event id") for i in dict.fromkeys(event_ids)]
    text = _clean(verification, "verification")
    who = clean_actor(actor)
    if text is not None:
        text = cap_text(text, store.policies.LEARNING_MAX_TEXT_CHARS)
    if migrated is not None and not isinstance(migrated, bool):
        raise InvalidInputError(f"migrated must be True, False or None (got {migrated!r})")
    filters: dict[str, Any] = {
        "pattern": _clean(pattern, "pattern"),
        "component": _clean(component, "component"),
        "video_id": validate_identifier(video_id, "video id") if video_id is not None else None,
        "severity": _clean(severity, "severity"),
        "before": to_datetime(before, "before"),
        "migrated": migrated,
    }
    given = {k: v for k, v in filters.items() if v is not None}
    if ids and given:
        raise InvalidInputError(
            "give event ids or filters, not both (filters: " + ", ".join(given) + ")"
        )
    if not ids and not given:
        raise InvalidInputError(
            "nothing selected: give event ids, or at least one filter "
            "(pattern, component, video, severity, before, migrated)"
        )

    if apply and text is None:
        raise InvalidInputError("resolving needs a verification text: how were the fixes checked?")

    already: list[str] = []
    if ids:
        events = []
        for event_id in ids:
            event = store.get_event(event_id)
            if event is None:
                raise EventNotFoundError(event_id)
            if event.resolved:
                already.append(event_id)
            else:
                events.append(event)
        selection: dict[str, Any] = {"event_ids": ids}
    else:
        cutoff: datetime | None = given.get("before")
        query = build_query(
            store,
            video_id=given.get("video_id"),
            component=given.get("component"),
            severity=given.get("severity"),
            fingerprint=given.get("pattern"),
            date_to=cutoff - timedelta(microseconds=1) if cutoff is not None else None,
            unresolved=True,
        )
        events = store.query_events(query)
        if migrated is not None:
            events = [e for e in events if bool(e.get("migrated_at")) == migrated]
        selection = {k: format_ts(v) if isinstance(v, datetime) else v for k, v in given.items()}
        if "severity" in selection and query.severities:
            selection["severity"] = query.severities[0]

    errors = _linked_errors(events, store)
    result = BulkResolution(
        applied=apply,
        verification=text or "",
        selection=selection,
        events=events,
        errors=errors,
        already_resolved=already,
    )
    if not apply or not events:
        return result
    assert text is not None
    result.errors = _resolve_errors(errors, {e.event_id: e for e in events}, text, store)
    result.events = _verify(events, text, store, who)
    return result


def resolve_linked_errors(
    events: Sequence[LearningEvent], verification: str, *, store: Store
) -> list[ErrorEntry]:
    """Resolve the unresolved error-log entries of ``events`` (see the module doc); returns them
    as written."""
    errors = _linked_errors(events, store)
    if not errors:
        return []
    return _resolve_errors(errors, {e.event_id: e for e in events}, verification, store)


def _linked_errors(events: Sequence[LearningEvent], store: Store) -> list[ErrorEntry]:
    """The unresolved error-log entries of these events: linked to one of them, or the entry one
    was promoted from (unless that entry is linked to another event)."""
    ids = [e.event_id for e in events]
    sources = sorted({e.source_error_id for e in events if e.source_error_id})
    wanted = set(ids)
    found: dict[str, ErrorEntry] = {}
    # Filtered in SQL, a few hundred keys per query: only the entries wanted are decoded.
    for start in range(0, max(len(ids), len(sources)), _KEYS_PER_QUERY):
        chunk = ErrorQuery(
            unresolved=True,
            learning_event_ids=tuple(ids[start : start + _KEYS_PER_QUERY]),
            ids=tuple(sources[start : start + _KEYS_PER_QUERY]),
        )
        for entry in store.query_errors(chunk):
            if entry.learning_event_id in wanted or not entry.learning_event_id:
                found[entry.id] = entry
    return sorted(found.values(), key=lambda e: (e.timestamp, e.id))


def _event_of(entry: ErrorEntry, by_id: dict[str, LearningEvent]) -> LearningEvent | None:
    if entry.learning_event_id and entry.learning_event_id in by_id:
        return by_id[entry.learning_event_id]
    return next((e for e in by_id.values() if e.source_error_id == entry.id), None)


def _resolve_errors(
    errors: Sequence[ErrorEntry],
    by_id: dict[str, LearningEvent],
    verification: str,
    store: Store,
) -> list[ErrorEntry]:
    now = utcnow()
    owner = {entry.id: _event_of(entry, by_id) for entry in errors}

    def change(current: ErrorEntry) -> ErrorEntry | None:
        event = owner.get(current.id)
        if current.resolved or event is None:
            return None  # resolved meanwhile: keep its own resolution
        return current.model_copy(
            update={
                "resolved": True,
                "resolution": ErrorResolution(
                    resolved_at=now,
                    root_cause=event.root_cause,
                    fix=event.fix_applied or f"resolved with {event.event_id}: {verification}",
                ),
                "learning_event_id": current.learning_event_id or event.event_id,
            }
        )

    return store.update_errors([e.id for e in errors], change)


def _verify(
    events: Sequence[LearningEvent], verification: str, store: Store, actor: str | None = None
) -> list[LearningEvent]:
    now = utcnow()

    def change(current: LearningEvent) -> LearningEvent | None:
        if current.resolved:
            return None  # resolved meanwhile, with its own verification
        return current.model_copy(
            update={
                "status": "verified",
                "verification": verification,
                "resolved_at": current.resolved_at or now,
                "updated": now,
                # A person's decision, through the API or the CLI (events.py, ``verified_by``).
                "verified_by": "person",
                # Who: an extra field, written only when known (the web app, a script).
                **({"resolved_by": actor} if actor else {}),
            }
        )

    written = store.update_events([e.event_id for e in events], change)
    record_rule_verifications(written, "person", store=store)
    return written
