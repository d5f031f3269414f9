"""Migration: learnings recorded before rayvault-learning brought in as formal learning events.

Two sources:

1. **Resolved error-log entries** (``data/error_log.json``): each becomes a ``verified`` event
   (the log says it was resolved) with ``source_error_id``, component = the entry's stage,
   severity from ``context["severity"]`` or FAIL, symptom = the failure line (as
   ``promote_to_learning`` does), root cause and fix from the resolution; the entry is linked
   back (``learning_event_id``), so the gate counts the failure once, through the event.
2. **Skill-graph notes** (``LEARNING_SKILL_GRAPH_DIR`` or another folder): both shapes found in
   real repositories — notes written from events (``# [SEVERITY] component: symptom`` with
   ``Symptom`` / ``Root Cause`` / ``Fix Applied`` sections) and hand-written notes (front matter
   ``description``, ``severity: critical|high|medium|low``, sections such as ``What Happened``,
   ``Root Cause``, ``Fix Applied``, ``Prevention``). Front matter that is not valid YAML (real
   notes have unquoted multi-line values) is read by a tolerant line reader. Maps of content
   (``_index.md`` and other ``_``-prefixed notes) are not events.

Rules this module keeps:

- **Idempotent**: an event remembers its source (``source_note``: the note's path relative to
  the data root; ``source_error_id``); both are indexed, and a source that already has an event
  is reported as *already present*. So are notes written by this library (their front matter
  names their ``event_id``) and notes written from events the index already holds (same
  component, severity, symptom and day). Running ``apply`` twice creates nothing the second time.
- **A dry run (the default) writes nothing**, not even the derived index: it reads through
  ``store.read_only()``.
- **History keeps its dates**: an event's timestamp is its source's (the error's timestamp, the
  note's ``created`` date or the date its file name starts with), and its id is minted from it.
- **No immediate loop**: migrated events are history, not failures happening now. No rule is put
  in any agent's memory (bulk-loading unreviewed rules would evict the live ones), and no
  skill-graph note is written (the notes are the source). Apply a migrated event to an agent
  explicitly with ``apply_to_memory`` when it should become a rule.
- **Notes describing the same failure stay separate events but share a fingerprint**: the
  fingerprint is computed from the folded component and the symptom, and a note whose component
  is unknown takes the component of another note with the same symptom.
- **Nothing in one note stops the run**: a note that cannot be understood is skipped with its
  reason.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rayvault.learning._assign import group_failure
from rayvault.learning._ids import is_safe_identifier, new_event_id
from rayvault.learning._time import format_ts, parse_ts, utcnow
from rayvault.learning._validate import checked
from rayvault.learning.exceptions import LearningError
from rayvault.learning.memory import rule_text
from rayvault.learning.models import ErrorEntry, LearningEvent, Record
from rayvault.learning.patterns import failure_text, fingerprint
from rayvault.learning.skill_graph import (
    DETAIL_SECTIONS,
    FIX_SECTIONS,
    PREVENTION_SECTIONS,
    ROOT_CAUSE_SECTIONS,
    SYMPTOM_SECTIONS,
    VERIFICATION_SECTIONS,
    Note,
    parse_note,
)
from rayvault.learning.stages import fold_stage
from rayvault.learning.store import EventQuery, ProgressCallback, Store, get_store
from rayvault.learning.store.base import ErrorQuery
from rayvault.policies import Policies

log = logging.getLogger("rayvault.learning")

#: Severity words found in notes and error contexts → event severity. The hand-written scale
#: (critical/high/medium/low) maps onto the event scale one to one; the event words map to
#: themselves, whatever their case.
SEVERITY_WORDS: dict[str, str] = {
    "critical": "BLOCKER",
    "blocker": "BLOCKER",
    "high": "FAIL",
    "major": "FAIL",
    "fail": "FAIL",
    "failure": "FAIL",
    "error": "FAIL",
    "medium": "WARN",
    "moderate": "WARN",
    "warn": "WARN",
    "warning": "WARN",
    "low": "INFO",
    "minor": "INFO",
    "info": "INFO",
}
#: A hand-written note's ``status`` that says the failure was dealt with.
RESOLVED_NOTE_STATUSES = frozenset({"fixed", "resolved", "verified", "done", "closed"})
#: Components that mean "not known".
UNKNOWN_COMPONENTS = frozenset({"", "unknown", "none", "n/a", "na", "?", "-"})
#: Longest text kept in one field of a migrated event.
MAX_FIELD = 4000
#: Longest symptom an error-log entry becomes (as in ``promote_to_learning``).
MAX_ERROR_SYMPTOM = 300
#: Events appended to the index per write.
_CHUNK = 200

_DATED_TITLE = re.compile(r"\d{4}-\d{2}-\d{2}\s*(?:[—–:-]+\s*)?")
_DATE_PREFIX = re.compile(r"(\d{4}-\d{2}-\d{2})")
_FAILURE_SECTIONS = frozenset(
    (*SYMPTOM_SECTIONS, *DETAIL_SECTIONS, *ROOT_CAUSE_SECTIONS, *FIX_SECTIONS)
)

Outcome = Literal["migrated", "present", "skipped"]
Source = Literal["error_log", "note"]


def map_severity(value: object) -> str | None:
    """``"critical"`` → ``"BLOCKER"``, ``"high"`` → ``"FAIL"``, ``"fail"`` → ``"FAIL"`` …;
    None for anything else (see :data:`SEVERITY_WORDS`)."""
    if not isinstance(value, str):
        return None
    return SEVERITY_WORDS.get(value.strip().lower())


# -- reports ----------------------------------------------------------------------------------
class MigrationItem(Record):
    """What happened to one source item (a note, or an error-log entry)."""

    source: Source
    #: The note's path relative to the data root (absolute when outside it), or the error id.
    ref: str
    #: ``migrated`` (or, in a dry run, would be), ``present`` (an event exists), ``skipped``.
    outcome: Outcome
    #: Why it was skipped or counts as present, in a few words (grouped in the summary).
    reason: str | None = None
    detail: str | None = None
    #: The event created, or the one already there (None in a dry run for new events).
    event_id: str | None = None
    severity: str | None = None
    component: str | None = None
    symptom: str | None = None


class MigrationReport(Record):
    """The result of a migration run: one item per source item, and the totals."""

    applied: bool
    notes_folder: str | None = None
    items: list[MigrationItem] = Field(default_factory=list)
    found: int = 0
    migrated: int = 0
    present: int = 0
    skipped: int = 0
    skipped_by_reason: dict[str, int] = Field(default_factory=dict)
    #: ``{"note": {"found": …, "migrated": …, "present": …, "skipped": …}, "error_log": …}``
    by_source: dict[str, dict[str, int]] = Field(default_factory=dict)
    #: Error-log entries not resolved: not learnings yet, left as they are.
    unresolved_errors: int = 0

    def add(self, item: MigrationItem) -> None:
        self.items.append(item)

    def finish(self) -> MigrationReport:
        order = {"error_log": 0, "note": 1}
        self.items.sort(key=lambda i: (order[i.source], i.ref))
        self.found = len(self.items)
        outcomes = Counter(i.outcome for i in self.items)
        self.migrated, self.present, self.skipped = (
            outcomes["migrated"],
            outcomes["present"],
            outcomes["skipped"],
        )
        self.skipped_by_reason = dict(
            Counter(i.reason or "?" for i in self.items if i.outcome == "skipped").most_common()
        )
        self.by_source = {}
        for source in ("note", "error_log"):
            mine = [i for i in self.items if i.source == source]
            counts = Counter(i.outcome for i in mine)
            self.by_source[source] = {
                "found": len(mine),
                "migrated": counts["migrated"],
                "present": counts["present"],
                "skipped": counts["skipped"],
            }
        return self


class _Skip(Exception):
    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# -- turning notes into events ----------------------------------------------------------------
@dataclass
class Draft:
    """The event one source item (a note, an error-log entry) becomes, before it is written."""

    source: Source
    ref: str
    severity: str
    #: The component, or None while it is unknown (resolved across notes, else ``unknown``).
    component: str | None
    symptom: str
    root_cause: str = ""
    fix_applied: str = ""
    verification: str = ""
    timestamp: datetime | None = None
    #: Whether the timestamp came from the source (not the migration's clock).
    dated: bool = False
    resolved_at: datetime | None = None
    video_id: str | None = None
    run_id: str = ""
    source_error_id: str | None = None
    #: The note's own event id (notes written by this library), and its component as written.
    note_event_id: str | None = None
    written_component: str | None = None
    shape: str = "note"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def learned(self) -> bool:
        """Whether there is something to learn: a root cause or a fix."""
        return bool(self.root_cause or self.fix_applied)

    @property
    def status(self) -> str:
        return "verified" if self.verification else "open"


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 1] + "…"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value).strip()


def _date(value: Any) -> datetime | None:
    """A front-matter date (YAML gives a date, the tolerant reader text) as a UTC datetime."""
    if isinstance(value, datetime | date):
        return parse_ts(value)
    if isinstance(value, str) and value.strip():
        try:
            return parse_ts(value.strip())
        except ValueError:
            match = _DATE_PREFIX.match(value.strip())
            return parse_ts(match[1]) if match else None
    return None


def _names(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value if v is not None]
    if isinstance(value, str) and value.strip():
        return [v.strip() for v in value.strip("[]").split(",") if v.strip()]
    return []


def component_from_names(names: Iterable[str], policies: Policies) -> str | None:
    """The first name that is a stage, a step alias or an agent (→ its stage); then the first
    such word inside a name (``dzine-browser`` → ``dzine``, ``amazon_research`` → ``research``)."""
    stages = policies.LEARNING_STAGE_AGENTS
    aliases = policies.LEARNING_STAGE_ALIASES
    agents: dict[str, str] = {}
    for stage, agent in stages.items():
        agents.setdefault(agent, stage)
    candidates = [n.strip().lower() for n in names if n and n.strip()]

    def known(name: str) -> str | None:
        if name in stages or name in aliases:
            return name
        return agents.get(name)

    for name in candidates:
        if (found := known(name)) is not None:
            return found
    for name in candidates:
        for word in re.split(r"[-_\s/.]+", name):
            if word and (found := known(word)) is not None:
                return found
    return None


def _safe_component(name: str) -> str | None:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip()).strip("-._")
    if cleaned.lower() in UNKNOWN_COMPONENTS or not is_safe_identifier(cleaned):
        return None
    return cleaned


def draft_from_note(path: Path, ref: str, text: str, policies: Policies) -> Draft:
    """The event a note becomes; raises :class:`_Skip` with the reason when it is not one."""
    if path.name.startswith("_"):
        raise _Skip("map of content", "notes starting with '_' list other notes")
    if not text.strip():
        raise _Skip("empty note")
    try:
        note = parse_note(text)
    except ValueError as e:
        raise _Skip("cannot be understood", str(e)) from None
    front = note.front
    severity = _note_severity(note)
    symptom, root_cause, fix = _note_texts(note)

    video = _text(front.get("video_id")) or None
    if video is not None and not is_safe_identifier(video):
        raise _Skip("invalid video id", f"{video!r} cannot name a folder")
    timestamp = _date(front.get("created"))
    if timestamp is None:
        stamp = _DATE_PREFIX.match(path.name)
        timestamp = _date(stamp[1]) if stamp else None
    verification = note.section(VERIFICATION_SECTIONS)
    status_word = _text(front.get("status")).lower()
    if not verification and status_word in RESOLVED_NOTE_STATUSES:
        verification = f"marked '{status_word}' in the skill-graph note"
    resolved_at = None
    if verification and timestamp is not None:
        updated = _date(front.get("updated"))
        resolved_at = updated if updated is not None and updated >= timestamp else timestamp

    extra: dict[str, Any] = {"note_shape": note.shape}
    if not note.strict_yaml:
        extra["note_front_matter"] = "tolerant"  # not valid YAML: read line by line
    details = note.section(DETAIL_SECTIONS)
    if details and details != symptom:
        extra["details"] = _clip(details)
    prevention = note.section(PREVENTION_SECTIONS)
    if prevention:
        extra["prevention"] = _clip(prevention)
    for name in ("tags", "affected_tools"):
        values = _names(front.get(name))
        if values:
            extra[name] = values
    written = note.title_component if note.shape == "event" else None
    component = _note_component(note, policies)
    if component is not None and written and _safe_component(written) is None:
        extra["component_inferred_from"] = "tags"
    note_event_id = _text(front.get("event_id")) or None
    return Draft(
        source="note",
        ref=ref,
        severity=severity,
        component=component,
        symptom=_clip(symptom),
        root_cause=_clip(root_cause),
        fix_applied=_clip(fix),
        verification=_clip(verification),
        timestamp=timestamp,
        dated=timestamp is not None,
        resolved_at=resolved_at,
        video_id=video,
        run_id=_text(front.get("run_id")),
        note_event_id=note_event_id if is_safe_identifier(note_event_id) else None,
        written_component=written,
        shape=note.shape,
        extra=extra,
    )


def _note_severity(note: Note) -> str:
    """The title's ``[SEVERITY]`` of an event note, else the front matter's, mapped."""
    word = note.title_severity if note.shape == "event" else None
    if map_severity(word) is None:
        word = note.front.get("severity")
    if word is None or _text(word) == "":
        raise _Skip("no severity", "neither a [SEVERITY] title nor a severity field")
    severity = map_severity(_text(word))
    if severity is None:
        raise _Skip(
            "unknown severity", f"{_text(word)!r} is not one of {', '.join(SEVERITY_WORDS)}"
        )
    return severity


def _note_texts(note: Note) -> tuple[str, str, str]:
    """Symptom, root cause and fix of a note (see the README's migration table)."""
    front = note.front
    has_sections = bool(note.sections)
    if has_sections and not (_FAILURE_SECTIONS & note.sections.keys()):
        raise _Skip(
            "not a failure note",
            "no Symptom, Incident, What Happened, Root Cause or Fix section (a rules or "
            "reference note)",
        )
    symptom = note.section(SYMPTOM_SECTIONS)
    if not symptom and note.shape == "event":
        symptom = note.title_symptom or ""
    if not symptom and note.title:
        symptom = _DATED_TITLE.sub("", note.title, count=1).strip()
    if not symptom:
        symptom = _text(front.get("description"))
    if not symptom:
        raise _Skip("no symptom", "no Symptom or Incident section, title or description")
    root_cause = note.section(ROOT_CAUSE_SECTIONS)
    if not has_sections:
        # A note that is only front matter and a title: its description says what went wrong
        # and why, its ``fix`` field what was done.
        root_cause = root_cause or _text(front.get("description"))
    fix = note.section(FIX_SECTIONS) or _text(front.get("fix"))
    return symptom, root_cause, fix


def _note_component(note: Note, policies: Policies) -> str | None:
    """The component of an event note's title, else the first tag or affected tool naming a
    stage, step or agent; None when unknown."""
    if note.shape == "event" and note.title_component:
        component = _safe_component(note.title_component)
        if component is not None:
            return component
    generic = {"learning", "learning-event", "failure", *SEVERITY_WORDS}
    tags = [n for n in _names(note.front.get("tags")) if n.lower() not in generic]
    return component_from_names(
        [_text(note.front.get("component")), *tags, *_names(note.front.get("affected_tools"))],
        policies,
    )


def _symptom_key(symptom: str) -> str:
    return " ".join(symptom.lower().split()).rstrip(" .:;!")


def settle_components(drafts: list[Draft]) -> None:
    """Give a note whose component is unknown the component of another note describing the same
    failure (same symptom), else ``unknown``."""
    known: dict[str, Draft] = {}
    for draft in drafts:
        if draft.component is not None:
            known.setdefault(_symptom_key(draft.symptom), draft)
    for draft in drafts:
        if draft.component is None:
            twin = known.get(_symptom_key(draft.symptom))
            if twin is not None:
                draft.component = twin.component
                draft.extra["component_inferred_from"] = twin.ref
            else:
                draft.component = "unknown"


def draft_from_error(entry: ErrorEntry) -> Draft:
    """The event a resolved error-log entry becomes; :class:`_Skip` when it cannot be one."""
    resolution = entry.resolution
    if resolution is None:
        raise _Skip("resolved without a resolution", "no root cause or fix recorded")
    if not resolution.root_cause.strip() and not resolution.fix.strip():
        raise _Skip("no root cause or fix", "the resolution is empty")
    if not is_safe_identifier(entry.stage):
        raise _Skip("invalid stage", f"{entry.stage!r} cannot be a component")
    if entry.video_id and not is_safe_identifier(entry.video_id):
        raise _Skip("invalid video id", f"{entry.video_id!r} cannot name a folder")
    lines = failure_text(entry.error).strip().splitlines()
    symptom = lines[0].strip()[:MAX_ERROR_SYMPTOM] if lines else ""
    if not symptom:
        raise _Skip("no symptom", "the error text is empty")
    word = entry.context.get("severity")
    severity = map_severity(word) or "FAIL"
    when = resolution.resolved_at
    return Draft(
        source="error_log",
        ref=entry.id,
        severity=severity,
        component=entry.stage,
        symptom=symptom,
        root_cause=_clip(resolution.root_cause),
        fix_applied=_clip(resolution.fix),
        verification=f"resolved in the error log ({entry.id}) on {when.strftime('%Y-%m-%d')}",
        timestamp=entry.timestamp,
        dated=True,
        resolved_at=when,
        video_id=entry.video_id or None,
        run_id=_text(entry.context.get("run_id")),
        source_error_id=entry.id,
        shape="error",
    )


def build_event(
    draft: Draft, policies: Policies, now: datetime, store: Store | None = None
) -> LearningEvent:
    """The learning event of a draft, with the source's dates and provenance; grouped in
    ``store``'s patterns when given (what is written), by version 1 otherwise (a preview)."""
    component = draft.component or "unknown"
    when = draft.timestamp or now
    grouping: dict[str, Any]
    if store is not None:
        g = group_failure(store, fold_stage(component, policies), draft.symptom)
        grouping = {"fingerprint": g.key, "pattern": g.template, "fingerprint_version": g.version}
    else:
        fp = fingerprint(fold_stage(component, policies), draft.symptom)
        grouping = {"fingerprint": fp.key, "pattern": fp.template}
    provenance: dict[str, Any] = {
        "migrated_at": format_ts(now),
        "migrated_from": "error_log" if draft.source == "error_log" else "skill_graph_note",
    }
    if draft.source == "note":
        provenance["source_note"] = draft.ref
    event = LearningEvent.model_validate(
        {
            "event_id": new_event_id(when),
            "run_id": draft.run_id,
            "timestamp": when,
            "severity": draft.severity,
            "component": component,
            "symptom": draft.symptom,
            "root_cause": draft.root_cause,
            "fix_applied": draft.fix_applied,
            "verification": draft.verification,
            "status": draft.status,
            "video_id": draft.video_id,
            "source_error_id": draft.source_error_id,
            **grouping,
            "resolved_at": (draft.resolved_at or when) if draft.verification else None,
            **provenance,
            **draft.extra,
        }
    )
    event.promotion_rule = rule_text(event)
    return event


# -- the run ----------------------------------------------------------------------------------
@checked
def migrate_learnings(
    *,
    apply: bool = False,
    notes_folder: Path | str | None = None,
    errors: bool = True,
    notes: bool = True,
    progress: ProgressCallback | None = None,
    store: Store | None = None,
) -> MigrationReport:
    """Bring resolved error-log entries and skill-graph notes in as learning events.

    ``apply=False`` (the default) is a dry run: it reports what would happen and writes nothing.
    ``notes_folder`` reads notes from another folder (relative to the data root unless absolute)
    instead of ``LEARNING_SKILL_GRAPH_DIR``. ``progress(what, done, total)`` is called as items
    are read and written.
    """
    store = store or get_store()
    reader = store if apply else store.read_only()
    policies = store.policies
    report = MigrationReport(applied=apply)
    with (
        store.exclusive("migrate") if apply else contextlib.nullcontext(),
        contextlib.closing(reader) if reader is not store else contextlib.nullcontext(),
    ):
        if errors:
            _migrate_errors(store, reader, report, apply=apply, progress=progress)
        if notes:
            folder = reader.docs.notes_folder(notes_folder)
            report.notes_folder = reader.docs.relative(folder)
            _migrate_notes(
                store,
                reader,
                folder=folder,
                policies=policies,
                report=report,
                apply=apply,
                progress=progress,
            )
    return report.finish()


def _tick(progress: ProgressCallback | None, what: str, done: int, total: int) -> None:
    if progress is not None:
        progress(what, done, total)


def _item(draft: Draft, outcome: Outcome, **more: Any) -> MigrationItem:
    return MigrationItem(
        source=draft.source,
        ref=draft.ref,
        outcome=outcome,
        severity=draft.severity,
        component=draft.component,
        symptom=" ".join(draft.symptom.split())[:200],
        **more,
    )


def _migrate_errors(
    store: Store,
    reader: Store,
    report: MigrationReport,
    *,
    apply: bool,
    progress: ProgressCallback | None,
) -> None:
    resolved = reader.query_errors(ErrorQuery(unresolved=False))
    report.unresolved_errors = len(reader.query_errors(ErrorQuery(unresolved=True)))
    now = utcnow()
    policies = store.policies
    for done, entry in enumerate(resolved, 1):
        _tick(progress, "error log", done - 1, len(resolved))
        try:
            draft = draft_from_error(entry)
        except _Skip as skip:
            report.add(
                MigrationItem(
                    source="error_log",
                    ref=entry.id,
                    outcome="skipped",
                    reason=skip.reason,
                    detail=skip.detail,
                )
            )
            continue
        if not apply:
            present = _error_event(entry, reader)
            if present is not None:
                report.add(_item(draft, "present", reason="already an event", event_id=present))
            else:
                report.add(_item(draft, "migrated"))
            continue
        # The lock promote_to_learning takes: an error is never turned into two events.
        with store.exclusive(f"promote-{entry.id}"):
            current = store.get_error(entry.id) or entry
            present = _error_event(current, store)
            if present is None:
                event = build_event(draft, policies, now, store)
                store.append_events([event])
                present = event.event_id
                report.add(_item(draft, "migrated", event_id=present))
            else:
                report.add(_item(draft, "present", reason="already an event", event_id=present))
            if current.learning_event_id != present:
                store.update_error(entry.id, _linker(present))
    _tick(progress, "error log", len(resolved), len(resolved))


def _linker(event_id: str) -> Callable[[ErrorEntry], ErrorEntry]:
    """The change that links an error-log entry to its event."""
    return lambda e: e.model_copy(update={"learning_event_id": event_id})


def _error_event(entry: ErrorEntry, store: Store) -> str | None:
    """The event an error-log entry already became, if any."""
    if entry.learning_event_id and store.get_event(entry.learning_event_id) is not None:
        return entry.learning_event_id
    found = store.query_events(EventQuery(source_error_id=entry.id, limit=1))
    return found[0].event_id if found else None


def _read_drafts(
    reader: Store,
    folder: Path,
    policies: Policies,
    report: MigrationReport,
    progress: ProgressCallback | None,
) -> list[Draft]:
    docs = reader.docs
    files = docs.note_files(folder)
    drafts: list[Draft] = []
    for done, path in enumerate(files):
        _tick(progress, "notes", done, len(files))
        ref = docs.relative(path)
        try:
            drafts.append(draft_from_note(path, ref, docs.read_note(path), policies))
        except _Skip as skip:
            report.add(
                MigrationItem(
                    source="note",
                    ref=ref,
                    outcome="skipped",
                    reason=skip.reason,
                    detail=skip.detail,
                )
            )
        except (LearningError, OSError) as e:
            report.add(
                MigrationItem(
                    source="note", ref=ref, outcome="skipped", reason="unreadable", detail=str(e)
                )
            )
        except Exception as e:  # one odd note must not stop a migration of thousands
            log.warning("note %s could not be read: %s: %s", ref, type(e).__name__, e)
            report.add(
                MigrationItem(
                    source="note",
                    ref=ref,
                    outcome="skipped",
                    reason="cannot be understood",
                    detail=f"{type(e).__name__}: {e}",
                )
            )
    _tick(progress, "notes", len(files), len(files))
    settle_components(drafts)
    return drafts


def _migrate_notes(
    store: Store,
    reader: Store,
    *,
    folder: Path,
    policies: Policies,
    report: MigrationReport,
    apply: bool,
    progress: ProgressCallback | None,
) -> None:
    drafts = _read_drafts(reader, folder, policies, report, progress)
    now = utcnow()
    claimed: set[str] = set()
    pending: list[LearningEvent] = []
    for done, draft in enumerate(drafts):
        _tick(progress, "events", done, len(drafts))
        present, why = _note_event(draft, reader, claimed)
        if present is not None:
            report.add(_item(draft, "present", reason=why, event_id=present))
            continue
        if not draft.learned:
            # Checked after presence: a note of an event still being diagnosed is that event.
            report.add(
                _item(
                    draft,
                    "skipped",
                    reason="no root cause or fix",
                    detail="nothing was learned from it yet",
                )
            )
            continue
        if not apply:
            report.add(_item(draft, "migrated"))
            continue
        event = build_event(draft, policies, now, store)
        pending.append(event)
        report.add(_item(draft, "migrated", event_id=event.event_id))
        if len(pending) >= _CHUNK:
            store.append_events(pending)
            pending = []
    if pending:
        store.append_events(pending)
    _tick(progress, "events", len(drafts), len(drafts))


def _note_event(draft: Draft, store: Store, claimed: set[str]) -> tuple[str | None, str | None]:
    """The event a note already is, if any, and how it was recognised."""
    found = store.query_events(EventQuery(source_note=draft.ref, limit=1))
    if found:
        return found[0].event_id, "already migrated"
    if draft.note_event_id and store.get_event(draft.note_event_id) is not None:
        return draft.note_event_id, "written from an event in the index"
    if draft.shape == "event" and draft.dated and draft.written_component and draft.timestamp:
        day = draft.timestamp.replace(hour=0, minute=0, second=0, microsecond=0)
        query = EventQuery(
            components=(draft.written_component,),
            date_from=day,
            date_to=day + timedelta(days=1) - timedelta(microseconds=1),
        )
        key = _symptom_key(draft.symptom)
        for event in store.query_events(query):
            if (
                event.event_id not in claimed
                and not event.get("source_note")
                and event.severity == draft.severity
                and _symptom_key(event.symptom) == key
            ):
                claimed.add(event.event_id)
                return event.event_id, "written from an event in the index"
    return None, None
