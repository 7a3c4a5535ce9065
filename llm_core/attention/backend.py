"""The attention backend contract and the factory that picks one for a device.

A backend is stateless apart from its settings: every layer of a model shares one instance,
and each call gets that layer's KV cache and the step's AttentionMetadata.
"""

from __future__ import annotations

import abc
import importlib.util
from typing import ClassVar

import torch

from llm_core.attention.metadata import AttentionMetadata

BACKEND_NAMES = ("torch", "triton", "auto")


class AttentionBackend(abc.ABC):
    """Paged causal attention over a flattened batch of prefill, chunked-prefill and decode rows.

    forward(q [T, H, D], k [T, Hkv, D], v [T, Hkv, D], k_cache, v_cache, meta, scale) first
    stores this step's k/v at meta.slot_mapping (slot -1: not stored), then returns
    out [T, H, D] (q's dtype): each query row attends to its own sequence's cached keys at
    positions 0..its own position (see metadata.py), or, with sliding_window=W, only to the
    last W of them (positions > own position - W, as Mistral's and transformers' masks do).
    k_cache and v_cache are [num_blocks, block_size, Hkv, D], contiguous, of q's dtype.
    H is a multiple of Hkv; query head h reads kv head h // (H // Hkv).
    This writes only the cache slots named in slot_mapping and never reads block 0.
    """

    name: ClassVar[str]

    @abc.abstractmethod
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, meta: AttentionMetadata, scale: float,
                sliding_window: int | None = None) -> torch.Tensor:
        ...


def is_triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def get_attention_backend(name: str, device: torch.device | str) -> AttentionBackend:
    """Returns the backend called `name` ("torch", "triton" or "auto") for `device`.

    "auto" is the Triton backend on CUDA (when triton is installed) and the torch backend
    anywhere else. The Triton backend is imported only when chosen, so CPU-only installs
    without triton never import it.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    device = torch.device(device)
    if name == "auto":
        name = "triton" if device.type == "cuda" and is_triton_available() else "torch"
    if name == "torch":
        from llm_core.attention.torch_backend import TorchAttentionBackend
        return TorchAttentionBackend()
    if not is_triton_available():
        raise ValueError("attention backend 'triton' needs the triton package, which is not installed")
    from llm_core.attention.triton_backend import TritonAttentionBackend
    return TritonAttentionBackend()
