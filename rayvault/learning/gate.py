"""The learning gate: four checks before a pipeline stage runs.

1. ``check_diff_policies`` — the effective policies (defaults, policies.py, environment) changed
   since this video's last gate run; the block names each constant, old → new.
2. ``check_diff_soul`` — the SOUL file of the stage's agent changed; the block shows a short diff.
3. ``check_regressions`` — unresolved FAIL/BLOCKER events for this video and stage. Unresolved
   means not verified and not archived: a rule applied to memory is not proof the failure is gone.
4. ``check_known_failures`` — a fingerprint seen ``LEARNING_KNOWN_FAILURE_THRESHOLD`` times or more
   in this stage (events and error log, across videos) with occurrences still unresolved.

The first run for a video records the baselines and the diff checks pass. A policies or SOUL
change blocks once and is then acknowledged: by running the gate again (the old behaviour) or
explicitly with :func:`acknowledge` (``rayvault-learn gate ack``); acknowledgements are recorded
in the gate state. Stage names fold through the alias map, so failures logged under a pipeline
step name count for their stage. ``RAYVAULT_SKIP_LEARNING_GATE=1`` or
``LEARNING_GATE_ENABLED = False`` disables the gate, and the result says so.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rayvault.learning._ids import validate_identifier
from rayvault.learning._time import format_ts, utcnow
from rayvault.learning._validate import cap_text, checked
from rayvault.learning.exceptions import CorruptFileError
from rayvault.learning.models import GateCheck, GateResult, GateState, Record
from rayvault.learning.stages import agent_for_stage, fold_stage, stage_names
from rayvault.learning.store import EventQuery, Store, get_store
from rayvault.policies import Policies

CHECK_NAMES = (
    "check_diff_policies",
    "check_diff_soul",
    "check_regressions",
    "check_known_failures",
)
#: Gate runs kept in a video's gate state (acknowledgements are all kept).
RUNS_KEPT = 50
_LISTED = 3  # events or patterns named in a block reason


def skip_requested() -> bool:
    return os.environ.get("RAYVAULT_SKIP_LEARNING_GATE", "").strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }


@dataclass(frozen=True)
class _Soul:
    agent: str | None
    path: Path | None
    text: str | None
    searched: list[Path]

    @property
    def sha256(self) -> str | None:
        return None if self.text is None else hashlib.sha256(self.text.encode()).hexdigest()


def _read_soul(store: Store, agent: str | None) -> _Soul:
    if agent is None:
        return _Soul(None, None, None, [])
    searched = store.docs.soul_candidates(agent)
    path = store.docs.find_soul(agent)
    if path is None:
        return _Soul(agent, None, None, searched)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFileError(path, f"is not UTF-8 text ({e.reason})") from e
    return _Soul(agent, path, text, searched)


def _policy_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    changes = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            changes.append(f"{name}: {_short(old.get(name))} → {_short(new.get(name))}")
    return changes


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _policy_baseline(policies: Policies) -> dict[str, Any]:
    return {"sha256": policies.file_sha256, "values": policies.values()}


def check_diff_policies(state: GateState, policies: Policies) -> GateCheck:
    """Blocks (once) when the effective policies changed since the last run for this video."""
    name = "check_diff_policies"
    current = _policy_baseline(policies)
    previous = state.policies
    state.policies = current
    if previous is None:
        return GateCheck(name=name, passed=True, reason="baseline recorded for this video")
    changes = _policy_changes(previous.get("values", {}), current["values"])
    if changes:
        return GateCheck(
            name=name,
            passed=False,
            reason="policies changed: " + "; ".join(changes),
            details={"changes": changes},
        )
    if previous.get("sha256") != current["sha256"]:
        return GateCheck(
            name=name,
            passed=False,
            reason="policies.py changed (no learning constant changed value)",
            details={"changes": [], "sha256": [previous.get("sha256"), current["sha256"]]},
        )
    return GateCheck(name=name, passed=True, reason="policies unchanged")


def _diff_summary(old: str | None, new: str | None, limit: int = 4) -> tuple[str, list[str]]:
    old_lines = (old or "").splitlines()
    new_lines = (new or "").splitlines()
    diff = [
        line
        for line in difflib.unified_diff(old_lines, new_lines, lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    added = sum(line.startswith("+") for line in diff)
    removed = len(diff) - added
    shown = [line[0] + " " + line[1:].strip()[:80] for line in diff if line[1:].strip()][:limit]
    return f"+{added} −{removed} lines", shown


def check_diff_soul(store: Store, state: GateState, stage: str, soul: _Soul) -> GateCheck:
    """Blocks (once) when the SOUL file of the stage's agent changed since the last run."""
    name = "check_diff_soul"
    if soul.agent is None:
        return GateCheck(
            name=name,
            passed=True,
            reason=f"stage {stage!r} has no agent in LEARNING_STAGE_AGENTS: no SOUL to check",
            details={"unmapped_stage": stage},
        )
    previous = state.souls.get(soul.agent)
    sha = soul.sha256
    state.souls[soul.agent] = {"path": str(soul.path) if soul.path else None, "sha256": sha}
    if soul.text is not None and sha is not None:
        store.save_soul_snapshot(sha, soul.text)
    where = ", ".join(store.docs.relative(p) for p in soul.searched)
    if previous is None:
        if soul.path is None:
            return GateCheck(
                name=name,
                passed=True,
                reason=f"no SOUL file for {soul.agent} (looked in {where}); baseline recorded",
                details={"agent": soul.agent, "missing": True},
            )
        return GateCheck(
            name=name,
            passed=True,
            reason=f"baseline recorded for {soul.agent}'s SOUL",
            details={"agent": soul.agent},
        )
    old_sha = previous.get("sha256")
    if old_sha == sha:
        if soul.path is None:
            return GateCheck(
                name=name,
                passed=True,
                reason=f"no SOUL file for {soul.agent} (looked in {where})",
                details={"agent": soul.agent, "missing": True},
            )
        return GateCheck(
            name=name, passed=True, reason=f"{soul.agent}'s SOUL unchanged", details={}
        )
    old_text = store.load_soul_snapshot(old_sha) if old_sha else None
    if soul.path is None:
        reason = f"{soul.agent}'s SOUL file was removed (looked in {where})"
        summary, lines = _diff_summary(old_text, None)
    elif old_sha is None:
        reason = f"{soul.agent}'s SOUL file appeared at {store.docs.relative(soul.path)}"
        summary, lines = _diff_summary(None, soul.text)
    else:
        summary, lines = _diff_summary(old_text, soul.text)
        reason = f"{soul.agent}'s SOUL changed ({summary})"
        if old_text is None:
            reason = f"{soul.agent}'s SOUL changed (previous version not kept: no diff)"
    if lines:
        reason += ": " + " | ".join(lines)
    return GateCheck(
        name=name,
        passed=False,
        reason=reason,
        details={"agent": soul.agent, "summary": summary, "lines": lines, "sha256": [old_sha, sha]},
    )


