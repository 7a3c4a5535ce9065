"""The body of an OpenAI `POST /v1/chat/completions`, validated into our types.

Sampling fields go through the WebSocket protocol's own validation (protocol.client_parse), so both
APIs accept the same ranges. Media arrive inline: `image_url` and vLLM's `video_url` as `data:` URLs
(the server fetches nothing), `input_audio` as base64 with a `format`. Errors are ProtocolErrors
naming the field; the endpoint turns them into OpenAI-style 400 responses.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from protocol import DEFAULT_LIMITS, GenerationOptions, ProtocolError, ResponseFormat
from protocol.client_parse import parse_options
from protocol.errors import INVALID_FIELD, UNKNOWN_FIELD, UNSUPPORTED_MEDIA
from protocol.fields import Fields, check_list, check_str, invalid
from protocol.response_format import parse_response_format

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg",
                 "webm": "audio/webm", "aac": "audio/aac", "m4a": "audio/mp4"}
_OPTION_KEYS = ("max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "ignore_eos",
                "priority")
# Accepted and ignored (their neutral values only, where they have one).
_NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "n": 1, "user": None, "model": None,
            "parallel_tool_calls": None, "store": None, "metadata": None}


@dataclass(frozen=True)
class MediaInput:
    """An inline media part, not yet decoded."""

    modality: str
    mime: str | None
    data: bytes


@dataclass(frozen=True)
class ChatRequest:
    """messages: dicts {"role", "content"} whose list content holds text parts and MediaInputs."""

    messages: list[dict[str, Any]]
    options: GenerationOptions
    response_format: ResponseFormat | None
    stream: bool
    include_usage: bool


def parse_chat_request(body: Any) -> ChatRequest:
    fields = Fields(body, "", None)
    for key, value in body.items():
        if key in _NEUTRAL:
            if _NEUTRAL[key] is not None and value not in (None, _NEUTRAL[key]):
                raise invalid(key, f"is not supported (only {_NEUTRAL[key]!r})")
        elif key not in {"messages", "stream", "stream_options", "response_format", "max_completion_tokens",
                         "logprobs", "top_logprobs", *_OPTION_KEYS}:
            raise ProtocolError(UNKNOWN_FIELD, f"unknown or unsupported field {key[:60]!r}", field=key)
    if fields.get_bool("logprobs"):
        raise invalid("logprobs", "is not supported on this endpoint (the /v1/stream WebSocket returns them)")
    options_map = {key: body[key] for key in _OPTION_KEYS if body.get(key) is not None}
    if body.get("max_completion_tokens") is not None:
        options_map["max_tokens"] = body["max_completion_tokens"]
    options = parse_options(Fields(options_map, "", None), DEFAULT_LIMITS)
    response_format = fields.get("response_format")
    if response_format is not None:
        response_format = parse_response_format(response_format, "response_format", DEFAULT_LIMITS)
    stream_options = fields.get_map("stream_options", frozenset({"include_usage", "continuous_usage_stats"}))
    include_usage = bool(stream_options.get_bool("include_usage")) if stream_options is not None else False
    return ChatRequest(_messages(fields.get("messages", required=True)), options, response_format,
                       bool(fields.get_bool("stream")), include_usage)


def _messages(value: Any) -> list[dict[str, Any]]:
    items = check_list(value, "messages", max_items=DEFAULT_LIMITS.max_messages, what="messages")
    if not items:
        raise invalid("messages", "must hold at least one message")
    out = []
    for i, item in enumerate(items):
        path = f"messages[{i}]"
        fields = Fields(item, path, frozenset({"role", "content", "name"}))
        role = fields.get("role", required=True)
        if role not in ROLES:
            raise invalid(fields.field("role"), f"must be one of {', '.join(ROLES)}")
        content = fields.get("content", required=True)
        if isinstance(content, str):
            check_str(content, f"{path}.content", max_chars=DEFAULT_LIMITS.max_text_chars)
        else:
            parts = check_list(content, f"{path}.content", max_items=DEFAULT_LIMITS.max_parts, what="parts")
            content = [_part(part, f"{path}.content[{j}]", role) for j, part in enumerate(parts)]
        out.append({"role": ROLES[role], "content": content})
    return out


def _part(value: Any, path: str, role: str) -> dict[str, Any] | MediaInput:
    kind = Fields(value, path, None).get("type", required=True)
    if kind == "text":
        text = Fields(value, path, frozenset({"type", "text"})).get_str(
            "text", max_chars=DEFAULT_LIMITS.max_text_chars, required=True)
        return {"type": "text", "text": text}
    if role != "user":
        raise invalid(path, "is media; media may appear only in user messages")
    if kind in ("image_url", "video_url"):
        body = Fields(value, path, frozenset({"type", kind})).get_map(kind, frozenset({"url", "detail"}),
                                                                     required=True)
        url = body.get_str("url", max_chars=1 << 30, required=True)
        mime, data = _data_url(url, body.field("url"))
        return MediaInput(kind.removesuffix("_url"), mime, data)
    if kind == "input_audio":
        body = Fields(value, path, frozenset({"type", "input_audio"})).get_map(
            "input_audio", frozenset({"data", "format"}), required=True)
        fmt = body.get_str("format", max_chars=16, required=True)
        if fmt not in AUDIO_FORMATS:
            raise ProtocolError(UNSUPPORTED_MEDIA, f"{body.field('format')} must be one of "
                                f"{', '.join(AUDIO_FORMATS)}", field=body.field("format"))
        data = body.get_str("data", max_chars=1 << 30, required=True)
        return MediaInput("audio", AUDIO_FORMATS[fmt], _b64(data, body.field("data")))
    raise invalid(f"{path}.type", "must be text, image_url, video_url or input_audio")


def _data_url(url: str, field: str) -> tuple[str | None, bytes]:
    if not url.startswith("data:"):
        raise ProtocolError(UNSUPPORTED_MEDIA, f"{field} must be a data: URL (the server fetches nothing)",
                            field=field)
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise invalid(field, "must be a base64 data URL: data:<mime>;base64,<data>")
    mime = header[: -len(";base64")] or None
    return mime, _b64(payload, field)


def _b64(text: str, field: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(INVALID_FIELD, f"{field} is not valid base64", field=field) from None

