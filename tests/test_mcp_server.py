"""The MCP server (issue 17 item 2), through the SDK's own client: in-process for every tool and
resource, read-only mode and bad input (a path-escaping id, an oversized error); over stdio with
``rayvault-learn mcp`` as a real subprocess, and over streamable HTTP with a real server on a free
port (a request without the bearer token is refused)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, TextContent

from rayvault.cli import main
from rayvault.learning import (
    InvalidIdentifierError,
    LearningError,
    create_event,
    get_event,
    learning_gate,
    list_events,
    load_active_memory,
    revisit,
)
from rayvault.learning.errors import get_error, list_errors
from rayvault.learning.registry import get_weekly_summary
from rayvault.learning.store import Store
from rayvault.mcp_server import build_server, parse_http_address, require_sdk
from rayvault.mcp_server._server import READ_TOOLS, WRITE_TOOLS, error_text

from .conftest import event_kwargs

pytestmark = pytest.mark.both_stores

T = TypeVar("T")
EXE = Path(sys.executable).parent / "rayvault-learn"
DOC = Path(__file__).resolve().parents[1] / "docs" / "mcp.md"


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def with_client(
    store: Store, body: Callable[[Client], Awaitable[T]], *, read_only: bool = False
) -> T:
    """Run ``body`` with the SDK's client connected in-process to a server over ``store``."""
    server = build_server(store, read_only=read_only)

    async def run() -> T:
        async with Client(server) as client:
            return await body(client)

    return anyio.run(run)


def call(
    store: Store, tool: str, args: dict[str, Any], *, read_only: bool = False
) -> CallToolResult:
    async def body(client: Client) -> CallToolResult:
        return await client.call_tool(tool, args)

    return with_client(store, body, read_only=read_only)


def ok(result: CallToolResult) -> dict[str, Any]:
    """The structured result of a call that succeeded (and its text block is the same JSON)."""
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    assert json.loads(text(result)) == result.structured_content
    return result.structured_content


