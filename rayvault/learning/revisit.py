"""The weekly revisit: review, not learning (learning happens at once, in ``create_event``).

Four phases, over the agents of the scope (``all``: every agent with state and every agent of
the stage map) and a window of the last ``days`` days:

1. **Revalidate** — flag *stale* rules (last applied before the window: older than it and not
   re-applied within it; or whose source event is archived), *conflicting* rules (two active
   rules of one agent, for the same fingerprint or stage, prescribing incompatible actions; see
   :mod:`rayvault.learning._conflicts`) and *ineffective* rules (their failure recurs while they
   are delivered, :func:`rayvault.learning.efficacy.ineffective_rule`: the attempts are the
   evidence, the proposal "tombstone or rewrite"). Flags carry their reason; no rule is removed.
2. **Promotion scan** — active rules applied at least ``LEARNING_PROMOTION_THRESHOLD_OCCURRENCES``
   times, each with its ready-to-paste SOUL section (written only by ``soul promote``).
3. **Weekly report** — the metrics, written as ``weekly-YYYY-MM-DD.json`` and a self-contained
   ``weekly-YYYY-MM-DD.html`` (a second report of the same day is ``weekly-YYYY-MM-DD-2``, …).
4. **Tombstone sweep** — tombstones removed more than ``LEARNING_TOMBSTONE_GRACE_DAYS`` ago move
   to a dated archive; memory snapshots older than ``LEARNING_ARCHIVE_RETENTION_DAYS`` are pruned.

Invariants: every file is read before anything is written, so a corrupt file stops the revisit
with an error naming it and nothing changed; active rules are never changed; under ``dry_run``
nothing at all is written (the result says what would have been).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from rayvault.learning._conflicts import analyse, rules_conflict
from rayvault.learning._ids import validate_identifier
from rayvault.learning._report_html import render_html
from rayvault.learning._time import format_ts, utcnow
from rayvault.learning._validate import checked
from rayvault.learning.efficacy import ineffective_rules
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.memory import compatible, held_back_rules, rule_fingerprint
from rayvault.learning.models import (
    CRITICAL_SEVERITIES,
    SEVERITIES,
    STATUSES,
    AgentMemory,
    AgentSweep,
    Pattern,
    PromotionCandidate,
    Revalidation,
    RevisitReport,
    Rule,
    RuleConflict,
    StaleRule,
    TombstoneFile,
    WeeklyReport,
)
from rayvault.learning.registry import agent_query, promotion_candidates
from rayvault.learning.regressions import regressions_report
from rayvault.learning.stages import configured_agents, fold_stage
from rayvault.learning.store import EventQuery, Store, get_store

#: ``progress(step, done, total)``: called as the revisit advances (the CLI draws a bar).
ProgressCallback = Callable[[str, int, int], None]

SCOPE_ALL = "all"
#: Patterns listed in the report's ``top_patterns`` and ``failures.new``.
TOP_PATTERNS = 10
#: Video ids listed per pattern in the report (``video_count`` has the full count).
PATTERN_VIDEOS_SHOWN = 20
#: Open FAIL/BLOCKER events listed in the report (newest first; the counts cover them all).
OPEN_FAILURES_SHOWN = 10
_REPORT_STEPS = ("counts", "patterns", "timeline", "open failures", "resolution", "write")


class _Steps:
    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0

    def __call__(self, step: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(step, min(self.done, self.total), self.total)


def scope_agents(scope: str, store: Store) -> list[str]:
    """The agents a revisit of ``scope`` covers: ``all`` → every agent with state or in the
    stage map; otherwise that one agent, which must be one of those."""
    known = sorted(set(store.list_agents()) | set(configured_agents(store.policies)))
    if scope == SCOPE_ALL:
        return known
    validate_identifier(scope, "agent")
    if scope not in known:
        raise InvalidInputError(
            f"unknown agent {scope!r} for the revisit scope",
            hint=f"use 'all' or one of: {', '.join(known)}",
        )
    return [scope]


@checked
def revisit(
    scope: str = SCOPE_ALL,
    days: int | None = None,
    *,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    store: Store | None = None,
) -> RevisitReport:
    """Run the four phases of the weekly revisit (see the module doc) over the last ``days``
    days (default ``LEARNING_REVISIT_INTERVAL_DAYS``) for ``scope`` (``"all"`` or an agent)."""
    store = store or get_store()
    policies = store.policies
    period = policies.LEARNING_REVISIT_INTERVAL_DAYS if days is None else days
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        raise InvalidInputError(f"days must be a whole number of at least 1 (got {period!r})")
    now = utcnow()
    since = now - timedelta(days=period)
    agents = scope_agents(scope, store)
    steps = _Steps(progress, 3 * len(agents) + 1 + len(_REPORT_STEPS))

    # Everything is read before anything is written: a corrupt file stops here, nothing changed.
    memories: dict[str, AgentMemory] = {}
    tombstones: dict[str, TombstoneFile] = {}
    for agent in agents:
        memories[agent] = store.load_memory(agent)
        tombstones[agent] = store.load_tombstones(agent)
        steps(f"load {agent}")

    # 1. Revalidate
    revalidation = revalidate(memories, since, store=store, on_agent=steps)
    # 2. Promotion scan
    threshold = policies.LEARNING_PROMOTION_THRESHOLD_OCCURRENCES
    promotions = promotion_candidates(memories, threshold, store)
    steps("promotion scan")
    # 3. Weekly report
    report = build_weekly_report(
        scope=scope,
        period=period,
        now=now,
        since=since,
        memories=memories,
        tombstones=tombstones,
        revalidation=revalidation,
        promotions=promotions,
        store=store,
        steps=steps,
    )
    saved = None
    if not dry_run:
        saved = store.save_weekly_report(
            now.date(), report.model_dump(mode="json"), render_html(report)
        )
    steps("write report" if not dry_run else "report (dry run)")
    # 4. Tombstone sweep
    sweep = [
        _sweep_agent(agent, tombstones[agent], now, dry_run=dry_run, store=store, steps=steps)
        for agent in agents
    ]
    return RevisitReport(
        scope=scope,
        days=period,
        generated_at=now,
        window_start=since,
        dry_run=dry_run,
        agents=agents,
        revalidation=revalidation,
        promotions=promotions,
        report=report,
        report_name=saved.name if saved else None,
        report_files={"json": saved.json_location, "html": saved.html_location} if saved else None,
        tombstone_sweep=sweep,
    )


# -- phase 1 -----------------------------------------------------------------------------------
def revalidate(
    memories: Mapping[str, AgentMemory],
    since: datetime,
    *,
    store: Store,
    on_agent: Callable[[str], None] | None = None,
) -> Revalidation:
    """Stale, conflicting and ineffective rules of these agents' memories (window starting at
    ``since``)."""
    sources = [r.source_event_id for m in memories.values() for r in m.rules if r.source_event_id]
    statuses = store.event_statuses(sources) if sources else {}
    result = Revalidation()
    for agent, memory in memories.items():
        result.stale.extend(stale_rules(agent, memory.rules, since, statuses))
        result.conflicts.extend(conflicting_rules(agent, memory.rules, store))
        result.ineffective.extend(ineffective_rules(agent, memory.rules, store.policies))
        if on_agent is not None:
            on_agent(f"revalidate {agent}")
    return result


def stale_rules(
    agent: str, rules: list[Rule], since: datetime, statuses: Mapping[str, str]
) -> list[StaleRule]:
    """Rules last applied before ``since`` (created before the window and not re-applied in it),
    or whose source event is archived."""
    flagged = []
    for rule in rules:
        reasons = []
        if rule.last_used < since:
            reasons.append(
                f"last applied {format_ts(rule.last_used)}, before the window starting "
                f"{format_ts(since)}: older than the window and not re-applied within it"
            )
        if rule.source_event_id and statuses.get(rule.source_event_id) == "archived":
            reasons.append(f"its source event {rule.source_event_id} is archived")
        if reasons:
            flagged.append(
                StaleRule(
                    agent=agent,
                    rule_id=rule.rule_id,
                    severity=rule.severity,
                    component=rule.component,
                    rule=rule.rule,
                    created=rule.created,
                    last_used=rule.last_used,
                    applied_count=rule.applied_count,
                    reason="; ".join(reasons),
                )
            )
    return flagged


def conflicting_rules(agent: str, rules: list[Rule], store: Store) -> list[RuleConflict]:
    """Pairs of rules, for the same fingerprint or stage, whose actions are incompatible —
    except pairs a person judged compatible (``rules resolve-conflict --keep-both``). A pair
    already marked at creation says which rule is held back from prompts until it is
    resolved."""
    policies = store.policies
    held = held_back_rules(rules, policies.LEARNING_CONFLICT_PREFERENCE)
    keyed = [
        (
            rule,
            store.resolve_pattern(rule_fingerprint(rule, store)),  # merges followed
            fold_stage(rule.component, policies),
            analyse(rule.rule),
        )
        for rule in rules
    ]
    found = []
    for i, (a, fp_a, stage_a, clauses_a) in enumerate(keyed):
        for b, fp_b, stage_b, clauses_b in keyed[i + 1 :]:
            if compatible(a, b):
                continue
            if fp_a == fp_b:
                scope = "same fingerprint"
            elif stage_a == stage_b:
                scope = f"same stage {stage_a}"
            else:
                continue
            hit = rules_conflict(clauses_a, clauses_b)
            if hit is not None:
                kind, why = hit
                reason = f"{a.rule_id} and {b.rule_id} ({scope}): {why}"
                marked = b.rule_id in a.conflicts_with or a.rule_id in b.conflicts_with
                kept_back = next((r for r in (a.rule_id, b.rule_id) if r in held), None)
                if marked and kept_back is not None:
                    reason += f"; marked: {kept_back} is held back from prompts until resolved"
                found.append(
                    RuleConflict(
                        agent=agent,
                        rule_ids=[a.rule_id, b.rule_id],
                        kind=kind,
                        scope=scope,
                        reason=reason,
                        held_back=kept_back if marked else None,
                    )
                )
    return found


# -- phase 3 -----------------------------------------------------------------------------------
def build_weekly_report(
    *,
    scope: str,
    period: int,
    now: datetime,
    since: datetime,
    memories: Mapping[str, AgentMemory],
    tombstones: Mapping[str, TombstoneFile],
    revalidation: Revalidation,
    promotions: list[PromotionCandidate],
    store: Store,
    steps: Callable[[str], None] = lambda step: None,
) -> WeeklyReport:
    """The weekly report's metrics for ``scope`` over the window ``[since, now]``."""
    everything = EventQuery() if scope == SCOPE_ALL else agent_query(scope, store)
    window = replace(everything, date_from=since, date_to=now)

    facets = store.event_facets(window)
    events_recent = sum(facets["severity"].values())  # every event has a severity
    events_total = store.count_events(everything)
    steps("report: counts")

    patterns = store.event_patterns(
        everything, min_count=1, active_since=since, videos_limit=PATTERN_VIDEOS_SHOWN
    )
    failures = _new_vs_recurring(patterns, since, events_recent)
    recurring = sorted(
        (p for p in patterns if p.count >= 2),
        key=lambda p: (-(p.recent_count or 0), -p.count, -p.last_seen.timestamp(), p.fingerprint),
    )
    top_patterns = [_trimmed(p) for p in recurring[:TOP_PATTERNS]]
    regressions = regressions_report(store, window, patterns)
    steps("report: patterns")

    timeline = store.event_timeline(window)
    events_by_day = []
    day = since.date()
    while day <= now.date():
        counts = timeline.get(day, {})
        row: dict[str, object] = {"date": day.isoformat()}
        row.update({s: counts.get(s, 0) for s in SEVERITIES})
        row["total"] = sum(counts.values())
        events_by_day.append(row)
        day += timedelta(days=1)
    steps("report: timeline")

    open_failures = _open_failures(everything, store)
    steps("report: open failures")
    resolution = _resolution(store, everything, since, now)
    steps("report: resolution")

    rules = _rule_changes(memories, tombstones, since, now)
    summaries = {}
    for agent, memory in memories.items():
        summaries[agent] = {
            "active_rules": len(memory.rules),
            "tombstones": len(tombstones[agent].tombstones),
            "critical_rules": sum(1 for r in memory.rules if r.severity in CRITICAL_SEVERITIES),
            "rules_added": sum(1 for r in rules["added"] if r["agent"] == agent),
            "rules_evicted": sum(1 for r in rules["evicted"] if r["agent"] == agent),
            "rules_tombstoned": sum(1 for r in rules["tombstoned"] if r["agent"] == agent),
            "stale_rules": sum(1 for r in revalidation.stale if r.agent == agent),
            "conflicts": sum(1 for c in revalidation.conflicts if c.agent == agent),
            "ineffective_rules": sum(1 for r in revalidation.ineffective if r.agent == agent),
            "promotion_candidates": sum(1 for c in promotions if c.agent == agent),
        }
    return WeeklyReport(
        generated_at=now,
        period_days=period,
        scope=scope,
        events_total=events_total,
        events_recent=events_recent,
        by_severity={s: facets["severity"].get(s, 0) for s in SEVERITIES},
        by_component=facets["component"],
        by_status={s: facets["status"].get(s, 0) for s in STATUSES},
        agent_summaries=summaries,
        window_start=since,
        events_by_day=events_by_day,
        top_patterns=top_patterns,
        failures=failures,
        open_failures=open_failures,
        rules=rules,
        resolution=resolution,
        revalidation=revalidation,
        promotions=promotions,
        regressions=regressions,
    )


