"""The engine's msgpack messages: round trips, shared-memory buffers, and malformed input."""

from __future__ import annotations

import operator
from dataclasses import fields, replace
from multiprocessing import shared_memory

import msgpack
import numpy as np
import pytest

from llm_core.engine_protocol import (
    AbortRequests, AddRequest, AppendItem, DeleteItem, EngineError, EngineRequest, GetStats, ItemAppended,
    ProtocolError, Ready, Shutdown, Stats, StepOutputs, decode_message, encode_message, unlink_shared_buffers,
)
from llm_core.outputs import CompletionDelta
from llm_core.sampling_params import SamplingParams


def _round_trip(message, **kwargs):
    payload, shm_names = encode_message(message, **kwargs)
    assert isinstance(payload, bytes)
    return decode_message(payload), shm_names


def _segment_exists(name: str) -> bool:
    try:
        segment = shared_memory.SharedMemory(name=name)
    except FileNotFoundError:
        return False
    segment.close()  # attached only to look: the (3.11) tracker registration is undone by unlink below
    return True


def test_add_request_round_trips_every_field():
    params = SamplingParams(max_tokens=7, temperature=0.0, top_k=5, seed=3, stop=("END", "\n\n"),
                            stop_token_ids=[2], logprobs=2,
                            response_format={"type": "json_schema", "json_schema": {"schema": {"type": "object"}}})
    request = EngineRequest("r-1", {"messages": [{"role": "user", "content": "hi"}]}, params, priority=-3,
                            arrival_time=12.5, traceparent="00-abc-def-01", buffers={"img": b"\x00\x01\xff"})
    decoded, shm_names = _round_trip(AddRequest(request))
    assert decoded == AddRequest(request)
    assert decoded.request.sampling_params.response_format == params.response_format
    assert decoded.request.sampling_params.stop == ("END", "\n\n")
    assert shm_names == ()


def test_default_sampling_params_are_not_sent():
    payload, _ = encode_message(AddRequest(EngineRequest("r", [1, 2, 3])))
    assert msgpack.unpackb(payload)["params"] == {}
    assert decode_message(payload).request.sampling_params == SamplingParams()


@pytest.mark.parametrize("message", [
    AbortRequests(("a", "b")),
    GetStats(7),
    Shutdown(),
    Ready({"pid": 12, "max_model_len": 1024}),
    EngineError("r-2", "the prompt is empty", "invalid_request"),
    EngineError(None, "engine step failed", "fatal"),
    Stats(7, {"num_running": 1, "kv_usage": 0.25}),
    DeleteItem("sess/clip/0"),
    ItemAppended(3, "sess/clip/0", 12),
    ItemAppended(4, "sess/clip/0", error="item 'sess/clip/0': more than 64 frames", kind="invalid_request",
                 code="media_too_large"),
], ids=lambda m: type(m).__name__)
def test_control_messages_round_trip(message):
    assert _round_trip(message)[0] == message


def test_append_item_carries_frames_and_audio_as_buffers_through_shared_memory():
    frames = [np.random.default_rng(i).integers(0, 256, (24, 20, 3), dtype=np.uint8) for i in range(3)]
    payload, shm_names = encode_message(AppendItem(1, "clip", "video", frames, False), shm_threshold=1024)
    assert len(shm_names) == 3 and len(payload) < 1024  # each frame's bytes in its own segment
    decoded = decode_message(payload)
    assert (decoded.query_id, decoded.item_id, decoded.modality, decoded.final) == (1, "clip", "video", False)
    assert len(decoded.data) == 3 and all(np.array_equal(a, b) for a, b in zip(decoded.data, frames))
    assert not any(_segment_exists(name) for name in shm_names)
    samples = np.linspace(-1, 1, 50, dtype=np.float32)
    decoded, shm_names = _round_trip(AppendItem(2, "mic", "audio", (samples, 16000), True))
    assert shm_names == () and decoded.final
    assert isinstance(decoded.data, tuple) and decoded.data[1] == 16000 and np.array_equal(decoded.data[0], samples)
    assert _round_trip(AppendItem(3, "clip", "video", [], True))[0].data == []