def text(result: CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


def tool_error(result: CallToolResult, tool: str) -> str:
    """The message of a call that failed as a tool error (after the SDK's prefix)."""
    assert result.is_error
    prefix = f"Error executing tool {tool}: "
    assert text(result).startswith(prefix)
    return text(result)[len(prefix) :]


def library_error(fn: Callable[[], object]) -> str:
    """What the library says (message and hint) for the same bad call."""
    with pytest.raises(LearningError) as raised:
        fn()
    return error_text(raised.value)


def read(store: Store, uri: str, *, read_only: bool = False) -> Any:
    async def body(client: Client) -> Any:
        result = await client.read_resource(uri)
        [content] = result.contents
        assert content.mime_type == "application/json"
        return json.loads(content.text)  # type: ignore[union-attr]

    return with_client(store, body, read_only=read_only)


def read_error(store: Store, uri: str) -> str:
    async def body(client: Client) -> str:
        with pytest.raises(MCPError) as raised:
            await client.read_resource(uri)
        return raised.value.error.message

    return with_client(store, body)


LEARNING = {
    "agent": "dzine_producer",
    "severity": "FAIL",
    "component": "assets",
    "symptom": "Product shape wrong: reference angle top-down",
    "root_cause": "Reference photo switched to top-down",
    "fix": "Use the original 3/4 reference angle",
    "video_id": "v042",
}


# -- the tools -----------------------------------------------------------------------------------
def test_the_server_lists_every_tool_with_its_arguments(store: Store) -> None:
    """Seven tools, reads marked read-only; arguments and their descriptions in the schema."""

    async def body(client: Client) -> Any:
        return (await client.list_tools()).tools

    tools = {t.name: t for t in with_client(store, body)}
    assert sorted(tools) == sorted((*READ_TOOLS, *WRITE_TOOLS))
    for name in READ_TOOLS:
        assert tools[name].annotations is not None and tools[name].annotations.read_only_hint
    for name in WRITE_TOOLS:
        assert tools[name].annotations is not None
        assert tools[name].annotations.read_only_hint is False
    schema = tools["get_rules"].input_schema
    assert schema["required"] == ["agent"]
    assert set(schema["properties"]) == {"agent", "stage", "task", "budget"}
    assert set(tools["log_failure"].input_schema["required"]) == {"video_id", "stage", "error"}
    assert tools["check_gate"].description and "blocked" in tools["check_gate"].description


def test_check_gate_is_the_gates_decision(store: Store) -> None:
    """Passes on a clean store, blocks once an open FAIL event holds the stage."""
    passed = ok(call(store, "check_gate", {"video_id": "v042", "stage": "assets"}))
    assert passed["blocked"] is False and passed["video_id"] == "v042"
    assert [c["name"] for c in passed["checks"]] == [
        c.name for c in learning_gate("v042", "assets", store=store).checks
    ]
    create_event(**event_kwargs(verification=""), store=store)  # type: ignore[arg-type]
    blocked = ok(call(store, "check_gate", {"video_id": "v042", "stage": "assets"}))
    assert blocked["blocked"] is True
    assert blocked["reason"] == learning_gate("v042", "assets", store=store).reason
    assert blocked["reason"].startswith("check_regressions")


def test_check_gate_refuses_an_unknown_stage_with_the_librarys_message(store: Store) -> None:
    expected = library_error(lambda: learning_gate("v042", "asets", store=store))
    got = tool_error(
        call(store, "check_gate", {"video_id": "v042", "stage": "asets"}), "check_gate"
    )
    assert got == expected and "asets" in got


def test_record_learning_puts_the_rule_in_memory_and_get_rules_delivers_it(store: Store) -> None:
    """The learning path: the event, its rule in the agent's memory at once, the rules block."""
    event = ok(call(store, "record_learning", LEARNING))
    stored = get_event(event["event_id"], store=store)
    assert stored.agent == "dzine_producer" and stored.status == "applied"
    assert stored.fix_applied == LEARNING["fix"] and stored.video_id == "v042"
    [rule] = load_active_memory("dzine_producer", store=store).rules
    assert event["rule_id"] == rule.rule_id

    rules = ok(call(store, "get_rules", {"agent": "dzine_producer", "stage": "assets"}))
    assert rules["rule_ids"] == [rule.rule_id] and rules["active_rules"] == 1
    assert "Do: Use the original 3/4 reference angle." in rules["text"]
    assert rules["text"].startswith("Learned rules for dzine_producer")


def test_record_learning_refuses_bad_input_with_the_librarys_message(store: Store) -> None:
    """A bad severity: the library's message, nothing recorded."""
    bad = {**LEARNING, "severity": "CATASTROPHIC"}
    expected = library_error(
        lambda: create_event(
            run_id="",
            severity="CATASTROPHIC",
            component="assets",
            symptom="x",
            agent="dzine_producer",
            store=store,
        )
    )
    assert tool_error(call(store, "record_learning", bad), "record_learning") == expected
    assert list_events(store=store) == []


def test_get_rules_refuses_an_unknown_agent_and_a_bad_budget(store: Store) -> None:
    got = tool_error(call(store, "get_rules", {"agent": "nobody"}), "get_rules")
    assert "nobody" in got
    got = tool_error(
        call(store, "get_rules", {"agent": "dzine_producer", "budget": 0}), "get_rules"
    )
    assert got == "budget must be a positive number of characters, got 0"


def test_log_failure_writes_the_error_log(store: Store) -> None:
    entry = ok(
        call(
            store,
            "log_failure",
            {"video_id": "v042", "stage": "assets", "error": "Timeout after 30.2s", "exit_code": 3},
        )
    )
    stored = get_error(entry["id"], store=store)
    assert stored.exit_code == 3 and stored.error == "Timeout after 30.2s"
    assert stored.video_id == "v042" and entry["fingerprint"] == stored.fingerprint


def test_a_path_escaping_id_is_a_tool_error_and_nothing_is_written(
    store: Store, root: Path
) -> None:
    """``../x`` as a video id, a stage, an agent: the library's message, nothing written."""
    before = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    cases = [
        ("log_failure", {"video_id": "../x", "stage": "assets", "error": "boom"}, "invalid"),
        ("log_failure", {"video_id": "v1", "stage": "../x", "error": "boom"}, "invalid"),
        ("record_learning", {**LEARNING, "agent": "../x"}, "invalid"),
        ("check_gate", {"video_id": "../x", "stage": "assets"}, "invalid"),
        ("get_rules", {"agent": "../x"}, "invalid"),
        # Event ids are looked up, never made into a path: not found.
        ("resolve", {"event_id": "../x", "verification": "checked"}, "no learning event"),
    ]
    for tool, args, start in cases:
        message = tool_error(call(store, tool, args), tool)
        assert message.startswith(start), message
        assert "'../x'" in message
    with pytest.raises(InvalidIdentifierError) as raised:
        from rayvault.learning.errors import log_error

        log_error("../x", "assets", "boom", store=store)
    expected = error_text(raised.value)
    assert tool_error(call(store, "log_failure", cases[0][1]), "log_failure") == expected
    assert expected.startswith("invalid video id '../x': ")
    assert list_errors(store=store) == [] and list_events(store=store) == []
    assert not (root.parent / "x").exists()
    after = sorted(p.relative_to(root.parent) for p in root.parent.rglob("*"))
    escaped = [p for p in after if p not in before and not str(p).startswith("root")]
    assert escaped == []


def test_an_oversized_error_is_cut_with_a_marker_never_refused(store: Store) -> None:
    limit = store.policies.LEARNING_MAX_ERROR_TEXT_CHARS
    huge = "Traceback (most recent call last):\n" + "x" * (limit * 5) + "\nValueError: the end"
    entry = ok(call(store, "log_failure", {"video_id": "v1", "stage": "assets", "error": huge}))
    stored = get_error(entry["id"], store=store)
    assert len(stored.error) <= limit
    assert f"[… truncated by rayvault: {len(huge)} characters, cut to {limit}" in stored.error
    assert stored.error.endswith("ValueError: the end")


def test_resolve_verifies_the_event_and_the_gate_passes_again(store: Store) -> None:
    event = create_event(**event_kwargs(verification=""), store=store)  # type: ignore[arg-type]
    assert learning_gate("v042", "assets", store=store).blocked
    done = ok(
        call(store, "resolve", {"event_id": event.event_id, "verification": "re-ran: 5/5 right"})
    )
    assert done["status"] == "verified" and done["verification"] == "re-ran: 5/5 right"
    assert get_event(event.event_id, store=store).status == "verified"
    assert not learning_gate("v042", "assets", store=store).blocked


def test_resolve_an_unknown_event_says_so_with_the_hint(store: Store) -> None:
    got = tool_error(
        call(store, "resolve", {"event_id": "le-nope", "verification": "x"}), "resolve"
    )
    assert got == (
        "no learning event with id 'le-nope'\n"
        "hint: list the known ids with `rayvault-learn events list`"
    )


def test_search_patterns_groups_recurring_failures(store: Store) -> None:
    for n in range(3):
        create_event(
            **event_kwargs(symptom=f"Timeout after {30 + n}.2s on B0ABC{n}", video_id=f"v{n}"),  # type: ignore[arg-type]
            store=store,
        )
    create_event(**event_kwargs(component="research", symptom="Other thing"), store=store)  # type: ignore[arg-type]
    found = ok(call(store, "search_patterns", {"stage": "assets"}))
    assert found["total"] == 1
    [pattern] = found["patterns"]
    assert pattern["count"] == 3 and pattern["stage"] == "assets"
    assert ok(call(store, "search_patterns", {"stage": "research"}))["total"] == 0
    assert ok(call(store, "search_patterns", {"min_count": 1}))["total"] == 2
    assert len(ok(call(store, "search_patterns", {"min_count": 1, "limit": 1}))["patterns"]) == 1
    got = tool_error(call(store, "search_patterns", {"min_count": 0}), "search_patterns")
    assert got == "min_count must be at least 1 (got 0)"


def test_weekly_summary_is_the_latest_report_or_a_dry_run(store: Store) -> None:
    create_event(**event_kwargs(), store=store)  # type: ignore[arg-type]
    first = ok(call(store, "weekly_summary", {}))
    assert first["source"] == "dry-run" and first["report"]["events_total"] == 1
    assert get_weekly_summary(store=store) is None  # the dry run wrote nothing
    revisit(store=store)
    latest = ok(call(store, "weekly_summary", {}))
    report = get_weekly_summary(store=store)
    assert report is not None
    assert latest == {"source": "latest", "report": report.to_dict()}


# -- the resources -------------------------------------------------------------------------------
def test_the_memory_resource_is_the_agents_memory(store: Store) -> None:
    ok(call(store, "record_learning", LEARNING))
    memory = read(store, "rayvault://agents/dzine_producer/memory")
    assert memory == load_active_memory("dzine_producer", store=store).to_dict()
    assert memory["count"] == 1


def test_the_memory_resource_refuses_unknown_and_escaping_agents(store: Store, root: Path) -> None:
    assert "nobody" in read_error(store, "rayvault://agents/nobody/memory")
    message = read_error(store, "rayvault://agents/..x/memory")
    assert message.startswith("invalid agent '..x'")
    read_error(store, "rayvault://agents/../memory")  # refused (by the SDK's path check)
    assert not (root / "state" / "agents" / "..x").exists()


def test_the_report_and_agents_resources(store: Store) -> None:
    assert read_error(store, "rayvault://reports/latest").startswith("no weekly report yet")
    ok(call(store, "record_learning", LEARNING))
    revisit(store=store)
    report = get_weekly_summary(store=store)
    assert report is not None
    assert read(store, "rayvault://reports/latest") == report.to_dict()
    agents = read(store, "rayvault://agents")
    assert agents["with_memory"] == ["dzine_producer"]
    assert "dzine_producer" in agents["in_stage_map"]


# -- read-only -----------------------------------------------------------------------------------
def test_read_only_serves_the_reads_alone(store: Store) -> None:
    """The writes are not listed and cannot be called; reads and resources work."""

    async def body(client: Client) -> list[str]:
        return [t.name for t in (await client.list_tools()).tools]

    assert sorted(with_client(store, body, read_only=True)) == sorted(READ_TOOLS)
    result = call(
        store, "log_failure", {"video_id": "v1", "stage": "assets", "error": "x"}, read_only=True
    )
    assert result.is_error and "log_failure" in text(result)
    result = call(store, "record_learning", LEARNING, read_only=True)
    assert result.is_error
    assert list_errors(store=store) == [] and list_events(store=store) == []
    assert not ok(call(store, "check_gate", {"video_id": "v1", "stage": "assets"}, read_only=True))[
        "blocked"
    ]
    assert read(store, "rayvault://agents", read_only=True)["with_memory"] == []


# -- the command -----------------------------------------------------------------------------------
def test_building_the_server_leaves_the_programs_logging_alone(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's server configures an unconfigured root logger when built (a handler, a
    level); ``build_server`` leaves a program's logging as it found it."""
    import logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # a program that configured nothing
    monkeypatch.setattr(root, "level", logging.ERROR)
    build_server(store)
    build_server(store, read_only=True)
    assert root.handlers == [] and root.level == logging.ERROR


def test_http_addresses() -> None:
    assert parse_http_address("8765") == parse_http_address("127.0.0.1:8765")
    assert parse_http_address("127.0.0.1:8765").loopback
    assert (
        parse_http_address("[::1]:9000").loopback and parse_http_address("[::1]:9000").host == "::1"
    )
    assert parse_http_address("localhost:1").loopback
    assert not parse_http_address("0.0.0.0:8765").loopback
    assert not parse_http_address("example.org:80").loopback
    assert parse_http_address("[::1]:9000").url == "http://[::1]:9000/mcp"
    for bad in ("host:", "host:0", "host:70000", "::1:80", "abc"):
        with pytest.raises(LearningError):
            parse_http_address(bad)


@pytest.mark.files_only("the command refuses before it serves: no store involved")
def test_the_command_refuses_to_expose_the_server(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-loopback host needs --allow-remote; --allow-remote needs a token; a token must be
    long enough. Each refused before anything listens."""
    assert main(["mcp", "--root", str(root), "--http", "0.0.0.0:8765"]) == 1
    err = capsys.readouterr().err
    assert "Error: 0.0.0.0 is not a loopback address" in err
    assert "--allow-remote" in err

    monkeypatch.delenv("RAYVAULT_MCP_TOKEN", raising=False)
    assert main(["mcp", "--root", str(root), "--http", "0.0.0.0:8765", "--allow-remote"]) == 1
    err = capsys.readouterr().err
    assert "Error: --allow-remote needs a bearer token in RAYVAULT_MCP_TOKEN" in err

    monkeypatch.setenv("RAYVAULT_MCP_TOKEN", "short")
    assert main(["mcp", "--root", str(root), "--http", "0.0.0.0:8765", "--allow-remote"]) == 1
    assert "RAYVAULT_MCP_TOKEN is 5 characters long: use 16 or more" in capsys.readouterr().err

    assert main(["mcp", "--root", str(root), "--allow-remote"]) == 1
    assert "--allow-remote is for the HTTP transport" in capsys.readouterr().err


@pytest.mark.files_only("about the missing extra: no store involved")
def test_without_the_sdk_the_command_says_what_to_install(
    root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    with pytest.raises(LearningError):
        require_sdk()
    assert main(["mcp", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert "install rayvault-learning[mcp]" in err
    assert "pip install 'rayvault-learning[mcp]'" in err


# -- real processes ----------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAYVAULT_MCP_TOKEN"}


@pytest.mark.slow
@pytest.mark.files_only("a subprocess on the file store's root (PostgreSQL: same code path)")
def test_over_stdio_with_a_real_subprocess(root: Path) -> None:
    """``rayvault-learn mcp --root …`` spawned by the SDK's stdio client: a write lands in the
    root, a library error comes back as a tool error; ``--read-only`` lists the reads alone."""

    async def run() -> tuple[list[str], CallToolResult, CallToolResult, list[str]]:
        params = StdioServerParameters(
            command=str(EXE), args=["mcp", "--root", str(root)], env=_env()
        )
        async with Client(params) as client:
            tools = [t.name for t in (await client.list_tools()).tools]
            logged = await client.call_tool(
                "log_failure",
                {"video_id": "v042", "stage": "assets", "error": "boom", "exit_code": 7},
            )
            bad = await client.call_tool(
                "log_failure", {"video_id": "../x", "stage": "assets", "error": "boom"}
            )
        params = StdioServerParameters(
            command=str(EXE), args=["mcp", "--root", str(root), "--read-only"], env=_env()
        )
        async with Client(params) as client:
            reads = [t.name for t in (await client.list_tools()).tools]
        return tools, logged, bad, reads

    tools, logged, bad, reads = anyio.run(run)
    assert sorted(tools) == sorted((*READ_TOOLS, *WRITE_TOOLS))
    entry = ok(logged)
    stored = get_error(entry["id"])
    assert stored.exit_code == 7 and stored.error == "boom"
    assert tool_error(bad, "log_failure").startswith("invalid video id '../x'")
    assert sorted(reads) == sorted(READ_TOOLS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.files_only("a subprocess on the file store's root (PostgreSQL: same code path)")
def test_over_http_a_request_without_the_token_is_refused(root: Path) -> None:
    """A real server on a free port: no token or a wrong one → 401, nothing served; the right
    one → the SDK's HTTP client calls a tool."""
    token = "t0ken-" + "x" * 26
    port = _free_port()
    env = {**_env(), "RAYVAULT_MCP_TOKEN": token}
    process = subprocess.Popen(
        [str(EXE), "mcp", "--root", str(root), "--http", f"127.0.0.1:{port}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line == f"rayvault-learn mcp: serving http://127.0.0.1:{port}/mcp\n"
        url = f"http://127.0.0.1:{port}/mcp"
        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}

        async def run() -> tuple[list[httpx2.Response], CallToolResult]:
            refused = []
            async with httpx2.AsyncClient() as http:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                    refused.append(await http.post(url, json=request, headers=headers))
            headers = {"Authorization": f"Bearer {token}"}
            async with (
                httpx2.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(url, http_client=http)) as client,
            ):
                result = await client.call_tool("check_gate", {"video_id": "v1", "stage": "assets"})
            return refused, result

        refused, result = anyio.run(run)
        # The client example of docs/mcp.md, against this server.
        namespace: dict[str, Any] = {}
        exec(compile(doc_blocks("python")[0], str(DOC), "exec"), namespace)
        assert anyio.run(namespace["check"], url, token) is True
        for response in refused:
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "unauthorized" in response.json()["error"]
        assert ok(result)["blocked"] is False
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


# -- the docs ----------------------------------------------------------------------------------------
@pytest.mark.files_only("the docs' example opens a store of its own")
def test_the_in_process_example_of_the_docs_runs(tmp_path: Path) -> None:
    [_, example] = doc_blocks("python")
    exec(compile(example, str(DOC), "exec"), {})  # its asserts are the test


@pytest.mark.files_only("about the docs' configuration snippets")
def test_the_client_configurations_of_the_docs_name_the_command(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each JSON snippet is valid and starts ``rayvault-learn mcp`` with options it has."""
    import typer

    from rayvault.cli.app import app

    snippets = [json.loads(block) for block in doc_blocks("json")]
    assert len(snippets) == 2
    command = typer.main.get_command(app).commands["mcp"]  # type: ignore[attr-defined]
    options = {o for p in command.params for o in p.opts}
    for snippet in snippets:
        [server] = snippet["mcpServers"].values()
        assert server["command"].endswith("/rayvault-learn")
        assert server["args"][0] == "mcp"
        assert {a for a in server["args"][1:] if a.startswith("--")} <= options
