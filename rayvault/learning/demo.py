"""A simulated pipeline that shows the closed loop end to end (``rayvault-learn demo``).

Three videos go through ``research → script → assets → tts`` on the embedded file store, in a
fresh data root, with three injected failures, then a fourth that shows whether a rule works:

- **research** hits the offers API's rate limit on every video, each time with different numbers
  (requests made, seconds to wait). The first occurrence is diagnosed by a simulated LLM and its
  fix verified by the retry — evidence, not proof: the limit goes away on retry whatever the
  fix. The next ones are recognised by their fingerprint; the failure came back while its rule
  was delivered, so the retry-verified fix is *overturned* and history does not hand it back
  (the diagnose step says why): the LLM is asked again, and the rule is re-applied (its
  ``applied_count`` grows).
- **assets** draws the product from the wrong reference angle until a learned rule says which
  angle to use: the first video fails, learns the rule, and succeeds on the retry because the
  rule is in the prompt; the next videos get the rule from the start and never fail.
  Its fix is verified by the retry, so each later video's rate limit is a *regression* (back
  after its fix was verified): the event records ``regression_of`` and the report lists it.
- **tts** fails on the last video in a way nobody can diagnose: an open event records it, the
  loop stops, and when the operator re-runs the stage the learning gate blocks it.
- **script**, on three more videos (:data:`EFFICACY_VIDEOS`, script stage only): the output is
  truncated at the provider's token cap, and the simulated LLM's fix ("be concise") cannot work.
  The rule is delivered on every attempt and the failure recurs every time: after five
  deliveries it is flagged *ineffective* (``efficacy.ineffective_rule``), while the angle rule
  shows deliveries that all succeeded. The summary keeps each rule's counters (``efficacy``) and
  the flagged rule's attempts (``rules history``).

Then the gate is run for every video and stage, and a summary is made. The data root stays for
the user to explore with the other commands (:attr:`DemoResult.next_commands`).

The library does the work and reports through a callback (:class:`DemoNotice`); the CLI renders.
The demo is a sequence of phases (:func:`run_demo`), so adding one (e.g. the weekly revisit) is
one more call at the end.
"""

from __future__ import annotations

import contextlib
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rayvault.learning._time import format_ts, utcnow
from rayvault.learning.efficacy import ineffective_rule, rule_history
from rayvault.learning.exceptions import InvalidInputError
from rayvault.learning.gate import learning_gate
from rayvault.learning.loop import (
    Diagnosis,
    Failure,
    LoopStep,
    StageContext,
    StageRun,
    chain_diagnosers,
    diagnose_from_history,
    run_stage,
)
from rayvault.learning.memory import init_memory, load_active_memory
from rayvault.learning.models import GateResult, RevisitReport
from rayvault.learning.regressions import regression_text
from rayvault.learning.revisit import SCOPE_ALL, revisit
from rayvault.learning.stages import agent_for_stage
from rayvault.learning.store import EventQuery, FileStore
from rayvault.learning.store.base import ErrorQuery
from rayvault.learning.store.files.layout import DEMO_MARKER, Layout

#: Marks a directory as a demo data root, so a later demo may clear and reuse it.
MARKER = DEMO_MARKER
VIDEOS: tuple[str, ...] = ("v101", "v102", "v103")
STAGES: tuple[str, ...] = ("research", "script", "assets", "tts")
#: Videos of the efficacy phase: the script stage only, each truncated whatever the rule says.
EFFICACY_VIDEOS: tuple[str, ...] = ("v104", "v105", "v106")
EFFICACY_STAGE = "script"
#: Retries each stage gets.
RETRIES = 1
#: Source named on the simulated LLM's diagnoses.
LLM_SOURCE = "llm (simulated)"

_SOUL_TEMPLATE = """# SOUL — {agent}

Role: {role} in the demo video pipeline (written by `rayvault-learn demo`).

## How I decide
- Read the learned rules delivered with each task first; they come from real failures.
- Prefer the evidence of earlier runs to a guess.

## How I react to errors
- Report the failure line exactly as it happened; never hide a failure behind a retry.
"""
_ROLES = {
    "researcher": "finds the products a video compares",
    "scriptwriter": "writes the video's script",
    "dzine_producer": "produces the product images",
    "publisher": "records the voice-over and publishes",
}

NoticeKind = Literal["root", "phase", "video", "step", "stage", "gate", "note"]


@dataclass(frozen=True)
class DemoNotice:
    """Something the demo reports as it happens (the CLI prints these)."""

    kind: NoticeKind
    message: str
    video_id: str | None = None
    stage: str | None = None
    step: LoopStep | None = None
    run: StageRun | None = None
    gate: GateResult | None = None


