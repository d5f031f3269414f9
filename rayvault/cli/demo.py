"""``rayvault-learn demo``: the closed loop on a simulated pipeline, printed as it happens."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from rayvault.cli._common import (
    GLOBALS,
    JsonOption,
    console,
    new_table,
    plural,
    print_json,
    rule_width,
    want_json,
    warn,
)

if TYPE_CHECKING:
    from rich.console import Console

    from rayvault.learning.demo import DemoNotice, DemoResult
    from rayvault.learning.models import GateResult

DemoRootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Directory for the demo's data: new, empty, or a previous demo's "
        "(default: a new temporary directory, printed).",
        show_default=False,
    ),
]

_STEP_STYLE = {
    "gate": "blue",
    "execute": "dim",
    "fail": "red",
    "diagnose": "cyan",
    "learn": "magenta",
    "apply": "magenta",
    "retry": "yellow",
    "succeed": "green",
    "verify": "green",
    "give_up": "bold red",
}


def demo_command(root: DemoRootOption = None, as_json: JsonOption = False) -> None:
    """Run a simulated pipeline (research → script → assets → tts) through the closed loop:
    failures are logged, diagnosed, learned and retried, one stage is held by the gate. Leaves
    a data root to explore with the other commands.

    Example: rayvault-learn demo --root /tmp/rayvault-demo
    """
    from rayvault.learning.demo import run_demo

    target = root if root is not None else GLOBALS.root
    if GLOBALS.store:
        warn("the demo always runs on the embedded file store; --store is ignored")
    if want_json(as_json):
        print_json(run_demo(target).to_dict())
        return
    renderer = _Renderer()
    result = run_demo(target, report=renderer)
    renderer.finish(result)


def _program() -> str:
    """How the user invoked us, for commands they can paste (``.venv/bin/rayvault-learn``)."""
    invoked = sys.argv[0] if sys.argv else ""
    return invoked if os.path.basename(invoked) == "rayvault-learn" else "rayvault-learn"


class _Renderer:
    """Prints the demo's notices as they arrive."""

    def __init__(self) -> None:
        self.out = console()
        self.current: tuple[str | None, str | None] | None = None
        #: The gate's answers of the gate phase, printed as one table when the phase ends.
        self.gates: list[GateResult] = []
        #: The heading of the phase under way, printed before the first thing it shows (the
        #: weekly revisit's results only come with the demo's result).
        self.heading: str | None = None

    def __call__(self, notice: DemoNotice) -> None:
        out = self.out
        if notice.kind not in ("phase", "gate"):
            self._heading()
        if notice.kind == "root":
            out.print(f"[bold]Demo data root:[/] {escape(notice.message.split(': ', 1)[-1])}")
        elif notice.kind == "phase":
            self._flush_gates()
            self.heading = notice.message
        elif notice.kind == "video":
            out.print(f"\n[bold underline]{escape(notice.video_id or '')}[/]")
        elif notice.kind == "note":
            out.print(f"[dim]{escape(notice.message)}[/]", soft_wrap=True)
        elif notice.kind == "step" and notice.step is not None:
            self._step(notice)
        elif notice.kind == "stage" and notice.run is not None:
            self._stage_done(notice)
        elif notice.kind == "gate" and notice.gate is not None:
            self.gates.append(notice.gate)  # shown together, as a table, under their heading

    def _step(self, notice: DemoNotice) -> None:
        step = notice.step
        assert step is not None
        key = (notice.video_id, notice.stage)
        if key != self.current:
            self.current = key
            agent = step.data.get("agent")
            who = f" · {agent}" if agent else ""
            self.out.print(f"  [bold]{escape(step.stage)}[/]{escape(who)}")
        style = _STEP_STYLE.get(step.step, "")
        if step.step == "gate" and step.detail.startswith("blocked"):
            style = "bold red"
        label = f"{step.step:<9}"
        self.out.print(
            f"    [{style}]{label}[/] {escape(step.detail)}"
            if style
            else f"    {label} {step.detail}",
            soft_wrap=True,
            highlight=False,
        )

    def _stage_done(self, notice: DemoNotice) -> None:
        run = notice.run
        assert run is not None
        self.current = None
        if run.outcome == "succeeded":
            how = f"on attempt {run.attempts}" if run.attempts > 1 else "at once"
            self.out.print(
                f"  [green]✓ {escape(run.stage)} succeeded {how}:[/] {escape(str(run.value))}",
                soft_wrap=True,
            )
        elif run.outcome == "blocked":
            self.out.print(f"  [bold red]✗ {escape(run.stage)} blocked by the learning gate[/]")
        else:
            self.out.print(
                f"  [red]✗ {escape(run.stage)} failed after "
                f"{run.attempts} attempt{'s' if run.attempts != 1 else ''}[/]"
            )

    def _heading(self) -> None:
        if self.heading is not None:
            self.out.print()
            _rule(self.out)
            self.out.print(f"[bold]{escape(self.heading)}[/]", soft_wrap=True)
            self.heading = None

    def _flush_gates(self) -> None:
        """The gate phase's answers: one row per video, one column per stage."""
        if not self.gates:
            return
        from rayvault.learning.demo import STAGES, VIDEOS

        self._heading()
        gates, self.gates = self.gates, []
        out = self.out
        out.print(
            "[dim]What the gate answers now before each stage of each video "
            "(passed: the stage may run; BLOCKED: it may not, until the reason below is "
            "cleared)[/]",
            soft_wrap=True,
        )
        table = new_table()
        table.add_column("Video", style="bold")
        for stage in STAGES:
            table.add_column(stage)
        cells = {(g.video_id, g.stage): g for g in gates}
        for video in VIDEOS:
            row = [video]
            for stage in STAGES:
                gate = cells.get((video, stage))
                if gate is None:
                    row.append("-")
                elif gate.blocked:
                    row.append("[bold red]BLOCKED[/]")
                else:
                    row.append("[green]passed[/]")
            table.add_row(*row)
        out.print(table)
        for gate in gates:
            if gate.blocked:
                where = f"{gate.video_id}/{gate.stage}"
                out.print(f"  [red]{escape(where)}:[/] {escape(gate.reason)}", soft_wrap=True)

    def finish(self, result: DemoResult) -> None:
        out = self.out
        self._flush_gates()
        s = result.summary
        if result.review is not None:
            from rayvault.cli.revisit import show_revisit

            self._heading()
            # The revisit covers every agent of the stage map; the demo's are those it ran.
            show_revisit(result.review, only=list(s["rules"]) or None)
        self.heading = None
        out.print()
        _rule(out)
        out.print("[bold]Summary[/]")
        _print_counts(out, s)
        _print_regressions(out, s.get("regressions", []))
        out.print(
            f"{s['prevented_by_rules']} stage runs succeeded at once because a learned rule was "
            "in the agent's prompt"
        )
        _print_rules(out, s["rules"])
        _print_ineffective(out, s.get("ineffective_history"))

        program = _program()
        out.print(
            f"[bold]Data left in[/] {escape(str(result.root))} "
            f"({plural(len(result.files), 'file')}, e.g. "
            "data/learning_events.json, data/error_log.json, state/agents/*/memory_active.json, "
            "agents/skills/learnings/)",
            soft_wrap=True,
        )
        out.print("[bold]Explore it:[/]")
        for command in result.next_commands:
            line = command
            if line.startswith("rayvault-learn "):
                line = program + line[len("rayvault-learn") :]
            out.print(f"  {escape(line)}", soft_wrap=True, highlight=False)


