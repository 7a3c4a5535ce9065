"""One codec for both frame kinds: binary frames carry msgpack maps, text frames JSON maps.

Sans-I/O: it takes and returns the payload of one WebSocket message. In JSON, binary fields (the
`data` of `input.append`) travel as base64 strings.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Union

import msgpack

from protocol.client_events import ClientEvent
from protocol.client_parse import parse_client_event
from protocol.config import DEFAULT_LIMITS, ProtocolLimits
from protocol.errors import (CLOSE_MESSAGE_TOO_BIG, INVALID_JSON, INVALID_MSGPACK,
                             MESSAGE_TOO_LARGE, ProtocolError)
from protocol.server_events import ServerEvent
from protocol.server_parse import parse_server_event

Frame = Union[bytes, str]

# Invariant: this Packer has no `default` hook, so pack() runs no Python code and never releases
# the GIL part-way; sharing it between threads is then safe, and it is about twice as fast as packb.
_PACKER = msgpack.Packer(use_bin_type=True)


def _json_default(value: Any) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, check_circular=False,
                                 separators=(",", ":"), default=_json_default)


def encode_event(event: ClientEvent | ServerEvent, binary: bool) -> Frame:
    """The frame payload for `event`: msgpack bytes if `binary`, else JSON text.

    Raises ValueError for values no frame can carry (non-finite floats, unpaired surrogates):
    those are bugs of the sender, not client errors.
    """
    wire = event.to_wire()
    if binary:
        return _PACKER.pack(wire)
    return _JSON_ENCODER.encode(wire)


def decode_frame(data: Frame, *, max_bytes: int,
                 limits: ProtocolLimits = DEFAULT_LIMITS) -> ClientEvent:
    """The client event in one frame (bytes: msgpack, str: JSON); raises only ProtocolError.

    A frame over `max_bytes` raises with `close_code` 1009; every other error leaves
    `close_code` None: the session answers with an `error` event and stays open.
    """
    binary = not isinstance(data, str)
    return parse_client_event(load_frame(data, max_bytes), binary=binary, limits=limits)


def decode_server_frame(data: Frame, *, max_bytes: int | None = None) -> ServerEvent:
    """The server event in one frame, for clients; unknown fields are ignored (see server_parse)."""
    return parse_server_event(load_frame(data, max_bytes))


def load_frame(data: Frame, max_bytes: int | None) -> Any:
    """The decoded value of one frame, not yet validated as an event."""
    if max_bytes is not None:
        _check_size(data, max_bytes)
    if isinstance(data, str):
        return _load_json(data)
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.UnpackException) as error:
        raise ProtocolError(INVALID_MSGPACK, f"invalid msgpack: {_reason(error)}") from None


def _check_size(data: Frame, max_bytes: int) -> None:
    size = len(data)
    # A str holds at most 4 UTF-8 bytes per character: count bytes only when it could matter.
    if isinstance(data, str) and size <= max_bytes < 4 * size:
        size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"message of {size} bytes is over the limit of "
                            f"{max_bytes} bytes", close_code=CLOSE_MESSAGE_TOO_BIG)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _load_json(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        message = f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        raise ProtocolError(INVALID_JSON, message) from None
    except (ValueError, RecursionError) as error:
        raise ProtocolError(INVALID_JSON, f"invalid JSON: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    # Library messages can quote input; keep the first line and bound its length.
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if len(text) <= 120 else text[:120] + "..."
