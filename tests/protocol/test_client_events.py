import json

import msgpack
import pytest

from protocol import (GENERATION_DEFAULTS, GenerationOptions, InputAppend, ResponseCreate,
                      SessionUpdate, decode_frame, encode_event)
from protocol.client_events import CLIENT_EVENT_TYPES
from tests.protocol.samples import CLIENT_EVENTS, FULL_OPTIONS, MESSAGES

MAX = 1 << 24


def test_samples_cover_every_client_event():
    assert {type(e) for e in CLIENT_EVENTS} == set(CLIENT_EVENT_TYPES)


@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: e.type)
@pytest.mark.parametrize("binary", [True, False], ids=["msgpack", "json"])
def test_round_trip(event, binary):
    frame = encode_event(event, binary)
    assert isinstance(frame, bytes if binary else str)
    assert decode_frame(frame, max_bytes=MAX) == event


@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: e.type)
def test_msgpack_and_json_carry_the_same_map(event):
    from_msgpack = msgpack.unpackb(encode_event(event, True))
    from_json = json.loads(encode_event(event, False))
    if isinstance(event, InputAppend):
        assert isinstance(from_msgpack["data"], bytes) and isinstance(from_json["data"], str)
        from_msgpack.pop("data"), from_json.pop("data")
    assert from_msgpack == from_json
    assert from_json["type"] == event.type


def test_to_wire_leaves_unset_fields_out():
    assert SessionUpdate().to_wire() == {"type": "session.update"}
    wire = ResponseCreate(MESSAGES[:1]).to_wire()
    assert wire == {"type": "response.create",
                    "messages": [{"role": "system", "content": "Be brief."}]}


def test_options_sit_at_the_top_level_of_response_create():
    wire = ResponseCreate(MESSAGES[:1], FULL_OPTIONS).to_wire()
    assert wire["max_tokens"] == 64 and wire["stop"] == ["\n\n", "END"] and "options" not in wire


def test_a_single_stop_string_decodes_as_a_tuple():
    frame = json.dumps({"type": "response.create", "stop": "###",
                        "messages": [{"role": "user", "content": "x"}]})
    assert decode_frame(frame, max_bytes=MAX).options.stop == ("###",)


def test_integers_are_accepted_for_float_fields():
    frame = json.dumps({"type": "response.create", "temperature": 0, "top_p": 1,
                        "messages": [{"role": "user", "content": "x"}]})
    options = decode_frame(frame, max_bytes=MAX).options
    assert options.temperature == 0.0 and type(options.temperature) is float
    assert options.top_p == 1.0 and type(options.top_p) is float


def test_null_optional_fields_count_as_absent():
    frame = json.dumps({"type": "response.create", "seed": None, "response_id": None,
                        "messages": [{"role": "user", "content": "x"}]})
    event = decode_frame(frame, max_bytes=MAX)
    assert event.options.seed is None and event.response_id is None


def test_merged_lets_set_fields_win():
    session = GenerationOptions(max_tokens=10, temperature=0.2, stop=("a",))
    request = GenerationOptions(temperature=0.9, seed=7)
    merged = session.merged(request)
    assert (merged.max_tokens, merged.temperature, merged.seed, merged.stop) == (10, 0.9, 7, ("a",))
    assert session.temperature == 0.2  # merged() returns a new object


def test_resolved_fills_built_in_defaults():
    resolved = GenerationOptions(top_k=5).resolved()
    assert resolved.top_k == 5
    assert resolved.temperature == GENERATION_DEFAULTS.temperature == 1.0
    assert resolved.priority == 0 and resolved.stop == () and resolved.ignore_eos is False
    assert resolved.max_tokens is None and resolved.seed is None


def test_events_are_immutable():
    with pytest.raises(AttributeError):
        MESSAGES[0].role = "user"
    with pytest.raises(AttributeError):
        FULL_OPTIONS.max_tokens = 1