def _trimmed(pattern: Pattern) -> Pattern:
    if len(pattern.videos) <= PATTERN_VIDEOS_SHOWN:
        return pattern
    return pattern.model_copy(update={"videos": pattern.videos[:PATTERN_VIDEOS_SHOWN]})


def _pattern_brief(pattern: Pattern) -> dict[str, object]:
    return {
        "fingerprint": pattern.fingerprint,
        "stage": pattern.stage,
        "pattern": pattern.pattern,
        "recent_count": pattern.recent_count or 0,
        "count": pattern.count,
    }


def _new_vs_recurring(
    patterns: list[Pattern], since: datetime, events_recent: int
) -> dict[str, object]:
    """Failures of the window split by whether their pattern was seen before the window."""
    new = [p for p in patterns if p.first_seen >= since]
    old = [p for p in patterns if p.first_seen < since]
    new_events = sum(p.recent_count or 0 for p in new)
    recurring_events = sum(p.recent_count or 0 for p in old)
    new.sort(key=lambda p: (-(p.recent_count or 0), p.fingerprint))
    return {
        "new_patterns": len(new),
        "recurring_patterns": len(old),
        "new_events": new_events,
        "recurring_events": recurring_events,
        # Events of the window written without a fingerprint (by an older system).
        "events_without_fingerprint": max(0, events_recent - new_events - recurring_events),
        "new": [_pattern_brief(p) for p in new[:TOP_PATTERNS]],
    }


