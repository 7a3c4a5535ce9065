"""OpenAI-compatible `POST /v1/chat/completions`, streamed (SSE) or not, and `GET /v1/models`.

Media parts are decoded in the gateway's worker pool. A request that cannot run (bad field,
corrupt media, bad schema, prompt too long) gets a 400 with OpenAI's error body before any token;
a streamed request therefore waits for its first delta before the response starts. A client
that disconnects mid-stream aborts its engine request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from encoders.media import MediaError, decode_audio, decode_image, decode_video
from llm_core.engine_client import EngineDeadError, EngineRequest, EngineRequestError
from protocol import ProtocolError
from protocol.errors import UNSUPPORTED_MEDIA
from service.auth import key_is_valid, presented_key
from service.gateway import Gateway
from service.generation import UsageCounter, check_response_format, finish_status, sampling_params
from service.openai_parse import ChatRequest, MediaInput, parse_chat_request


def error_response(status: int, message: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 413: "invalid_request_error", 503: "service_unavailable"}.get(
        status, "invalid_request_error" if status < 500 else "internal_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if not key_is_valid(gateway.config, presented_key(request.headers, request.query_params)):
        return error_response(401, "missing or wrong API key", "unauthorized")
    return JSONResponse({"object": "list", "data": [{"id": gateway.config.model_name, "object": "model",
                                                     "owned_by": "tributary", "created": 0}]})


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    request.state.watch = None
    response = await _chat_completions(request, gateway)
    _count(gateway, request, response)
    return response


async def _chat_completions(request: Request, gateway: Gateway) -> Response:
    config = gateway.config
    if not key_is_valid(config, presented_key(request.headers, request.query_params)):
        return error_response(401, "missing or wrong API key", "unauthorized")
    limit = config.max_session_media_bytes + config.max_message_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        return error_response(413, f"the request body is over {limit} bytes", "message_too_large")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "the body is not valid JSON", "invalid_json")
    loop = asyncio.get_running_loop()
    completion_id = "chatcmpl-" + secrets.token_hex(12)
    try:
        chat = parse_chat_request(body)
        # Metrics and the trace (continuing the request's traceparent header).
        watch = request.state.watch = gateway.telemetry.start_response(
            "http", completion_id, chat.options.resolved(), traceparent=request.headers.get("traceparent"))
        params = sampling_params(chat.options.resolved(), chat.response_format, gateway.max_model_len)
        if params.has_constraint:
            start_ns = time.time_ns()
            await loop.run_in_executor(gateway.pool, check_response_format, chat.response_format)
            watch.grammar_check(start_ns, time.time_ns())
        messages = await _decode_media(gateway, chat, watch)
        engine = gateway.route(part["type"] for message in messages if isinstance(message["content"], list)
                               for part in message["content"] if part["type"] != "text").engine
    except ProtocolError as exc:
        return error_response(400, exc.message, exc.code, exc.field)
    except MediaError as exc:
        return error_response(400, str(exc), exc.code, "messages")
    engine_request = EngineRequest(gateway.engine_request_id("http", completion_id), {"messages": messages},
                                   params, priority=chat.options.resolved().priority or 0,
                                   traceparent=watch.engine_traceparent)
    deltas = engine.generate(engine_request, on_late_trace=watch.add_engine_records)
    try:
        first = await anext(deltas)
    except (EngineRequestError, EngineDeadError, StopAsyncIteration) as exc:
        await deltas.aclose()
        return _engine_error(exc)
    head = {"id": completion_id, "created": int(time.time()), "model": config.model_name}
    if chat.stream:
        return StreamingResponse(_sse(deltas, first, head, chat.include_usage, watch, gateway.telemetry),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    usage, texts, final = UsageCounter(), [], first
    try:
        async for delta in _chain(first, deltas):
            usage.add(delta)
            watch.on_delta(delta)
            texts.append(delta.text_delta)
            final = delta
    except (EngineRequestError, EngineDeadError) as exc:
        return _engine_error(exc)
    finally:
        await deltas.aclose()
    watch.finish(*finish_status(final.finish_reason), usage.usage())
    choice = {"index": 0, "message": {"role": "assistant", "content": "".join(texts)},
              "finish_reason": _finish(final.finish_reason), "logprobs": None}
    return JSONResponse({**head, "object": "chat.completion", "choices": [choice], "usage": _usage(usage)})


def _engine_error(exc: BaseException) -> JSONResponse:
    if isinstance(exc, EngineRequestError) and exc.kind == "invalid_request":
        code = "context_length_exceeded" if "max_model_len" in str(exc) else "invalid_request"
        return error_response(400, str(exc)[:500], code)
    if isinstance(exc, EngineRequestError):
        return error_response(500, "the engine failed this request", "internal_error")
    return error_response(503, "the engine is not running; retry later", "overloaded")


def _count(gateway: Gateway, request: Request, response: Response) -> None:
    """Metrics of one HTTP exchange: bytes (a streamed body counts as it goes, in _sse), the error
    code of a refusal; a refused request's trace ends here."""
    telemetry = gateway.telemetry
    telemetry.on_frame_in("http", int(request.headers.get("content-length") or 0))
    body = getattr(response, "body", None)
    code = None
    if response.status_code >= 400:
        try:
            code = json.loads(body)["error"]["code"] or f"http_{response.status_code}"
        except (TypeError, ValueError, KeyError):
            code = f"http_{response.status_code}"
    telemetry.on_frame_out("http", len(body) if body else 0, code)
    watch = request.state.watch
    if watch is not None and code is not None:
        watch.finish("failed", "error", None, code)


