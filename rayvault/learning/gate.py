"""The learning gate: four checks before a pipeline stage runs.

1. ``check_diff_policies`` — the effective policies (defaults, policies.py, environment) changed
   since this video's last gate run; the block names each constant, old → new.
2. ``check_diff_soul`` — the SOUL file of the stage's agent changed; the block shows a short diff.
3. ``check_regressions`` — unresolved FAIL/BLOCKER events for this video and stage. Unresolved
   means not verified and not archived: a rule applied to memory is not proof the failure is gone.
   An event that is a regression (its pattern was fixed and verified, and came back) is listed
   first and named so: ``… — regressed: fixed 2026-11-20 by le-…, back in v107``.
4. ``check_known_failures`` — a fingerprint seen ``LEARNING_KNOWN_FAILURE_THRESHOLD`` times or more
   in this stage (events and error log, across videos) with occurrences still unresolved; and
   the stage agent's *ineffective* rules (delivered ``LEARNING_EFFICACY_MIN_DELIVERIES`` times or
   more, their failure recurring in ``LEARNING_EFFICACY_MAX_RECURRENCE_RATE`` of them or more:
   :func:`rayvault.learning.efficacy.ineffective_rule`), always a warning — the rule is being
   delivered and not working, which a person settles (tombstone or rewrite), not the pipeline.

Levels (``LEARNING_GATE_LEVELS``, per check and optionally per stage): a check at ``deny`` blocks
(exit 2), at ``warn`` it is reported and does not block (exit 0). Each check's record carries its
``level`` and ``outcome`` (``pass``, ``warn`` or ``deny``), and a denial lists the commands that
clear it. Known failures deny only a recurring failure the system has no answer for: one whose
occurrences include FAIL/BLOCKER (an error-log entry counts as FAIL: a stage failed) and from
which no active rule of the stage's agent was learned. A recurring failure whose rule is being
delivered to the agent, or one seen only as INFO/WARN, is a warning: the pipeline keeps learning
instead of stalling on every later video.

The first run for a video records the baselines and the diff checks pass. A policies or SOUL
change blocks once and is then acknowledged: by running the gate again (the old behaviour) or
explicitly with :func:`acknowledge` (``rayvault-learn gate ack``); acknowledgements are recorded
in the gate state. Stage names fold through the alias map, so failures logged under a pipeline
step name count for their stage; a stage no map knows is refused (:class:`InvalidInputError`,
with a suggestion). ``RAYVAULT_SKIP_LEARNING_GATE=1`` or ``LEARNING_GATE_ENABLED = False``
disables the gate, and the result says so.

Gate state written by the original system (``{"policies_sha", "soul_shas", "last_passed"}``,
SHA-1 hashes of the files' bytes, no ``video_id``) is a valid baseline: it tells *that* the
policies file or a SOUL file changed, not which constant or which lines. It is upgraded to the
current shape, in place and atomically, by the next gate run or acknowledgement.

Each check is also callable alone — :func:`check_diff_policies`, :func:`check_diff_soul`,
:func:`check_regressions`, :func:`check_known_failures` — and returns its :class:`GateCheck`.
Called alone, the checks only read: the diff checks compare with the recorded baseline (when
there is none, they pass saying so) and never record or acknowledge one; only
:func:`learning_gate` and :func:`acknowledge` write the gate state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from rayvault.learning._hash import sha1_hex, sha256_hex
from rayvault.learning._ids import validate_identifier
from rayvault.learning._plain import (
    PlainCheck,
    PlainEvent,
    PlainGateResult,
    PlainGateState,
    PlainKnownFailure,
    PlainRule,
    regression_text,
)
from rayvault.learning._time import format_ts, parse_ts, utcnow
from rayvault.learning._validate import cap_text, checked, clean_actor
from rayvault.learning._words import counted
from rayvault.learning.exceptions import CorruptFileError
from rayvault.learning.stages import agent_for_stage, check_stage, fold_stage, stage_names
from rayvault.policies import Policies

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a cold gate)
if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from typing import Any, Literal, Protocol

    # The records are imported when a public function returns one: the CLI's gate
    # (``learning_gate_plain``) reads and decides with plain data, and imports no pydantic.
    from rayvault.learning.models import (
        Acknowledgement,
        GateCheck,
        GateResult,
        GateState,
        KnownFailure,
        LearningEvent,
        Rule,
    )
    from rayvault.learning.store import Store

__all__ = [
    "CHECK_NAMES",
    "Acknowledgement",
    "acknowledge",
    "check_diff_policies",
    "check_diff_soul",
    "check_known_failures",
    "check_level",
    "check_regressions",
    "learning_gate",
    "learning_gate_plain",
]

CHECK_NAMES = (
    "check_diff_policies",
    "check_diff_soul",
    "check_regressions",
    "check_known_failures",
)
#: Gate runs kept in a video's gate state (acknowledgements are all kept).
RUNS_KEPT = 50
_LISTED = 3  # events or patterns named in a block reason
#: The fields of a gate state written by the original system.
_LEGACY_FIELDS = ("policies_sha", "soul_shas", "last_passed")
if TYPE_CHECKING:
    Level = Literal["deny", "warn"]


def skip_requested() -> bool:
    return os.environ.get("RAYVAULT_SKIP_LEARNING_GATE", "").strip().lower() in {
        "1",
        "true",
        "yes",
        "on",
    }


def check_level(name: str, stage: str, policies: Policies) -> Level:
    """The level of check ``name`` for gate stage ``stage`` (``LEARNING_GATE_LEVELS``)."""
    value = policies.LEARNING_GATE_LEVELS.get(name, "deny")
    if isinstance(value, Mapping):
        value = value.get(stage) or value.get("*") or "deny"
    return "warn" if value == "warn" else "deny"


def _graded(check: PlainCheck, level: Level) -> PlainCheck:
    """``check`` with its level, and its outcome capped by the level (a denial at ``warn`` is a
    warning)."""
    outcome = check.outcome
    if not check.passed and outcome == "pass":
        outcome = "deny"
    if outcome == "deny" and level == "warn":
        outcome = "warn"
    check.level = level
    check.outcome = outcome
    check.passed = outcome != "deny"
    if outcome != "deny":
        check.clear = []
    return check


class _Soul:
    """The stage agent's SOUL file as this run reads it. (Plain classes here, not dataclasses: a
    cold gate imports no ``dataclasses``, whose ``inspect`` costs it ~9 ms.)"""

    __slots__ = ("agent", "path", "searched", "sha1s", "text")

    def __init__(
        self,
        agent: str | None,
        path: Path | None,
        text: str | None,
        searched: list[Path],
        sha1s: frozenset[str] = frozenset(),
    ) -> None:
        self.agent = agent
        self.path = path
        self.text = text
        self.searched = searched
        #: SHA-1 of the bytes of each searched location ("" when missing): the original's hashes.
        self.sha1s = sha1s

    @property
    def sha256(self) -> str | None:
        return None if self.text is None else sha256_hex(self.text.encode())


def _sha1_file(path: Path) -> str:
    try:
        return sha1_hex(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ""


def _read_soul(store: Store, agent: str | None, *, legacy: bool = False) -> _Soul:
    if agent is None:
        return _Soul(None, None, None, [])
    searched = store.docs.soul_candidates(agent)
    path = store.docs.find_soul(agent)
    sha1s = frozenset(_sha1_file(p) for p in searched) if legacy else frozenset()
    if path is None:
        return _Soul(agent, None, None, searched, sha1s)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise CorruptFileError(path, f"is not UTF-8 text ({e.reason})") from e
    return _Soul(agent, path, text, searched, sha1s)


# -- gate state written by the original system ---------------------------------------------------
def _upgrade_state(state: GateState | PlainGateState, video_id: str) -> bool:
    """Turn an original gate state (``policies_sha``, ``soul_shas``, ``last_passed``) into the
    current shape, in memory: its SHA-1 hashes become baselines compared by SHA-1, its last pass
    a run. Whether it was one (the caller writes it back, atomically, when it writes)."""
    if isinstance(state, PlainGateState):
        extra = state.extra
    else:
        extra = state.__pydantic_extra__ if state.__pydantic_extra__ is not None else {}
    if state.video_id is None:
        state.video_id = video_id
    if not any(name in extra for name in _LEGACY_FIELDS):
        return False
    policies_sha = extra.pop("policies_sha", None)
    if state.policies is None and isinstance(policies_sha, str):
        state.policies = {"sha1": policies_sha, "values": None, "from": "original"}
    soul_shas = extra.pop("soul_shas", None)
    if isinstance(soul_shas, Mapping):
        for agent, sha in soul_shas.items():
            if isinstance(agent, str) and isinstance(sha, str) and agent not in state.souls:
                state.souls[agent] = {"path": None, "sha1": sha, "from": "original"}
    last = extra.pop("last_passed", None)
    if isinstance(last, Mapping):
        run: dict[str, Any] = {"stage": last.get("stage"), "blocked": False, "failed": []}
        try:
            run["at"] = format_ts(parse_ts(last.get("timestamp")))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            run["at"] = last.get("timestamp")
        state.runs.insert(0, {"at": run.pop("at"), **run, "from": "original"})
    return True


def _load_state(store: Store, video_id: str) -> GateState | PlainGateState:
    """The video's gate state as the gate would see it (upgraded in memory; nothing written)."""
    state = _reads(store).state(video_id) or PlainGateState(video_id=video_id)
    _upgrade_state(state, video_id)
    return state


