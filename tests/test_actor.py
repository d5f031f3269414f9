"""Who did a person's action (issue 18: every action of the web app is recorded with who and
when): ``actor`` on resolve, tombstone, SOUL promotion and gate acknowledgement, on both stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from rayvault.learning import (
    InvalidInputError,
    acknowledge,
    create_event,
    learning_gate,
    load_active_memory,
    load_tombstones,
    promote_rule,
    resolve_events,
    tombstone_rule,
)
from rayvault.learning.store import Store

from .conftest import Clock, event_kwargs

AGENT = "dzine_producer"


def test_resolve_records_who_beside_when(store: Store, clock: Clock) -> None:
    event = create_event(**event_kwargs(verification=""), store=store)  # type: ignore[arg-type]
    clock.advance(hours=2)
    done = resolve_events(
        [event.event_id], verification="re-ran", apply=True, actor="ana", store=store
    )
    [written] = done.events
    stored = store.get_event(event.event_id)
    assert stored is not None and stored.get("resolved_by") == "ana" == written.get("resolved_by")
    assert stored.resolved_at == clock.now and stored.status == "verified"


def test_resolve_without_actor_writes_no_field(store: Store) -> None:
    event = create_event(**event_kwargs(verification=""), store=store)  # type: ignore[arg-type]
    resolve_events([event.event_id], verification="re-ran", apply=True, store=store)
    stored = store.get_event(event.event_id)
    assert stored is not None and "resolved_by" not in stored


def test_tombstone_records_who(store: Store, clock: Clock) -> None:
    event = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    tombstone_rule(AGENT, str(event.rule_id), "stale", actor="bo", store=store)
    [stone] = load_tombstones(AGENT, store=store).tombstones
    assert stone.get("tombstoned_by") == "bo" and stone.tombstoned_at == clock.now


def test_promotion_records_who_on_the_rule(store: Store, souls: Path, clock: Clock) -> None:
    event = create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    soul = souls / AGENT / "SOUL.md"
    promote_rule(AGENT, str(event.rule_id), actor="cy", store=store)
    [rule] = load_active_memory(AGENT, store=store).rules
    assert (
        rule.get("promoted_by") == "cy" and rule.get("promoted_at") == "2026-02-19T12:00:00.000000Z"
    )
    # The SOUL section names no one.
    assert "cy" not in soul.read_text().split("rayvault:rule")[1]


def test_ack_records_who(store: Store, souls: Path, clock: Clock) -> None:
    learning_gate("v042", "assets", store=store)
    soul = souls / AGENT / "SOUL.md"
    soul.write_text(soul.read_text() + "\n- New rule.\n")
    ack = acknowledge("v042", "assets", note="reviewed", actor="dee", store=store)
    assert ack.get("by") == "dee"
    state = store.load_gate_state("v042")
    assert state is not None and state.acks[-1]["by"] == "dee"


@pytest.mark.parametrize("bad", ["", "  ", "a\nb", "x" * 121])
def test_a_bad_actor_is_refused_before_anything_is_written(store: Store, bad: str) -> None:
    event = create_event(**event_kwargs(verification=""), store=store)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="actor"):
        resolve_events([event.event_id], verification="x", apply=True, actor=bad, store=store)
    with pytest.raises(InvalidInputError, match="actor"):
        tombstone_rule(AGENT, str(event.rule_id), "stale", actor=bad, store=store)
    stored = store.get_event(event.event_id)
    assert stored is not None and not stored.resolved
    assert [r.rule_id for r in load_active_memory(AGENT, store=store).rules] == [event.rule_id]
