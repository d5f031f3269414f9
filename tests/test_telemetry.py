"""OpenTelemetry spans of ``run_stage`` (issue 17 item 3), read back from the SDK's in-memory
exporter: the stage run's span, a child span per attempt, their attributes, the gate's decision
as an event; and the helpers (``rayvault.learning._telemetry``) as no-ops without a tracer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from rayvault.learning import GateBlocked, create_event, get_event, list_events
from rayvault.learning import _telemetry as telemetry
from rayvault.learning.errors import get_error
from rayvault.learning.loop import Diagnosis, Failure, StageContext, run_stage

from .conftest import Clock, event_kwargs

pytestmark = pytest.mark.both_stores

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The in-memory exporter of this process's tracer provider (installed once: OpenTelemetry
    allows one global provider per process), emptied before and after the test."""
    provider = trace.get_tracer_provider()
    if not getattr(provider, "_rayvault_test", False):
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        provider._rayvault_test = True  # type: ignore[attr-defined]
    telemetry.reset()
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """The spans this library made (the SDK's other users, e.g. the MCP SDK, make their own)."""
    return [
        s
        for s in exporter.get_finished_spans()
        if s.instrumentation_scope is not None
        and s.instrumentation_scope.name == telemetry.TRACER_NAME
    ]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in (span.attributes or {}).items()}


FIX = "Use the original 3/4 reference angle"
ANGLE = Diagnosis(root_cause="Reference photo switched to top-down", fix=FIX, source="runbook")


def angle(failure: Failure) -> Diagnosis | None:
    return ANGLE if "reference angle" in failure.symptom else None


def assets(ctx: StageContext) -> str:
    if not ctx.has_rule("3/4 reference angle"):
        raise ValueError("Product shape wrong in 3 of 5 images: reference angle top-down")
    return "5 images"


def test_a_failing_then_succeeding_run_is_a_stage_span_with_two_attempt_spans(
    root: Path, clock: Clock, spans: InMemorySpanExporter
) -> None:
    """One span per stage run, a child per attempt; the failed attempt carries its error,
    event and pattern key, the retry the rule it was delivered."""
    run = run_stage("v042", "assets", assets, diagnose=angle, run_id="v042-run-1")
    assert run.ok and run.attempts == 2

    found = ours(spans)
    assert [s.name for s in found] == ["rayvault.attempt", "rayvault.attempt", "rayvault.stage"]
    first, second, stage = found
    assert stage.parent is None
    assert stage.context is not None
    for child in (first, second):
        assert child.parent is not None and child.parent.span_id == stage.context.span_id
        assert child.context is not None and child.context.trace_id == stage.context.trace_id

    [error_id] = run.error_ids
    [event_id] = run.event_ids
    [rule_id] = run.rule_ids
    error = get_error(error_id)
    assert attrs(stage) == {
        "rayvault.video": "v042",
        "rayvault.stage": "assets",
        "rayvault.agent": "dzine_producer",
        "rayvault.run_id": "v042-run-1",
        "rayvault.max_attempts": 2,
        "rayvault.gate.decision": "passed",
        "rayvault.outcome": "succeeded",
        "rayvault.attempts": 2,
        "rayvault.rule_ids": [rule_id],  # delivered into the retry
        "rayvault.learned_rule_ids": [rule_id],
        "rayvault.event_ids": [event_id],
        "rayvault.error_ids": [error_id],
    }
    assert stage.status.status_code == StatusCode.UNSET
    assert attrs(first) == {
        "rayvault.video": "v042",
        "rayvault.stage": "assets",
        "rayvault.agent": "dzine_producer",
        "rayvault.run_id": "v042-run-1",
        "rayvault.attempt": 1,
        "rayvault.rule_ids": [],
        "rayvault.outcome": "failed",
        "rayvault.error_id": error_id,
        "rayvault.event_id": event_id,
        "rayvault.pattern_key": error.fingerprint,
    }
    assert first.status.status_code == StatusCode.ERROR
    assert first.status.description == (
        "ValueError: Product shape wrong in 3 of 5 images: reference angle top-down"
    )
    [exception] = [e for e in first.events if e.name == "exception"]
    assert (exception.attributes or {})["exception.type"] == "ValueError"
    second_attrs = attrs(second)
    assert second_attrs["rayvault.attempt"] == 2
    assert second_attrs["rayvault.outcome"] == "succeeded"
    assert second_attrs["rayvault.rule_ids"] == [rule_id]
    assert len(second_attrs["rayvault.rules_sha256"]) == 64
    assert second.status.status_code == StatusCode.UNSET

    [gate] = stage.events
    assert gate.name == "rayvault.gate"
    assert dict(gate.attributes or {}) == {
        "rayvault.gate.decision": "passed",
        "rayvault.gate.reason": run.gate.reason if run.gate else None,
        "rayvault.gate.failed_checks": (),
        "rayvault.gate.warned_checks": (),
    }