# -- 1. policies ---------------------------------------------------------------------------------
def _policy_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    defaults = Policies().values()
    changes = []
    for name in sorted(set(old) | set(new)):
        if name not in old and new.get(name) == defaults.get(name):
            continue  # a constant added by an upgrade, at its default: nothing was changed
        if old.get(name) != new.get(name):
            changes.append(f"{name}: {_short(old.get(name))} → {_short(new.get(name))}")
    return changes


def _short(value: Any, limit: int = 60) -> str:
    return _clip(repr(value), limit)


def _clip(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, a cut marked with "…"."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _policy_baseline(policies: Policies) -> dict[str, Any]:
    return {"sha256": policies.file_sha256, "values": policies.values()}


def _ack_command(video_id: str, stage: str) -> str:
    return f'rayvault-learn gate ack {video_id} {stage} --note "<what you reviewed>"'


def _diff_policies(
    store: Store, state: GateState | PlainGateState, policies: Policies, video_id: str, stage: str
) -> PlainCheck:
    name = "check_diff_policies"
    current = _policy_baseline(policies)
    previous = state.policies
    state.policies = current
    clear = [_ack_command(video_id, stage)]
    if previous is None:
        return PlainCheck(name=name, passed=True, reason="baseline recorded for this video")
    if previous.get("values") is None and "sha1" in previous:
        # The original system's baseline: a SHA-1 of its policies file's bytes.
        if previous["sha1"] in store.docs.policies_sha1s():
            return PlainCheck(
                name=name,
                passed=True,
                reason="policies file unchanged since the original system's last run "
                "(baseline upgraded)",
            )
        return PlainCheck(
            name=name,
            passed=False,
            reason="policies file changed since the original system's last gate run for this "
            "video (it kept only a SHA-1 of the file: which constant changed cannot be told)",
            details={"changes": [], "sha1": previous["sha1"]},
            clear=clear,
        )
    changes = _policy_changes(previous.get("values", {}), current["values"])
    if changes:
        return PlainCheck(
            name=name,
            passed=False,
            reason="policies changed: " + "; ".join(changes),
            details={"changes": changes},
            clear=clear,
        )
    if previous.get("sha256") != current["sha256"]:
        return PlainCheck(
            name=name,
            passed=False,
            reason="policies.py changed (no learning constant changed value)",
            details={"changes": [], "sha256": [previous.get("sha256"), current["sha256"]]},
            clear=clear,
        )
    return PlainCheck(name=name, passed=True, reason="policies unchanged")


# -- 2. SOUL -------------------------------------------------------------------------------------
def _unified_diff(old_lines: list[str], new_lines: list[str]) -> list[str]:
    """The changed lines (difflib is imported only when a SOUL changed: not by a cold gate)."""
    import difflib

    return list(difflib.unified_diff(old_lines, new_lines, lineterm="", n=0))


def _diff_summary(old: str | None, new: str | None, limit: int = 4) -> tuple[str, list[str]]:
    old_lines = (old or "").splitlines()
    new_lines = (new or "").splitlines()
    diff = [
        line
        for line in _unified_diff(old_lines, new_lines)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    added = sum(line.startswith("+") for line in diff)
    removed = len(diff) - added
    shown = [line[0] + " " + line[1:].strip()[:80] for line in diff if line[1:].strip()][:limit]
    return f"+{added} −{removed} lines", shown


def _diff_soul(
    store: Store, state: GateState | PlainGateState, stage: str, soul: _Soul, video_id: str
) -> PlainCheck:
    name = "check_diff_soul"
    if soul.agent is None:
        return PlainCheck(
            name=name,
            passed=True,
            reason=f"stage {stage!r} has no agent in LEARNING_STAGE_AGENTS: no SOUL to check",
            details={"unmapped_stage": stage},
        )
    previous = state.souls.get(soul.agent)
    sha = soul.sha256
    state.souls[soul.agent] = {"path": str(soul.path) if soul.path else None, "sha256": sha}
    where = ", ".join(store.docs.relative(p) for p in soul.searched)
    clear = [_ack_command(video_id, stage)]
    if previous is None:
        if soul.path is None:
            return PlainCheck(
                name=name,
                passed=True,
                reason=f"no SOUL file for {soul.agent} (looked in {where}); baseline recorded",
                details={"agent": soul.agent, "missing": True},
            )
        return PlainCheck(
            name=name,
            passed=True,
            reason=f"baseline recorded for {soul.agent}'s SOUL",
            details={"agent": soul.agent},
        )
    if "sha256" not in previous and "sha1" in previous:
        # The original system's baseline: a SHA-1 of the SOUL file's bytes ("" for none).
        if previous["sha1"] in soul.sha1s:
            return PlainCheck(
                name=name,
                passed=True,
                reason=f"{soul.agent}'s SOUL unchanged since the original system's last run "
                "(baseline upgraded)",
                details={"agent": soul.agent},
            )
        return PlainCheck(
            name=name,
            passed=False,
            reason=f"{soul.agent}'s SOUL changed since the original system's last gate run "
            "(it kept only a SHA-1 of the file: no diff)",
            details={"agent": soul.agent, "sha1": previous["sha1"], "sha256": [None, sha]},
            clear=clear,
        )
    old_sha = previous.get("sha256")
    if old_sha == sha:
        if soul.path is None:
            return PlainCheck(
                name=name,
                passed=True,
                reason=f"no SOUL file for {soul.agent} (looked in {where})",
                details={"agent": soul.agent, "missing": True},
            )
        return PlainCheck(
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
    return PlainCheck(
        name=name,
        passed=False,
        reason=reason,
        details={"agent": soul.agent, "summary": summary, "lines": lines, "sha256": [old_sha, sha]},
        clear=clear,
    )


# -- 3. regressions ------------------------------------------------------------------------------
def _resolve_command(event_id: str) -> str:
    return f'rayvault-learn events resolve {event_id} --verification "<how the fix was verified>"'


def _regressions(store: Store, video_id: str, components: tuple[str, ...]) -> PlainCheck:
    name = "check_regressions"
    open_events = _reads(store).open_failures(video_id, components)
    if not open_events:
        return PlainCheck(name=name, passed=True, reason="no unresolved FAIL/BLOCKER events")
    # Regressions first: a failure back after its fix was verified is named as such.
    listed = sorted(open_events, key=lambda e: e.regression_of is None)[:_LISTED]
    named = "; ".join(_open_event_text(e) for e in listed)
    more = f" and {len(open_events) - _LISTED} more" if len(open_events) > _LISTED else ""
    details: dict[str, Any] = {"event_ids": [e.event_id for e in open_events]}
    regressed = [e for e in open_events if e.regression_of is not None]
    if regressed:
        details["regressions"] = [
            {
                "event_id": e.event_id,
                "regression_of": e.regression_of,
                "regressed_after_seconds": e.regressed_after_seconds,
                "reason": regression_text(e),
            }
            for e in regressed
        ]
    return PlainCheck(
        name=name,
        passed=False,
        reason=f"{counted(len(open_events), 'unresolved FAIL/BLOCKER event')}: {named}{more}",
        details=details,
        clear=[_resolve_command(e.event_id) for e in open_events],
    )


def _open_event_text(event: PlainEvent | LearningEvent) -> str:
    text = f"{event.event_id} [{event.severity}] {_clip(event.symptom)} ({event.status})"
    regressed = regression_text(event)
    return f"{text} — {regressed}" if regressed else text


# -- 4. known failures ---------------------------------------------------------------------------
def _pattern_verdict(
    known: PlainKnownFailure | KnownFailure,
    failing: bool,
    rule_id: str | None,
    agent: str | None,
    ineffective: frozenset[str] | set[str] = frozenset(),
) -> dict[str, Any]:
    """Whether one recurring failure denies: it has FAIL/BLOCKER occurrences (events, or
    error-log entries, which are stage failures) and no active rule of the agent learned from it."""
    verdict: dict[str, Any] = {
        **known.to_dict(),
        "failing": failing,
        "rule_id": rule_id,
        "outcome": "deny" if failing and rule_id is None else "warn",
    }
    if not failing:
        verdict["why"] = "seen only as INFO/WARN"
    elif rule_id is not None and rule_id in ineffective:
        verdict["why"] = f"rule {rule_id} of {agent} is being delivered but is ineffective"
    elif rule_id is not None:
        verdict["why"] = f"rule {rule_id} of {agent} is being delivered"
    else:
        verdict["why"] = "FAIL/BLOCKER occurrences and no active rule learned from it"
    return verdict


def _clear_known(
    store: Store, fp: str, components: tuple[str, ...], agent: str | None
) -> list[str]:
    """Commands that clear a recurring failure: teach its agent a rule from one of its errors, or
    resolve its open occurrences (a few named; indexed look-ups, no sort)."""
    event_ids, error_ids = store.open_occurrences(fp, components, _LISTED)
    commands = []
    if event_ids:  # every open occurrence at once (a dry run without --yes)
        commands.append(
            f"rayvault-learn events resolve --pattern {fp} --yes "
            '--verification "<how the fix was verified>"'
        )
    commands += [_resolve_command(event_id) for event_id in event_ids]
    for error_id in error_ids:
        if agent is not None and not commands:
            commands.append(
                f"rayvault-learn errors promote {error_id} --root-cause "
                f'"<why it fails>" --fix "<what to do>" --agent {agent}'
            )
        commands.append(
            f'rayvault-learn errors resolve {error_id} --root-cause "<why>" --fix "<what fixed it>"'
        )
    return commands


def _ineffective(
    rules: Sequence[PlainRule | Rule] | None, agent: str | None, policies: Policies
) -> list[dict[str, Any]]:
    """The agent's ineffective rules, compact (the revisit and ``memory show`` carry the
    attempts). The efficacy module is imported only when some rule has enough deliveries to be
    judged: the cold gate of an agent whose rules are young pays an integer comparison."""
    if not rules or agent is None:
        return []
    least = policies.LEARNING_EFFICACY_MIN_DELIVERIES
    judged = [r for r in rules if r.deliveries >= least]
    if not judged:
        return []
    from rayvault.learning.efficacy import ineffective_rules

    return [
        {
            "rule_id": f.rule_id,
            "deliveries": f.deliveries,
            "recurrences": f.recurrences,
            "recurrence_rate": f.recurrence_rate,
            "why": f.reason,
            "proposal": f.proposal,
            "history": f"rayvault-learn rules history {agent} {f.rule_id}",
        }
        for f in ineffective_rules(agent, _as_rules(judged), policies)
    ]


def _ineffective_text(found: list[dict[str, Any]], agent: str | None) -> str:
    named = "; ".join(f"{f['rule_id']} ({f['why']})" for f in found[:_LISTED])
    more = f" and {len(found) - _LISTED} more" if len(found) > _LISTED else ""
    which = found[0]["rule_id"] if len(found) == 1 else "RULE_ID"
    return (
        f"{counted(len(found), 'ineffective rule')} of {agent}: {named}{more} — tombstone or "
        f"rewrite (evidence: `rayvault-learn rules history {agent} {which}`)"
    )


def _known_failures(
    store: Store,
    components: tuple[str, ...],
    threshold: int,
    agent: str | None,
    policies: Policies,
) -> PlainCheck:
    name = "check_known_failures"
    reads = _reads(store)
    known = reads.known(components, threshold)
    memory_rules = reads.rules(agent) if agent is not None else None
    ineffective = _ineffective(memory_rules, agent, policies)
    if not known:
        if ineffective:
            return PlainCheck(
                name=name,
                passed=True,
                reason=_ineffective_text(ineffective, agent),
                details={"patterns": [], "ineffective_rules": ineffective},
                outcome="warn",
            )
        return PlainCheck(
            name=name,
            passed=True,
            reason=f"no failure pattern seen {threshold}+ times with open occurrences",
        )
    rules: dict[str, str] = {}
    if memory_rules is not None:
        known_keys = {k.fingerprint for k in known}  # merges followed
        for rule in memory_rules:
            fp = rule.fingerprint
            if not fp:  # a rule written before fingerprints: computed (masking imports cost)
                from rayvault.learning.memory import rule_fingerprint

                fp = rule_fingerprint(_as_rules([rule])[0], store)
            if fp not in known_keys:  # perhaps a pattern merged since: where it went
                fp = store.resolve_pattern(fp)
            rules.setdefault(fp, rule.rule_id)
    failing = store.failing_fingerprints([k.fingerprint for k in known], components)
    flagged = {f["rule_id"] for f in ineffective}
    verdicts = [
        _pattern_verdict(k, k.fingerprint in failing, rules.get(k.fingerprint), agent, flagged)
        for k in known
    ]
    denied = [v for v in verdicts if v["outcome"] == "deny"]
    shown = (denied or verdicts)[:_LISTED]
    named = "; ".join(
        f"{v['pattern'][:70]!r} seen {v['occurrences']}× ({v['unresolved']} unresolved; {v['why']})"
        for v in shown
    )
    total = len(denied) or len(verdicts)
    more = f" and {total - _LISTED} more" if total > _LISTED else ""
    if denied:
        reason = f"{counted(len(denied), 'recurring failure')} with no answer: {named}{more}"
        if len(verdicts) > len(denied):
            reason += f" (+{len(verdicts) - len(denied)} more as warnings)"
        # Ids for the first pattern only: the gate is on every stage's hot path, and the
        # others are in ``details`` (and cleared the same way).
        clear = _clear_known(store, denied[0]["fingerprint"], components, agent)
    else:
        reason = f"{counted(len(verdicts), 'recurring failure')}, none unanswered: {named}{more}"
        clear = []
    details: dict[str, Any] = {"patterns": verdicts}
    if ineffective:
        reason += "; " + _ineffective_text(ineffective, agent)
        details["ineffective_rules"] = ineffective
    return PlainCheck(
        name=name,
        passed=not denied,
        reason=reason,
        details=details,
        outcome="deny" if denied else "warn",
        clear=clear,
    )


# -- the four checks, callable alone -------------------------------------------------------------
class _Target:
    """The gate stage a stage name folds to, its agent, its component names, the policies."""

    __slots__ = ("agent", "components", "policies", "stage")

    def __init__(
        self, stage: str, agent: str | None, components: tuple[str, ...], policies: Policies
    ) -> None:
        self.stage = stage
        self.agent = agent
        self.components = components
        self.policies = policies


def _target(store: Store, stage: str) -> _Target:
    validate_identifier(stage, "stage")
    policies = store.policies
    check_stage(stage, policies)
    target = fold_stage(stage, policies)
    return _Target(
        target, agent_for_stage(target, policies), stage_names(target, policies), policies
    )


def _check_diff_policies(video_id: str, stage: str, *, store: Store | None = None) -> PlainCheck:
    store = store or _default_store()
    validate_identifier(video_id, "video id")
    t = _target(store, stage)
    state = _load_state(store, video_id)
    if state.policies is None:
        return _graded(
            PlainCheck(
                name="check_diff_policies",
                passed=True,
                reason="no baseline yet for this video (the gate records one on its first run)",
            ),
            check_level("check_diff_policies", t.stage, t.policies),
        )
    check = _diff_policies(store, state, t.policies, video_id, stage)
    return _graded(check, check_level(check.name, t.stage, t.policies))


def _check_diff_soul(video_id: str, stage: str, *, store: Store | None = None) -> PlainCheck:
    store = store or _default_store()
    validate_identifier(video_id, "video id")
    t = _target(store, stage)
    state = _load_state(store, video_id)
    if t.agent is not None and t.agent not in state.souls:
        return _graded(
            PlainCheck(
                name="check_diff_soul",
                passed=True,
                reason=f"no baseline yet for {t.agent}'s SOUL for this video "
                "(the gate records one on its first run)",
                details={"agent": t.agent},
            ),
            check_level("check_diff_soul", t.stage, t.policies),
        )
    soul = _read_soul(store, t.agent, legacy=True)
    check = _diff_soul(store, state, t.stage, soul, video_id)
    return _graded(check, check_level(check.name, t.stage, t.policies))


def _check_regressions(video_id: str, stage: str, *, store: Store | None = None) -> PlainCheck:
    store = store or _default_store()
    validate_identifier(video_id, "video id")
    t = _target(store, stage)
    check = _regressions(store, video_id, t.components)
    return _graded(check, check_level(check.name, t.stage, t.policies))


def _check_known_failures(stage: str, *, store: Store | None = None) -> PlainCheck:
    store = store or _default_store()
    t = _target(store, stage)
    check = _known_failures(
        store, t.components, t.policies.LEARNING_KNOWN_FAILURE_THRESHOLD, t.agent, t.policies
    )
    return _graded(check, check_level(check.name, t.stage, t.policies))


@checked
def check_diff_policies(video_id: str, stage: str, *, store: Store | None = None) -> GateCheck:
    """Whether the effective policies changed since ``video_id``'s recorded baseline (read only:
    nothing is recorded or acknowledged; with no baseline yet it passes saying so)."""
    return _gate_check(_check_diff_policies(video_id, stage, store=store))


@checked
def check_diff_soul(video_id: str, stage: str, *, store: Store | None = None) -> GateCheck:
    """Whether the SOUL of ``stage``'s agent changed since ``video_id``'s recorded baseline
    (read only, like :func:`check_diff_policies`)."""
    return _gate_check(_check_diff_soul(video_id, stage, store=store))


@checked
def check_regressions(video_id: str, stage: str, *, store: Store | None = None) -> GateCheck:
    """Unresolved FAIL/BLOCKER events of ``video_id`` in ``stage`` (and its step names)."""
    return _gate_check(_check_regressions(video_id, stage, store=store))


@checked
def check_known_failures(stage: str, *, store: Store | None = None) -> GateCheck:
    """Recurring failures of ``stage`` across videos: ``deny`` for one with FAIL/BLOCKER
    occurrences and no active rule learned from it, ``warn`` for the others."""
    return _gate_check(_check_known_failures(stage, store=store))


# -- the gate ------------------------------------------------------------------------------------
def _summary(checks: list[PlainCheck]) -> str:
    denied = [c for c in checks if c.outcome == "deny"]
    warned = [c for c in checks if c.outcome == "warn"]
    if denied:
        return "; ".join(f"{c.name}: {c.reason}" for c in denied)
    if warned:
        return f"passed with {counted(len(warned), 'warning')}: " + "; ".join(
            f"{c.name}: {c.reason}" for c in warned
        )
    return "all 4 checks passed"


@checked
def learning_gate(video_id: str, stage: str, *, store: Store | None = None) -> GateResult:
    """Run the four checks for ``video_id`` before ``stage``; the result says whether it is
    blocked, why, and what each check found (its level and outcome)."""
    return _gate_result(_learning_gate(video_id, stage, store or _default_store()))


def _gate_result(plain: PlainGateResult) -> GateResult:
    """The public record of the gate's result."""
    from rayvault.learning.models import GateResult

    return GateResult(
        video_id=plain.video_id,
        stage=plain.stage,
        blocked=plain.blocked,
        reason=plain.reason,
        checks=[_gate_check(c) for c in plain.checks],
        outcome=plain.outcome,
        agent=plain.agent,
        enabled=plain.enabled,
        timestamp=plain.timestamp,
    )


@checked
def learning_gate_plain(
    video_id: str, stage: str, *, store: Store | None = None
) -> PlainGateResult:
    """:func:`learning_gate` with its result as plain data (``to_dict()`` gives what the
    :class:`GateResult`'s does). For a short process that runs the gate and exits (the CLI's
    ``gate VIDEO STAGE``): with a file store whose files are well-formed it imports no pydantic
    (the records are built only for data their hand check refuses, or other stores)."""
    return _learning_gate(video_id, stage, store or _default_store())


def _learning_gate(video_id: str, stage: str, store: Store) -> PlainGateResult:
    validate_identifier(video_id, "video id")
    t = _target(store, stage)
    policies, agent = t.policies, t.agent
    now = utcnow()
    if skip_requested() or not policies.LEARNING_GATE_ENABLED:
        why = (
            "RAYVAULT_SKIP_LEARNING_GATE=1"
            if skip_requested()
            else f"LEARNING_GATE_ENABLED = False ({policies.sources.get('LEARNING_GATE_ENABLED')})"
        )
        return PlainGateResult(
            video_id=video_id,
            stage=stage,
            blocked=False,
            reason=f"learning gate disabled by {why}: no checks run",
            checks=[],
            agent=agent,
            enabled=False,
            timestamp=now,
        )
    with _reads(store).locked_state(video_id) as state:
        _upgrade_state(state, video_id)
        soul = _read_soul(store, agent, legacy=_has_sha1(state, agent))
        if soul.text is not None and soul.sha256 is not None:
            store.save_soul_snapshot(soul.sha256, soul.text)
        checks = [
            _diff_policies(store, state, policies, video_id, stage),
            _diff_soul(store, state, t.stage, soul, video_id),
            _regressions(store, video_id, t.components),
            _known_failures(
                store, t.components, policies.LEARNING_KNOWN_FAILURE_THRESHOLD, agent, policies
            ),
        ]
        checks = [_graded(c, check_level(c.name, t.stage, policies)) for c in checks]
        denied = [c for c in checks if c.outcome == "deny"]
        state.runs.append(
            {
                "at": format_ts(now),
                "stage": stage,
                "blocked": bool(denied),
                "failed": [c.name for c in denied],
                "warned": [c.name for c in checks if c.outcome == "warn"],
            }
        )
        del state.runs[:-RUNS_KEPT]
    outcome = "deny" if denied else "warn" if any(c.outcome == "warn" for c in checks) else "pass"
    return PlainGateResult(
        video_id=video_id,
        stage=stage,
        blocked=bool(denied),
        reason=_summary(checks),
        checks=checks,
        agent=agent,
        enabled=True,
        timestamp=now,
        outcome=outcome,
    )


def _default_store() -> Store:
    """``store.get_store()`` (imported when no store is given)."""
    from rayvault.learning.store import get_store

    return get_store()


def _has_sha1(state: GateState | PlainGateState, agent: str | None) -> bool:
    previous = state.souls.get(agent) if agent else None
    return previous is not None and "sha256" not in previous and "sha1" in previous


@checked
def acknowledge(
    video_id: str,
    stage: str,
    *,
    note: str | None = None,
    actor: str | None = None,
    store: Store | None = None,
) -> Acknowledgement:
    """Accept the current policies and the stage agent's current SOUL for this video, so the
    diff checks pass from now on; the acknowledgement (what changed, when, and ``actor``: who,
    when known, as ``by``) is recorded."""
    from rayvault.learning.models import Acknowledgement

    store = store or _default_store()
    validate_identifier(video_id, "video id")
    who = clean_actor(actor)
    t = _target(store, stage)
    with store.gate_state(video_id) as state:
        _upgrade_state(state, video_id)
        soul = _read_soul(store, t.agent, legacy=_has_sha1(state, t.agent))
        if soul.text is not None and soul.sha256 is not None:
            store.save_soul_snapshot(soul.sha256, soul.text)
        policy_check = _diff_policies(store, state, t.policies, video_id, stage)
        soul_check = _diff_soul(store, state, t.stage, soul, video_id)
        ack = Acknowledgement(
            video_id=video_id,
            stage=stage,
            at=format_ts(utcnow()),
            agent=t.agent,
            policies=[] if policy_check.passed else [policy_check.reason],
            soul=None if soul_check.passed else soul_check.reason,
            note=cap_text(note, t.policies.LEARNING_MAX_TEXT_CHARS) if note else note,
            **({"by": who} if who else {}),
        )
        state.acks.append(ack.to_dict())
    return ack


# -- plain data and records ----------------------------------------------------------------------
def _gate_check(check: PlainCheck) -> GateCheck:
    """The public record of a check (the functions above decide with plain data)."""
    from rayvault.learning.models import GateCheck

    return GateCheck(
        name=check.name,
        passed=check.passed,
        reason=check.reason,
        details=check.details,
        level=check.level,
        outcome=check.outcome,
        clear=check.clear,
    )


def _as_rules(rules: Sequence[PlainRule | Rule]) -> list[Rule]:
    """``rules`` as records, for the code that judges them (efficacy, fingerprints of rules
    written before fingerprints): the gate's process imports pydantic only then."""
    from rayvault.learning.models import Rule

    return [Rule.model_validate(r.raw) if isinstance(r, PlainRule) else r for r in rules]


if TYPE_CHECKING:

    class _Reads(Protocol):
        """What the gate reads from a store: records, or plain data (``_plain``)."""

        def state(self, video_id: str) -> PlainGateState | GateState | None: ...
        def locked_state(
            self, video_id: str
        ) -> AbstractContextManager[PlainGateState | GateState]: ...
        def open_failures(
            self, video_id: str, components: tuple[str, ...]
        ) -> Sequence[PlainEvent | LearningEvent]: ...
        def rules(self, agent: str) -> Sequence[PlainRule | Rule]: ...
        def known(
            self, components: tuple[str, ...], threshold: int
        ) -> Sequence[PlainKnownFailure | KnownFailure]: ...


class _RecordReads:
    """The gate's reads through the store's records (a store without plain reads)."""

    __slots__ = ("store",)

    def __init__(self, store: Store) -> None:
        self.store = store

    def state(self, video_id: str) -> GateState | None:
        return self.store.load_gate_state(video_id)

    def locked_state(self, video_id: str) -> AbstractContextManager[GateState]:
        return self.store.gate_state(video_id)

    def open_failures(self, video_id: str, components: tuple[str, ...]) -> list[LearningEvent]:
        """Unresolved FAIL/BLOCKER events of the video in the components."""
        from rayvault.learning.store.base import EventQuery

        return self.store.query_events(
            EventQuery(
                video_id=video_id,
                components=components,
                severities=("FAIL", "BLOCKER"),
                unresolved=True,
            )
        )

    def rules(self, agent: str) -> list[Rule]:
        return self.store.load_memory(agent).rules

    def known(self, components: tuple[str, ...], threshold: int) -> list[KnownFailure]:
        return self.store.known_failures(components, threshold)


def _reads(store: Store) -> _Reads:
    """The store's plain reads (the file store's ``gate_reads``), else its records."""
    plain = getattr(store, "gate_reads", None)
    return plain() if plain is not None else _RecordReads(store)


def __getattr__(name: str) -> Any:
    """``gate.Acknowledgement``: the record is defined with the others (``models``), imported
    when asked for so that importing this module imports no pydantic."""
    if name == "Acknowledgement":
        from rayvault.learning.models import Acknowledgement

        return Acknowledgement
    if name == "Store":  # for ``@checked``'s hints: imported only for type checking
        from rayvault.learning.store.base import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
