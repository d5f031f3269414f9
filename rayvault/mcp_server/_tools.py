"""What each MCP tool and resource does, as plain functions of a store: one call into the library
each, with its validation and its errors (a :class:`LearningError` says what is wrong), and a
JSON-ready result. Nothing here imports the MCP SDK: ``_server`` wraps these for it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayvault.learning.store import Store

#: Patterns returned by ``search_patterns`` unless told otherwise (the most frequent first).
DEFAULT_PATTERN_LIMIT = 50


def check_gate(store: Store, video_id: str, stage: str) -> dict[str, Any]:
    """The learning gate's decision for ``stage`` of ``video_id`` (its four checks)."""
    from rayvault.learning.gate import learning_gate

    return learning_gate(video_id, stage, store=store).to_dict()


def get_rules(
    store: Store,
    agent: str,
    stage: str | None = None,
    task: str | None = None,
    budget: int | None = None,
) -> dict[str, Any]:
    """The agent's rules block for its prompt (``prompt_rules``), ranked for ``stage`` and
    ``task``, within ``budget`` characters; an unknown agent is refused (``check_agent``)."""
    from rayvault.learning.memory import check_agent, prompt_rules

    block = prompt_rules(agent, budget, stage=stage, task=task, store=store)
    if not block.total:
        check_agent(agent, store=store)
    return {
        "agent": agent,
        "text": block.text,
        "rule_ids": [r.rule_id for r in block.rules],
        "active_rules": block.total,
        "held_back": dict(block.held_back),
    }


def log_failure(
    store: Store, video_id: str | None, stage: str, error: str, exit_code: int = 1
) -> dict[str, Any]:
    """A stage failure in the error log (``log_error``: an oversized text is cut with a marker,
    the full text kept beside it)."""
    from rayvault.learning.errors import log_error

    return log_error(video_id, stage, error, exit_code=exit_code, store=store).to_dict()


def record_learning(
    store: Store,
    *,
    agent: str,
    severity: str,
    component: str,
    symptom: str,
    root_cause: str = "",
    fix: str = "",
    verification: str = "",
    video_id: str | None = None,
    run_id: str = "",
    source_error_id: str | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    """A learning event whose rule is in ``agent``'s memory at once (``create_event`` with the
    agent: the learning path of the closed loop)."""
    from rayvault.learning.events import create_event

    return create_event(
        run_id=run_id,
        severity=severity,
        component=component,
        symptom=symptom,
        root_cause=root_cause,
        fix_applied=fix,
        verification=verification,
        video_id=video_id,
        agent=agent,
        source_error_id=source_error_id,
        store=store,
        idempotency_key=idempotency_key,
    ).to_dict()


def resolve(
    store: Store, event_id: str, verification: str, verified_by: str = "person"
) -> dict[str, Any]:
    """Mark an event's fix verified (``resolve_event``): it no longer holds the gate."""
    from rayvault.learning.events import resolve_event

    return resolve_event(event_id, verification, verified_by=verified_by, store=store).to_dict()


def search_patterns(
    store: Store,
    stage: str | None = None,
    min_count: int = 3,
    agent: str | None = None,
    limit: int = DEFAULT_PATTERN_LIMIT,
) -> dict[str, Any]:
    """Recurring failure patterns (``get_patterns``), most frequent first, at most ``limit``."""
    from rayvault.learning.exceptions import InvalidInputError
    from rayvault.learning.registry import get_patterns

    if limit < 1:
        raise InvalidInputError(f"limit must be at least 1 (got {limit})")
    patterns = get_patterns(min_count, component=stage, agent=agent, store=store)
    return {
        "total": len(patterns),
        "patterns": [p.to_dict() for p in patterns[:limit]],
    }


def weekly_summary(store: Store) -> dict[str, Any]:
    """The latest weekly report the revisit wrote (``source: "latest"``); when there is none
    yet, the report a revisit would write now, computed without writing anything
    (``source: "dry-run"``)."""
    from rayvault.learning.registry import get_weekly_summary
    from rayvault.learning.revisit import revisit

    report = get_weekly_summary(store=store)
    if report is not None:
        return {"source": "latest", "report": report.to_dict()}
    return {"source": "dry-run", "report": revisit(dry_run=True, store=store).report.to_dict()}


def agent_memory(store: Store, agent: str) -> dict[str, Any]:
    """The agent's active memory (the ``memory_active.json`` shape); an unknown agent is
    refused."""
    from rayvault.learning.memory import check_agent, load_active_memory

    check_agent(agent, store=store)
    return load_active_memory(agent, store=store).to_dict()


def latest_report(store: Store) -> dict[str, Any] | None:
    """The latest weekly report, or None when the revisit has written none yet."""
    from rayvault.learning.registry import get_weekly_summary

    report = get_weekly_summary(store=store)
    return report.to_dict() if report is not None else None


def agents(store: Store) -> dict[str, Any]:
    """The agents with memory, and those the stage map names."""
    from rayvault.learning.stages import configured_agents

    return {
        "with_memory": sorted(store.list_agents()),
        "in_stage_map": sorted(configured_agents(store.policies)),
    }
