"""Validation of client events: every failure names its code, field, event and ids."""

import base64
import copy
import json

import msgpack
import pytest

from protocol import ProtocolError, decode_frame
from protocol.config import ProtocolLimits

MAX = 1 << 24
CREATE = {"type": "response.create", "response_id": "r1",
          "messages": [{"role": "user", "content": "hi"}]}
APPEND = {"type": "input.append", "item_id": "img-1", "modality": "image", "mime": "image/png",
          "data": b"\x00\x01", "final": True}


def encode(wire: dict, binary: bool):
    if binary:
        return msgpack.packb(wire, use_bin_type=True)
    wire = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in wire.items()}
    return json.dumps(wire)


def error_for(wire: dict, binary: bool = True, limits: ProtocolLimits | None = None):
    kwargs = {} if limits is None else {"limits": limits}
    with pytest.raises(ProtocolError) as caught:
        decode_frame(encode(wire, binary), max_bytes=MAX, **kwargs)
    assert caught.value.close_code is None  # a bad event never closes the session
    return caught.value


def with_fields(base: dict, **changes) -> dict:
    wire = copy.deepcopy(base)
    for key, value in changes.items():
        if value is DELETE:
            del wire[key]
        else:
            wire[key] = value
    return wire


DELETE = object()

CASES = [
    # missing
    (with_fields(CREATE, messages=DELETE), "missing_field", "messages"),
    (with_fields(APPEND, final=DELETE), "missing_field", "final"),
    (with_fields(APPEND, data=None), "missing_field", "data"),
    ({"type": "response.cancel"}, "missing_field", "response_id"),
    ({"type": "input.delete"}, "missing_field", "item_id"),
    ({"response_id": "r"}, "missing_field", "type"),
    # wrong type
    ({"type": 5}, "invalid_field", "type"),
    (with_fields(CREATE, max_tokens=True), "invalid_field", "max_tokens"),
    (with_fields(CREATE, max_tokens=10.0), "invalid_field", "max_tokens"),
    (with_fields(CREATE, seed="7"), "invalid_field", "seed"),
    (with_fields(CREATE, priority=1.5), "invalid_field", "priority"),
    (with_fields(CREATE, top_k=False), "invalid_field", "top_k"),
    (with_fields(CREATE, temperature="0.5"), "invalid_field", "temperature"),
    (with_fields(CREATE, temperature=True), "invalid_field", "temperature"),
    (with_fields(CREATE, ignore_eos=1), "invalid_field", "ignore_eos"),
    (with_fields(CREATE, speculative="yes"), "invalid_field", "speculative"),
    (with_fields(CREATE, stop=5), "invalid_field", "stop"),
    (with_fields(CREATE, stop=["a", 5]), "invalid_field", "stop[1]"),
    (with_fields(CREATE, messages={"role": "user"}), "invalid_field", "messages"),
    (with_fields(CREATE, metadata=["a"]), "invalid_field", "metadata"),
    (with_fields(CREATE, metadata={"a": 1}), "invalid_field", "metadata.a"),
    (with_fields(APPEND, final="true"), "invalid_field", "final"),
    (with_fields(APPEND, item_id=7), "invalid_field", "item_id"),
    ({"type": "session.update", "defaults": {"max_tokens": "8"}}, "invalid_field",
     "defaults.max_tokens"),
    ({"type": "session.update", "defaults": 3}, "invalid_field", "defaults"),
    # out of range or malformed
    (with_fields(CREATE, max_tokens=0), "invalid_field", "max_tokens"),
    (with_fields(CREATE, max_tokens=2**31), "invalid_field", "max_tokens"),
    (with_fields(CREATE, temperature=-0.1), "invalid_field", "temperature"),
    (with_fields(CREATE, top_p=0), "invalid_field", "top_p"),
    (with_fields(CREATE, top_p=1.01), "invalid_field", "top_p"),
    (with_fields(CREATE, top_k=-2), "invalid_field", "top_k"),
    (with_fields(CREATE, min_p=1.5), "invalid_field", "min_p"),
    (with_fields(CREATE, seed=-1), "invalid_field", "seed"),
    (with_fields(CREATE, logprobs=21), "invalid_field", "logprobs"),
    (with_fields(CREATE, priority=2**31), "invalid_field", "priority"),
    (with_fields(CREATE, stop=[""]), "invalid_field", "stop[0]"),
    (with_fields(CREATE, response_id="has space"), "invalid_field", "response_id"),
    (with_fields(CREATE, response_id=""), "invalid_field", "response_id"),
    (with_fields(CREATE, traceparent="00-abc"), "invalid_field", "traceparent"),
    (with_fields(CREATE, messages=[]), "invalid_field", "messages"),
    (with_fields(APPEND, modality="text"), "invalid_field", "modality"),
    (with_fields(APPEND, mime="png"), "invalid_field", "mime"),
    (with_fields(APPEND, content_hash="AB" * 32), "invalid_field", "content_hash"),
    (with_fields(APPEND, content_hash="ab" * 31), "invalid_field", "content_hash"),
    ({"type": "session.update", "output_format": "xml"}, "invalid_field", "output_format"),
    # unknown fields
    (with_fields(CREATE, temprature=0.5), "unknown_field", "temprature"),
    (with_fields(CREATE, options={}), "unknown_field", "options"),
    ({"type": "response.cancel", "response_id": "r", "reason": "x"}, "unknown_field", "reason"),
    ({"type": "session.update", "defaults": {"top_q": 1}}, "unknown_field", "defaults.top_q"),
    ({"type": "session.update", "defaults": {"messages": []}}, "unknown_field",
     "defaults.messages"),
    # unknown event type
    ({"type": "response.make"}, "unknown_event", "type"),
    ({"type": ""}, "unknown_event", "type"),
]


