"""Registry queries: cross-video search over the learning events, recurring failure patterns, an
agent's learnings, SOUL promotion candidates and the latest weekly report.

Every query is answered by the store (in the file store, by SQL over its derived index): no query
reads the whole event log, and aggregations decode no event. Dates may be given as datetimes,
dates or ISO-8601 text, and are compared as datetimes; a date alone given as ``date_to`` means
the end of that day.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time, timedelta

from rayvault.learning._ids import validate_identifier
from rayvault.learning._time import as_utc, parse_ts, utcnow
from rayvault.learning._validate import checked
from rayvault.learning.events import build_query
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.models import (
    AgentMemory,
    LearningEvent,
    Pattern,
    PromotionCandidate,
    Rule,
    WeeklyReport,
)
from rayvault.learning.regressions import pattern_states
from rayvault.learning.soul import is_promoted, promotion_section, promotion_shortfall
from rayvault.learning.stages import components_of_agent
from rayvault.learning.store import EventQuery, Store, get_store
from rayvault.policies import Policies

DateLike = datetime | date | str
#: The window a pattern's state is judged in when no start is given: a pattern first seen within
#: it is ``new`` (the weekly report's window).
STATE_WINDOW_DAYS = 7
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def to_datetime(value: DateLike | None, name: str, *, end_of_day: bool = False) -> datetime | None:
    """``value`` as an aware UTC datetime. A date alone (``date`` or ``"2026-02-19"``) is the
    start of that day, or its last microsecond when ``end_of_day``."""
    if value is None:
        return None
    day: date | None = None
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        day = value
    elif isinstance(value, str) and _DATE_ONLY.fullmatch(value.strip()):
        try:
            day = date.fromisoformat(value.strip())
        except ValueError as e:
            raise InvalidInputError(f"{name} {value!r} is not a valid date") from e
    if day is not None:
        start = datetime.combine(day, time(), tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1) if end_of_day else start
    try:
        return parse_ts(value)
    except (TypeError, ValueError, AttributeError) as e:
        raise InvalidInputError(
            f"{name} {value!r} is not a date or timestamp (use ISO-8601, e.g. 2026-02-19 or "
            "2026-02-19T12:00:00Z)"
        ) from e


@checked
def query_events(
    *,
    component: str | None = None,
    severity: str | None = None,
    video_id: str | None = None,
    status: str | None = None,
    agent: str | None = None,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    store: Store | None = None,
) -> list[LearningEvent]:
    """Events matching every given filter, across videos, oldest first (``newest_first`` to
    reverse). ``component`` may be a stage or a pipeline step name: every name that folds into
    the same stage matches. ``date_from``/``date_to`` bound the event's timestamp, inclusive."""
    store = store or get_store()
    query = build_query(
        store,
        video_id=video_id,
        component=component,
        severity=severity,
        status=status,
        agent=agent,
        date_from=to_datetime(date_from, "date_from"),
        date_to=to_datetime(date_to, "date_to", end_of_day=True),
        limit=limit,
        newest_first=newest_first,
    )
    return store.query_events(query)


@checked
def get_patterns(
    min_count: int = 3,
    *,
    component: str | None = None,
    agent: str | None = None,
    date_from: DateLike | None = None,
    date_to: DateLike | None = None,
    store: Store | None = None,
) -> list[Pattern]:
    """Recurring failures: the events grouped by fingerprint, groups of at least ``min_count``,
    most frequent first. Each pattern has its count, unresolved (``open_count``) count, counts by
    severity, videos, components, agents, first and last occurrence, stage and readable template.
    ``agent`` narrows to the agent's learnings (its events, or events of its stages).

    Each pattern's ``state`` (new / ongoing / resolved / regressed, see
    :func:`rayvault.learning.regressions.pattern_states`) is judged over the pattern's whole
    history, with the window starting at ``date_from``, or ``STATE_WINDOW_DAYS`` ago without it."""
    if min_count < 1:
        raise InvalidInputError(f"min_count must be at least 1 (got {min_count})")
    store = store or get_store()
    start = to_datetime(date_from, "date_from")
    query = build_query(
        store,
        component=component,
        date_from=start,
        date_to=to_datetime(date_to, "date_to", end_of_day=True),
        agent_or_components=_agent_scope(agent, store) if agent else None,
    )
    since = start or utcnow() - timedelta(days=STATE_WINDOW_DAYS)
    patterns = store.event_patterns(query, min_count=min_count)
    whole = query.date_from is None and query.date_to is None and agent is None
    states = pattern_states(store, patterns, since, whole_history=whole)
    return [p.model_copy(update={"state": s}) for p, s in zip(patterns, states, strict=True)]


