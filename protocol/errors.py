"""Error codes of `error` events, WebSocket close codes, and the exception that carries them.

A bad event gets an `error` event and the session stays open; only a broken connection-level rule
closes the socket, and then `ProtocolError.close_code` says with which code.
"""

from __future__ import annotations

from dataclasses import dataclass

# Frame level: the bytes of one WebSocket message.
INVALID_JSON = "invalid_json"
INVALID_MSGPACK = "invalid_msgpack"
INVALID_EVENT = "invalid_event"
MESSAGE_TOO_LARGE = "message_too_large"
# Event level: the fields of one decoded event.
UNKNOWN_EVENT = "unknown_event"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
UNKNOWN_FIELD = "unknown_field"
LIMIT_EXCEEDED = "limit_exceeded"
# Session level: events that are well-formed but refer to the wrong thing.
UNKNOWN_ITEM = "unknown_item"
DUPLICATE_ITEM = "duplicate_item"
RESPONSE_NOT_FOUND = "response_not_found"
DUPLICATE_RESPONSE = "duplicate_response"
# Media
MEDIA_TOO_LARGE = "media_too_large"
CORRUPT_MEDIA = "corrupt_media"
UNSUPPORTED_MEDIA = "unsupported_media"
# Generation
INVALID_SCHEMA = "invalid_schema"
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
# Server
UNAUTHORIZED = "unauthorized"
OVERLOADED = "overloaded"
INTERNAL_ERROR = "internal_error"

ERROR_DESCRIPTIONS: dict[str, str] = {
    INVALID_JSON: "a text frame is not valid UTF-8 JSON (NaN and Infinity are not JSON)",
    INVALID_MSGPACK: "a binary frame is not one complete msgpack value with string map keys",
    INVALID_EVENT: "the frame decoded, but to something other than a map",
    MESSAGE_TOO_LARGE: "the frame is larger than the server's message size limit; closes with 1009",
    UNKNOWN_EVENT: "`type` names no client event",
    MISSING_FIELD: "a required field is absent or null; `field` names it",
    INVALID_FIELD: "a field has the wrong type, is out of range or malformed; `field` names it",
    UNKNOWN_FIELD: "a field that the event does not define; `field` names it",
    LIMIT_EXCEEDED: "a string, list or count is over a protocol or session limit; `field` names it",
    UNKNOWN_ITEM: "an item_id that this session has not uploaded (or has deleted)",
    DUPLICATE_ITEM: "input.append for an item_id that is already committed",
    RESPONSE_NOT_FOUND: "response.cancel for a response_id that is not in flight",
    DUPLICATE_RESPONSE: "response.create with a response_id that is already in flight",
    MEDIA_TOO_LARGE: "an item, or the session's media, is over its byte limit",
    CORRUPT_MEDIA: "an item's bytes do not decode as its mime type",
    UNSUPPORTED_MEDIA: "a mime type or modality that the server or the model cannot take",
    INVALID_SCHEMA: "a response_format schema or pattern that cannot be compiled",
    CONTEXT_LENGTH_EXCEEDED: "prompt plus max_tokens is longer than the model's context",
    UNAUTHORIZED: "missing or wrong API key, or Origin not allowed; closes with 1008",
    OVERLOADED: "the server is full; for a new session it closes with 1013",
    INTERNAL_ERROR: "a bug in the server; the message carries no details",
}
ERROR_CODES: frozenset[str] = frozenset(ERROR_DESCRIPTIONS)

# WebSocket close codes (RFC 6455, section 7.4.1) that the service uses.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutdown or idle timeout
CLOSE_POLICY_VIOLATION = 1008  # authentication, Origin
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_TRY_AGAIN_LATER = 1013  # overloaded


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The body of an `error` event: what went wrong and, where known, where."""

    code: str
    message: str
    event_type: str | None = None
    field: str | None = None
    item_id: str | None = None
    response_id: str | None = None

    def to_wire(self) -> dict:
        out = {"code": self.code, "message": self.message}
        if self.event_type is not None:
            out["event_type"] = self.event_type
        if self.field is not None:
            out["field"] = self.field
        if self.item_id is not None:
            out["item_id"] = self.item_id
        if self.response_id is not None:
            out["response_id"] = self.response_id
        return out


class ProtocolError(Exception):
    """An error a client caused. `close_code` is None when the session stays open.

    The message is safe to send to the client: it quotes at most a short prefix of what the client
    sent and never carries a traceback.
    """

    def __init__(self, code: str, message: str, *, field: str | None = None,
                 event_type: str | None = None, item_id: str | None = None,
                 response_id: str | None = None, close_code: int | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.event_type = event_type
        self.item_id = item_id
        self.response_id = response_id
        self.close_code = close_code

    def to_info(self) -> ErrorInfo:
        return ErrorInfo(self.code, self.message, self.event_type, self.field, self.item_id,
                         self.response_id)

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, field={self.field!r})"
