"""Events the server sends. Each is a frozen dataclass whose `to_wire()` builds the wire map.

`to_wire()` is on the gateway's hot path (a delta per response per engine step), so it builds the
dict by hand instead of going through `dataclasses.asdict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Union

from protocol.errors import ErrorInfo

RESPONSE_STATUSES = ("completed", "cancelled", "incomplete", "failed")
FINISH_REASONS = ("stop", "length", "cancelled", "error")


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """First event of every session. `limits` holds the service-level limits by name."""

    type: ClassVar[str] = "session.created"
    session_id: str
    model: str
    limits: dict[str, int | float] = field(default_factory=dict)

    def to_wire(self) -> dict:
        return {"type": self.type, "session_id": self.session_id, "model": self.model,
                "limits": dict(self.limits)}


@dataclass(frozen=True, slots=True)
class InputCommitted:
    """An item is complete and encoded: it takes `num_tokens` prompt tokens; `cached` if reused."""

    type: ClassVar[str] = "input.committed"
    item_id: str
    num_tokens: int
    cached: bool

    def to_wire(self) -> dict:
        return {"type": self.type, "item_id": self.item_id, "num_tokens": self.num_tokens,
                "cached": self.cached}


@dataclass(frozen=True, slots=True)
class InputKnown:
    """The server already holds the content announced by `content_hash`: send no more chunks."""

    type: ClassVar[str] = "input.known"
    item_id: str
    content_hash: str

    def to_wire(self) -> dict:
        return {"type": self.type, "item_id": self.item_id, "content_hash": self.content_hash}


@dataclass(frozen=True, slots=True)
class InputDeleted:
    type: ClassVar[str] = "input.deleted"
    item_id: str

    def to_wire(self) -> dict:
        return {"type": self.type, "item_id": self.item_id}


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    type: ClassVar[str] = "response.created"
    response_id: str

    def to_wire(self) -> dict:
        return {"type": self.type, "response_id": self.response_id}


@dataclass(frozen=True, slots=True)
class ResponseDelta:
    """New output text of a response: all tokens of one engine step or more, never a split char.

    `logprobs`, when asked for, has one entry per token: (token_id, logprob) pairs, sampled first.
    """

    type: ClassVar[str] = "response.delta"
    response_id: str
    delta: str
    token_ids: tuple[int, ...] | None = None
    logprobs: tuple[tuple[tuple[int, float], ...], ...] | None = None

    def to_wire(self) -> dict:
        out = {"type": "response.delta", "response_id": self.response_id, "delta": self.delta}
        if self.token_ids is not None:
            out["token_ids"] = self.token_ids
        if self.logprobs is not None:
            out["logprobs"] = self.logprobs
        return out


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int

    def to_wire(self) -> dict:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cached_tokens": self.cached_tokens}


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """Last event of a response, whatever its end. `error` is set when `status` is failed."""

    type: ClassVar[str] = "response.done"
    response_id: str
    status: str
    finish_reason: str | None
    usage: Usage
    trace_id: str | None = None
    error: ErrorInfo | None = None

    def to_wire(self) -> dict:
        out = {"type": self.type, "response_id": self.response_id, "status": self.status,
               "finish_reason": self.finish_reason, "usage": self.usage.to_wire(),
               "trace_id": self.trace_id}
        if self.error is not None:
            out["error"] = self.error.to_wire()
        return out


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """A client event failed; the session stays open unless a close frame follows."""

    type: ClassVar[str] = "error"
    error: ErrorInfo

    def to_wire(self) -> dict:
        return {"type": self.type, "error": self.error.to_wire()}


ServerEvent = Union[SessionCreated, InputCommitted, InputKnown, InputDeleted, ResponseCreated,
                    ResponseDelta, ResponseDone, ErrorEvent]
SERVER_EVENT_TYPES: tuple[type, ...] = (SessionCreated, InputCommitted, InputKnown, InputDeleted,
                                        ResponseCreated, ResponseDelta, ResponseDone, ErrorEvent)
