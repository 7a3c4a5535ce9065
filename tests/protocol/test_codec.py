"""Frame-level decoding: malformed payloads, non-maps, size limit, and the two encodings."""

import json

import msgpack
import pytest

from protocol import InputAppend, ProtocolError, ResponseCancel, decode_frame, encode_event
from protocol.codec import decode_server_frame
from protocol.errors import CLOSE_MESSAGE_TOO_BIG

CANCEL = {"type": "response.cancel", "response_id": "r1"}


def error_of(data, max_bytes=1 << 20):
    with pytest.raises(ProtocolError) as caught:
        decode_frame(data, max_bytes=max_bytes)
    return caught.value


@pytest.mark.parametrize("data", [
    "", "{", '{"type": "response.cancel",}', "{'type': 'x'}", '{"a": 1} {"b": 2}',
    '{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}', '{"a": 1' + "0" * 5000 + "}",
    "[" * 100_000 + "]" * 100_000,
])
def test_malformed_json(data):
    error = error_of(data)
    assert error.code == "invalid_json" and error.close_code is None
    assert error.message.startswith("invalid JSON")


def test_json_error_says_where():
    assert "line 1 column 28" in error_of('{"type": "response.cancel",}').message


@pytest.mark.parametrize("data", [
    b"", b"\xc1", b"\x81\xa4type", msgpack.packb(CANCEL) + b"\x00", b"\x81\x01\x02",
    b"\xa2\xff\xfe", b"\xdd\xff\xff\xff\xff", b"\x91" * 5000 + b"\xc0",
])
def test_malformed_msgpack(data):
    error = error_of(data)
    assert error.code == "invalid_msgpack" and error.close_code is None


@pytest.mark.parametrize("data", [
    "[]", "1", '"response.cancel"', "null", "true",
    msgpack.packb([CANCEL]), msgpack.packb("x"), msgpack.packb(None), msgpack.packb(b"\x00"),
    msgpack.packb(msgpack.ExtType(5, b"x")),
])
def test_frame_that_is_not_a_map(data):
    assert error_of(data).code == "invalid_event"


def test_binary_map_keys_are_unknown_fields():
    error = error_of(msgpack.packb({"type": "response.cancel", "response_id": "r", b"x": 1},
                                   use_bin_type=True))
    assert error.code == "unknown_field"


def test_extension_values_are_the_wrong_type():
    frame = msgpack.packb({"type": "response.cancel", "response_id": msgpack.ExtType(1, b"r")})
    error = error_of(frame)
    assert (error.code, error.field) == ("invalid_field", "response_id")


def test_too_big_closes_with_1009():
    frame = msgpack.packb(CANCEL)
    assert decode_frame(frame, max_bytes=len(frame)) == ResponseCancel("r1")
    error = error_of(frame, max_bytes=len(frame) - 1)
    assert (error.code, error.close_code) == ("message_too_large", CLOSE_MESSAGE_TOO_BIG)


def test_text_size_counts_utf8_bytes():
    text = json.dumps({"type": "response.cancel", "response_id": "r1", "x": "é" * 10},
                      ensure_ascii=False)
    size = len(text.encode())
    assert size > len(text)
    assert error_of(text, max_bytes=size - 1).code == "message_too_large"
    assert error_of(text, max_bytes=size).code == "unknown_field"  # under the limit: parsed


def test_size_is_checked_before_parsing():
    assert error_of("{" * 100, max_bytes=10).code == "message_too_large"


def test_bytes_like_frames_decode():
    frame = msgpack.packb(CANCEL)
    assert decode_frame(bytearray(frame), max_bytes=100) == ResponseCancel("r1")
    assert decode_frame(memoryview(frame), max_bytes=100) == ResponseCancel("r1")


def test_json_encoding_puts_media_in_base64():
    event = InputAppend("a", "audio", "audio/wav", b"\x00\xffhello", final=True)
    wire = json.loads(encode_event(event, False))
    assert wire["data"] == "AP9oZWxsbw=="
    assert msgpack.unpackb(encode_event(event, True))["data"] == b"\x00\xffhello"


def test_json_media_with_whitespace_or_url_alphabet_is_rejected():
    for data in ["AP9o ZWxsbw==", "AP9oZWxsbw", "_-9oZWxsbw=="]:
        frame = json.dumps({"type": "input.append", "item_id": "a", "modality": "audio",
                            "mime": "audio/wav", "data": data, "final": True})
        assert error_of(frame).field == "data"


def test_server_frames_decode_with_an_optional_limit():
    frame = encode_event(ResponseCancel("r"), True)  # any map with a known type would do
    with pytest.raises(ProtocolError) as caught:
        decode_server_frame(frame, max_bytes=1)
    assert caught.value.code == "message_too_large"
    with pytest.raises(ProtocolError) as caught:
        decode_server_frame(b"\xc1")
    assert caught.value.code == "invalid_msgpack"
