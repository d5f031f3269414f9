"""OpenTelemetry spans of stage runs: one span per stage run, a child span per attempt, the gate's
decision as an event on the stage span (docs/opentelemetry.md).

Only when ``opentelemetry-api`` is installed (the ``otel`` extra): it is imported on the first
:func:`stage_span` and the tracer cached, so without it nothing is imported or emitted and each
helper costs one check of a cached value. This module imports nothing else at import time: the
gate's start-up is unchanged (``rayvault-learn gate`` never reaches it). Where the spans go is the
application's choice (an SDK ``TracerProvider`` and an exporter); with the API alone they are
the API's no-op spans.

Used by :func:`rayvault.learning.loop.run_stage` and by any other runner of stages (the shell
wrapper): ::

    with stage_span(video_id, stage, agent=agent, run_id=run_id) as span:
        gate_event(span, gate_result)            # a GateResult, or its to_dict()
        if gate_result.blocked:
            span.outcome("blocked")
        for attempt in (1, 2):
            with attempt_span(span, attempt, rule_ids=ids) as try_:
                ...
                try_.outcome("failed", error=exc)  # or "succeeded"
                try_.set(error_id=..., event_id=..., pattern_key=...)
        span.outcome("succeeded")

A span left by an exception without an outcome gets the outcome ``error`` and the exception
recorded (status ERROR); one left by an exception after ``outcome("blocked")`` (the loop raising
``GateBlocked``) keeps its outcome.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

#: The instrumentation scope (``get_tracer`` name) of every span here.
TRACER_NAME = "rayvault.learning"
#: Span names: one stage run, one attempt of it (a child of the stage run's span).
STAGE_SPAN = "rayvault.stage"
ATTEMPT_SPAN = "rayvault.attempt"
#: The gate's decision, an event on the stage span.
GATE_EVENT = "rayvault.gate"
#: Attribute names are ``rayvault.<key>`` for the keys given to :meth:`SpanHandle.set`.
PREFIX = "rayvault."
#: Outcomes that set the span's status to ERROR.
ERROR_OUTCOMES = frozenset({"failed", "error", "interrupted"})

#: The cached tracer: empty before the first look-up, ``[None]`` when OpenTelemetry is absent.
_cache: list[Tracer | None] = []


def tracer() -> Tracer | None:
    """The tracer of :data:`TRACER_NAME`, or None when ``opentelemetry-api`` is not installed.
    Looked up once per process (:func:`reset` forgets it)."""
    if not _cache:
        try:
            from opentelemetry import trace
        except ImportError:
            _cache.append(None)
        else:
            from rayvault import __version__

            _cache.append(trace.get_tracer(TRACER_NAME, __version__))
    return _cache[0]


def enabled() -> bool:
    """Whether spans are made (``opentelemetry-api`` is installed)."""
    return tracer() is not None


def reset() -> None:
    """Forget the cached tracer (tests that install or block OpenTelemetry)."""
    _cache.clear()


def _value(value: Any) -> Any:
    """An attribute value OpenTelemetry accepts: a str, bool, int or float, or a list of str."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value]
    return str(value)


def attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as span attributes: ``rayvault.<key>``, None values left out."""
    return {PREFIX + key: _value(value) for key, value in values.items() if value is not None}


class SpanHandle:
    """A span being recorded, or nothing at all (OpenTelemetry absent): the same calls either
    way. ``base`` holds the attributes an attempt's span repeats from its stage run's."""

    __slots__ = ("_outcome", "base", "span")

    def __init__(self, span: Span | None, base: dict[str, Any] | None = None) -> None:
        self.span = span
        self.base = base or {}
        self._outcome: str | None = None

    @property
    def recording(self) -> bool:
        return self.span is not None and self.span.is_recording()

    def set(self, **values: Any) -> None:
        """Set attributes ``rayvault.<key>`` (None values are skipped)."""
        if self.recording:
            assert self.span is not None
            self.span.set_attributes(attributes(values))

    def outcome(self, value: str, *, error: BaseException | None = None) -> None:
        """Set ``rayvault.outcome``; ``failed``/``error``/``interrupted`` set the status to
        ERROR, and ``error`` is recorded as the span's exception."""
        self._outcome = value
        if not self.recording:
            return
        assert self.span is not None
        self.span.set_attribute(PREFIX + "outcome", value)
        if error is not None:
            self.span.record_exception(error)
        if value in ERROR_OUTCOMES:
            from opentelemetry.trace import Status, StatusCode

            text = f"{type(error).__name__}: {error}" if error is not None else value
            self.span.set_status(Status(StatusCode.ERROR, text))

    def event(self, name: str, values: Mapping[str, Any]) -> None:
        """Add the event ``name`` with attributes ``rayvault.<key>``."""
        if self.recording:
            assert self.span is not None
            self.span.add_event(name, attributes(values))

    def _left_by(self, error: BaseException) -> None:
        """A block left by an exception with no outcome set: ``interrupted`` for a signal or an
        exit (a ``BaseException`` that is not an ``Exception``: Ctrl-C, the ``run`` wrapper's
        forwarded SIGTERM), else ``error``."""
        if self._outcome is None:
            interrupted = not isinstance(error, Exception)
            self.outcome("interrupted" if interrupted else "error", error=error)