def _open_failures(everything: EventQuery, store: Store) -> dict[str, object]:
    """Unresolved FAIL/BLOCKER events (at any date: open is a state, not a window)."""
    query = replace(everything, severities=tuple(sorted(CRITICAL_SEVERITIES)), unresolved=True)
    facets = store.event_facets(query)
    newest = store.query_events(replace(query, limit=OPEN_FAILURES_SHOWN, newest_first=True))
    return {
        "total": sum(facets["severity"].values()),
        "by_severity": {s: facets["severity"].get(s, 0) for s in ("FAIL", "BLOCKER")},
        "by_component": facets["component"],
        "newest": [
            {
                "event_id": e.event_id,
                "timestamp": format_ts(e.timestamp),
                "severity": e.severity,
                "component": e.component,
                "video_id": e.video_id,
                "status": e.status,
                "symptom": e.symptom,
            }
            for e in newest
        ],
    }


def _resolution(
    store: Store, everything: EventQuery, since: datetime, now: datetime
) -> dict[str, object]:
    """Time from event to resolution, over the events resolved within the window."""
    times = store.resolution_times(everything, resolved_since=since)
    seconds = sorted(
        max(0.0, (resolved - created).total_seconds())
        for created, resolved in times
        if resolved <= now
    )
    later = [s for s in seconds if s > 0]
    median = statistics.median(seconds) if seconds else None
    median_later = statistics.median(later) if later else None
    return {
        "resolved": len(seconds),
        "median_seconds": median,
        "median_hours": round(median / 3600, 2) if median is not None else None,
        # Events created with their verification are resolved at once (0 s); the median of the
        # others says how long a fix takes when it is not known at once.
        "resolved_at_creation": len(seconds) - len(later),
        "median_seconds_after_creation": median_later,
    }


