"""Events a client sends. Each is a frozen dataclass whose `to_wire()` builds the wire map.

Optional fields are None when the client left them out; `to_wire()` leaves them out again, so a
decoded event encodes back to the map it came from (up to `stop` given as a single string).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar, Union

from protocol.chat import ChatMessage
from protocol.response_format import ResponseFormat

MODALITIES = ("image", "video", "audio")
OUTPUT_FORMATS = ("json", "msgpack")


@dataclass(frozen=True, slots=True)
class GenerationOptions:
    """Sampling and scheduling fields; None means "not set here" (session default, then built-in).

    Built-in defaults are in `GENERATION_DEFAULTS`; `max_tokens` None means up to the context
    length.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    ignore_eos: bool | None = None
    logprobs: int | None = None
    priority: int | None = None

    def merged(self, override: GenerationOptions) -> GenerationOptions:
        """A new options object: fields set in `override` win over those set here."""
        values = {}
        for f in fields(self):
            value = getattr(override, f.name)
            values[f.name] = getattr(self, f.name) if value is None else value
        return GenerationOptions(**values)

    def resolved(self) -> GenerationOptions:
        """These options with every unset field given its built-in default."""
        return GENERATION_DEFAULTS.merged(self)

    def to_wire(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if f.name == "stop" else value
        return out


GENERATION_DEFAULTS = GenerationOptions(
    max_tokens=None, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0, seed=None, stop=(),
    ignore_eos=False, logprobs=None, priority=0)


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    """Changes session settings; a field left out keeps its current value."""

    type: ClassVar[str] = "session.update"
    instructions: str | None = None
    defaults: GenerationOptions | None = None
    output_format: str | None = None

    def to_wire(self) -> dict:
        out: dict = {"type": self.type}
        if self.instructions is not None:
            out["instructions"] = self.instructions
        if self.defaults is not None:
            out["defaults"] = self.defaults.to_wire()
        if self.output_format is not None:
            out["output_format"] = self.output_format
        return out


@dataclass(frozen=True, slots=True)
class InputAppend:
    """One chunk of a media item; the chunk with `final` true completes the item."""

    type: ClassVar[str] = "input.append"
    item_id: str
    modality: str
    mime: str
    data: bytes
    final: bool
    content_hash: str | None = None

    def to_wire(self) -> dict:
        out = {"type": self.type, "item_id": self.item_id, "modality": self.modality,
               "mime": self.mime, "data": self.data, "final": self.final}
        if self.content_hash is not None:
            out["content_hash"] = self.content_hash
        return out


@dataclass(frozen=True, slots=True)
class InputDelete:
    """Forgets an item, freeing its share of the session's media budget."""

    type: ClassVar[str] = "input.delete"
    item_id: str

    def to_wire(self) -> dict:
        return {"type": self.type, "item_id": self.item_id}


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    """Starts a response. On the wire the options' fields sit at the top level of the map."""

    type: ClassVar[str] = "response.create"
    messages: tuple[ChatMessage, ...]
    options: GenerationOptions = GenerationOptions()
    response_id: str | None = None
    response_format: ResponseFormat | None = None
    traceparent: str | None = None
    speculative: bool | None = None
    metadata: dict[str, str] | None = None

    def to_wire(self) -> dict:
        out: dict = {"type": self.type}
        if self.response_id is not None:
            out["response_id"] = self.response_id
        out["messages"] = [message.to_wire() for message in self.messages]
        out.update(self.options.to_wire())
        if self.response_format is not None:
            out["response_format"] = self.response_format.to_wire()
        if self.traceparent is not None:
            out["traceparent"] = self.traceparent
        if self.speculative is not None:
            out["speculative"] = self.speculative
        if self.metadata is not None:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    """Stops a response in flight; the server answers with its `response.done` (cancelled)."""

    type: ClassVar[str] = "response.cancel"
    response_id: str

    def to_wire(self) -> dict:
        return {"type": self.type, "response_id": self.response_id}


ClientEvent = Union[SessionUpdate, InputAppend, InputDelete, ResponseCreate, ResponseCancel]
CLIENT_EVENT_TYPES: tuple[type, ...] = (SessionUpdate, InputAppend, InputDelete, ResponseCreate,
                                        ResponseCancel)
