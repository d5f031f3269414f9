"""The MCP server object: the tools and resources of ``_tools`` registered with the SDK's
``MCPServer``, library errors turned into tool errors with the library's message.

Imports the MCP SDK: reached only through :func:`rayvault.mcp_server.build_server`, after the
check that it is installed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from rayvault import __version__
from rayvault.learning.exceptions import LearningError, NotFoundError
from rayvault.learning.store import Store
from rayvault.mcp_server import _tools

R = TypeVar("R")

#: Tools that only read (``--read-only`` serves these alone).
READ_TOOLS = ("check_gate", "get_rules", "search_patterns", "weekly_summary")
#: Tools that write to the store.
WRITE_TOOLS = ("log_failure", "record_learning", "resolve")
MEMORY_RESOURCE = "rayvault://agents/{agent}/memory"
AGENTS_RESOURCE = "rayvault://agents"
REPORT_RESOURCE = "rayvault://reports/latest"

INSTRUCTIONS = """\
rayvault-learning: closed-loop learning for a pipeline of agents. Before a stage, call \
check_gate (blocked: do not run the stage) and get_rules (put its text in your prompt). When a \
step fails, call log_failure; once you know the root cause and the fix, call record_learning \
(the rule is in the agent's memory at once); when the fix is verified, call resolve. \
search_patterns lists recurring failures, weekly_summary the latest weekly review."""

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)

VideoId = Annotated[str, Field(description="The video (work item) id, e.g. v042.")]
Stage = Annotated[str, Field(description="The stage or pipeline step name, e.g. assets.")]
Agent = Annotated[str, Field(description="The agent, e.g. dzine_producer.")]


def error_text(error: LearningError) -> str:
    """The library's message, and its hint on a second line (as the CLI prints them)."""
    hint = error.hint
    return f"{error}\nhint: {hint}" if hint else str(error)


