"""Numpy media inside chat prompts survive the engine protocol (msgpack, shared memory above its
threshold): same dtype, shape and values, tuples stay tuples, arrays come back writable."""

from __future__ import annotations

import numpy as np
import pytest

from llm_core.engine_protocol import AddRequest, EngineRequest, decode_message, encode_message
from llm_core.prompt_arrays import pack_prompt_arrays, unpack_prompt_arrays


def media_prompt() -> dict:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    frames = [rng.integers(0, 256, (4, 4, 3), dtype=np.uint8) for _ in range(3)]
    audio = (rng.standard_normal(1000).astype(np.float32), 16000)
    return {"messages": [{"role": "user", "content": [
        {"type": "image", "image": image}, {"type": "video", "video": frames},
        {"type": "audio", "audio": audio}, {"type": "text", "text": "what?"}]}]}


def assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b) and b.flags.writeable
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("shm_threshold", [1 << 30, 64])  # all inline; all but tiny ones through shm
def test_media_prompt_round_trips_through_the_engine_protocol(shm_threshold):
    prompt = media_prompt()
    request = EngineRequest("r1", prompt, buffers={"raw": b"kept"})
    payload, shm_names = encode_message(AddRequest(request), shm_threshold=shm_threshold)
    assert bool(shm_names) == (shm_threshold == 64)
    decoded = decode_message(payload).request
    assert_same(prompt, decoded.prompt)
    assert dict(decoded.buffers) == {"raw": b"kept"}  # the arrays' buffers are taken out


def test_text_prompts_pass_untouched_and_bad_references_fail():
    assert pack_prompt_arrays("hello", {}) == "hello"
    assert pack_prompt_arrays([1, 2, 3], {}) == [1, 2, 3]
    with pytest.raises(ValueError, match="missing array buffer"):
        unpack_prompt_arrays({"x": {"__ndarray__": "__ndarray__9", "dtype": "|u1", "shape": [1]}}, {})
    with pytest.raises(ValueError, match="bad array buffer"):
        unpack_prompt_arrays({"x": {"__ndarray__": "k", "dtype": "|u1", "shape": [5]}}, {"k": b"ab"})
