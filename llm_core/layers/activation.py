"""Activations of the gated MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(gate_up: torch.Tensor, use_triton: bool = False) -> torch.Tensor:
    """[..., 2 * I] (gate then up) -> [..., I] = silu(gate) * up; use_triton: the fused kernel on 2-D inputs."""
    if use_triton and gate_up.dim() == 2 and gate_up.stride(-1) == 1:
        from llm_core.layers.kernels.silu_and_mul import silu_and_mul as fused
        return fused(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
