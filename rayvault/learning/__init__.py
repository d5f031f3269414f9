"""rayvault-learning: every pipeline failure becomes a learning event, the event becomes a rule in
the failing agent's memory at once, a gate holds a stage while known regressions are open, and a
weekly review retires stale rules and promotes lasting ones into the agent's SOUL.

The public API is re-exported here and imported lazily, so ``import rayvault.learning`` stays
cheap for short-lived processes (the CLI, pipeline hooks).
"""

from __future__ import annotations

import importlib
import sys
import types

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from rayvault.learning.doctor import DoctorReport, check_root
    from rayvault.learning.efficacy import (
        Figures,
        ineffective_rule,
        ineffective_rules,
        is_ineffective,
        is_losing,
        record_attempt,
        rule_history,
        text_counters,
        text_figures,
    )
    from rayvault.learning.errors import (
        get_lessons,
        get_unresolved,
        log_error,
        promote_to_learning,
        resolve_error,
    )
    from rayvault.learning.events import (
        create_event,
        event_stats,
        event_versions,
        get_event,
        list_events,
        resolve_event,
        update_event,
    )
    from rayvault.learning.exceptions import (
        ConfigError,
        CorruptFileError,
        ErrorEntryNotFoundError,
        EventNotFoundError,
        GateBlocked,
        InvalidIdentifierError,
        InvalidInputError,
        LearningError,
        RuleNotFoundError,
        SoulFileNotFoundError,
        StoreError,
        UnsafePathError,
    )
    from rayvault.learning.gate import acknowledge, learning_gate
    from rayvault.learning.grouping import (
        GroupingExplanation,
        explain_grouping,
        group_failures,
    )
    from rayvault.learning.log_handler import LearningLogHandler
    from rayvault.learning.loop import (
        Diagnoser,
        Diagnosis,
        Failure,
        LearningStage,
        LoopStep,
        StageContext,
        StageRun,
        chain_diagnosers,
        diagnose_from_history,
        learning_stage,
        run_stage,
    )
    from rayvault.learning.memory import (
        apply_to_memory,
        init_memory,
        load_active_memory,
        load_tombstones,
        mark_delivered,
        prompt_rules,
        record_verification,
        render_rules,
        resolve_conflict,
        tombstone_rule,
    )
    from rayvault.learning.migrate import MigrationReport, migrate_learnings
    from rayvault.learning.models import (
        AgentMemory,
        AgentSweep,
        CompactResult,
        ConflictResolution,
        ErrorEntry,
        Finding,
        GateCheck,
        GateResult,
        IneffectiveRule,
        LearningEvent,
        Pattern,
        PromotionCandidate,
        Revalidation,
        RevisitReport,
        Rule,
        RuleAttempt,
        RuleConflict,
        RuleHistory,
        RuleRevision,
        SoulPromotion,
        StaleRule,
        Tombstone,
        TombstoneFile,
        WeeklyReport,
    )
    from rayvault.learning.patterns import Fingerprint, fingerprint
    from rayvault.learning.registry import (
        get_agent_learnings,
        get_patterns,
        get_promotion_candidates,
        get_weekly_summary,
        query_events,
    )
    from rayvault.learning.regroup import PatternChange, RegroupResult, regroup
    from rayvault.learning.resolution import BulkResolution, resolve_events
    from rayvault.learning.revisit import revisit
    from rayvault.learning.skill_graph import record_learning
    from rayvault.learning.soul import promote_rule
    from rayvault.learning.store import FileStore, Store, get_store, open_store, reset_store
    from rayvault.learning.wrapper import CommandRun, run_command

