"""Traces and metrics of requests and sessions: what the session and response code calls.

    telemetry = Telemetry(config, num_sessions)               # one per app (the Gateway holds it)
    watch = telemetry.start_response("ws", response_id, options, ...)
    request = EngineRequest(..., traceparent=watch.engine_traceparent)
    watch.media(items) / watch.grammar_check(start_ns, end_ns, error)
    for delta in engine stream: watch.on_delta(delta)
    trace_id = watch.finish(status, finish_reason, usage, error_code)

Tracing is on when `config.otlp_traces_endpoint` is set (python -m service reads it from the
OTEL_* variables); then every response has a root span `chat {model}` (GenAI semantic
conventions), children for media decode, grammar check and, from the engine process, grammar
compile, queue wait, encoder, prefill and decode, and events for the first token, preemptions
and resumptions (docs/observability.md). Off, no span object is ever made and the engine gets no
traceparent, so it records nothing. Metrics are always on (service/metrics.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable, Mapping

from llm_core.engine_client import CompletionDelta
from protocol import ErrorEvent, GenerationOptions, ResponseDone, ServerEvent
from service.config import ServiceConfig
from service.metrics import Metrics

logger = logging.getLogger(__name__)


class Telemetry:
    """The app's metrics and, when an OTLP endpoint is configured, its tracing."""

    def __init__(self, config: ServiceConfig, num_sessions: Callable[[], int]) -> None:
        self.model_name = config.model_name
        self.metrics = Metrics(config.model_name, num_sessions)
        self.tracing = None
        if config.otlp_traces_endpoint:
            from service.tracing import Tracing  # imports the OpenTelemetry SDK: only when tracing

            self.tracing = Tracing(config.otlp_traces_endpoint, config.otel_service_name)
            logger.info("exporting traces to %s as %r", config.otlp_traces_endpoint, config.otel_service_name)

    @property
    def is_tracing(self) -> bool:
        return self.tracing is not None

    def start_session(self, session_id: str, traceparent: str | None):
        """The session's span (None when not tracing); end it with end_session."""
        self.metrics.sessions.inc()
        if self.tracing is None:
            return None
        return self.tracing.start_session(session_id, self.model_name, traceparent)

    @staticmethod
    def end_session(span, num_responses: int) -> None:
        if span is not None:
            span.set_attribute("tributary.session.responses", num_responses)
            span.end()

    def start_response(self, endpoint: str, response_id: str, options: GenerationOptions, *,
                       traceparent: str | None = None, session_id: str | None = None, session_span=None,
                       metadata: Mapping[str, str] | None = None) -> "ResponseWatch":
        span = None
        if self.tracing is not None:
            attributes = _request_attributes(self.model_name, response_id, options, session_id, metadata)
            span = self.tracing.start_response(f"chat {self.model_name}", attributes, traceparent=traceparent,
                                               link=session_span)
        return ResponseWatch(self.metrics, endpoint, span)

    def on_frame_in(self, endpoint: str, num_bytes: int) -> None:
        self.metrics.received_bytes.labels(endpoint).inc(num_bytes)

    def on_frame_out(self, endpoint: str, num_bytes: int, error_code: str | None = None) -> None:
        self.metrics.sent_bytes.labels(endpoint).inc(num_bytes)
        if error_code is not None:
            self.metrics.errors.labels(error_code).inc()

    def on_error(self, code: str) -> None:
        self.metrics.errors.labels(code).inc()

    def close(self) -> None:
        """Export what is queued and stop the exporter (app shutdown)."""
        if self.tracing is not None:
            self.tracing.shutdown()


