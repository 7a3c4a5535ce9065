"""Numpy arrays and tuples inside a prompt, made to survive msgpack between client and engine.

A chat prompt may carry decoded media in its parts (an image uint8 [H, W, 3], a video's frames,
audio as a (float32 samples [S], sample_rate) tuple). msgpack knows neither arrays nor tuples:
`pack_prompt_arrays` moves each array's bytes into the request's byte buffers (so that large ones
cross through shared memory) and leaves a reference with its dtype and shape; tuples are marked.
`unpack_prompt_arrays` undoes both. Imports no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ARRAY_KEY = "__ndarray__"  # {ARRAY_KEY: buffer key, "dtype": "<f4", "shape": [...]}
TUPLE_KEY = "__tuple__"  # {TUPLE_KEY: [items]}


def pack_prompt_arrays(prompt: Any, buffers: dict[str, Any]) -> Any:
    """A msgpack-safe copy of `prompt`; each array's bytes go into `buffers` under a new key.

    Only dict prompts (chat) are walked: text and token-id prompts are returned as they are.
    """
    if not isinstance(prompt, dict):
        return prompt
    return _pack(prompt, buffers)


def unpack_prompt_arrays(prompt: Any, buffers: dict[str, Any]) -> Any:
    """The prompt with arrays and tuples restored; the buffers it used are removed from `buffers`.

    Arrays come back writable (copied out of the message). A reference to a missing buffer or a
    bad dtype or shape raises ValueError.
    """
    if not isinstance(prompt, dict):
        return prompt
    return _unpack(prompt, buffers)


def _pack(value: Any, buffers: dict[str, Any]) -> Any:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        key = f"{ARRAY_KEY}{len(buffers)}"
        while key in buffers:
            key += "_"
        buffers[key] = array.reshape(-1).view(np.uint8)
        return {ARRAY_KEY: key, "dtype": array.dtype.str, "shape": list(array.shape)}
    if isinstance(value, dict):
        return {key: _pack(item, buffers) for key, item in value.items()}
    if isinstance(value, list):
        return [_pack(item, buffers) for item in value]
    if isinstance(value, tuple):
        return {TUPLE_KEY: [_pack(item, buffers) for item in value]}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unpack(value: Any, buffers: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        if ARRAY_KEY in value:
            return _array(value, buffers)
        if TUPLE_KEY in value and len(value) == 1:
            return tuple(_unpack(item, buffers) for item in value[TUPLE_KEY])
        return {key: _unpack(item, buffers) for key, item in value.items()}
    if isinstance(value, list):
        return [_unpack(item, buffers) for item in value]
    return value


def _array(ref: dict[str, Any], buffers: dict[str, Any]) -> np.ndarray:
    key = ref[ARRAY_KEY]
    if key not in buffers:
        raise ValueError(f"the prompt refers to a missing array buffer {key!r}")
    data = buffers.pop(key)
    try:
        dtype = np.dtype(ref["dtype"])
        return np.frombuffer(data, dtype=dtype).reshape(ref["shape"]).copy()
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"bad array buffer {key!r}: {exc}") from None
