"""Acceptance 1 of issue 8: traces of a real server, exported over OTLP/HTTP to a real receiver.

A tiny LLaVA server (engine in its own process) exports to an OTLP/HTTP receiver on another
loopback port (tests/helpers/otlp_receiver.py decodes every ExportTraceServiceRequest with
opentelemetry-proto). A multimodal, constrained response must leave the whole span tree under the
client's traceparent, with the engine process's spans in the same trace; a response without a
traceparent continues the WebSocket upgrade's; the session has its own span. Waits are bounded
(force_flush, then a bounded poll of the receiver); nothing here asserts a duration.
"""

from __future__ import annotations

import base64
import io
import secrets

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers.mm_checkpoints import make_llava_checkpoint
from tests.helpers.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.service.conftest import serve
from tests.service.wire import expect, open_ws, run, send, session

MM_ENGINE = {"dtype": "float32", "attention_backend": "torch", "max_model_len": 512}
SERVICE_NAME = "tributary-test"
ENGINE_SPANS = {"grammar compile", "queue wait", "encoder", "prefill", "decode"}
SPAN_KIND_SERVER = 2
STATUS_ERROR = 2


def png_bytes(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def new_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@pytest.fixture(scope="module")
def receiver():
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_server(tmp_path_factory, receiver):
    model = make_llava_checkpoint(tmp_path_factory.mktemp("tracing_llava"), "clip", seed=11)
    with serve(str(model), engine_mode="process", engine_options=MM_ENGINE, otlp_traces_endpoint=receiver.traces_url,
               otel_service_name=SERVICE_NAME) as server:
        yield server


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> dict[str, ReceivedSpan]:
    found = {s.name: s for s in spans if s.parent_span_id == parent.span_id and s.trace_id == parent.trace_id}
    assert len(found) == len([s for s in spans if s.parent_span_id == parent.span_id]), "a span name repeats"
    return found


def only(spans: list[ReceivedSpan], **match) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(s.name, s.trace_id) for s in spans])
    return found[0]


def test_multimodal_response_leaves_the_whole_span_tree(traced_server, receiver):
    image = png_bytes(1)
    header, session_trace, session_parent = new_traceparent()
    given, trace_id, parent_id = new_traceparent()
    question = [{"type": "item", "item_id": "img"}, {"type": "text", "text": "Which digits?"}]

    async def go():
        async with open_ws(traced_server.ws_url, additional_headers={"traceparent": header}) as ws:
            created = await session(ws)
            await send(ws, {"type": "input.append", "item_id": "img", "modality": "image", "mime": "image/png",
                            "data": image, "final": True})
            await expect(ws, "input.committed")
            await send(ws, {"type": "response.create", "response_id": "r1", "traceparent": given,
                            "messages": [{"role": "user", "content": question}], "max_tokens": 5, "seed": 1,
                            "temperature": 0.7, "top_p": 0.9, "response_format": {"type": "regex", "pattern": "[0-9]{2,8}"},
                            "metadata": {"case": "tracing"}})
            first = await expect(ws, "response.done")
            await send(ws, {"type": "response.create", "response_id": "r2", "max_tokens": 3, "seed": 2,
                            "messages": [{"role": "user", "content": question}]})
            second = await expect(ws, "response.done")
            return created.session_id, first, second

    session_id, done1, done2 = run(go(), timeout_s=180)
    assert done1.status in ("completed", "incomplete") and done2.status in ("completed", "incomplete")
    assert done1.trace_id == trace_id  # response.done carries the trace id to paste into Jaeger
    assert done2.trace_id == session_trace  # no traceparent of its own: the upgrade request's

    tracing = traced_server.gateway.telemetry.tracing
    spans = receiver.wait_for(lambda got: any(s.name == "session" and s.attributes.get("tributary.session.id")
                                              == session_id for s in got)
                              and sum(s.name == "decode" for s in got) >= 2, flush=tracing.force_flush)
    model = traced_server.gateway.config.model_name

    # The root continues the client's traceparent, with the GenAI attributes.
    root = only(spans, trace_id=trace_id, parent_span_id=parent_id)
    assert root.name == f"chat {model}" and root.kind == SPAN_KIND_SERVER
    assert root.resource["service.name"] == SERVICE_NAME
    attrs = root.attributes
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == model
    assert (attrs["gen_ai.request.max_tokens"], attrs["gen_ai.request.temperature"], attrs["gen_ai.request.top_p"]) \
        == (5, 0.7, 0.9)
    assert attrs["gen_ai.response.id"] == "r1"
    assert attrs["gen_ai.response.finish_reasons"] == [done1.finish_reason]
    assert attrs["gen_ai.usage.input_tokens"] == done1.usage.input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == done1.usage.output_tokens
    assert attrs["tributary.session.id"] == session_id and attrs["tributary.metadata.case"] == "tracing"
    assert [name for name, _, _ in root.events] == ["first token"]

    # Its children: the gateway's and, through the engine process, the engine's, in the same trace.
    kids = children(spans, root)
    assert set(kids) == {"media decode", "grammar check"} | ENGINE_SPANS
    for name in ENGINE_SPANS:
        assert kids[name].attributes["tributary.component"] == "engine", name
    decode_span = kids["media decode"].attributes
    assert (decode_span["tributary.media.modality"], decode_span["tributary.media.bytes"]) == ("image", len(image))
    assert kids["encoder"].attributes["tributary.encoder.cache_hit"] is False
    assert kids["encoder"].attributes["tributary.encoder.items"] == 1
    assert kids["prefill"].attributes["tributary.prefill.tokens"] == done1.usage.input_tokens
    assert kids["prefill"].attributes["tributary.prefill.cached_tokens"] == done1.usage.cached_tokens
    assert kids["decode"].attributes["tributary.decode.tokens"] == done1.usage.output_tokens - 1
    # The engine's spans follow one another: grammar, queue, prefill, decode.
    assert kids["grammar compile"].end_ns == kids["queue wait"].start_ns
    assert kids["queue wait"].end_ns == kids["prefill"].start_ns
    assert kids["prefill"].end_ns == kids["decode"].start_ns
    assert all(s.status_code != STATUS_ERROR for s in kids.values())

    # The session's own span, under the upgrade's traceparent, linked from each response.
    session_span = only(spans, name="session", trace_id=session_trace)
    assert session_span.parent_span_id == session_parent and session_span.kind == SPAN_KIND_SERVER
    assert root.links == [(session_trace, session_span.span_id)]

    # The second response: the same image, now from the embedding cache; no grammar.
    root2 = only(spans, name=f"chat {model}", trace_id=session_trace)
    assert root2.parent_span_id == session_parent and root2.attributes["gen_ai.response.id"] == "r2"
    kids2 = children(spans, root2)
    assert set(kids2) == {"media decode", "queue wait", "encoder", "prefill", "decode"}
    assert kids2["encoder"].attributes["tributary.encoder.cache_hit"] is True


