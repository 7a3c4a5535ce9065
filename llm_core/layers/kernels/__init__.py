"""Triton kernels for the dense layers: fused residual-add + RMSNorm, rotary embedding, SiLU-and-mul."""

from llm_core.layers.kernels.rms_norm import rms_norm, rms_norm_kernel
from llm_core.layers.kernels.rotary import rotary_embedding, rotary_embedding_kernel
from llm_core.layers.kernels.silu_and_mul import silu_and_mul, silu_and_mul_kernel

__all__ = ["rms_norm", "rms_norm_kernel", "rotary_embedding", "rotary_embedding_kernel",
           "silu_and_mul", "silu_and_mul_kernel"]