def test_step_outputs_round_trip_with_logprobs_keyed_by_token_id():
    deltas = (
        CompletionDelta("a", (5, 6), "he", False, num_prompt_tokens=3, logprobs=({5: -0.1, 9: -2.0}, {6: -0.5})),
        CompletionDelta("b", (2,), "", True, "stop", stop_reason="END", num_prompt_tokens=4, num_cached_tokens=2),
        CompletionDelta("c", (1,), "x", True, "stop", stop_reason=1),
    )
    decoded, _ = _round_trip(StepOutputs(deltas))
    assert decoded == StepOutputs(deltas)
    assert list(decoded.deltas[0].logprobs[0]) == [5, 9]
    # Rebuilt without __init__: still the frozen dataclass with the same fields; replace() works.
    assert all(type(d) is CompletionDelta and vars(d) == vars(e) for d, e in zip(decoded.deltas, deltas))
    with pytest.raises(AttributeError):
        decoded.deltas[0].finished = True
    assert replace(decoded.deltas[2], text_delta="y") == replace(deltas[2], text_delta="y")


def test_step_outputs_carry_span_records_and_refuse_rows_of_another_shape():
    delta = CompletionDelta("t", (), "", True, "abort", trace={"traceparent": "00-x", "spans": [["decode", 1, 2, {}, None]]})
    decoded, _ = _round_trip(StepOutputs((delta,)))
    assert decoded.deltas[0] == delta
    row = list(operator.attrgetter(*(f.name for f in fields(CompletionDelta)))(delta))
    with pytest.raises(ProtocolError, match="fields"):
        decode_message(msgpack.packb({"type": "outputs", "deltas": [row[:-1]]}))


def test_small_buffers_stay_inline_whatever_their_type():
    request = EngineRequest("r", "x", buffers={"a": bytearray(b"ab"), "b": memoryview(b"cd")})
    decoded, shm_names = _round_trip(AddRequest(request), shm_threshold=16)
    assert shm_names == ()
    assert decoded.request.buffers == {"a": b"ab", "b": b"cd"}


def test_large_buffer_crosses_through_shared_memory_and_receiver_unlinks_it():
    big = bytes(range(256)) * 64  # 16 KiB
    payload, shm_names = encode_message(AddRequest(EngineRequest("r", "x", buffers={"img": big, "tiny": b"t"})),
                                        shm_threshold=1024)
    assert len(shm_names) == 1 and len(payload) < 1024  # only the name travels inline
    assert _segment_exists(shm_names[0])
    decoded = decode_message(payload)
    assert decoded.request.buffers == {"img": big, "tiny": b"t"}
    assert not _segment_exists(shm_names[0])


def test_unread_segments_can_be_unlinked_by_the_sender():
    _, shm_names = encode_message(AddRequest(EngineRequest("r", "x", buffers={"a": b"a" * 100})), shm_threshold=10)
    unlink_shared_buffers(shm_names + ("psm_no_such_segment",))
    assert not _segment_exists(shm_names[0])


def test_bad_sampling_params_name_the_request_and_release_segments():
    payload = msgpack.packb({"type": "add", "request_id": "r-9", "prompt": "x", "params": {"max_tokens": 0},
                             "priority": 0, "arrival_time": None, "traceparent": None, "buffers": {}})
    with pytest.raises(ProtocolError, match="max_tokens") as info:
        decode_message(payload)
    assert info.value.request_id == "r-9"

    _, shm_names = encode_message(AddRequest(EngineRequest("r", "x", buffers={"a": b"a" * 100})), shm_threshold=10)
    bad = msgpack.packb({"type": "add", "request_id": "r", "params": {"top_p": 5.0},
                         "buffers": {"a": {"shm": shm_names[0], "nbytes": 100}}})
    with pytest.raises(ProtocolError):
        decode_message(bad)
    assert not _segment_exists(shm_names[0])


@pytest.mark.parametrize("payload", [b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"type": "nope"}),
                                     msgpack.packb({"kind": "add"}), msgpack.packb({"type": "get_stats"})])
def test_malformed_messages_raise_protocol_error(payload):
    with pytest.raises(ProtocolError) as info:
        decode_message(payload)
    assert info.value.request_id is None
