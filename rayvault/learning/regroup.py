"""Re-fingerprint what an older grouping version wrote: ``rayvault-learn patterns regroup``.

Every error-log entry and learning event whose ``fingerprint_version`` is older than
:data:`~rayvault.learning._grouping.GROUPING_VERSION` (records of version 1 carry none) is grouped
again, in arrival order, with :func:`~rayvault.learning._grouping.assign` in the store's pattern
book: exactly what would have happened had the current version written it.

What it tells: which old patterns **merge** (several old keys now one pattern) and which
**split** (one old key now several patterns), with the number of records behind each.

What it changes (unless it is a dry run):

- each such record gets its new key, template and version. Both logs are append-only, so this
  is a new version of the record (the last version wins; ``compact`` folds events) — the
  storage rules allow no rewrite in place, and a new version is what every other change is;
- an old key whose records all went to one pattern (one→one, many→one) is recorded as merged
  into it (reason ``regroup``), so what is keyed by the old key elsewhere — agent rules, gate
  acknowledgements, notes people wrote down — follows without being rewritten;
- a rule whose old key split follows its source event's new key (rewritten in its memory).

It is idempotent: records already of the current version are left alone, so a second run
finds nothing to do. A dry run groups in memory (the store's version-2 records replayed first,
then the old ones) and writes nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from pydantic import Field

from rayvault.learning._fingerprint import fingerprint as fingerprint_v1
from rayvault.learning._grouping import GROUPING_VERSION, MemoryBook, PatternBook, assign
from rayvault.learning._validate import checked
from rayvault.learning.memory import rule_fingerprint
from rayvault.learning.models import ErrorEntry, LearningEvent, Record
from rayvault.learning.stages import fold_stage
from rayvault.learning.store import EventQuery, ProgressCallback, Store, get_store
from rayvault.learning.store.base import ErrorQuery

#: The reason recorded for a merge of an old key into its new pattern.
REGROUP = "regroup"
#: Records rewritten per store call (one lock, one append).
_CHUNK = 500
R = TypeVar("R", LearningEvent, ErrorEntry)


class PatternChange(Record):
    """One merge (several old keys → one new pattern) or split (one old key → several)."""

    kind: str
    stage: str
    #: merge: the old keys, each with how many records it had; split: the one old key.
    old: dict[str, int]
    #: split: the new keys, each with how many of the old key's records went there; merge: one.
    new: dict[str, int]
    #: The new pattern's template (a merge), or the old key's (a split).
    pattern: str = ""


class RegroupResult(Record):
    """What ``regroup`` found and (unless ``dry_run``) did."""

    dry_run: bool
    version: int = GROUPING_VERSION
    #: Records of an older version found: events and error-log entries.
    events: int = 0
    errors: int = 0
    #: Of those, how many get another key than they had.
    rekeyed: int = 0
    merges: list[PatternChange] = Field(default_factory=list)
    splits: list[PatternChange] = Field(default_factory=list)
    #: Old keys recorded (or, in a dry run, to be recorded) as merged into a new key.
    links: dict[str, str] = Field(default_factory=dict)
    #: Rules whose old key split, moved to their source event's new key.
    rules_moved: int = 0

    @property
    def nothing_to_do(self) -> bool:
        return self.events == 0 and self.errors == 0


@dataclass
class _Old:
    """One record of an older version, with what it gets."""

    kind: str  # "event" | "error"
    record: LearningEvent | ErrorEntry
    stage: str
    text: str
    old_key: str
    new_key: str = ""
    template: str = ""

    @property
    def at(self) -> datetime:
        return self.record.timestamp


@checked
def regroup(
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    store: Store | None = None,
) -> RegroupResult:
    """Re-fingerprint every record of an older grouping version (see the module doc)."""
    store = store or get_store()
    policies = store.policies
    events = store.query_events(EventQuery())
    errors = store.query_errors(ErrorQuery())
    old: list[_Old] = []
    current: list[tuple[datetime, str, str]] = []
    for event in events:
        stage = fold_stage(event.component, policies)
        if _is_current(event):
            current.append((event.timestamp, stage, event.symptom))
        else:
            old.append(_old("event", event, stage, event.symptom))
    for entry in errors:
        stage = fold_stage(entry.stage, policies)
        if _is_current(entry):
            current.append((entry.timestamp, stage, entry.error))
        else:
            old.append(_old("error", entry, stage, entry.error))
    result = RegroupResult(
        dry_run=dry_run,
        events=sum(1 for o in old if o.kind == "event"),
        errors=sum(1 for o in old if o.kind == "error"),
    )
    if not old:
        return result
    old.sort(key=lambda o: o.at)  # arrival order (stable: events before errors at one instant)
    resolve = _assign_all(store, old, current, dry_run, progress)
    templates: dict[str, str] = {}
    for item in old:
        item.new_key = resolve(item.new_key)
        templates[item.new_key] = item.template  # the last is the most general
    for item in old:
        item.template = templates[item.new_key]
    _report(result, old)
    if not dry_run:
        _link(store, result)
        _rewrite(store, old, progress)
        result.rules_moved = _move_rules(store, old, {c.pattern for c in result.splits})
    return result


def _is_current(record: LearningEvent | ErrorEntry) -> bool:
    version = record.fingerprint_version
    return version is not None and version >= GROUPING_VERSION and bool(record.fingerprint)


def _old(kind: str, record: LearningEvent | ErrorEntry, stage: str, text: str) -> _Old:
    key = record.fingerprint or fingerprint_v1(stage, text).key
    return _Old(kind, record, stage, text, key)


def _assign_all(
    store: Store,
    old: list[_Old],
    current: list[tuple[datetime, str, str]],
    dry_run: bool,
    progress: ProgressCallback | None,
) -> Callable[[str], str]:
    """Assign every old record in arrival order (one book per stage: stages never share a
    cluster); returns how to resolve a key handed out (merges followed)."""
    by_stage: dict[str, list[_Old]] = defaultdict(list)
    for item in old:
        by_stage[item.stage].append(item)
    done = 0
    if dry_run:
        book = MemoryBook()
        for _at, stage, text in sorted(current, key=lambda c: c[0]):
            assign(book, stage, text)  # the store's clusters, as its records made them
        for stage, items in by_stage.items():
            done = _assign_stage(book, stage, items, done, len(old), progress=progress)
        return book.resolve
    for stage, items in by_stage.items():
        with store.pattern_book(stage) as store_book:
            done = _assign_stage(store_book, stage, items, done, len(old), progress=progress)
    return store.resolve_pattern


def _assign_stage(
    book: PatternBook,
    stage: str,
    items: list[_Old],
    done: int,
    total: int,
    *,
    progress: ProgressCallback | None,
) -> int:
    for item in items:
        grouping = assign(book, stage, item.text)
        item.new_key, item.template = grouping.key, grouping.template
        done += 1
        if progress is not None and (done % _CHUNK == 0 or done == total):
            progress("records regrouped", done, total)
    return done


def _report(result: RegroupResult, old: list[_Old]) -> None:
    by_old: dict[str, Counter[str]] = defaultdict(Counter)
    by_new: dict[str, Counter[str]] = defaultdict(Counter)
    templates: dict[str, str] = {}
    stages: dict[str, str] = {}
    for item in old:
        by_old[item.old_key][item.new_key] += 1
        by_new[item.new_key][item.old_key] += 1
        templates.setdefault(item.new_key, item.template)
        stages[item.new_key] = stages[item.old_key] = item.stage
        if item.new_key != item.old_key:
            result.rekeyed += 1
    for new, olds in sorted(by_new.items(), key=lambda kv: -sum(kv[1].values())):
        if len(olds) > 1:
            result.merges.append(
                PatternChange(
                    kind="merge",
                    stage=stages[new],
                    old=dict(olds.most_common()),
                    new={new: sum(olds.values())},
                    pattern=templates.get(new, ""),
                )
            )
    for key, news in sorted(by_old.items(), key=lambda kv: -sum(kv[1].values())):
        if len(news) > 1:
            result.splits.append(
                PatternChange(
                    kind="split",
                    stage=stages[key],
                    old={key: sum(news.values())},
                    new=dict(news.most_common()),
                    pattern=key,
                )
            )
        else:
            [new] = news
            if new != key:
                result.links[key] = new


def _link(store: Store, result: RegroupResult) -> None:
    by_stage: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for source, target in result.links.items():
        by_stage[target.split(":", 1)[0]].append((source, target))
    for stage, pairs in by_stage.items():
        with store.pattern_book(stage) as book:
            for source, target in pairs:
                book.link(source, target, REGROUP)


def _rewrite(store: Store, old: list[_Old], progress: ProgressCallback | None) -> None:
    """Each old record gets its new key, template and version: a new version of it."""
    events = {o.record.event_id: o for o in old if isinstance(o.record, LearningEvent)}
    errors = {o.record.id: o for o in old if isinstance(o.record, ErrorEntry)}

    def event_change(record: LearningEvent) -> LearningEvent | None:
        return None if _is_current(record) else _regrouped(record, events[record.event_id])

    def error_change(record: ErrorEntry) -> ErrorEntry | None:
        return None if _is_current(record) else _regrouped(record, errors[record.id])

    done, total = 0, len(old)
    event_ids, error_ids = list(events), list(errors)
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        store.update_events(chunk, event_change)
        done += len(chunk)
        _tick(progress, done, total)
    for start in range(0, len(error_ids), _CHUNK):
        chunk = error_ids[start : start + _CHUNK]
        store.update_errors(chunk, error_change)
        done += len(chunk)
        _tick(progress, done, total)


def _regrouped(record: R, item: _Old) -> R:
    """``record`` with its new key (a run that finished first has left it current: skipped)."""
    return record.model_copy(
        update={
            "fingerprint": item.new_key,
            "pattern": item.template,
            "fingerprint_version": GROUPING_VERSION,
        }
    )


def _tick(progress: ProgressCallback | None, done: int, total: int) -> None:
    if progress is not None:
        progress("records rewritten", done, total)


def _move_rules(store: Store, old: list[_Old], split: set[str]) -> int:
    """Rules keyed by a key that split follow their source event's new key."""
    if not split:
        return 0
    new_by_event = {
        o.record.event_id: o.new_key for o in old if isinstance(o.record, LearningEvent)
    }
    moved = 0
    for agent in store.list_agents():
        with store.agent_state(agent) as state:
            for rule in state.memory.rules:
                key = rule_fingerprint(rule, store)
                new = new_by_event.get(rule.source_event_id or "")
                if key in split and new is not None and new != key:
                    rule.fingerprint = new
                    state.memory_changed = True
                    moved += 1
    return moved