def check_regressions(store: Store, video_id: str, components: tuple[str, ...]) -> GateCheck:
    """Blocks while FAIL/BLOCKER events of this video and stage are unresolved."""
    name = "check_regressions"
    open_events = store.query_events(
        EventQuery(
            video_id=video_id,
            components=components,
            severities=("FAIL", "BLOCKER"),
            unresolved=True,
        )
    )
    if not open_events:
        return GateCheck(name=name, passed=True, reason="no unresolved FAIL/BLOCKER events")
    named = "; ".join(
        f"{e.event_id} [{e.severity}] {e.symptom[:60]} ({e.status})" for e in open_events[:_LISTED]
    )
    more = f" and {len(open_events) - _LISTED} more" if len(open_events) > _LISTED else ""
    return GateCheck(
        name=name,
        passed=False,
        reason=f"{len(open_events)} unresolved FAIL/BLOCKER event(s): {named}{more}",
        details={"event_ids": [e.event_id for e in open_events]},
    )


def check_known_failures(store: Store, components: tuple[str, ...], threshold: int) -> GateCheck:
    """Blocks while a recurring failure of this stage has unresolved occurrences."""
    name = "check_known_failures"
    known = store.known_failures(components, threshold)
    if not known:
        return GateCheck(
            name=name,
            passed=True,
            reason=f"no failure pattern seen {threshold}+ times with open occurrences",
        )
    named = "; ".join(
        f"{k.pattern[:70]!r} seen {k.occurrences}× ({k.unresolved} unresolved)"
        for k in known[:_LISTED]
    )
    more = f" and {len(known) - _LISTED} more" if len(known) > _LISTED else ""
    return GateCheck(
        name=name,
        passed=False,
        reason=f"{len(known)} known failure pattern(s): {named}{more}",
        details={"patterns": [k.to_dict() for k in known]},
    )