@dataclass
class DemoResult:
    """What the demo did and what it leaves behind."""

    root: Path
    runs: list[StageRun] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    #: Files the demo leaves, relative to the root.
    files: list[str] = field(default_factory=list)
    #: Commands to explore the result (``rayvault-learn --root ROOT …``).
    next_commands: list[str] = field(default_factory=list)
    #: Ids worth looking at: the event learned on a retry, the event holding the gate, …
    highlights: dict[str, str] = field(default_factory=dict)
    #: The weekly revisit run at the end (its report files are among ``files``).
    review: RevisitReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "runs": [r.to_dict() for r in self.runs],
            "gates": [g.to_dict() for g in self.gates],
            "summary": self.summary,
            "files": list(self.files),
            "next_commands": list(self.next_commands),
            "highlights": dict(self.highlights),
            "review": self.review.to_dict() if self.review else None,
        }


# -- the data root ------------------------------------------------------------------------------
def prepare_root(root: Path | str | None = None) -> Path:
    """The demo's data root, ready and marked: a new temporary directory when ``root`` is None;
    else ``root``, which must be new, empty, or a previous demo root (whose contents — only
    what that demo made — are removed). Anything else is refused and left untouched."""
    if root is None:
        layout = Layout.temporary("rayvault-demo-")
    else:
        layout = Layout(Path(root).expanduser().absolute())
        if layout.root_is_a_file():
            raise InvalidInputError(
                f"{layout.root} is not a directory",
                hint="give a new or empty directory for the demo",
            )
        if layout.root_holds_anything():
            _clear_previous_demo(layout)
        layout.create_root()
    layout.write_demo_marker(
        {"made_by": "rayvault-learn demo", "started_at": format_ts(utcnow()), "complete": False},
    )
    return layout.root


def _clear_previous_demo(layout: Layout) -> None:
    path = layout.root
    marker = layout.read_demo_marker()
    hint = "give a new or empty directory, or leave out --root for a fresh temporary one"
    if marker is None:
        raise InvalidInputError(
            f"{path} is not empty and is not a previous demo root; nothing was changed", hint=hint
        )
    if not marker.get("complete") or not isinstance(marker.get("entries"), list):
        raise InvalidInputError(
            f"{path} holds an unfinished or unreadable demo ({MARKER}); nothing was changed",
            hint=f"delete {path} yourself, or {hint}",
        )
    made = {str(name) for name in marker["entries"]}
    present = set(layout.entries())
    foreign = sorted(present - made)
    if foreign:
        raise InvalidInputError(
            f"{path} is a previous demo root but also holds {', '.join(foreign)}, which the demo "
            "did not make; nothing was changed",
            hint=hint,
        )
    layout.remove_entries(present & made)


# -- the simulated pipeline ---------------------------------------------------------------------
#: Per video: (requests made before the rate limit, seconds to wait) — different every time.
_RATE_LIMITS = {"v101": (37, 12), "v102": (41, 9), "v103": (44, 15)}
_ANGLE_RULE = "3/4 reference angle"
_CONCISE_RULE = "Tell the model to be concise"


class _Pipeline:
    """The four simulated stages and the failures injected into them."""

    def __init__(self) -> None:
        self.rate_limited: set[str] = set()

    def research(self, ctx: StageContext) -> str:
        # An external limit: every video's first call hits it, whatever the rules say.
        if ctx.video_id not in self.rate_limited:
            self.rate_limited.add(ctx.video_id)
            requests, wait = _RATE_LIMITS.get(ctx.video_id, (40, 10))
            raise ConnectionError(
                f"Offers API rate limit: HTTP 429 after {requests} requests, retry after {wait}s"
            )
        return "12 products shortlisted"

    def script(self, ctx: StageContext) -> str:
        # The provider caps output tokens: no rule in the prompt can help (efficacy phase only).
        if ctx.video_id in EFFICACY_VIDEOS:
            tokens = 4096 + 100 * EFFICACY_VIDEOS.index(ctx.video_id) + ctx.attempt
            raise RuntimeError(f"LLM output truncated at {tokens} tokens while writing segment 6")
        return "script of 7 segments written"

    def assets(self, ctx: StageContext) -> str:
        # The agent follows the angle rule once it is in its prompt.
        if not ctx.has_rule(_ANGLE_RULE):
            raise ValueError("Product shape wrong in 2 of 5 images: reference angle was top-down")
        return "5 images, product drawn from the 3/4 reference angle"

    def tts(self, ctx: StageContext) -> str:
        if ctx.video_id == VIDEOS[-1]:
            raise RuntimeError("Voice engine returned 0 bytes for segment 7 of 12")
        return "voice-over of 12 segments recorded"

    def stage(self, name: str) -> Callable[[StageContext], str]:
        fn: Callable[[StageContext], str] = getattr(self, name)
        return fn


