import json

import msgpack
import pytest

from protocol import ProtocolError, ResponseDelta, decode_server_frame, encode_event
from protocol.server_events import SERVER_EVENT_TYPES
from tests.protocol.samples import SERVER_EVENTS


def test_samples_cover_every_server_event():
    assert {type(e) for e in SERVER_EVENTS} == set(SERVER_EVENT_TYPES)


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda e: e.type)
@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
def test_round_trip(event, binary):
    frame = encode_event(event, binary)
    assert isinstance(frame, bytes if binary else str)
    assert decode_server_frame(frame) == event


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda e: e.type)
def test_msgpack_and_json_carry_the_same_map(event):
    assert msgpack.unpackb(encode_event(event, True)) == json.loads(encode_event(event, False))


def test_delta_wire_form():
    delta = ResponseDelta("r", "ab", (5, 6), (((5, -0.1),), ((6, -0.2), (1, -3.0))))
    assert json.loads(encode_event(delta, False)) == {
        "type": "response.delta", "response_id": "r", "delta": "ab", "token_ids": [5, 6],
        "logprobs": [[[5, -0.1]], [[6, -0.2], [1, -3.0]]]}
    assert json.loads(encode_event(ResponseDelta("r", "x"), False)) == {
        "type": "response.delta", "response_id": "r", "delta": "x"}


def test_response_done_always_carries_usage_and_trace_id():
    done = json.loads(encode_event(SERVER_EVENTS[11], False))
    assert done["usage"] == {"input_tokens": 812, "output_tokens": 64, "cached_tokens": 512}
    assert done["trace_id"] is None and "error" not in done


def test_json_is_compact_and_keeps_unicode():
    frame = encode_event(ResponseDelta("r", "ü🐈"), False)
    assert frame == '{"type":"response.delta","response_id":"r","delta":"ü🐈"}'


def test_non_finite_floats_are_a_sender_bug():
    with pytest.raises(ValueError):
        encode_event(ResponseDelta("r", "x", (1,), (((1, float("-inf")),),)), False)


def test_client_ignores_unknown_fields_from_a_newer_server():
    frame = json.dumps({"type": "response.created", "response_id": "r", "new_field": 1})
    assert decode_server_frame(frame).response_id == "r"


@pytest.mark.parametrize("wire, field", [
    ({"type": "response.delta", "response_id": "r"}, "delta"),
    ({"type": "response.delta", "response_id": "r", "delta": "x", "token_ids": [1, True]},
     "token_ids[1]"),
    ({"type": "response.delta", "response_id": "r", "delta": "x", "logprobs": [[[1]]]},
     "logprobs[0][0]"),
    ({"type": "response.done", "response_id": "r", "status": "odd", "finish_reason": None,
      "usage": {"input_tokens": 1, "output_tokens": 1, "cached_tokens": 0}}, "status"),
    ({"type": "response.done", "response_id": "r", "status": "completed",
      "usage": {"input_tokens": 1, "output_tokens": 1}}, "usage.cached_tokens"),
    ({"type": "input.committed", "item_id": "i", "num_tokens": 3, "cached": 1}, "cached"),
    ({"type": "session.created", "session_id": "s", "model": "m", "limits": {"a": "1"}},
     "limits.a"),
    ({"type": "error", "error": {"message": "m"}}, "error.code"),
])
def test_malformed_server_events_name_the_field(wire, field):
    with pytest.raises(ProtocolError) as caught:
        decode_server_frame(msgpack.packb(wire))
    assert caught.value.field == field
    assert caught.value.event_type == wire["type"]


def test_unknown_server_event_type():
    with pytest.raises(ProtocolError) as caught:
        decode_server_frame('{"type": "response.shiny"}')
    assert caught.value.code == "unknown_event"