def test_openai_endpoint_continues_the_traceparent_header(traced_server, receiver):
    header, trace_id, parent_id = new_traceparent()
    data_url = "data:image/png;base64," + base64.b64encode(png_bytes(2)).decode()
    body = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                                      {"type": "text", "text": "What is it?"}]}],
            "max_tokens": 3, "seed": 3}
    response = httpx.post(f"{traced_server.base_url}/v1/chat/completions", json=body, timeout=120,
                          trust_env=False, headers={"traceparent": header})
    assert response.status_code == 200
    usage = response.json()["usage"]
    spans = receiver.wait_for(lambda got: any(s.trace_id == trace_id and s.name == "decode" for s in got),
                              flush=traced_server.gateway.telemetry.tracing.force_flush)
    root = only(spans, trace_id=trace_id, parent_span_id=parent_id)
    assert root.attributes["gen_ai.response.id"] == response.json()["id"]
    assert root.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    kids = children(spans, root)
    assert set(kids) == {"media decode", "queue wait", "encoder", "prefill", "decode"}
    assert kids["media decode"].attributes["tributary.media.modality"] == "image"


def test_cancelled_response_still_gets_the_engine_spans(traced_server, receiver):
    """response.cancel ends the response at once; the engine's spans come after, under its root,
    the one the cancel cut short marked."""
    given, trace_id, parent_id = new_traceparent()

    async def go():
        async with open_ws(traced_server.ws_url) as ws:
            await session(ws)
            await send(ws, {"type": "response.create", "response_id": "long", "traceparent": given,
                            "messages": [{"role": "user", "content": "count"}], "max_tokens": 400,
                            "ignore_eos": True})
            await expect(ws, "response.delta")
            await send(ws, {"type": "response.cancel", "response_id": "long"})
            return await expect(ws, "response.done")

    done = run(go(), timeout_s=120)
    assert done.status == "cancelled" and done.trace_id == trace_id
    spans = receiver.wait_for(lambda got: any(s.trace_id == trace_id and s.name == "decode" for s in got),
                              flush=traced_server.gateway.telemetry.tracing.force_flush)
    root = only(spans, trace_id=trace_id, parent_span_id=parent_id)
    assert root.attributes["tributary.response.status"] == "cancelled"
    kids = children(spans, root)
    assert set(kids) == {"queue wait", "prefill", "decode"}
    assert kids["decode"].attributes["tributary.aborted"] is True
    assert kids["decode"].attributes["tributary.component"] == "engine"
    assert "tributary.aborted" not in kids["prefill"].attributes


def test_failed_grammar_marks_its_span(traced_server, receiver):
    given, trace_id, _ = new_traceparent()

    async def go():
        async with open_ws(traced_server.ws_url) as ws:
            await session(ws)
            await send(ws, {"type": "response.create", "response_id": "bad", "traceparent": given,
                            "messages": [{"role": "user", "content": "hi"}],
                            "response_format": {"type": "json_schema",
                                                "json_schema": {"schema": {"type": "object", "patternProperties": {"x": {}}}}}})
            return await expect(ws, "error")

    error = run(go())
    assert error.error.code == "invalid_schema"
    spans = receiver.wait_for(lambda got: any(s.trace_id == trace_id and s.name == "grammar check" for s in got),
                              flush=traced_server.gateway.telemetry.tracing.force_flush)
    check = only(spans, trace_id=trace_id, name="grammar check")
    root = only(spans, trace_id=trace_id, name=f"chat {traced_server.gateway.config.model_name}")
    assert check.parent_span_id == root.span_id
    assert check.status_code == STATUS_ERROR and root.status_code == STATUS_ERROR
    assert root.attributes["error.type"] == "invalid_schema"


def test_no_endpoint_no_trace(server):
    given, _, _ = new_traceparent()

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            await send(ws, {"type": "response.create", "response_id": "r", "traceparent": given, "max_tokens": 2,
                            "messages": [{"role": "user", "content": "hi"}]})
            return await expect(ws, "response.done")

    done = run(go())
    assert server.gateway.telemetry.tracing is None
    assert done.trace_id is None