def simulated_llm(failure: Failure) -> Diagnosis | None:
    """Stands in for an LLM-backed diagnoser: knows two of the injected failures, not the third."""
    text = failure.symptom
    if "rate limit" in text:
        return Diagnosis(
            root_cause="The research step bursts past the offers API limit of about 40 requests "
            "a minute",
            fix="Back off for the Retry-After delay, then resume the request",
            source=LLM_SOURCE,
        )
    if "reference angle" in text:
        return Diagnosis(
            root_cause="The reference photo was switched from the 3/4 view to a top-down view",
            fix=f"Use the original {_ANGLE_RULE} for every product image",
            source=LLM_SOURCE,
        )
    if "output truncated" in text:
        # Plausible and wrong: the cap is the provider's, whatever the prompt asks.
        return Diagnosis(
            root_cause="The script prompt invites long answers",
            fix=f"{_CONCISE_RULE} and keep each segment under 120 words",
            source=LLM_SOURCE,
        )
    return None


# -- the demo -----------------------------------------------------------------------------------
Report = Callable[[DemoNotice], None]


def run_demo(root: Path | str | None = None, *, report: Report | None = None) -> DemoResult:
    """Run the demo in ``root`` (see :func:`prepare_root`) and return what it did; every step is
    reported through ``report`` as it happens."""
    tell: Report = report or (lambda notice: None)
    path = prepare_root(root)
    result = DemoResult(root=path)
    tell(DemoNotice("root", f"demo data root: {path}"))
    store = FileStore(path)
    try:
        _set_up(store, tell)
        _run_pipelines(store, result, tell)
        _rerun_held_stage(store, result, tell)
        _efficacy(store, result, tell)
        _final_gates(store, result, tell)
        _weekly_review(store, result, tell)
        _summarise(store, result)
    finally:
        store.close()
        _finish_marker(path)
    return result


def _set_up(store: FileStore, tell: Report) -> None:
    agents = [a for a in dict.fromkeys(agent_for_stage(s, store.policies) for s in STAGES) if a]
    for agent in agents:
        role = _ROLES.get(agent, "runs a stage")
        store.docs.create_soul(agent, _SOUL_TEMPLATE.format(agent=agent, role=role))
    init_memory(agents, store=store)
    tell(DemoNotice("note", f"SOUL files and empty memory written for {', '.join(agents)}"))


def _run_pipelines(store: FileStore, result: DemoResult, tell: Report) -> None:
    pipeline = _Pipeline()
    diagnose = chain_diagnosers(diagnose_from_history, simulated_llm)
    tell(DemoNotice("phase", f"Pipeline run: {', '.join(VIDEOS)} through {' → '.join(STAGES)}"))
    tell(
        DemoNotice(
            "note",
            f"{RETRIES} retry per stage; failures are diagnosed from history first, then by a "
            "simulated LLM",
        )
    )
    for video in VIDEOS:
        tell(DemoNotice("video", f"video {video}", video_id=video))
        for stage in STAGES:
            run = _run(store, video, stage, pipeline.stage(stage), diagnose=diagnose, tell=tell)
            result.runs.append(run)
            if not run.ok:
                tell(
                    DemoNotice(
                        "note",
                        f"{video} stops at {stage}: the rest of its pipeline waits",
                        video_id=video,
                        stage=stage,
                    )
                )
                break


def _run(
    store: FileStore,
    video: str,
    stage: str,
    fn: Callable[[StageContext], str],
    *,
    diagnose: Callable[[Failure], Diagnosis | None],
    tell: Report | None = None,
) -> StageRun:
    """Run one stage; with ``tell``, every step and the outcome are reported."""

    def progress(step: LoopStep) -> None:
        if tell is not None:
            tell(DemoNotice("step", step.detail, video_id=video, stage=stage, step=step))

    run = run_stage(
        video,
        stage,
        fn,
        retries=RETRIES,
        diagnose=diagnose,
        on_blocked="return",
        on_failure="return",
        store=store,
        progress=progress,
    )
    if tell is not None:
        tell(DemoNotice("stage", run.outcome, video_id=video, stage=stage, run=run))
    return run