def _agent_scope(agent: str, store: Store) -> tuple[str, tuple[str, ...]]:
    validate_identifier(agent, "agent")
    return agent, components_of_agent(agent, store.policies)


def agent_query(agent: str, store: Store) -> EventQuery:
    """The events an agent learned from: its own, and those of the stages it runs."""
    return EventQuery(agent_or_components=_agent_scope(agent, store))


@checked
def get_agent_learnings(
    agent: str,
    *,
    limit: int | None = None,
    newest_first: bool = False,
    store: Store | None = None,
) -> list[LearningEvent]:
    """The events whose agent is ``agent`` or whose component maps to it through the stage map
    (a step name folded into a stage counts), oldest first."""
    store = store or get_store()
    scope = _agent_scope(agent, store)
    return store.query_events(
        EventQuery(agent_or_components=scope, limit=limit, newest_first=newest_first)
    )


def promotable(rule: Rule, threshold: int, policies: Policies | None = None) -> bool:
    """Whether ``rule`` has earned a SOUL promotion: ``successes`` (attempts that carried it and
    succeeded) at ``threshold``. Deliveries and ``applied_count`` count how often a rule was
    shown or learned, not whether it helped: counted that way, useless and wrong rules were
    proposed as often as right ones.

    A rule written before the efficacy counters (the original system's: no ``occurrences``, no
    ``deliveries``) keeps the old test, ``applied_count`` at the threshold, so an upgrade does
    not silently empty the candidate list; once the loop has counted it, successes decide, and
    a rule flagged ineffective under ``policies`` is never a candidate.
    """
    return not promotion_shortfall(rule, threshold, policies)


def promotion_candidates(
    memories: Mapping[str, AgentMemory], threshold: int, store: Store
) -> list[PromotionCandidate]:
    """The active rules of ``memories`` that worked at least ``threshold`` times (see
    :func:`promotable`), each with its SOUL section and whether the agent's SOUL file already
    holds it; most successful, then most applied, first."""
    found: list[PromotionCandidate] = []
    for agent, memory in memories.items():
        rules = [r for r in memory.rules if promotable(r, threshold, store.policies)]
        if not rules:
            continue
        soul = store.docs.find_soul(agent)
        text = store.docs.read_soul(soul) if soul is not None else ""
        for rule in rules:
            found.append(
                PromotionCandidate(
                    agent=agent,
                    rule_id=rule.rule_id,
                    severity=rule.severity,
                    component=rule.component,
                    rule=rule.rule,
                    applied_count=rule.applied_count,
                    successes=rule.successes,
                    last_applied=rule.last_used,
                    source_event_id=rule.source_event_id,
                    soul_section=promotion_section(rule, agent),
                    soul_file=store.docs.relative(soul) if soul is not None else None,
                    promoted=is_promoted(text, rule.rule_id),
                )
            )
    found.sort(key=lambda c: (-c.successes, -c.applied_count, c.agent, c.rule_id))
    return found


@checked
def get_promotion_candidates(
    threshold: int | None = None,
    *,
    agent: str | None = None,
    store: Store | None = None,
) -> list[PromotionCandidate]:
    """Active rules that worked at least ``threshold`` times (default
    ``LEARNING_PROMOTION_THRESHOLD_OCCURRENCES``; see :func:`promotable`), across agents (or of
    ``agent``), each with a ready-to-paste SOUL section. Promote one with
    :func:`rayvault.learning.soul.promote_rule`."""
    store = store or get_store()
    limit = (
        threshold
        if threshold is not None
        else (store.policies.LEARNING_PROMOTION_THRESHOLD_OCCURRENCES)
    )
    if limit < 1:
        raise InvalidInputError(f"threshold must be at least 1 (got {limit})")
    agents: Iterable[str] = [validate_identifier(agent, "agent")] if agent else store.list_agents()
    return promotion_candidates({a: store.load_memory(a) for a in agents}, limit, store)


@checked
def get_weekly_summary(*, store: Store | None = None) -> WeeklyReport | None:
    """The latest weekly report written by the revisit, or None when there is none yet."""
    return (store or get_store()).load_weekly_report()
