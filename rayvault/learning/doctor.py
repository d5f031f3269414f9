"""The doctor: one check of a whole data root, and the safe repairs (``rayvault-learn doctor``).

The store checks its own data (``Store.check``: files or tables, the index, leftovers of crashed
writers; only it knows where things live). This module adds what needs the domain's knowledge:

- rules whose source event is not in the event index (``rule-source-missing``);
- agents with more active rules than ``LEARNING_MAX_ACTIVE_RULES_PER_AGENT``
  (``memory-over-cap``), saying whether FAIL/BLOCKER rules alone exceed it.

Neither is repaired: a rule is the agent's working memory, and evicting or removing rules is a
decision for the revisit or a person, not for a health check.

It also finishes what a killed writer left behind:

- events ``create_event`` did not finish (``event-loop-incomplete``: ``open``, an agent, no
  rule recorded): ``--repair`` records the rule already in memory, or applies it;
- a memory the store restored from a snapshot (``memory-corrupt``, repaired): the rules of the
  agent's events created after the snapshot are applied again.
"""

from __future__ import annotations

from pathlib import Path

from rayvault.learning._time import utcnow
from rayvault.learning._validate import checked
from rayvault.learning.exceptions import LearningError
from rayvault.learning.models import CRITICAL_SEVERITIES, Finding, Record
from rayvault.learning.store import EventQuery, ProgressCallback, Store, get_store

#: Store findings after which the event index cannot say whether an event exists (and must not
#: be brought up to date: it may hold the only copy of records the log lost).
_INDEX_UNRELIABLE = frozenset({"log-corrupt", "index-inconsistent", "log-records-missing"})


class DoctorReport(Record):
    """Everything the doctor found, and what it repaired."""

    store: str
    repair: bool
    findings: list[Finding]
    #: Findings repaired in this run.
    repaired: int
    #: Findings still open (not repaired, not merely informational): the exit code is 1 if any.
    remaining: int
    #: Of the remaining findings, how many ``--repair`` can fix.
    repairable: int

    @property
    def clean(self) -> bool:
        return self.remaining == 0


@checked
def check_root(
    *,
    repair: bool = False,
    progress: ProgressCallback | None = None,
    store: Store | None = None,
) -> DoctorReport:
    """Check the data root; with ``repair``, fix what can be fixed without losing anything."""
    store = store or get_store()
    findings = store.check(repair, progress=progress)
    # Whether a rule's event is missing can only be told from a readable, consistent index.
    unreliable = any(f.open and f.code in _INDEX_UNRELIABLE for f in findings)
    for finding in findings:
        if finding.code == "memory-corrupt" and finding.repaired and not unreliable:
            _replay_after_restore(store, Path(finding.path).parent.name, finding)
    if not unreliable:
        findings += check_incomplete_events(store, repair=repair)
    findings += check_memory(store, check_sources=not unreliable)
    remaining = [f for f in findings if f.open]
    return DoctorReport(
        store=store.describe(),
        repair=repair,
        findings=findings,
        repaired=sum(1 for f in findings if f.repaired),
        remaining=len(remaining),
        repairable=sum(1 for f in remaining if f.repairable),
    )


def _replay_after_restore(store: Store, agent: str, finding: Finding) -> None:
    """Apply again the rules of ``agent``'s events created after its memory's snapshot (the
    restored memory's ``updated``), except those of tombstoned rules."""
    from rayvault.learning.memory import apply_event

    try:
        memory = store.load_memory(agent)
        tombstones = store.load_tombstones(agent)
    except LearningError as e:
        finding.action = f"{finding.action}; later rules not replayed: {e}"
        return
    since = memory.updated
    known = {r.source_event_id for r in memory.rules} | {r.last_event_id for r in memory.rules}
    for t in tombstones.tombstones:
        known |= {t.source_event_id, t.last_event_id, *t.evidence_ids}
    replayed = 0
    for event in store.query_events(EventQuery(agent=agent)):
        if event.event_id in known or (since is not None and event.timestamp < since):
            continue
        apply_event(event, agent, store=store)
        replayed += 1
    finding.action = f"{finding.action}; {replayed} later events' rules applied again"


