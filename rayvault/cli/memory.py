"""``rayvault-learn memory``: agents' active rules, tombstones, and their initial state."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from rayvault.cli._common import (
    JsonOption,
    RootOption,
    StoreOption,
    console,
    echo_exact,
    emit,
    from_stdin,
    is_wide,
    new_table,
    open_cli_store,
    plural,
    severity_text,
    short,
    when,
)

app = typer.Typer(
    help="Agent memory: active rules, tombstones, initial state.", no_args_is_help=True
)
AgentArgument = Annotated[str, typer.Argument(help="Agent name, e.g. dzine_producer.")]


@app.command("show")
def show_command(
    agent: AgentArgument,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an agent's active rules, most severe first, then by efficacy and when learned.

    Example: rayvault-learn memory show dzine_producer
    """
    from rayvault.learning.efficacy import ineffective_rules, text_counters
    from rayvault.learning.memory import load_active_memory, memory_status, sorted_rules

    store = open_cli_store(root, store_url, read=True)
    memory = load_active_memory(agent, store=store)
    status = memory_status(agent, store=store)
    policies = store.policies
    ineffective = ineffective_rules(agent, memory.rules, policies)
    flagged = {f.rule_id for f in ineffective}

    def human() -> None:
        out = console()
        if not memory.rules:
            out.print(f"{agent} has no active rules.")
            return
        wide = is_wide()
        table = new_table(
            f"{escape(agent)}: {plural(len(memory.rules), 'active rule')} (cap {status['cap']})"
        )
        table.add_column("Rule", no_wrap=True)
        table.add_column("Sev", no_wrap=True)
        if wide:
            table.add_column("Component", no_wrap=True)
        table.add_column("Applied", justify="right", no_wrap=True)
        table.add_column("Recurred", justify="right", no_wrap=True)
        if wide:
            table.add_column("Last applied", no_wrap=True)
        table.add_column("Rule text", ratio=1)
        for rule in sorted_rules(memory, policies):
            cells = [rule.rule_id, severity_text(rule.severity)]
            if wide:
                cells.append(escape(rule.component))
            cells.append(str(rule.applied_count))
            # The current text's figures: what the ineffective verdict judges (a revised rule
            # starts clean; `rules history` has every text's).
            deliveries, recurrences, _ = text_counters(rule)
            recurred = f"{recurrences}/{deliveries}" if deliveries else "-"
            cells.append(f"[red]{recurred} INEFFECTIVE[/]" if rule.rule_id in flagged else recurred)
            if wide:
                cells.append(when(rule.last_used))
            cells.append(escape(short(rule.rule, 200)))
            table.add_row(*cells)
        out.print(table)
        from rayvault.learning.memory import held_back_rules

        held = held_back_rules(memory.rules, store.policies.LEARNING_CONFLICT_PREFERENCE)
        for lost, won in held.items():
            out.print(
                f"[yellow]conflict:[/] {lost} is held back in favour of {won} (unresolved "
                f"pair; rayvault-learn rules resolve-conflict {escape(agent)} {lost} --keep …)"
            )
        if ineffective:
            out.print(
                f"[red]{plural(len(ineffective), 'ineffective rule')}[/]: their failure "
                "recurred in "
                f"≥ {policies.LEARNING_EFFICACY_MAX_RECURRENCE_RATE:.0%} of ≥ "
                f"{policies.LEARNING_EFFICACY_MIN_DELIVERIES} deliveries. Tombstone or rewrite "
                f"them; the attempts: `rayvault-learn rules history {agent} RULE_ID`."
            )
        if status["critical_over_cap"]:
            out.print(
                f"[yellow]note:[/] {status['critical']} FAIL/BLOCKER rules alone exceed the cap "
                f"of {status['cap']}; they are never evicted. Review them with "
                "`rayvault-learn revisit`."
            )

    data = memory.to_dict()
    for rule in data["rules"]:
        rule["ineffective"] = rule["rule_id"] in flagged
    data["ineffective"] = [f.to_dict() for f in ineffective]
    emit({**data, "status": status}, as_json, human, record=True)