class ResponseWatch:
    """One response's latencies (metrics) and root span (None when not tracing or not sampled)."""

    def __init__(self, metrics: Metrics, endpoint: str, span) -> None:
        self.metrics = metrics
        self.endpoint = endpoint
        self.span = span
        self.start_s = time.monotonic()
        self.last_token_s: float | None = None
        self.is_finished = False

    @property
    def engine_traceparent(self) -> str | None:
        """The root span's context for the engine: its spans join this trace. None: record nothing."""
        return self.span.traceparent if self.span is not None else None

    def media(self, items: Iterable[Any]) -> None:
        """A "media decode" span per item (service.media.MediaItem: modality, bytes, decode times)."""
        if self.span is None:
            return
        for item in items:
            self.span.child("media decode", item.started_ns, item.ended_ns or time.time_ns(), {
                "tributary.media.item_id": item.item_id, "tributary.media.modality": item.modality,
                "tributary.media.mime": item.mime, "tributary.media.bytes": item.num_bytes,
                "tributary.media.cached": item.cached, "tributary.media.tokens": item.num_tokens})

    def media_part(self, modality: str, num_bytes: int, start_ns: int, end_ns: int) -> None:
        """A "media decode" span of an inline part (the OpenAI endpoint's data URLs)."""
        if self.span is not None:
            self.span.child("media decode", start_ns, end_ns, {"tributary.media.modality": modality,
                                                               "tributary.media.bytes": num_bytes})

    def grammar_check(self, start_ns: int, end_ns: int, error: str | None = None) -> None:
        """The gateway's compile of a response_format (it refuses a bad schema before the engine)."""
        if self.span is not None:
            self.span.child("grammar check", start_ns, end_ns, {}, error)

    def on_delta(self, delta: CompletionDelta) -> None:
        num_tokens = len(delta.new_token_ids)
        if num_tokens:
            now = time.monotonic()
            if self.last_token_s is None:
                self.metrics.time_to_first_token.observe(now - self.start_s)
                if self.span is not None:
                    self.span.event("first token")
            else:
                self.metrics.inter_token_latency.observe((now - self.last_token_s) / num_tokens)
            self.last_token_s = now
        if delta.trace is not None:
            self.add_engine_records(delta.trace)

    def add_engine_records(self, records: dict[str, Any]) -> None:
        """The engine's span records: from the finished delta, or after the response ended here
        first (a cancel; AsyncEngineClient.generate's on_late_trace)."""
        if self.span is not None:
            self.span.add_engine_records(records)

    def finish(self, status: str, finish_reason: str | None, usage, error_code: str | None = None) -> str | None:
        """Record the end (once); returns the trace id for response.done (None when not traced)."""
        if not self.is_finished:
            self.is_finished = True
            metrics = self.metrics
            metrics.e2e_latency.observe(time.monotonic() - self.start_s)
            metrics.requests.labels(self.endpoint, status).inc()
            if usage is not None:
                metrics.prompt_tokens.inc(usage.input_tokens)
                metrics.cached_prompt_tokens.inc(usage.cached_tokens)
                metrics.generation_tokens.inc(usage.output_tokens)
            if self.span is not None:
                attributes: dict[str, Any] = {"tributary.response.status": status}
                if finish_reason is not None:
                    attributes["gen_ai.response.finish_reasons"] = [finish_reason]
                if usage is not None:
                    attributes.update({"gen_ai.usage.input_tokens": usage.input_tokens,
                                       "gen_ai.usage.output_tokens": usage.output_tokens,
                                       "tributary.usage.cached_tokens": usage.cached_tokens})
                if error_code is not None:
                    attributes["error.type"] = error_code
                self.span.end(attributes, error_code if status == "failed" else None)
        return self.span.trace_id if self.span is not None else None


def error_code(event: ServerEvent) -> str | None:
    """The error code a server event reports: an error event's, or a failed response.done's."""
    if isinstance(event, ErrorEvent):
        return event.error.code
    if isinstance(event, ResponseDone) and event.error is not None:
        return event.error.code
    return None


def _request_attributes(model: str, response_id: str, options: GenerationOptions, session_id: str | None,
                        metadata: Mapping[str, str] | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                                  "gen_ai.response.id": response_id, "gen_ai.response.model": model}
    for name, value in (("max_tokens", options.max_tokens), ("temperature", options.temperature),
                        ("top_p", options.top_p), ("top_k", options.top_k), ("seed", options.seed)):
        if value is not None:
            attributes[f"gen_ai.request.{name}"] = value
    if options.priority is not None:
        attributes["tributary.priority"] = options.priority
    if session_id is not None:
        attributes["tributary.session.id"] = session_id
    for key, value in (metadata or {}).items():
        attributes[f"tributary.metadata.{key}"] = value
    return attributes
