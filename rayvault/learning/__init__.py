"""rayvault-learning: every pipeline failure becomes a learning event, the event becomes a rule in
the failing agent's memory at once, a gate holds a stage while known regressions are open, and a
weekly review retires stale rules and promotes lasting ones into the agent's SOUL.

The public API is re-exported here and imported lazily, so ``import rayvault.learning`` stays
cheap for short-lived processes (the CLI, pipeline hooks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rayvault.learning.doctor import DoctorReport, check_root
    from rayvault.learning.events import (
        create_event,
        event_stats,
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
    )
    from rayvault.learning.memory import (
        apply_to_memory,
        init_memory,
        load_active_memory,
        load_tombstones,
        render_rules,
        tombstone_rule,
    )
    from rayvault.learning.migrate import MigrationReport, migrate_learnings
    from rayvault.learning.models import (
        AgentMemory,
        CompactResult,
        ErrorEntry,
        Finding,
        GateCheck,
        GateResult,
        LearningEvent,
        Rule,
        Tombstone,
        TombstoneFile,
    )
    from rayvault.learning.patterns import Fingerprint, fingerprint
    from rayvault.learning.skill_graph import record_learning
    from rayvault.learning.store import FileStore, Store, get_store, open_store, reset_store

_EXPORTS: dict[str, str] = {
    # events and the immediate loop
    "create_event": "events",
    "get_event": "events",
    "list_events": "events",
    "update_event": "events",
    "resolve_event": "events",
    "event_stats": "events",
    "record_learning": "skill_graph",
    # agent memory
    "apply_to_memory": "memory",
    "load_active_memory": "memory",
    "load_tombstones": "memory",
    "tombstone_rule": "memory",
    "init_memory": "memory",
    "render_rules": "memory",
    # migration and maintenance
    "migrate_learnings": "migrate",
    "MigrationReport": "migrate",
    "check_root": "doctor",
    "DoctorReport": "doctor",
    "Finding": "models",
    "CompactResult": "models",
    # fingerprints
    "fingerprint": "patterns",
    "Fingerprint": "patterns",
    # records
    "LearningEvent": "models",
    "Rule": "models",
    "Tombstone": "models",
    "AgentMemory": "models",
    "TombstoneFile": "models",
    "ErrorEntry": "models",
    "GateCheck": "models",
    "GateResult": "models",
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
    "GateBlocked": "exceptions",
}

__all__ = [
    "AgentMemory",
    "CompactResult",
    "ConfigError",
    "CorruptFileError",
    "DoctorReport",
    "ErrorEntry",
    "ErrorEntryNotFoundError",
    "EventNotFoundError",
    "FileStore",
    "Finding",
    "Fingerprint",
    "GateBlocked",
    "GateCheck",
    "GateResult",
    "InvalidIdentifierError",
    "InvalidInputError",
    "LearningError",
    "LearningEvent",
    "MigrationReport",
    "Rule",
    "RuleNotFoundError",
    "SoulFileNotFoundError",
    "Store",
    "StoreError",
    "Tombstone",
    "TombstoneFile",
    "apply_to_memory",
    "check_root",
    "create_event",
    "event_stats",
    "fingerprint",
    "get_event",
    "get_store",
    "init_memory",
    "list_events",
    "load_active_memory",
    "load_tombstones",
    "migrate_learnings",
    "open_store",
    "record_learning",
    "render_rules",
    "reset_store",
    "resolve_event",
    "tombstone_rule",
    "update_event",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rayvault.learning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rayvault.learning.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