_EXPORTS: dict[str, str] = {
    # events and the immediate loop
    "create_event": "events",
    "get_event": "events",
    "event_versions": "events",
    "list_events": "events",
    "update_event": "events",
    "resolve_event": "events",
    "resolve_events": "resolution",
    "BulkResolution": "resolution",
    "event_stats": "events",
    "record_learning": "skill_graph",
    # agent memory
    "apply_to_memory": "memory",
    "load_active_memory": "memory",
    "load_tombstones": "memory",
    "tombstone_rule": "memory",
    "resolve_conflict": "memory",
    "init_memory": "memory",
    "render_rules": "memory",
    # registry queries, the weekly revisit, SOUL promotion
    "query_events": "registry",
    "get_patterns": "registry",
    "get_agent_learnings": "registry",
    "get_promotion_candidates": "registry",
    "get_weekly_summary": "registry",
    "revisit": "revisit",
    "promote_rule": "soul",
    "prompt_rules": "memory",
    "mark_delivered": "memory",
    "record_attempt": "efficacy",
    "rule_history": "efficacy",
    "is_losing": "efficacy",
    "text_counters": "efficacy",
    "record_verification": "memory",
    "ineffective_rule": "efficacy",
    "ineffective_rules": "efficacy",
    "is_ineffective": "efficacy",
    "text_figures": "efficacy",
    "Figures": "efficacy",
    # the error log (its ``get_patterns`` is ``rayvault.learning.errors.get_patterns``: the
    # package's ``get_patterns`` groups learning events)
    "log_error": "errors",
    "resolve_error": "errors",
    "get_unresolved": "errors",
    "get_lessons": "errors",
    "promote_to_learning": "errors",
    # the gate
    "learning_gate": "gate",
    "acknowledge": "gate",
    # the closed loop
    "run_stage": "loop",
    "learning_stage": "loop",
    "LearningStage": "loop",
    "StageContext": "loop",
    "StageRun": "loop",
    "Failure": "loop",
    "Diagnosis": "loop",
    "Diagnoser": "loop",
    "LoopStep": "loop",
    "diagnose_from_history": "loop",
    "chain_diagnosers": "loop",
    # any command as a stage (``rayvault-learn run``), and errors logged through ``logging``
    "run_command": "wrapper",
    "CommandRun": "wrapper",
    "LearningLogHandler": "log_handler",
    # migration and maintenance
    "migrate_learnings": "migrate",
    "MigrationReport": "migrate",
    "regroup": "regroup",
    "RegroupResult": "regroup",
    "PatternChange": "regroup",
    "check_root": "doctor",
    "DoctorReport": "doctor",
    "Finding": "models",
    "CompactResult": "models",
    # fingerprints
    "fingerprint": "patterns",
    "Fingerprint": "patterns",
    # failure grouping
    "group_failures": "grouping",
    "explain_grouping": "grouping",
    "GroupingExplanation": "grouping",
    # records
    "LearningEvent": "models",
    "Rule": "models",
    "RuleAttempt": "models",
    "RuleHistory": "models",
    "RuleRevision": "models",
    "IneffectiveRule": "models",
    "Tombstone": "models",
    "AgentMemory": "models",
    "TombstoneFile": "models",
    "ErrorEntry": "models",
    "GateCheck": "models",
    "GateResult": "models",
    "Pattern": "models",
    "PromotionCandidate": "models",
    "StaleRule": "models",
    "RuleConflict": "models",
    "ConflictResolution": "models",
    "Revalidation": "models",
    "WeeklyReport": "models",
    "AgentSweep": "models",
    "RevisitReport": "models",
    "SoulPromotion": "models",
    # stores
    "Store": "store",
    "FileStore": "store",
    "get_store": "store",
    "open_store": "store",
    "reset_store": "store",
    # errors
    "LearningError": "exceptions",
    "InvalidInputError": "exceptions",
    "InvalidIdentifierError": "exceptions",
    "ConfigError": "exceptions",
    "CorruptFileError": "exceptions",
    "EventNotFoundError": "exceptions",
    "RuleNotFoundError": "exceptions",
    "ErrorEntryNotFoundError": "exceptions",
    "SoulFileNotFoundError": "exceptions",
    "StoreError": "exceptions",
    "UnsafePathError": "exceptions",
    "GateBlocked": "exceptions",
}

__all__ = [
    "AgentMemory",
    "AgentSweep",
    "BulkResolution",
    "CommandRun",
    "CompactResult",
    "ConfigError",
    "ConflictResolution",
    "CorruptFileError",
    "Diagnoser",
    "Diagnosis",
    "DoctorReport",
    "ErrorEntry",
    "ErrorEntryNotFoundError",
    "EventNotFoundError",
    "Failure",
    "Figures",
    "FileStore",
    "Finding",
    "Fingerprint",
    "GateBlocked",
    "GateCheck",
    "GateResult",
    "GroupingExplanation",
    "IneffectiveRule",
    "InvalidIdentifierError",
    "InvalidInputError",
    "LearningError",
    "LearningEvent",
    "LearningLogHandler",
    "LearningStage",
    "LoopStep",
    "MigrationReport",
    "Pattern",
    "PatternChange",
    "PromotionCandidate",
    "RegroupResult",
    "Revalidation",
    "RevisitReport",
    "Rule",
    "RuleAttempt",
    "RuleConflict",
    "RuleHistory",
    "RuleNotFoundError",
    "RuleRevision",
    "SoulFileNotFoundError",
    "SoulPromotion",
    "StageContext",
    "StageRun",
    "StaleRule",
    "Store",
    "StoreError",
    "Tombstone",
    "TombstoneFile",
    "UnsafePathError",
    "WeeklyReport",
    "acknowledge",
    "apply_to_memory",
    "chain_diagnosers",
    "check_root",
    "create_event",
    "diagnose_from_history",
    "event_stats",
    "event_versions",
    "explain_grouping",
    "fingerprint",
    "get_agent_learnings",
    "get_event",
    "get_lessons",
    "get_patterns",
    "get_promotion_candidates",
    "get_store",
    "get_unresolved",
    "get_weekly_summary",
    "group_failures",
    "ineffective_rule",
    "ineffective_rules",
    "init_memory",
    "is_ineffective",
    "is_losing",
    "learning_gate",
    "learning_stage",
    "list_events",
    "load_active_memory",
    "load_tombstones",
    "log_error",
    "mark_delivered",
    "migrate_learnings",
    "open_store",
    "promote_rule",
    "promote_to_learning",
    "prompt_rules",
    "query_events",
    "record_attempt",
    "record_learning",
    "record_verification",
    "regroup",
    "render_rules",
    "reset_store",
    "resolve_conflict",
    "resolve_error",
    "resolve_event",
    "resolve_events",
    "revisit",
    "rule_history",
    "run_command",
    "run_stage",
    "text_counters",
    "text_figures",
    "tombstone_rule",
    "update_event",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rayvault.learning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rayvault.learning.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Package(types.ModuleType):
    """The package, guarding the API functions that share their name with a submodule
    (``revisit``, ``regroup``): importing the submodule ``rayvault.learning.revisit`` would
    otherwise rebind ``rayvault.learning.revisit`` to the module, and
    ``from rayvault.learning import revisit`` would then give the module, not the function,
    depending on what was imported first. The submodules stay importable by their full name
    (``from rayvault.learning.revisit import revisit``)."""

    def __setattr__(self, name: str, value: object) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return  # the import system binding the submodule: the function keeps the name
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