def build_server(store: Store, *, read_only: bool = False) -> MCPServer[Any]:
    """The MCP server over ``store``: every tool when ``read_only`` is False, the reads alone
    otherwise. Calls reach the store one at a time (the SDK runs each in a worker thread).

    The program's logging is left as it was: the SDK's server configures the root logger when it
    is built (a handler and a level), which a library must not do to the program that calls it;
    ``rayvault-learn mcp`` sets up its own (warnings to stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        server: MCPServer[Any] = MCPServer(
            "rayvault-learning",
            title="rayvault-learning",
            version=__version__,
            instructions=INSTRUCTIONS,
            log_level="WARNING",
        )
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lock = threading.Lock()

    def call(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        with lock:
            try:
                return fn(store, *args, **kwargs)
            except LearningError as e:
                raise ToolError(error_text(e)) from e

    def read(fn: Callable[..., R], *args: Any) -> R:
        with lock:
            try:
                return fn(store, *args)
            except NotFoundError as e:
                raise ResourceNotFoundError(error_text(e)) from e
            except LearningError as e:
                raise ResourceError(error_text(e)) from e

    # -- reads ----------------------------------------------------------------------------------
    @server.tool(annotations=_READ)
    def check_gate(video_id: VideoId, stage: Stage) -> dict[str, Any]:
        """Run the learning gate before a stage: "blocked": true means do not run it ("reason"
        and each check's "clear" commands say why and how to clear it)."""
        return call(_tools.check_gate, video_id, stage)

    @server.tool(annotations=_READ)
    def get_rules(
        agent: Agent,
        stage: Annotated[
            str | None, Field(description="The stage being run: its rules come first.")
        ] = None,
        task: Annotated[
            str | None,
            Field(description="The work item's description: the rules most relevant to it next."),
        ] = None,
        budget: Annotated[
            int | None, Field(description="Character budget (default: the policy's).")
        ] = None,
    ) -> dict[str, Any]:
        """The agent's learned rules as a prompt-ready block ("text"), ranked for the stage and
        the task, with the ids of the rules it shows."""
        return call(_tools.get_rules, agent, stage, task, budget)

    @server.tool(annotations=_READ)
    def search_patterns(
        stage: Annotated[
            str | None, Field(description="Only this stage or component (its aliases too).")
        ] = None,
        min_count: Annotated[int, Field(description="Minimum occurrences of a pattern.")] = 3,
        agent: Annotated[
            str | None, Field(description="Only the agent's learnings (its events and stages).")
        ] = None,
        limit: Annotated[
            int, Field(description="At most this many patterns.")
        ] = _tools.DEFAULT_PATTERN_LIMIT,
    ) -> dict[str, Any]:
        """Recurring failure patterns (events grouped by fingerprint), most frequent first,
        with their state (new, ongoing, resolved, regressed)."""
        return call(_tools.search_patterns, stage, min_count, agent, limit)

    @server.tool(annotations=_READ)
    def weekly_summary() -> dict[str, Any]:
        """The latest weekly review report ("source": "latest"), or, before the first revisit,
        the report it would write now ("source": "dry-run", nothing written)."""
        return call(_tools.weekly_summary)

    @server.resource(
        MEMORY_RESOURCE,
        name="agent-memory",
        description="An agent's active rules (memory_active.json).",
        mime_type="application/json",
    )
    def agent_memory(agent: str) -> dict[str, Any]:
        return read(_tools.agent_memory, agent)

    @server.resource(
        AGENTS_RESOURCE,
        name="agents",
        description="The agents with memory and those of the stage map.",
        mime_type="application/json",
    )
    def agents() -> dict[str, Any]:
        return read(_tools.agents)

    @server.resource(
        REPORT_RESOURCE,
        name="latest-weekly-report",
        description="The latest weekly report written by the revisit.",
        mime_type="application/json",
    )
    def latest_report() -> dict[str, Any]:
        report = read(_tools.latest_report)
        if report is None:
            raise ResourceNotFoundError(
                "no weekly report yet: run `rayvault-learn revisit` (or the weekly_summary tool "
                "for a dry run)"
            )
        return report

    if read_only:
        return server

    # -- writes ---------------------------------------------------------------------------------
    @server.tool(annotations=_WRITE)
    def log_failure(
        video_id: Annotated[str | None, Field(description="The video id, if any.")],
        stage: Stage,
        error: Annotated[
            str,
            Field(
                description="The error text (a traceback, the step's stderr). A text over the "
                "limit is cut with a marker, its full text kept beside the log."
            ),
        ],
        exit_code: Annotated[int, Field(description="The step's exit code.")] = 1,
    ) -> dict[str, Any]:
        """Record a stage failure in the error log; returns the entry with its id and the
        failure's pattern key (fingerprint)."""
        return call(_tools.log_failure, video_id, stage, error, exit_code)

    @server.tool(annotations=_WRITE)
    def record_learning(
        agent: Annotated[str, Field(description="The agent whose memory gets the rule now.")],
        severity: Annotated[str, Field(description="INFO, WARN, FAIL or BLOCKER.")],
        component: Annotated[str, Field(description="The stage or component that failed.")],
        symptom: Annotated[str, Field(description="What went wrong, as observed.")],
        root_cause: Annotated[str, Field(description="Why it went wrong.")] = "",
        fix: Annotated[str, Field(description="What fixes it: the rule the agent gets.")] = "",
        verification: Annotated[
            str, Field(description="How the fix was verified (marks the event verified).")
        ] = "",
        video_id: Annotated[str | None, Field(description="The video id.")] = None,
        run_id: Annotated[str, Field(description="The pipeline run id.")] = "",
        source_error_id: Annotated[
            str | None, Field(description="The error-log entry (e-…) this learns from.")
        ] = None,
        idempotency_key: Annotated[
            str | None,
            Field(description="Your key for this call: repeating it creates nothing new."),
        ] = None,
    ) -> dict[str, Any]:
        """Record a failure as a learning event and learn from it at once: the rule is in the
        agent's memory before its next run. An event without verification stays open and holds
        the gate until resolved."""
        return call(
            _tools.record_learning,
            agent=agent,
            severity=severity,
            component=component,
            symptom=symptom,
            root_cause=root_cause,
            fix=fix,
            verification=verification,
            video_id=video_id,
            run_id=run_id,
            source_error_id=source_error_id,
            idempotency_key=idempotency_key,
        )

    @server.tool(annotations=_WRITE)
    def resolve(
        event_id: Annotated[str, Field(description="The learning event id (le-…).")],
        verification: Annotated[str, Field(description="How the fix was verified.")],
        verified_by: Annotated[str, Field(description="person, retry or later_runs.")] = "person",
    ) -> dict[str, Any]:
        """Mark an event's fix as verified: it no longer holds the gate, and its error-log
        entries are resolved with it."""
        return call(_tools.resolve, event_id, verification, verified_by)

    return server
