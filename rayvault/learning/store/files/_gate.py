"""What the learning gate reads from a file store, as plain data (``rayvault.learning._plain``).

A cold ``rayvault-learn gate`` must not import pydantic (issue 15 item 4): its state, the agent's
rules, the open events and the known failures are read here as JSON and checked by hand. Data that
fails the check is validated by its record as everywhere else, so a corrupt file gets the same
error, naming it, and is never written over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rayvault.learning._plain import (
    EVENT_FIELDS,
    GATE_STATE_FIELDS,
    MEMORY_FIELDS,
    PlainEvent,
    PlainGateState,
    PlainKnownFailure,
    PlainRule,
    conforms,
)
from rayvault.learning._time import utcnow
from rayvault.learning.store._fs import atomic_write, locked
from rayvault.learning.store._leanjson import dumps, loads_value, read
from rayvault.learning.store.files._packed import unpack
from rayvault.learning.store.files.layout import MEMORY_FILE

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from rayvault.learning.models import GateState, KnownFailure, LearningEvent, Rule
    from rayvault.learning.store.files._base import FileStoreBase


#: The fields of a gate state that are a history, not a baseline: what a run adds.
RUN_FIELDS = frozenset({"runs", "updated"})


def baselines(state: dict[str, Any]) -> dict[str, Any]:
    """A gate state's fields but its run history: what an acknowledgement or a first run sets."""
    return {k: v for k, v in state.items() if k not in RUN_FIELDS}


class GateReads:
    """The gate's reads of one file store; each returns plain records, or the validated ones
    for data the hand check refused (the gate reads both alike)."""

    def __init__(self, store: FileStoreBase) -> None:
        self.store = store

    def _state(self, raw: Any, path: Path) -> PlainGateState | GateState | None:
        if raw is None:
            return None
        if conforms(raw, GATE_STATE_FIELDS):
            return PlainGateState.from_raw(raw)
        from rayvault.learning.models import GateState
        from rayvault.learning.store._records import validate_record

        return validate_record(GateState, raw, path, "the gate state")

    def state(self, video_id: str) -> PlainGateState | GateState | None:
        """``store.load_gate_state``."""
        self.store._gate_folder_usable()
        path = self.store.gate_state_path(video_id)
        return self._state(read(path), path)

    @contextlib.contextmanager
    def locked_state(self, video_id: str) -> Iterator[PlainGateState | GateState]:
        """``store.gate_state``: under the state's lock, written back atomically on exit.

        Durable as every write (``_fs``): the state file and its folder are flushed with an
        ``fsync`` each, not in a group (``durable_group``) flushed with a ``syncfs``: for one
        file that costs the same, without loading ``ctypes`` to call ``syncfs`` (1.6 ms of a
        cold gate). When the block only added run records (every gate run with its baselines
        unchanged), the folder is not flushed: a power cut may lose those records, never a
        baseline or an acknowledgement (``atomic_write``'s ``replace_durable``). A new SOUL
        snapshot written in the block is flushed on its own, before."""
        store = self.store
        store._writable()
        store._gate_folder_usable()
        path = store.gate_state_path(video_id)
        with locked(path):
            found = self._state(read(path), path)
            state = found or PlainGateState(video_id=video_id)
            before = None if found is None else baselines(state.to_dict())
            yield state
            state.updated = utcnow()
            data = state.to_dict()
            atomic_write(path, dumps(data), replace_durable=baselines(data) != before)

    def open_failures(
        self, video_id: str, components: tuple[str, ...]
    ) -> list[PlainEvent | LearningEvent]:
        """The video's unresolved FAIL/BLOCKER events in the components (``store.query_events``
        of that query)."""
        found: list[PlainEvent | LearningEvent] = []
        for row in self.store.open_failure_rows(video_id, components):
            raw = loads_value(unpack(row[0]))
            plain = conforms(raw, EVENT_FIELDS)
            found.append(PlainEvent(raw) if plain else self.store.full_store()._event(row[0]))
        return found

    def rules(self, agent: str) -> list[PlainRule] | list[Rule]:
        """``store.load_memory(agent).rules``."""
        path = self.store.agent_dir(agent) / MEMORY_FILE
        raw = read(path)
        if raw is None:
            return []
        if conforms(raw, MEMORY_FIELDS):
            return [PlainRule(rule) for rule in raw.get("rules", [])]
        return self.store.full_store().load_memory(agent).rules

    def known(
        self, components: tuple[str, ...], threshold: int
    ) -> list[PlainKnownFailure] | list[KnownFailure]:
        """``store.known_failures``."""
        rows = self.store.known_failure_rows(components, threshold)
        if not all(isinstance(row[1], str) for row in rows):
            return self.store.full_store().known_failures(components, threshold)
        return [PlainKnownFailure(*row) for row in rows]
