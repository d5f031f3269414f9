"""The doctor: one check of a whole data root, and the safe repairs (``rayvault-learn doctor``).

The store checks its own data (``Store.check``: files or tables, the index, leftovers of crashed
writers; only it knows where things live). This module adds what needs the domain's knowledge:

- rules whose source event is not in the event index (``rule-source-missing``);
- agents with more active rules than ``LEARNING_MAX_ACTIVE_RULES_PER_AGENT``
  (``memory-over-cap``), saying whether FAIL/BLOCKER rules alone exceed it.

Neither is repaired: a rule is the agent's working memory, and evicting or removing rules is a
decision for the revisit or a person, not for a health check.
"""

from __future__ import annotations

from rayvault.learning._validate import checked
from rayvault.learning.exceptions import LearningError
from rayvault.learning.models import CRITICAL_SEVERITIES, Finding, Record
from rayvault.learning.store import ProgressCallback, Store, get_store

#: Store findings after which the event index cannot say whether an event exists.
_INDEX_UNRELIABLE = frozenset({"log-corrupt", "index-inconsistent"})


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
