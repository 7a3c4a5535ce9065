"""Messages between the engine client and the engine process, and their msgpack codec.

Imports no torch: the gateway encodes requests with it. One message is one msgpack map with a
"type" key. Client to engine: add, abort, get_stats, shutdown, append_item and delete_item
(decoded media of an uploaded item, ahead of the requests that name it). Engine to client: ready,
outputs (every delta of one step in one message), error, stats, item_appended.

Byte buffers of a request (decoded media) cross as msgpack bin; a buffer larger than the
shared-memory threshold crosses through `multiprocessing.shared_memory` instead, with only its
name in the message. Ownership of a segment passes to the receiver: `decode_message` copies it
out and unlinks it. A sender whose peer died before reading calls `unlink_shared_buffers`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, fields
from multiprocessing import resource_tracker, shared_memory
from typing import Any, ClassVar, Iterable, Mapping

import msgpack

from llm_core.outputs import CompletionDelta
from llm_core.prompt_arrays import pack_prompt_arrays, unpack_prompt_arrays
from llm_core.sampling_params import SamplingParams

SHM_THRESHOLD_BYTES = 1 << 20  # buffers above this go through shared memory

_DELTA_FIELDS = tuple(f.name for f in fields(CompletionDelta))
# Every step sends a delta per running request, so a delta's wire form is a plain array of its
# fields in declaration order, read with one C-level getter and rebuilt without dataclass __init__.
_delta_row = operator.attrgetter(*_DELTA_FIELDS)
_TOKEN_IDS, _LOGPROBS = _DELTA_FIELDS.index("new_token_ids"), _DELTA_FIELDS.index("logprobs")
_PARAM_DEFAULTS = {f.name: getattr(SamplingParams(), f.name) for f in fields(SamplingParams)}


class ProtocolError(ValueError):
    """A message that does not decode; request_id names the request when one can be told."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class EngineDeadError(RuntimeError):
    """The engine is not running: it died, failed to start, was closed, or was never started."""


