"""Turns one decoded wire map into a client event, strictly: unknown fields are errors.

`binary` says which frame kind the map came from: in msgpack `data` is binary, in JSON it is a
base64 string.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from typing import Any

from protocol.chat import parse_messages
from protocol.client_events import (MODALITIES, OUTPUT_FORMATS, ClientEvent, GenerationOptions,
                                    InputAppend, InputDelete, ResponseCancel, ResponseCreate,
                                    SessionUpdate)
from protocol.config import ProtocolLimits
from protocol.errors import INVALID_EVENT, UNKNOWN_EVENT, ProtocolError
from protocol.fields import (INT32_MAX, INT32_MIN, INT64_MAX, ID_PATTERN, Fields, check_list,
                             check_str, invalid, quote, wrong_type)
from protocol.response_format import parse_response_format

MIME_PATTERN = re.compile(r"[A-Za-z0-9][\w!#$&^.+\-]*/[A-Za-z0-9][\w!#$&^.+\-]*(;[ -~]*)?",
                          re.ASCII)
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")
TRACEPARENT_PATTERN = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

_OPTION_FIELDS = frozenset({"max_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
                            "stop", "ignore_eos", "logprobs", "priority"})
_EVENT_FIELDS = {
    "session.update": frozenset({"type", "instructions", "defaults", "output_format"}),
    "input.append": frozenset({"type", "item_id", "modality", "mime", "data", "final",
                               "content_hash"}),
    "input.delete": frozenset({"type", "item_id"}),
    "response.create": _OPTION_FIELDS | {"type", "response_id", "messages", "response_format",
                                         "traceparent", "speculative", "metadata"},
    "response.cancel": frozenset({"type", "response_id"}),
}


def parse_client_event(value: Any, *, binary: bool, limits: ProtocolLimits) -> ClientEvent:
    """The event for one decoded frame; a ProtocolError names the event, field and ids it can."""
    if type(value) is not dict:
        raise ProtocolError(INVALID_EVENT, f"an event must be a map, got {quote(value)}")
    kind = Fields(value, "", None).get("type", required=True)
    if type(kind) is not str:
        raise wrong_type("type", "a string", kind)
    if kind not in _EVENT_FIELDS:
        raise ProtocolError(UNKNOWN_EVENT, f"unknown event type {quote(kind)}", field="type")
    try:
        fields = Fields(value, "", _EVENT_FIELDS[kind])
        if kind == "input.append":
            return _input_append(fields, binary, limits)
        if kind == "response.create":
            return _response_create(fields, limits)
        if kind == "response.cancel":
            return ResponseCancel(fields.get_id("response_id", max_chars=limits.max_id_chars,
                                                required=True))
        if kind == "input.delete":
            return InputDelete(fields.get_id("item_id", max_chars=limits.max_id_chars,
                                             required=True))
        return _session_update(fields, limits)
    except ProtocolError as error:
        error.event_type = kind
        error.item_id = _peek_id(value, "item_id", limits)
        error.response_id = _peek_id(value, "response_id", limits)
        raise


def _peek_id(value: dict, key: str, limits: ProtocolLimits) -> str | None:
    found = value.get(key)
    if type(found) is str and len(found) <= limits.max_id_chars and ID_PATTERN.fullmatch(found):
        return found
    return None


def _input_append(fields: Fields, binary: bool, limits: ProtocolLimits) -> InputAppend:
    item_id = fields.get_id("item_id", max_chars=limits.max_id_chars, required=True)
    modality = fields.get_choice("modality", MODALITIES, required=True)
    mime = fields.get_str("mime", max_chars=limits.max_mime_chars, required=True)
    if not MIME_PATTERN.fullmatch(mime):
        raise invalid("mime", f"must be a media type like 'image/png', got {quote(mime)}")
    data = fields.get("data", required=True)
    if binary and type(data) is not bytes:
        raise wrong_type("data", "binary", data)
    if not binary:
        if type(data) is not str:
            raise wrong_type("data", "a base64 string", data)
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("data", "is not valid base64") from None
    final = fields.get_bool("final", required=True)
    content_hash = fields.get("content_hash")
    if content_hash is not None:
        check_str(content_hash, "content_hash", max_chars=64, pattern=SHA256_PATTERN,
                  rule="a sha256 digest as 64 lowercase hex digits")
    return InputAppend(item_id, modality, mime, data, final, content_hash)


def _session_update(fields: Fields, limits: ProtocolLimits) -> SessionUpdate:
    instructions = fields.get_str("instructions", max_chars=limits.max_text_chars)
    defaults = fields.get_map("defaults", _OPTION_FIELDS)
    return SessionUpdate(
        instructions=instructions,
        defaults=None if defaults is None else parse_options(defaults, limits),
        output_format=fields.get_choice("output_format", OUTPUT_FORMATS))


def _response_create(fields: Fields, limits: ProtocolLimits) -> ResponseCreate:
    response_id = fields.get_id("response_id", max_chars=limits.max_id_chars)
    messages = parse_messages(fields.get("messages", required=True), "messages", limits)
    options = parse_options(fields, limits)
    response_format = fields.get("response_format")
    if response_format is not None:
        response_format = parse_response_format(response_format, "response_format", limits)
    traceparent = fields.get("traceparent")
    if traceparent is not None:
        check_str(traceparent, "traceparent", max_chars=55, pattern=TRACEPARENT_PATTERN,
                  rule="a W3C traceparent like '00-<32 hex>-<16 hex>-01'")
    return ResponseCreate(messages, options, response_id, response_format, traceparent,
                          fields.get_bool("speculative"), _metadata(fields, limits))


def parse_options(fields: Fields, limits: ProtocolLimits) -> GenerationOptions:
    """Reads the sampling and scheduling fields from `fields` (unset ones stay None)."""
    return GenerationOptions(
        max_tokens=fields.get_int("max_tokens", 1, INT32_MAX),
        temperature=fields.get_float("temperature", 0.0, math.inf),
        top_p=fields.get_float("top_p", 0.0, 1.0, lo_open=True),
        top_k=fields.get_int("top_k", -1, INT32_MAX),
        min_p=fields.get_float("min_p", 0.0, 1.0),
        seed=fields.get_int("seed", 0, INT64_MAX),
        stop=_stop(fields, limits),
        ignore_eos=fields.get_bool("ignore_eos"),
        logprobs=fields.get_int("logprobs", 0, limits.max_logprobs),
        priority=fields.get_int("priority", INT32_MIN, INT32_MAX))


def _stop(fields: Fields, limits: ProtocolLimits) -> tuple[str, ...] | None:
    value = fields.get("stop")
    field = fields.field("stop")
    if value is None:
        return None
    if type(value) is str:
        value = [value]
    elif type(value) is not list:
        raise wrong_type(field, "a string or an array of strings", value)
    check_list(value, field, max_items=limits.max_stop, what="stop strings")
    return tuple(check_str(s, f"{field}[{i}]", max_chars=limits.max_stop_chars, allow_empty=False)
                 for i, s in enumerate(value))


def _metadata(fields: Fields, limits: ProtocolLimits) -> dict[str, str] | None:
    meta = fields.get_map("metadata", None)
    if meta is None:
        return None
    raw = fields.get("metadata")
    check_list(list(raw), "metadata", max_items=limits.max_metadata_keys, what="keys")
    for key, value in raw.items():
        check_str(key, "metadata key", max_chars=limits.max_metadata_key_chars, allow_empty=False)
        check_str(value, meta.field(key), max_chars=limits.max_metadata_value_chars)
    return dict(raw)