def _rerun_held_stage(store: FileStore, result: DemoResult, tell: Report) -> None:
    held = [r for r in result.runs if r.outcome == "failed"]
    if not held:
        return
    failed = held[-1]
    tell(
        DemoNotice(
            "phase",
            f"The operator re-runs {failed.video_id} from {failed.stage}, without resolving "
            "its open event",
        )
    )
    pipeline = _Pipeline()
    diagnose = chain_diagnosers(diagnose_from_history, simulated_llm)
    fn = pipeline.stage(failed.stage)
    run = _run(store, failed.video_id, failed.stage, fn, diagnose=diagnose, tell=tell)
    result.runs.append(run)


def _efficacy(store: FileStore, result: DemoResult, tell: Report) -> None:
    """A rule that cannot work: delivered on every attempt, its failure recurring each time,
    until the counters flag it ineffective. Only the outcome of each run is reported (its
    steps are the loop's usual ones), with the rule's counters after it."""
    tell(
        DemoNotice(
            "phase",
            f"Does a rule work? {', '.join(EFFICACY_VIDEOS)} through {EFFICACY_STAGE}, whose "
            "failure the simulated LLM gets wrong",
        )
    )
    pipeline = _Pipeline()
    diagnose = chain_diagnosers(diagnose_from_history, simulated_llm)
    policies = store.policies
    for video in EFFICACY_VIDEOS:
        run = _run(store, video, EFFICACY_STAGE, pipeline.stage(EFFICACY_STAGE), diagnose=diagnose)
        result.runs.append(run)
        tell(DemoNotice("stage", run.outcome, video_id=video, stage=EFFICACY_STAGE, run=run))
        if run.agent is None or not run.rule_ids:
            continue
        memory = load_active_memory(run.agent, store=store)
        rule = next((r for r in memory.rules if r.rule_id == run.rule_ids[0]), None)
        if rule is None:
            continue
        flagged = ineffective_rule(run.agent, rule, policies)
        tell(
            DemoNotice(
                "note",
                f"{video}: rule {rule.rule_id}: {rule.deliveries} deliveries, "
                f"{rule.recurrences} recurrences, {rule.successes} successes"
                + (f" — INEFFECTIVE: {flagged.reason}" if flagged else ""),
                video_id=video,
                stage=EFFICACY_STAGE,
            )
        )


def _final_gates(store: FileStore, result: DemoResult, tell: Report) -> None:
    tell(DemoNotice("phase", "The learning gate, for every video and stage"))
    for video in VIDEOS:
        for stage in STAGES:
            gate = learning_gate(video, stage, store=store)
            result.gates.append(gate)
            tell(
                DemoNotice(
                    "gate",
                    "blocked" if gate.blocked else "passed",
                    video_id=video,
                    stage=stage,
                    gate=gate,
                )
            )


def _weekly_review(store: FileStore, result: DemoResult, tell: Report) -> None:
    """The periodic half of the loop: the weekly revisit over what the demo just learned."""
    tell(DemoNotice("phase", "The weekly revisit: review rules, promotion candidates, report"))
    result.review = revisit(SCOPE_ALL, 7, store=store)