def _rule(out: Console) -> None:
    """A separator line, as wide as the terminal (80 columns when the output is not one)."""
    from rich.rule import Rule

    out.print(Rule(style="dim"), width=rule_width())


#: What each status of a learning event means, for the summary.
_STATUS_MEANING = {
    "verified": "fix proven",
    "applied": "rule in the agent's memory, fix not proven yet",
    "open": "nothing learned yet: waiting for a person",
    "archived": "set aside",
}


def _print_counts(out: Console, s: dict[str, Any]) -> None:
    """The run's counts, each saying what it counts."""
    outcomes = ", ".join(
        f"{n} {'blocked by the gate' if k == 'blocked' else k}" for k, n in s["outcomes"].items()
    )
    out.print(
        f"{plural(s['stage_runs'], 'stage run')} (one stage of one video, its retries "
        f"included) over {plural(s['videos'], 'video')}: {outcomes}",
        soft_wrap=True,
    )
    out.print(
        f"{plural(s['attempts'], 'attempt')} in all, {s['retries']} of them "
        f"{'a retry' if s['retries'] == 1 else 'retries'} after a failure",
        soft_wrap=True,
    )
    diagnoses = ", ".join(
        f"{n} found none" if k == "none" else f"{n} by {escape(k)}"
        for k, n in s["diagnoses"].items()
    )
    out.print(
        f"{plural(s['failures_logged'], 'failure')} logged in the error log (every failed "
        f"attempt), {s['errors_unresolved']} still unresolved; diagnoses: {diagnoses or 'none'}",
        soft_wrap=True,
    )
    statuses = ", ".join(
        f"{n} {k} ({_STATUS_MEANING.get(k, k)})" for k, n in s["events_by_status"].items()
    )
    out.print(
        f"{plural(s['events'], 'learning event')} (failures learned from): {statuses}",
        soft_wrap=True,
    )


