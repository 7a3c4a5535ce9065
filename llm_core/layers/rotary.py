"""Rotary position embeddings with the scaling kinds that HF configs use.

The cos/sin table covers max_position positions and is built once in fp32. Dynamic NTK
scaling is applied for the whole table at max_position (the way vLLM does it), which equals
transformers' per-call recomputation for sequences within original_max_position_embeddings.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "llama3")


def rope_inv_freq(head_dim: int, theta: float, scaling: dict[str, Any] | None, max_position: int) -> torch.Tensor:
    inv_freq = _base_inv_freq(head_dim, theta)
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope scaling type {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    if rope_type == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    elif rope_type == "dynamic":
        original = int(scaling.get("original_max_position_embeddings") or max_position)
        if max_position > original:
            factor = float(scaling["factor"])
            base = theta * ((factor * max_position / original) - (factor - 1)) ** (head_dim / (head_dim - 2))
            inv_freq = _base_inv_freq(head_dim, base)
    elif rope_type == "llama3":
        inv_freq = _llama3_inv_freq(inv_freq, scaling)
    return inv_freq


def _base_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    # fp32 throughout, as transformers computes it, so the tables agree bit for bit
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    factor = float(scaling["factor"])
    low_freq_factor = float(scaling["low_freq_factor"])
    high_freq_factor = float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    low_freq_wavelen = original / low_freq_factor
    high_freq_wavelen = original / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Applies rotate-half (GPT-NeoX layout, as HF Llama checkpoints use) rotary embeddings."""

    def __init__(self, head_dim: int, max_position: int, theta: float, scaling: dict[str, Any] | None,
                 device: torch.device | str | None = None, use_triton: bool = False) -> None:
        super().__init__()
        self.head_dim, self.max_position, self.theta, self.scaling = head_dim, max_position, theta, scaling
        self.use_triton = use_triton  # rotate in place with layers/kernels/rotary.py
        self.register_buffer("cos_sin", self._table().to(device), persistent=False)

    def _table(self) -> torch.Tensor:
        inv_freq = rope_inv_freq(self.head_dim, self.theta, self.scaling, self.max_position)
        t = torch.arange(self.max_position, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)  # [max_position, head_dim / 2]
        return torch.cat([freqs.cos(), freqs.sin()], dim=-1)  # [max_position, head_dim]

    def rebuild(self, device: torch.device | str) -> None:
        """Recompute the table on `device` (after the module was created on the meta device)."""
        self.cos_sin = self._table().to(device)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # positions: [T]; q: [T, H, D]; k: [T, Hkv, D]
        if self.use_triton:
            from llm_core.layers.kernels.rotary import rotary_embedding
            return rotary_embedding(positions, q, k, self.cos_sin)
        cos, sin = self.cos_sin.index_select(0, positions).unsqueeze(1).chunk(2, dim=-1)  # [T, 1, D/2] each
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)