def test_a_rule_delivered_from_an_earlier_run_is_on_the_stage_span(
    root: Path, clock: Clock, spans: InMemorySpanExporter
) -> None:
    """A rule already in memory is delivered, and counted, on both spans."""
    event = create_event(**event_kwargs(symptom="reference angle top-down", fix_applied=FIX))  # type: ignore[arg-type]
    assert event.rule_id is not None
    spans.clear()
    run_stage("v043", "assets", assets, run_id="v043-run-1")
    attempt, stage = ours(spans)
    assert attrs(stage)["rayvault.rule_ids"] == [event.rule_id]
    assert attrs(attempt)["rayvault.rule_ids"] == [event.rule_id]
    assert attrs(stage)["rayvault.outcome"] == attrs(attempt)["rayvault.outcome"] == "succeeded"


def test_a_blocked_stage_is_one_span_with_the_gate_event_and_no_attempt(
    root: Path, spans: InMemorySpanExporter
) -> None:
    """Blocked: outcome ``blocked``, the gate event names the failed check, no attempt span; the
    raised GateBlocked does not turn it into an error."""
    create_event(**event_kwargs(verification=""))  # type: ignore[arg-type]  # open FAIL v042/assets
    with pytest.raises(GateBlocked):
        run_stage("v042", "assets", assets, run_id="r-blocked")
    [stage] = ours(spans)
    assert stage.name == "rayvault.stage"
    values = attrs(stage)
    assert values["rayvault.outcome"] == "blocked"
    assert values["rayvault.gate.decision"] == "blocked"
    assert values["rayvault.attempts"] == 0
    assert stage.status.status_code == StatusCode.UNSET
    assert not [e for e in stage.events if e.name == "exception"]
    [gate] = stage.events
    assert gate.name == "rayvault.gate"
    gate_attrs = dict(gate.attributes or {})
    assert gate_attrs["rayvault.gate.decision"] == "blocked"
    assert gate_attrs["rayvault.gate.failed_checks"] == ("check_regressions",)
    assert str(gate_attrs["rayvault.gate.reason"]).startswith("check_regressions")

    spans.clear()
    run = run_stage("v042", "assets", assets, on_blocked="return")
    assert run.blocked
    [stage] = ours(spans)
    assert attrs(stage)["rayvault.outcome"] == "blocked"


def test_a_run_that_fails_for_good_is_an_error_on_both_spans(
    root: Path, spans: InMemorySpanExporter
) -> None:
    """No diagnosis: the attempt and the stage run end ``failed``, status ERROR, the open event
    and the error on the spans."""

    def broken(ctx: StageContext) -> None:
        raise RuntimeError("render farm unreachable at 10.0.0.7")

    with pytest.raises(RuntimeError):
        run_stage("v050", "assets", broken, run_id="r-broken")
    attempt, stage = ours(spans)
    [event] = list_events()
    assert get_event(event.event_id).status == "open"
    for span in (attempt, stage):
        assert span.status.status_code == StatusCode.ERROR
        assert attrs(span)["rayvault.outcome"] == "failed"
    assert attrs(attempt)["rayvault.event_id"] == event.event_id
    assert attrs(stage)["rayvault.event_ids"] == [event.event_id]
    assert attrs(stage)["rayvault.error_ids"] == [event.source_error_id]


def test_the_librarys_own_error_inside_the_stage_is_an_error_outcome(
    root: Path, spans: InMemorySpanExporter
) -> None:
    """A LearningError raised by the stage propagates unlearned; both spans say ``error``."""
    from rayvault.learning import InvalidInputError

    def nested(ctx: StageContext) -> None:
        raise InvalidInputError("bad video id passed on")

    with pytest.raises(InvalidInputError):
        run_stage("v051", "assets", nested)
    attempt, stage = ours(spans)
    for span in (attempt, stage):
        assert attrs(span)["rayvault.outcome"] == "error"
        assert span.status.status_code == StatusCode.ERROR
        [exception] = [e for e in span.events if e.name == "exception"]
        assert (exception.attributes or {})["exception.message"] == "bad video id passed on"