def _rule_changes(
    memories: Mapping[str, AgentMemory],
    tombstones: Mapping[str, TombstoneFile],
    since: datetime,
    now: datetime,
) -> dict[str, list[dict[str, object]]]:
    """Rules added (still active or not), evicted and tombstoned within the window."""
    changes: dict[str, list[dict[str, object]]] = {"added": [], "evicted": [], "tombstoned": []}

    def entry(agent: str, rule: Rule, at: datetime, **more: object) -> dict[str, object]:
        return {
            "agent": agent,
            "rule_id": rule.rule_id,
            "severity": rule.severity,
            "component": rule.component,
            "at": format_ts(at),
            **more,
        }

    for agent, memory in memories.items():
        stones = tombstones[agent].tombstones
        for rule in [*memory.rules, *stones]:
            if since <= rule.created <= now:
                changes["added"].append(entry(agent, rule, rule.created))
        for stone in stones:
            if since <= stone.tombstoned_at <= now:
                changes[stone.kind].append(
                    entry(agent, stone, stone.tombstoned_at, reason=stone.reason)
                )
    for items in changes.values():
        items.sort(key=lambda item: (str(item["at"]), str(item["rule_id"])))
    return changes


# -- phase 4 -----------------------------------------------------------------------------------
def _sweep_agent(
    agent: str,
    tombstones: TombstoneFile,
    now: datetime,
    *,
    dry_run: bool,
    store: Store,
    steps: Callable[[str], None],
) -> AgentSweep:
    policies = store.policies
    grace_cutoff = now - timedelta(days=policies.LEARNING_TOMBSTONE_GRACE_DAYS)
    retention_cutoff = now - timedelta(days=policies.LEARNING_ARCHIVE_RETENTION_DAYS)
    due = [t for t in tombstones.tombstones if t.tombstoned_at < grace_cutoff]
    snapshots = [n for ts, n in store.list_memory_snapshots(agent) if ts < retention_cutoff]
    result = AgentSweep(
        agent=agent,
        tombstones_archived=len(due),
        tombstones_kept=len(tombstones.tombstones) - len(due),
        snapshots_pruned=snapshots,
    )
    if not dry_run:
        # Re-read under the agent's lock by the store: what is archived is what is due now. Run
        # even when nothing is due: it also folds the tombstones appended since the last sweep
        # into the agent's list (the store keeps them apart so that adding one reads nothing).
        archived = store.archive_tombstones(agent, grace_cutoff)
        if due or archived.tombstones:
            result.tombstones_archived = len(archived.tombstones)
            result.tombstone_archive = archived.location
            result.tombstones_kept = len(store.load_tombstones(agent).tombstones)
        if snapshots:
            result.snapshots_pruned = store.prune_memory_snapshots(agent, retention_cutoff)
    steps(f"sweep {agent}")
    return result
