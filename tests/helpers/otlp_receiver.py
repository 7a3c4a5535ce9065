"""A real OTLP/HTTP trace receiver for tests: what Jaeger's port 4318 does, minus the storage.

    with OtlpReceiver() as receiver:          # uvicorn on 127.0.0.1, a free port
        ...  # point the service at receiver.traces_url
        spans = receiver.wait_for(lambda spans: any(s.name == "decode" for s in spans))

It decodes each POST /v1/traces body as an ExportTraceServiceRequest (opentelemetry-proto) and
keeps the spans, decoded to plain values. Every wait is bounded.
"""

from __future__ import annotations

import gzip
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                       ExportTraceServiceResponse)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root
    kind: int  # opentelemetry.proto.trace.v1.Span.SpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    links: list[tuple[str, str]]  # (trace_id, span_id)
    status_code: int  # 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)


def _value(any_value) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind) if kind is not None else None


def _attributes(pairs) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode_spans(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    out = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(ReceivedSpan(
                    name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(), kind=span.kind,
                    start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                    attributes=_attributes(span.attributes),
                    events=[(e.name, e.time_unix_nano, _attributes(e.attributes)) for e in span.events],
                    links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                    status_code=span.status.code, status_message=span.status.message, resource=resource))
    return out


class OtlpReceiver:
    """uvicorn serving POST /v1/traces in a background thread; `spans` grows as exports arrive."""

    def __init__(self, start_timeout_s: float = 30.0) -> None:
        self.spans: list[ReceivedSpan] = []
        self.num_requests = 0
        self._lock = threading.Lock()
        app = Starlette(routes=[Route("/v1/traces", self._receive, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread = threading.Thread(target=self.server.run, name="otlp-receiver", daemon=True)
        self.start_timeout_s = start_timeout_s
        self.port = 0

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if request.headers.get("content-type") != "application/x-protobuf":
            return Response(b"expected application/x-protobuf", 415)
        spans = decode_spans(body)
        with self._lock:
            self.spans.extend(spans)
            self.num_requests += 1
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def snapshot(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self.spans)

    def wait_for(self, condition: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 20.0,
                 flush: Callable[[], Any] | None = None) -> list[ReceivedSpan]:
        """The spans once `condition(spans)` holds (calling `flush` before each look); raises
        AssertionError with what arrived when it does not within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            if flush is not None:
                flush()
            spans = self.snapshot()
            if condition(spans):
                return spans
            if time.monotonic() > deadline:
                raise AssertionError(f"the expected spans did not arrive; got {[s.name for s in spans]}")
            time.sleep(0.05)

    def __enter__(self) -> "OtlpReceiver":
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OTLP receiver did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self._thread.join(10)