class EngineRequestError(Exception):
    """The engine refused or failed one request; kind is "invalid_request" (the caller's fault) or "internal".
    code: the protocol's media error code, where the engine refused media (MediaError)."""

    def __init__(self, request_id: str, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.kind = kind
        self.code = code


@dataclass(frozen=True)
class EngineRequest:
    """What the gateway hands the engine for one request.

    prompt: text, a list of token ids, or a dict ({"messages": [...]} chat, {"prompt_token_ids"}).
    arrival_time: time.monotonic() on this host (the clock is shared between processes);
        None means the client stamps it when generate() is called.
    buffers: named byte buffers (decoded media by item id) that the prompt refers to.
    """

    request_id: str
    prompt: str | list[int] | dict[str, Any]
    sampling_params: SamplingParams = field(default_factory=SamplingParams)
    priority: int = 0
    arrival_time: float | None = None
    traceparent: str | None = None
    buffers: Mapping[str, bytes] = field(default_factory=dict)


# Client -> engine
@dataclass(frozen=True)
class AddRequest:
    TYPE: ClassVar[str] = "add"
    request: EngineRequest


@dataclass(frozen=True)
class AbortRequests:
    TYPE: ClassVar[str] = "abort"
    request_ids: tuple[str, ...]


@dataclass(frozen=True)
class GetStats:
    TYPE: ClassVar[str] = "get_stats"
    query_id: int


@dataclass(frozen=True)
class Shutdown:
    TYPE: ClassVar[str] = "shutdown"


@dataclass(frozen=True)
class AppendItem:
    """Decoded media for an uploaded item (LLMEngine.add_media_item); answered by ItemAppended.

    data: video a list of frames uint8 [H, W, 3]; image one such frame; audio (float32 samples [S],
    sample_rate). Its arrays cross as byte buffers (shared memory above the threshold).
    """

    TYPE: ClassVar[str] = "append_item"
    query_id: int
    item_id: str
    modality: str
    data: Any
    final: bool


@dataclass(frozen=True)
class DeleteItem:
    TYPE: ClassVar[str] = "delete_item"
    item_id: str


# Engine -> client
@dataclass(frozen=True)
class Ready:
    TYPE: ClassVar[str] = "ready"
    info: dict[str, Any]


@dataclass(frozen=True)
class StepOutputs:
    TYPE: ClassVar[str] = "outputs"
    deltas: tuple[CompletionDelta, ...]


@dataclass(frozen=True)
class EngineError:
    """request_id None: the engine as a whole failed (kind "fatal") and is going away."""

    TYPE: ClassVar[str] = "error"
    request_id: str | None
    message: str
    kind: str = "internal"  # invalid_request | internal | fatal


@dataclass(frozen=True)
class Stats:
    TYPE: ClassVar[str] = "stats"
    query_id: int
    stats: dict[str, Any]


@dataclass(frozen=True)
class ItemAppended:
    """The answer to AppendItem: the item's frames (video) or samples (audio) so far, or an error.

    kind: "invalid_request" (the media or the item's state: code is the protocol's media error code
    where the engine raised MediaError) or "internal"."""

    TYPE: ClassVar[str] = "item_appended"
    query_id: int
    item_id: str
    size: int = 0
    error: str | None = None
    kind: str | None = None
    code: str | None = None


Message = (AddRequest | AbortRequests | GetStats | Shutdown | AppendItem | DeleteItem | Ready | StepOutputs
           | EngineError | Stats | ItemAppended)
_SIMPLE = {cls.TYPE: cls for cls in (AbortRequests, GetStats, Shutdown, DeleteItem, Ready, EngineError, Stats,
                                     ItemAppended)}


def encode_message(message: Message, *, shm_threshold: int = SHM_THRESHOLD_BYTES) -> tuple[bytes, tuple[str, ...]]:
    """msgpack bytes of a message, and the names of the shared-memory segments it created."""
    shm_names: list[str] = []
    if isinstance(message, AddRequest):
        body = _encode_request(message.request, shm_threshold, shm_names)
    elif isinstance(message, AppendItem):
        buffers: dict[str, Any] = {}
        packed = pack_prompt_arrays({"data": message.data}, buffers)["data"]
        body = {"query_id": message.query_id, "item_id": message.item_id, "modality": message.modality,
                "data": packed, "final": message.final,
                "buffers": _pack_buffers(buffers, shm_threshold, shm_names)}
    elif isinstance(message, StepOutputs):
        body = {"deltas": [_delta_row(d) for d in message.deltas]}
    else:
        body = {f.name: getattr(message, f.name) for f in fields(message)}
    try:
        return msgpack.packb({"type": message.TYPE, **body}, use_bin_type=True), tuple(shm_names)
    except BaseException:
        unlink_shared_buffers(shm_names)
        raise


def decode_message(data: bytes) -> Message:
    """The message in `data`; shared-memory buffers are copied out and their segments unlinked."""
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False)
        kind = body.pop("type")
        if kind == AddRequest.TYPE:
            return AddRequest(_decode_request(body))
        if kind == StepOutputs.TYPE:
            return StepOutputs(tuple(_decode_delta(row) for row in body["deltas"]))
        if kind == AbortRequests.TYPE:
            return AbortRequests(tuple(body["request_ids"]))
        if kind == AppendItem.TYPE:
            buffers = _read_buffers(body.pop("buffers"))
            return AppendItem(data=unpack_prompt_arrays({"data": body.pop("data")}, buffers)["data"], **body)
        return _SIMPLE[kind](**body)
    except ProtocolError:
        raise
    except Exception as exc:  # whatever a malformed message breaks is a protocol error, never a dead reader
        raise ProtocolError(f"undecodable engine message: {type(exc).__name__}: {exc}") from None