@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
@pytest.mark.parametrize("wire, code, field", CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_bad_field(wire, code, field, binary):
    error = error_for(wire, binary)
    assert (error.code, error.field) == (code, field)
    assert field in error.message
    if code != "unknown_event" and isinstance(wire.get("type"), str):
        assert error.event_type == wire["type"]


@pytest.mark.parametrize("text", ["1e400", "-1e400"])
def test_json_numbers_that_overflow_to_infinity_are_out_of_range(text):
    frame = ('{"type": "response.create", "messages": [{"role": "user", "content": "x"}], '
             '"temperature": %s}' % text)
    with pytest.raises(ProtocolError) as caught:
        decode_frame(frame, max_bytes=MAX)
    assert (caught.value.code, caught.value.field) == ("invalid_field", "temperature")
    with pytest.raises(ProtocolError) as caught:
        decode_frame(msgpack.packb(dict(CREATE, temperature=float("nan"))), max_bytes=MAX)
    assert (caught.value.code, caught.value.field) == ("invalid_field", "temperature")


def test_error_carries_the_ids_it_can_read():
    error = error_for(with_fields(CREATE, max_tokens=-1))
    assert (error.response_id, error.item_id) == ("r1", None)
    info = error_for(with_fields(APPEND, modality="smell")).to_info()
    assert (info.item_id, info.event_type, info.field) == ("img-1", "input.append", "modality")
    assert error_for(with_fields(APPEND, item_id="bad id!", final=1)).item_id is None


def test_binary_data_must_be_bin_in_msgpack_and_base64_in_json():
    assert error_for(with_fields(APPEND, data="AAE="), binary=True).field == "data"
    wire = with_fields(APPEND)
    wire["data"] = "not base64!"
    error = decode_error_json(wire)
    assert (error.code, error.field) == ("invalid_field", "data")
    wire["data"] = [1, 2]
    assert decode_error_json(wire).message == "data must be a base64 string, got an array"


def decode_error_json(wire):
    with pytest.raises(ProtocolError) as caught:
        decode_frame(json.dumps(wire), max_bytes=MAX)
    return caught.value


def test_json_media_is_base64():
    wire = dict(APPEND, data=base64.b64encode(bytes(range(256))).decode())
    assert decode_frame(json.dumps(wire), max_bytes=MAX).data == bytes(range(256))


def test_messages_field_error_names_the_full_path():
    wire = with_fields(CREATE, messages=[
        {"role": "system", "content": "x"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "item"}]}])
    error = error_for(wire)
    assert (error.code, error.field) == ("missing_field", "messages[1].content[1].item_id")


LIMITS = ProtocolLimits(max_messages=2, max_stop=1, max_stop_chars=3, max_id_chars=4,
                        max_text_chars=5, max_metadata_keys=1, max_metadata_value_chars=2,
                        max_mime_chars=10)


@pytest.mark.parametrize("wire, field", [
    (with_fields(CREATE, response_id="r1", messages=[{"role": "user", "content": "x"}] * 3),
     "messages"),
    (with_fields(CREATE, stop=["a", "b"]), "stop"),
    (with_fields(CREATE, stop="abcd"), "stop[0]"),
    (with_fields(CREATE, response_id="abcde"), "response_id"),
    (with_fields(CREATE, messages=[{"role": "user", "content": "abcdef"}]), "messages[0].content"),
    (with_fields(CREATE, metadata={"a": "1", "b": "2"}), "metadata"),
    (with_fields(CREATE, metadata={"a": "123"}), "metadata.a"),
    ({"type": "session.update", "instructions": "abcdef"}, "instructions"),
    (with_fields(APPEND, item_id="i", mime="image/x-too-long"), "mime"),
])
def test_limits(wire, field):
    error = error_for(wire, limits=LIMITS)
    assert (error.code, error.field) == ("limit_exceeded", field)