def test_spans_the_stage_makes_are_children_of_its_attempt(
    root: Path, spans: InMemorySpanExporter
) -> None:
    """The attempt span is current while the stage runs: an instrumented client's span (here
    the stage's own) nests under it."""

    def traced(ctx: StageContext) -> str:
        with trace.get_tracer("pipeline").start_as_current_span("llm.call"):
            return "ok"

    run_stage("v052", "assets", traced)
    finished = spans.get_finished_spans()
    llm = next(s for s in finished if s.name == "llm.call")
    attempt = next(s for s in finished if s.name == "rayvault.attempt")
    assert llm.parent is not None and attempt.context is not None
    assert llm.parent.span_id == attempt.context.span_id


def test_helpers_without_a_tracer_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenTelemetry absent (the cached tracer is None): the helpers run their blocks, record
    nothing, and let exceptions through."""
    monkeypatch.setattr(telemetry, "_cache", [None])
    assert not telemetry.enabled()
    with telemetry.stage_span("v1", "assets", agent="a") as span:
        assert not span.recording
        span.set(anything=1)
        telemetry.gate_event(span, {"enabled": True, "blocked": False, "reason": "ok"})
        with telemetry.attempt_span(span, 1, rule_ids=["r1"]) as step:
            step.outcome("failed", error=ValueError("x"))
        span.outcome("succeeded")
    with pytest.raises(KeyError), telemetry.stage_span("v1", "assets"):
        raise KeyError("through")


def test_gate_event_takes_the_gate_result_as_a_dict(spans: InMemorySpanExporter) -> None:
    """The shell wrapper may hold the gate's JSON: the same event from a dict; a disabled gate
    is said to be disabled."""
    with telemetry.stage_span("v1", "assets", agent=None) as span:
        telemetry.gate_event(
            span,
            {
                "enabled": True,
                "blocked": False,
                "outcome": "warn",
                "reason": "warned",
                "checks": [{"name": "check_soul", "passed": True, "outcome": "warn"}],
            },
        )
    with telemetry.stage_span("v2", "assets") as span:
        telemetry.gate_event(span, {"enabled": False, "blocked": False, "reason": "off"})
    warned, disabled = ours(spans)
    [event] = warned.events
    assert dict(event.attributes or {}) == {
        "rayvault.gate.decision": "warned",
        "rayvault.gate.reason": "warned",
        "rayvault.gate.failed_checks": (),
        "rayvault.gate.warned_checks": ("check_soul",),
    }
    assert "rayvault.agent" not in attrs(warned)  # None values are left out
    assert attrs(disabled)["rayvault.gate.decision"] == "disabled"


def test_a_stage_interrupted_by_ctrl_c_is_an_interrupted_outcome(
    root: Path, spans: InMemorySpanExporter
) -> None:
    """Ctrl-C inside the stage (a BaseException, not an Exception) is neither learned from nor
    an error: both spans say ``interrupted``."""

    def stopped(ctx: StageContext) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("v053", "assets", stopped)
    attempt, stage = ours(spans)
    assert [attrs(s)["rayvault.outcome"] for s in (attempt, stage)] == ["interrupted"] * 2
    assert list_events(video_id="v053") == []


@pytest.mark.slow
def test_the_run_wrapper_puts_the_commands_exit_code_on_each_attempt_span(
    root: Path, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """``run_command`` goes through ``run_stage``: one stage span, an attempt span per run of
    the command carrying its exit code, duration and command."""
    import subprocess
    import sys

    from rayvault.learning import run_command

    result = run_command(
        "v054",
        "assets",
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        retries=0,
        stdout=subprocess.DEVNULL,
        stderr_sink=lambda chunk: None,
        forward_signals=False,
    )
    assert result.exit_code == 3
    attempt, stage = ours(spans)
    assert attempt.name == "rayvault.attempt" and stage.name == "rayvault.stage"
    assert attrs(attempt)["rayvault.exit_code"] == 3
    assert attrs(attempt)["rayvault.command"] == sys.executable
    assert attrs(attempt)["rayvault.duration_s"] > 0
    assert attrs(stage)["rayvault.outcome"] == "failed"