@app.command("tombstones")
def tombstones_command(
    agent: AgentArgument,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the rules removed from an agent's memory, with reasons and evidence.

    Example: rayvault-learn memory tombstones dzine_producer --json
    """
    from rayvault.learning.memory import load_tombstones

    tombstones = load_tombstones(agent, store=open_cli_store(root, store_url, read=True))

    def human() -> None:
        if not tombstones.tombstones:
            console().print(f"{agent} has no tombstoned rules.")
            return
        wide = is_wide()
        table = new_table(
            f"{escape(agent)}: {plural(len(tombstones.tombstones), 'tombstoned rule')}"
        )
        table.add_column("Rule", no_wrap=True)
        table.add_column("Sev", no_wrap=True)
        if wide:
            table.add_column("Removed", no_wrap=True)
        table.add_column("Kind", no_wrap=True)
        table.add_column("Reason", ratio=1)
        if wide:
            table.add_column("Rule text", ratio=1)
        for t in tombstones.tombstones:
            cells = [t.rule_id, severity_text(t.severity)]
            if wide:
                cells.append(when(t.tombstoned_at))
            cells += [t.kind, escape(short(t.reason, 120))]
            if wide:
                cells.append(escape(short(t.rule, 120)))
            table.add_row(*cells)
        console().print(table)

    emit(tombstones.to_dict(), as_json, human, record=True)


@app.command("init")
def init_command(
    agents: Annotated[
        list[str] | None,
        typer.Argument(help="Agents to initialise (default: every agent of the stage map)."),
    ] = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create empty memory and tombstone files for agents; existing ones are left as they are.

    Example: rayvault-learn memory init
    """
    from rayvault.learning.memory import init_memory

    result = init_memory(agents or None, store=open_cli_store(root, store_url))

    def human() -> None:
        out = console()
        for name, created in result.items():
            out.print(f"{name}: {'initialised' if created else 'already initialised'}")

    emit(result, as_json, human)


@app.command("tombstone")
def tombstone_command(
    agent: AgentArgument,
    rule_id: Annotated[str, typer.Argument(help="The active rule to remove.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the rule is obsolete.")],
    evidence: Annotated[
        list[str] | None,
        typer.Option("--evidence", help="Event id supporting the removal (repeatable)."),
    ] = None,
    superseded_by: Annotated[
        str | None, typer.Option("--superseded-by", help="Rule id that replaces it.")
    ] = None,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove an active rule, keeping it in the tombstones with the reason and evidence.

    Example: rayvault-learn memory tombstone dzine_producer rule-… --reason "Superseded"
    """
    from rayvault.learning.memory import tombstone_rule

    tombstone = tombstone_rule(
        agent,
        rule_id,
        reason,
        evidence_ids=evidence or (),
        superseded_by=superseded_by,
        store=open_cli_store(root, store_url),
    )
    emit(
        tombstone.to_dict(),
        as_json,
        lambda: console().print(f"Tombstoned {tombstone.rule_id} of {agent}: {tombstone.reason}"),
        record=True,
    )


@app.command("render")
def render_command(
    agent: AgentArgument,
    budget: Annotated[
        int | None,
        typer.Option("--budget", min=80, help="Character budget (default: the policy's)."),
    ] = None,
    stage: Annotated[
        str | None, typer.Option("--stage", help="The stage being run: its rules come first.")
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="The work item's description: rules relevant to it first; - reads it from stdin.",
        ),
    ] = None,
    failure: Annotated[
        str | None,
        typer.Option(
            "--failure",
            help="The retried attempt's error text or pattern key: its rule comes first; - "
            "reads it from stdin.",
        ),
    ] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Also say why each rule is in or out.")
    ] = False,
    root: RootOption = None,
    store_url: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print the agent's active rules as the prompt block agents receive, ranked for a stage,
    a task and a retried failure when given.

    The block is written byte for byte as render_rules returns it, to a terminal, a pipe or a
    file, with no newline added (an agent without rules: nothing; the notice goes to stderr).

    Example: rayvault-learn memory render dzine_producer --stage assets --task "Price anomaly
    on the B0ABC listing" --explain
    """
    from rayvault.learning.memory import check_agent, prompt_rules

    task = from_stdin(task, "--task", (failure, "--failure"))
    failure = from_stdin(failure, "--failure", (task, "--task"))
    store = open_cli_store(root, store_url, read=True)
    block = prompt_rules(agent, budget, stage=stage, task=task, failure=failure, store=store)
    if not block.total:
        check_agent(agent, store=store)
    data: dict[str, Any] = {"agent": agent, "text": block.text}
    if explain:
        data["selection"] = [s.to_dict() for s in block.selection]

    def human() -> None:
        # The block exactly as agents receive it (``render_rules``), terminal or not: no markup,
        # no wrapping, no newline added; an agent without rules gets an empty block.
        echo_exact(block.text)
        if not block.text:
            console(stderr=True).print(f"{escape(agent)} has no active rules.", soft_wrap=True)
        if explain and block.selection:
            out = console()
            out.print()
            table = new_table(
                f"Why each of {escape(agent)}'s {plural(block.total, 'active rule')} is in or out"
            )
            table.add_column("#", justify="right", no_wrap=True)
            table.add_column("Rule", no_wrap=True)
            table.add_column("In", no_wrap=True)
            table.add_column("Why", ratio=1)
            for item in block.selection:
                table.add_row(
                    "" if item.position is None else str(item.position),
                    item.rule_id,
                    "yes" if item.delivered else "no",
                    escape(item.why),
                )
            out.print(table)

    emit(data, as_json, human)