def _print_rules(out: Console, rules: dict[str, list[dict[str, Any]]]) -> None:
    """The active rules' efficacy counters (a table narrow enough for 80 columns), an
    ineffective one marked, then each rule's text."""
    table = new_table("Active rules: does each one work?")
    table.add_column("Agent", no_wrap=True)
    for name in ("Learned", "Deliv", "OK", "Recur", "Applied"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("Verdict", no_wrap=True)
    texts: list[str] = []
    for agent, items in rules.items():
        for rule in items:
            verdict = (
                "[bold red]ineffective[/]"
                if rule.get("ineffective")
                else "[green]works[/]"
                if rule.get("successes")
                else "-"
            )
            table.add_row(
                agent,
                str(rule.get("occurrences", 0)),
                str(rule.get("deliveries", 0)),
                str(rule.get("successes", 0)),
                str(rule.get("recurrences", 0)),
                str(rule["applied_count"]),
                verdict,
            )
            texts.append(f"  {escape(agent)}: {escape(rule['rule'])}")
    if not table.row_count:
        return
    out.print(table)
    out.print(
        "[dim]Learned: times its failure was learned; Deliv: attempts whose prompt carried it; "
        "OK: of those, succeeded; Recur: failed again with its pattern; Applied: the seed "
        "counter (learned again + delivered once per run)[/]",
        soft_wrap=True,
    )
    for text in texts:
        out.print(text, soft_wrap=True, highlight=False)


def _print_ineffective(out: Console, history: dict[str, Any] | None) -> None:
    """The flagged rule's evidence, as ``rules history`` shows it: its attempts, newest first."""
    if not history:
        return
    attempts = history.get("attempts") or []
    out.print(
        f"rules history {escape(history['agent'])} {escape(history['rule_id'])}: delivered "
        f"{history['deliveries']} times, its failure back {history['recurrences']} times; "
        "a person tombstones or rewrites it (nothing is removed automatically):",
        soft_wrap=True,
    )
    for a in attempts[:6]:
        outcome = "recurred" if a.get("recurred") else a.get("outcome", "?")
        out.print(
            f"  {escape(a['video_id'])} {escape(a['stage'])} attempt {a['attempt']}: "
            f"{outcome} (error {escape(str(a.get('error_id') or '-'))})",
            highlight=False,
        )


def _print_regressions(out: Console, regressions: list[dict[str, Any]]) -> None:
    """One line: how many failures came back after their fix was verified, one named."""
    if regressions:
        first = regressions[0]
        out.print(
            f"{plural(len(regressions), 'regression')}, failures back after their fix was "
            "verified, "
            f"e.g. {first['event_id']}: {escape(first['reason'])}",
            soft_wrap=True,
        )
