"""OpenTelemetry traces of the gateway, exported over OTLP/HTTP (protobuf), as Jaeger ingests them.

    tracing = Tracing("http://127.0.0.1:4318/v1/traces", service_name="tributary")
    root = tracing.start_response("chat demo", attributes, traceparent="00-<trace>-<span>-01")
    root.child("media decode", start_ns, end_ns, {...})
    root.add_engine_records(delta.trace)     # the engine process's spans, same trace
    root.end({...})

Built only when an endpoint is configured (service/telemetry.py); the SDK is imported then and
never otherwise, so tracing off costs nothing. The provider is this app's own, not the global one
(tests run several apps in one process). Spans go out in batches from the SDK's worker thread;
`force_flush` sends what is queued now.

Every span records the time it covers with explicit wall-clock nanoseconds (`time.time_ns()`),
the clock the engine process stamps its records with too.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()


def parent_context(traceparent: str | None, tracestate: str | None = None) -> Context | None:
    """The context of a W3C traceparent (and tracestate); None for none or a malformed one."""
    if not traceparent:
        return None
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    context = _PROPAGATOR.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def traceparent_of(span: trace.Span) -> str:
    context = span.get_span_context()
    return f"00-{trace.format_trace_id(context.trace_id)}-{trace.format_span_id(context.span_id)}-" \
           f"{int(context.trace_flags):02x}"


class ResponseSpan:
    """The root span of one response (`chat {model}`) and its children.

    `traceparent` is what the engine gets, so its spans become children of this one; `trace_id`
    is what response.done reports. Children and events take explicit times; `end` ends the root.

    Children are finished spans when they are made (their times are known), so they go to the
    span processor as ReadableSpans directly, skipping the live-span machinery (sampler,
    attribute checks, locks): a few microseconds each instead of some thirty. They share the
    root's resource, scope and sampled flag; our attributes are plain str, int, float and bool.
    """

    def __init__(self, tracing: "Tracing", span) -> None:
        self.tracing = tracing
        self.span = span
        self.span_context = span.get_span_context()
        self.traceparent = traceparent_of(span)
        self.is_ended = False

    @property
    def trace_id(self) -> str:
        return trace.format_trace_id(self.span.get_span_context().trace_id)

    def child(self, name: str, start_ns: int, end_ns: int, attributes: Mapping[str, Any],
              error: str | None = None, parent: trace.SpanContext | None = None) -> None:
        """A finished child span of the root (or of `parent`, a context of the same trace)."""
        parent = parent or self.span_context
        context = trace.SpanContext(parent.trace_id, self.tracing.provider.id_generator.generate_span_id(),
                                    is_remote=False, trace_flags=parent.trace_flags, trace_state=parent.trace_state)
        status = Status(StatusCode.ERROR, error) if error is not None else Status(StatusCode.UNSET)
        self.tracing.processor.on_end(ReadableSpan(
            name, context=context, parent=parent, resource=self.span.resource, attributes=dict(attributes),
            kind=SpanKind.INTERNAL, status=status, start_time=start_ns, end_time=max(end_ns, start_ns),
            instrumentation_scope=self.span.instrumentation_scope))

    def event(self, name: str, attributes: Mapping[str, Any] | None = None, time_ns: int | None = None) -> None:
        self.span.add_event(name, dict(attributes or {}), timestamp=time_ns or time.time_ns())

    def add_engine_records(self, records: Mapping[str, Any]) -> None:
        """The engine's spans (llm_core/request_trace.py) under the traceparent they carry, which
        is this span's: the context crossed the process boundary and came back with them. Records
        that come after the root ended (a cancelled response's) add their spans; their events,
        which belong on the root, are dropped."""
        carried = records.get("traceparent")
        parent = self.span_context
        if carried != self.traceparent and (context := parent_context(carried)) is not None:
            parent = trace.get_current_span(context).get_span_context()
        for name, start_ns, end_ns, attributes, error in records.get("spans", ()):
            self.child(name, start_ns, end_ns, {"tributary.component": "engine", **attributes}, error, parent)
        if not self.is_ended:
            for name, time_ns, attributes in records.get("events", ()):
                self.event(name, attributes, time_ns)

    def end(self, attributes: Mapping[str, Any], error: str | None = None) -> None:
        if self.is_ended:
            return
        self.is_ended = True
        self.span.set_attributes(dict(attributes))
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()


class Tracing:
    """One app's tracer provider with a batching OTLP/HTTP exporter to `endpoint` (the full
    traces URL, e.g. http://127.0.0.1:4318/v1/traces)."""

    def __init__(self, endpoint: str, service_name: str, *, export_delay_ms: int | None = None) -> None:
        self.endpoint = endpoint
        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=export_delay_ms)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("tributary.service")

    def start_session(self, session_id: str, model: str, traceparent: str | None) -> trace.Span:
        return self.tracer.start_span("session", context=parent_context(traceparent), kind=SpanKind.SERVER,
                                      attributes={"tributary.session.id": session_id, "gen_ai.request.model": model})

    def start_response(self, name: str, attributes: Mapping[str, Any], *, traceparent: str | None = None,
                       link: trace.Span | None = None) -> ResponseSpan | None:
        """The root span of a response continuing `traceparent`; None when it is not sampled (a
        client's traceparent with the sampled flag off), so nothing is recorded for it."""
        links = [Link(link.get_span_context())] if link is not None else ()
        span = self.tracer.start_span(name, context=parent_context(traceparent), kind=SpanKind.SERVER,
                                      attributes=dict(attributes), links=links)
        if not span.is_recording():
            return None
        return ResponseSpan(self, span)

    def force_flush(self, timeout_s: float = 10.0) -> bool:
        """Export every ended span now (blocks up to timeout_s): tests, benchmarks, shutdown."""
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()
