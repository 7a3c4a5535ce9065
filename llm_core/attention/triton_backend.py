"""AttentionBackend on Triton kernels: split-KV decode for decode-only steps, the unified kernel otherwise."""

from __future__ import annotations

import torch

from llm_core.attention.backend import AttentionBackend
from llm_core.attention.kernels import decode_attention, prefill_attention, store_kv
from llm_core.attention.metadata import AttentionMetadata


class TritonAttentionBackend(AttentionBackend):
    """AttentionBackend for CUDA tensors (or CPU tensors under TRITON_INTERPRET=1).

    Launches only: grid sizes come from meta's host values, so a step never waits on the GPU.
    Rows of the output past query_start_loc[-1] (padding tokens) are zeros.
    """

    name = "triton"

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, meta: AttentionMetadata, scale: float,
                sliding_window: int | None = None) -> torch.Tensor:
        store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
        q = q if q.stride(-1) == 1 else q.contiguous()
        out = torch.empty_like(q, memory_format=torch.contiguous_format)  # [T, H, D]
        num_real_tokens = meta.query_start_loc_cpu[-1]
        if num_real_tokens < q.shape[0]:
            out[num_real_tokens:].zero_()
        if meta.is_decode_only:
            return decode_attention(q, k_cache, v_cache, meta, scale, out=out, sliding_window=sliding_window)
        return prefill_attention(q, k_cache, v_cache, meta, scale, out=out, sliding_window=sliding_window)