@checked
def learning_gate(video_id: str, stage: str, *, store: Store | None = None) -> GateResult:
    """Run the four checks for ``video_id`` before ``stage``; the result says whether it is
    blocked, why, and what each check found."""
    store = store or get_store()
    validate_identifier(video_id, "video id")
    validate_identifier(stage, "stage")
    policies = store.policies
    target = fold_stage(stage, policies)
    agent = agent_for_stage(target, policies)
    now = utcnow()
    if skip_requested() or not policies.LEARNING_GATE_ENABLED:
        why = (
            "RAYVAULT_SKIP_LEARNING_GATE=1"
            if skip_requested()
            else f"LEARNING_GATE_ENABLED = False ({policies.sources.get('LEARNING_GATE_ENABLED')})"
        )
        return GateResult(
            video_id=video_id,
            stage=stage,
            blocked=False,
            reason=f"learning gate disabled by {why}: no checks run",
            checks=[],
            agent=agent,
            enabled=False,
            timestamp=now,
        )
    components = stage_names(target, policies)
    soul = _read_soul(store, agent)
    with store.gate_state(video_id) as state:
        checks = [
            check_diff_policies(state, policies),
            check_diff_soul(store, state, target, soul),
            check_regressions(store, video_id, components),
            check_known_failures(store, components, policies.LEARNING_KNOWN_FAILURE_THRESHOLD),
        ]
        failed = [c for c in checks if not c.passed]
        state.runs.append(
            {
                "at": format_ts(now),
                "stage": stage,
                "blocked": bool(failed),
                "failed": [c.name for c in failed],
            }
        )
        del state.runs[:-RUNS_KEPT]
    reason = "; ".join(f"{c.name}: {c.reason}" for c in failed) if failed else "all 4 checks passed"
    return GateResult(
        video_id=video_id,
        stage=stage,
        blocked=bool(failed),
        reason=reason,
        checks=checks,
        agent=agent,
        enabled=True,
        timestamp=now,
    )


class Acknowledgement(Record):
    """A policies/SOUL change accepted for one video and stage, as recorded in the gate state."""

    video_id: str
    stage: str
    at: str
    agent: str | None = None
    policies: list[str]
    soul: str | None = None
    note: str | None = None


@checked
def acknowledge(
    video_id: str, stage: str, *, note: str | None = None, store: Store | None = None
) -> Acknowledgement:
    """Accept the current policies and the stage agent's current SOUL for this video, so the
    diff checks pass from now on; the acknowledgement (what changed) is recorded."""
    store = store or get_store()
    validate_identifier(video_id, "video id")
    validate_identifier(stage, "stage")
    policies = store.policies
    target = fold_stage(stage, policies)
    agent = agent_for_stage(target, policies)
    soul = _read_soul(store, agent)
    with store.gate_state(video_id) as state:
        policy_check = check_diff_policies(state, policies)
        soul_check = check_diff_soul(store, state, target, soul)
        ack = Acknowledgement(
            video_id=video_id,
            stage=stage,
            at=format_ts(utcnow()),
            agent=agent,
            policies=[] if policy_check.passed else [policy_check.reason],
            soul=None if soul_check.passed else soul_check.reason,
            note=cap_text(note, policies.LEARNING_MAX_TEXT_CHARS) if note else note,
        )
        state.acks.append(ack.to_dict())
    return ack