@contextlib.contextmanager
def _span(name: str, base: dict[str, Any], extra: dict[str, Any]) -> Iterator[SpanHandle]:
    found = tracer()
    if found is None:
        yield SpanHandle(None, base)
        return
    with found.start_as_current_span(
        name,
        attributes=attributes({**base, **extra}),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        handle = SpanHandle(span, base)
        try:
            yield handle
        except BaseException as e:
            handle._left_by(e)
            raise


def stage_span(
    video_id: str,
    stage: str,
    *,
    agent: str | None = None,
    run_id: str | None = None,
    **values: Any,
) -> contextlib.AbstractContextManager[SpanHandle]:
    """The span of one stage run (the current span while the block runs): attributes
    ``rayvault.video``, ``rayvault.stage``, ``rayvault.agent``, ``rayvault.run_id`` and
    ``rayvault.<key>`` for the other keywords."""
    base = {"video": video_id, "stage": stage, "agent": agent, "run_id": run_id}
    return _span(STAGE_SPAN, base, values)


def attempt_span(
    parent: SpanHandle, attempt: int, **values: Any
) -> contextlib.AbstractContextManager[SpanHandle]:
    """The span of one attempt, a child of the stage run's span ``parent`` (entered inside its
    block): its video, stage, agent and run id, ``rayvault.attempt`` and ``rayvault.<key>`` for
    the other keywords (``rule_ids``: the rules delivered to the attempt). The stage's own
    spans (an instrumented LLM client, say) become children of it."""
    return _span(ATTEMPT_SPAN, {**parent.base, "attempt": attempt}, values)


def annotate_current(**values: Any) -> None:
    """Set attributes ``rayvault.<key>`` on the current span (an attempt's, inside a stage
    function), when OpenTelemetry is loaded and a span is being recorded; else nothing."""
    if tracer() is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(attributes(values))


def _field(gate: Any, name: str, default: Any = None) -> Any:
    if isinstance(gate, Mapping):
        return gate.get(name, default)
    return getattr(gate, name, default)


def gate_decision(gate: Any) -> str:
    """``disabled``, ``blocked``, ``warned`` or ``passed``: the gate's decision in one word."""
    if not _field(gate, "enabled", True):
        return "disabled"
    if _field(gate, "blocked", False):
        return "blocked"
    return "warned" if _field(gate, "outcome") == "warn" else "passed"


def gate_event(span: SpanHandle, gate: Any) -> None:
    """Record the gate's decision on the stage run's span: the event ``rayvault.gate``
    (``rayvault.gate.decision``, ``.reason``, ``.failed_checks``, ``.warned_checks``) and the
    span attribute ``rayvault.gate.decision``. ``gate``: a ``GateResult`` or its ``to_dict()``."""
    if not span.recording:
        return
    checks = _field(gate, "checks", None) or []
    failed = [_field(c, "name") for c in checks if not _field(c, "passed", True)]
    warned = [_field(c, "name") for c in checks if _field(c, "outcome") == "warn"]
    decision = gate_decision(gate)
    span.event(
        GATE_EVENT,
        {
            "gate.decision": decision,
            "gate.reason": _field(gate, "reason"),
            "gate.failed_checks": failed,
            "gate.warned_checks": warned,
        },
    )
    span.set(**{"gate.decision": decision})