def _summarise(store: FileStore, result: DemoResult) -> None:
    runs = result.runs
    events = store.query_events(EventQuery())
    errors = store.query_errors(ErrorQuery())
    agents = [a for a in dict.fromkeys(r.agent for r in runs) if a]
    rules: dict[str, list[dict[str, Any]]] = {}
    flagged: list[tuple[str, str]] = []
    for agent in agents:
        memory = load_active_memory(agent, store=store)
        rules[agent] = []
        for r in memory.rules:
            verdict = ineffective_rule(agent, r, store.policies)
            if verdict is not None:
                flagged.append((agent, r.rule_id))
            rules[agent].append(
                {
                    "rule_id": r.rule_id,
                    "applied_count": r.applied_count,
                    "rule": r.rule,
                    "occurrences": r.occurrences,
                    "deliveries": r.deliveries,
                    "successes": r.successes,
                    "recurrences": r.recurrences,
                    "ineffective": verdict.reason if verdict else None,
                }
            )
    diagnosed_by = Counter(d.source for r in runs for d in r.diagnoses)
    undiagnosed = sum(1 for r in runs for s in r.steps if s.step == "diagnose") - sum(
        diagnosed_by.values()
    )
    if undiagnosed:
        diagnosed_by["none"] = undiagnosed
    result.summary = {
        "videos": len({r.video_id for r in runs}),
        "stage_runs": len(runs),
        "outcomes": dict(Counter(r.outcome for r in runs)),
        "attempts": sum(r.attempts for r in runs),
        "retries": sum(max(r.attempts - 1, 0) for r in runs),
        "failures_logged": len(errors),
        "errors_unresolved": sum(1 for e in errors if not e.resolved),
        "diagnoses": dict(diagnosed_by),
        "events": len(events),
        "events_by_status": dict(Counter(e.status for e in events)),
        # Stage runs that succeeded at once with a learned rule in the prompt.
        "prevented_by_rules": sum(
            1 for r in runs if r.ok and r.attempts == 1 and r.delivered_rule_ids
        ),
        "rules": rules,
        "gate": dict(Counter("blocked" if g.blocked else "passed" for g in result.gates)),
        # Failures back after their fix was verified (the rate limit, verified by a retry).
        "regressions": [
            {
                "event_id": e.event_id,
                "regression_of": e.regression_of,
                "regressed_after_seconds": e.regressed_after_seconds,
                "reason": regression_text(e),
            }
            for e in events
            if e.regression_of
        ],
    }
    if flagged:
        agent, rule_id = flagged[0]
        history = rule_history(agent, rule_id, store=store)
        result.highlights["ineffective_agent"] = agent
        result.highlights["ineffective_rule"] = rule_id
        # The flagged rule's evidence, as ``rules history`` shows it (newest attempt first).
        result.summary["ineffective_history"] = history.to_dict()
    # The injected failures, as the ids to look at.
    fixed_by_rule = next(
        (r for r in runs if r.stage == "assets" and r.ok and r.attempts > 1 and r.rule_ids), None
    )
    # Recognised by its fingerprint: history held its fix, which the evidence had refuted.
    recurring = next(
        (r for r in runs if any("history_skipped" in s.data for s in r.steps)),
        next((r for r in runs if any(d.source == "history" for d in r.diagnoses)), None),
    )
    held = next((e for e in events if not e.resolved and not e.rule_id), None)
    if fixed_by_rule:
        result.highlights["fixed_by_rule_event"] = fixed_by_rule.event_ids[0]
    if recurring:
        result.highlights["recurring_event"] = recurring.event_ids[0]
    if result.summary["regressions"]:
        result.highlights["regression_event"] = result.summary["regressions"][0]["event_id"]
    if held:
        result.highlights["held_event"] = held.event_id
        result.highlights["held_video"] = held.video_id or ""
        result.highlights["held_stage"] = held.component
    result.files = _files(store, events, agents)
    if result.review is not None and result.review.report_files:
        result.files += [
            Path(location).relative_to(store.root).as_posix()
            for location in result.review.report_files.values()
        ]
    result.next_commands = _next_commands(result)


def _files(store: FileStore, events: list[Any], agents: list[str]) -> list[str]:
    root = store.root
    layout = store.layout
    paths = [layout.demo_marker, layout.events_path, layout.errors_path]
    paths += [layout.memory_path(a) for a in agents]
    paths += [layout.gate_state_path(v) for v in VIDEOS]
    for event in events:
        if event.video_id:
            paths.append(layout.video_event_path(event.video_id, event.event_id))
        if event.skill_node:
            paths.append(root / event.skill_node)
    notes = store.docs.skill_graph_dir
    paths.append(notes / "_index.md")
    paths += [p for a in agents if (p := store.docs.find_soul(a)) is not None]
    seen = dict.fromkeys(p.relative_to(root).as_posix() for p in paths)
    return list(seen)


def _next_commands(result: DemoResult) -> list[str]:
    base = f"rayvault-learn --root {shlex.quote(str(result.root))}"
    found = result.highlights
    commands = [f"{base} events list"]
    if "fixed_by_rule_event" in found:  # its loop_steps replay fail → learn → retry
        commands.append(f"{base} events get {found['fixed_by_rule_event']}")
    commands += [
        f"{base} memory show dzine_producer",
        *(
            [
                f"{base} rules history {found['ineffective_agent']} {found['ineffective_rule']}",
                f"{base} memory show {found['ineffective_agent']}",
            ]
            if "ineffective_rule" in found
            else []
        ),
        f"{base} errors lessons",
        f"{base} report",
        f"{base} soul candidates",
    ]
    if "held_event" in found:
        commands += [
            f"{base} gate {found['held_video']} {found['held_stage']}",
            f"{base} events resolve {found['held_event']} --verification "
            + shlex.quote("voice engine restarted; segment 7 re-recorded"),
        ]
    return commands


def _finish_marker(root: Path) -> None:
    layout = Layout(root)
    with contextlib.suppress(OSError):
        entries = layout.entries()
        layout.write_demo_marker(
            {
                "made_by": "rayvault-learn demo",
                "finished_at": format_ts(utcnow()),
                "complete": True,
                "entries": entries,
            },
        )