def unlink_shared_buffers(names: Iterable[str]) -> None:
    """Remove segments that no receiver will read (their peer died); missing ones are skipped."""
    for name in names:
        try:
            segment = shared_memory.SharedMemory(name=name)
        except FileNotFoundError:
            continue
        segment.close()
        segment.unlink()


def _encode_request(request: EngineRequest, shm_threshold: int, shm_names: list[str]) -> dict[str, Any]:
    params = {name: value for name in _PARAM_DEFAULTS
              if (value := getattr(request.sampling_params, name)) != _PARAM_DEFAULTS[name]}
    all_buffers = dict(request.buffers)
    prompt = pack_prompt_arrays(request.prompt, all_buffers)  # numpy media in a chat prompt
    return {"request_id": request.request_id, "prompt": prompt, "params": params,
            "priority": request.priority, "arrival_time": request.arrival_time,
            "traceparent": request.traceparent, "buffers": _pack_buffers(all_buffers, shm_threshold, shm_names)}


def _pack_buffers(all_buffers: Mapping[str, Any], shm_threshold: int, shm_names: list[str]) -> dict[str, Any]:
    """Each buffer as msgpack bin, or as a shared-memory segment's name above the threshold."""
    buffers = {}
    for key, data in all_buffers.items():
        view = memoryview(data).cast("B")
        if view.nbytes > shm_threshold:
            name = _write_shared(view)
            shm_names.append(name)
            buffers[key] = {"shm": name, "nbytes": view.nbytes}
        else:
            buffers[key] = view.tobytes() if not isinstance(data, bytes) else data
    return buffers


def _read_buffers(packed: Mapping[str, Any]) -> dict[str, Any]:
    """The bytes of _pack_buffers' output; shared-memory segments are copied out and unlinked."""
    return {key: _read_shared(value["shm"], value["nbytes"]) if isinstance(value, dict) else value
            for key, value in packed.items()}


def _decode_request(body: dict[str, Any]) -> EngineRequest:
    request_id = body.get("request_id")
    # Read (and so release) every segment first, whatever else is wrong with the message.
    buffers = _read_buffers(body.get("buffers", {}))
    try:
        params = SamplingParams(**body["params"])
        prompt = unpack_prompt_arrays(body["prompt"], buffers)  # takes its arrays out of buffers
        return EngineRequest(request_id=request_id, prompt=prompt, sampling_params=params,
                             priority=body["priority"], arrival_time=body["arrival_time"],
                             traceparent=body["traceparent"], buffers=buffers)
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bad add message: {exc}", request_id=request_id) from None


def _decode_delta(row: list[Any]) -> CompletionDelta:
    """A delta from its wire row. The frozen dataclass's __init__ (a guarded setattr per field) cost
    most of the gateway's decoding time at hundreds of requests per step: the instance's __dict__
    is filled directly instead, with exactly the fields __init__ would set."""
    if len(row) != len(_DELTA_FIELDS):
        raise ProtocolError(f"a delta has {len(row)} fields, not {len(_DELTA_FIELDS)}")
    row[_TOKEN_IDS] = tuple(row[_TOKEN_IDS])
    if row[_LOGPROBS] is not None:
        row[_LOGPROBS] = tuple(row[_LOGPROBS])
    delta = object.__new__(CompletionDelta)
    delta.__dict__.update(zip(_DELTA_FIELDS, row))
    return delta


def _write_shared(view: memoryview) -> str:
    segment = shared_memory.SharedMemory(create=True, size=max(view.nbytes, 1))
    # The receiver unlinks the segment; this process's resource tracker must not (or warn at exit).
    resource_tracker.unregister(segment._name, "shared_memory")  # type: ignore[attr-defined]
    segment.buf[:view.nbytes] = view
    name = segment.name
    segment.close()
    return name


def _read_shared(name: str, nbytes: int) -> bytes:
    segment = shared_memory.SharedMemory(name=name)
    try:
        return bytes(segment.buf[:nbytes])
    finally:
        segment.close()
        segment.unlink()