async def _decode_media(gateway: Gateway, chat: ChatRequest, watch) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    limits = gateway.config.media_limits
    out = []
    for message in chat.messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if isinstance(part, MediaInput):
                    if part.modality not in gateway.model_media.modalities:
                        raise ProtocolError(UNSUPPORTED_MEDIA, f"this model cannot take {part.modality} input")
                    start_ns = time.time_ns()
                    data = await loop.run_in_executor(gateway.pool, _decode, part, limits)
                    watch.media_part(part.modality, len(part.data), start_ns, time.time_ns())
                    part = {"type": part.modality, part.modality: data}
                parts.append(part)
            content = parts
        out.append({"role": message["role"], "content": content})
    return out


def _decode(part: MediaInput, limits) -> Any:
    if part.modality == "image":
        return decode_image(part.data, limits, mime=part.mime)
    if part.modality == "video":
        return [frame.image for frame in decode_video(part.data, part.mime, limits)]
    return decode_audio(part.data, part.mime, limits)


async def _chain(first, deltas) -> AsyncIterator:
    yield first
    if not first.finished:
        async for delta in deltas:
            yield delta


async def _sse(deltas, first, head: dict, include_usage: bool, watch, telemetry) -> AsyncIterator[str]:
    async for event in _sse_events(deltas, first, head, include_usage, watch):
        telemetry.on_frame_out("http", len(event))
        yield event


async def _sse_events(deltas, first, head: dict, include_usage: bool, watch) -> AsyncIterator[str]:
    base = {**head, "object": "chat.completion.chunk"}
    usage = UsageCounter()
    yield _event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                       "finish_reason": None}]})
    final = first
    try:
        async for delta in _chain(first, deltas):
            usage.add(delta)
            watch.on_delta(delta)
            final = delta
            finish = _finish(delta.finish_reason) if delta.finished else None
            if delta.text_delta or finish:
                content = {"content": delta.text_delta} if delta.text_delta else {}
                yield _event({**base, "choices": [{"index": 0, "delta": content, "finish_reason": finish}]})
    except (EngineRequestError, EngineDeadError):
        watch.finish("failed", "error", usage.usage(), "internal_error")
        yield _event({"error": {"message": "the engine failed this request", "type": "internal_error",
                                "code": "internal_error"}})
        return
    finally:
        await deltas.aclose()  # a client that left (cancellation) aborts the engine request here
        watch.finish(*finish_status(final.finish_reason if final.finished else "abort"), usage.usage())
    if include_usage:
        yield _event({**base, "choices": [], "usage": _usage(usage)})
    yield "data: [DONE]\n\n"


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _finish(reason: str | None) -> str:
    """OpenAI's finish_reason: stop or length (a cancelled or failed stream reports stop)."""
    return "length" if reason == "length" else "stop"


def _usage(usage: UsageCounter) -> dict:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}