def check_incomplete_events(store: Store, *, repair: bool = False) -> list[Finding]:
    """Events a killed ``create_event`` left ``open`` without their rule (see
    :func:`rayvault.learning.events.complete_event`)."""
    from rayvault.learning.events import (
        INCOMPLETE_GRACE,
        complete_event,
        loop_incomplete,
        rule_in_memory,
    )

    findings: list[Finding] = []
    try:
        events = store.query_events(EventQuery(statuses=("open",)))
    except LearningError:
        return findings  # an unreadable index is the store check's finding
    now = utcnow()
    for event in events:
        if not loop_incomplete(event):
            continue
        assert event.agent
        try:
            rule_id = rule_in_memory(event, store)
        except LearningError:
            continue  # an unreadable memory is the store check's finding
        if now - event.timestamp < INCOMPLETE_GRACE:  # perhaps being written right now
            state = (
                f"its rule {rule_id} is in memory, the event does not record it yet"
                if rule_id is not None
                else "its rule is not applied yet"
            )
            findings.append(
                Finding(
                    code="event-loop-incomplete",
                    path=event.event_id,
                    message=f"{state} (being written, or its writer was killed a moment ago: "
                    "its next touch completes it)",
                    level="info",
                )
            )
            continue
        if rule_id is not None:
            why = f"its rule {rule_id} is in {event.agent}'s memory, the event does not say so"
        else:
            why = f"its rule was never applied to {event.agent} (its writer stopped)"
        finding = Finding(
            code="event-loop-incomplete",
            path=event.event_id,
            message=f"create_event did not finish this event: {why}",
            level="warning",
            repairable=True,
        )
        findings.append(finding)
        if repair:
            try:
                done = complete_event(event, store=store, force=True)
            except LearningError as e:
                finding.action = f"not repaired: {e}"
                continue
            if done is not None:
                finding.repaired = True
                finding.action = f"completed: rule {done.rule_id}, status {done.status}"
    return findings


def check_memory(store: Store, *, check_sources: bool = True) -> list[Finding]:
    """Rules whose source event is missing (unless ``check_sources`` is False), and memories
    over the cap."""
    findings: list[Finding] = []
    cap = store.policies.LEARNING_MAX_ACTIVE_RULES_PER_AGENT
    events_readable = check_sources
    for agent in store.list_agents():
        try:
            memory = store.load_memory(agent)
        except LearningError:
            continue  # unreadable memory is the store check's finding
        path = store.memory_location(agent)
        if len(memory.rules) > cap:
            critical = sum(1 for r in memory.rules if r.severity in CRITICAL_SEVERITIES)
            if critical > cap:
                why = (
                    f"{critical} of them are FAIL/BLOCKER rules, which are never evicted: review "
                    "them (tombstone what no longer applies)"
                )
            else:
                why = (
                    "the next rule applied to this agent evicts the least recently used "
                    "INFO/WARN ones"
                )
            findings.append(
                Finding(
                    code="memory-over-cap",
                    path=path,
                    message=(
                        f"{agent} has {len(memory.rules)} active rules, over "
                        f"LEARNING_MAX_ACTIVE_RULES_PER_AGENT={cap}; {why}"
                    ),
                    level="warning",
                )
            )
        if not events_readable:
            continue
        for rule in memory.rules:
            if not rule.source_event_id:
                continue
            # Pending first: a writer removes an event's pending file only after appending it to
            # the log, so an event not pending (any more) is found by the index's catch-up; the
            # other order races a writer finishing between the two looks.
            if store.event_pending(rule.source_event_id):
                continue
            try:
                event = store.get_event(rule.source_event_id)
            except LearningError:
                events_readable = False  # a corrupt index is the store check's finding
                break
            if event is None:
                findings.append(
                    Finding(
                        code="rule-source-missing",
                        path=path,
                        message=(
                            f"rule {rule.rule_id} of {agent} comes from event "
                            f"{rule.source_event_id}, which is not in the event index"
                        ),
                        level="warning",
                    )
                )
    return findings
