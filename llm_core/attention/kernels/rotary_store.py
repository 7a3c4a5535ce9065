"""Rotary embedding of q and k fused with the KV-cache store, for decode steps: one launch after
the q/k/v projection instead of a rotary kernel and a store kernel.

Rounds as the unfused kernels do (llm_core/layers/kernels/rotary.py, store_kv.py): each rotated
half is computed in fp32 and rounded to the cache dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llm_core.layers.kernels.pdl import pdl_launch_args


@triton.jit
def _rotated(base, offs_h, offs_d, num_heads, cos, sin, HALF: tl.constexpr):
    # Rows [BLOCK_H, HALF_PAD] of heads at base (stride 2 * HALF): the rotated halves, rounded.
    mask = (offs_h < num_heads)[:, None] & (offs_d < HALF)[None, :]
    ptrs = base + offs_h[:, None] * (2 * HALF) + offs_d[None, :]
    x1 = tl.load(ptrs, mask=mask, other=0.0)
    x2 = tl.load(ptrs + HALF, mask=mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    return (x1f * cos[None, :] - x2f * sin[None, :]).to(x1.dtype), (x2f * cos[None, :] + x1f * sin[None, :]).to(x1.dtype), mask


@triton.jit
def rotary_store_kernel(
    qkv_ptr, q_out_ptr, positions_ptr, cos_sin_ptr, slot_mapping_ptr, k_cache_ptr, v_cache_ptr,
    stride_qkv, stride_q_out, num_heads, num_kv_heads,
    HALF: tl.constexpr, HALF_PAD: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_KV: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    # One program per token: q heads rotated to q_out [T, H, D]; k heads rotated and v heads
    # copied to the cache row of slot_mapping[token] (-1: not stored).
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    offs_d = tl.arange(0, HALF_PAD)
    d_ok = offs_d < HALF
    cos = tl.load(cos_sin_ptr + pos * (2 * HALF) + offs_d, mask=d_ok, other=0.0)
    sin = tl.load(cos_sin_ptr + pos * (2 * HALF) + HALF + offs_d, mask=d_ok, other=0.0)
    row = qkv_ptr + token * stride_qkv
    offs_h = tl.arange(0, BLOCK_H)
    q1, q2, q_mask = _rotated(row, offs_h, offs_d, num_heads, cos, sin, HALF)
    q_ptrs = q_out_ptr + token * stride_q_out + offs_h[:, None] * (2 * HALF) + offs_d[None, :]
    tl.store(q_ptrs, q1, mask=q_mask)
    tl.store(q_ptrs + HALF, q2, mask=q_mask)
    offs_kv = tl.arange(0, BLOCK_KV)
    k_row = row + num_heads * (2 * HALF)
    k1, k2, kv_mask = _rotated(k_row, offs_kv, offs_d, num_kv_heads, cos, sin, HALF)
    kv_mask = kv_mask & (slot >= 0)
    cache_row = slot * num_kv_heads * (2 * HALF) + offs_kv[:, None] * (2 * HALF) + offs_d[None, :]
    tl.store(k_cache_ptr + cache_row, k1, mask=kv_mask)
    tl.store(k_cache_ptr + cache_row + HALF, k2, mask=kv_mask)
    v_ptrs = k_row + num_kv_heads * (2 * HALF) + offs_kv[:, None] * (2 * HALF) + offs_d[None, :]
    tl.store(v_cache_ptr + cache_row, tl.load(v_ptrs, mask=kv_mask, other=0.0), mask=kv_mask)
    tl.store(v_cache_ptr + cache_row + HALF, tl.load(v_ptrs + HALF, mask=kv_mask, other=0.0), mask=kv_mask)


def rotary_store(qkv: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor, slot_mapping: torch.Tensor,
                 k_cache: torch.Tensor, v_cache: torch.Tensor, num_heads: int) -> torch.Tensor:
    """qkv [T, (H + 2 Hkv) * D] (q heads, k heads, v heads; rows contiguous) at positions [T]:
    returns the rotated q [T, H, D]; stores the rotated k and v of token t in cache slot
    slot_mapping[t] (-1: skipped). cos_sin: fp32 [max_position, D] (cos then sin halves);
    k_cache/v_cache: [num_blocks, block_size, Hkv, D], contiguous, of qkv's dtype."""
    num_tokens = qkv.shape[0]
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    if (qkv.dim() != 2 or qkv.stride(1) != 1 or qkv.shape[1] != (num_heads + 2 * num_kv_heads) * head_dim
            or head_dim % 2 or cos_sin.shape[1] != head_dim or cos_sin.dtype != torch.float32
            or not cos_sin.is_contiguous()):
        raise ValueError(f"rotary_store: qkv {tuple(qkv.shape)} does not hold {num_heads} q heads and {num_kv_heads} "
                         f"k/v heads of {head_dim}, or cos_sin {tuple(cos_sin.shape)} {cos_sin.dtype} is not an fp32 "
                         f"table of that head size")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and v_cache.shape == k_cache.shape
            and k_cache.dtype == v_cache.dtype == qkv.dtype):
        raise ValueError(f"rotary_store: caches {tuple(k_cache.shape)} {k_cache.dtype} / {tuple(v_cache.shape)} "
                         f"{v_cache.dtype} must be contiguous, alike, of qkv's dtype {qkv.dtype}")
    if positions.shape != (num_tokens,) or slot_mapping.shape != (num_tokens,):
        raise ValueError(f"rotary_store: positions {tuple(positions.shape)} and slot_mapping "
                         f"{tuple(slot_mapping.shape)} must be [{num_tokens}]")
    q = torch.empty(num_tokens, num_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    if num_tokens:
        half = head_dim // 2
        use_pdl, launch = pdl_launch_args(qkv.device)
        rotary_store_kernel[(num_tokens,)](
            qkv, q, positions, cos_sin, slot_mapping, k_cache, v_cache, qkv.stride(0), q.stride(0),
            num_heads, num_kv_heads, HALF=half, HALF_PAD=triton.next_power_of_2(half),
            BLOCK_H=triton.next_power_of_2(num_heads), BLOCK_KV=triton.next_power_of_2(num_kv_heads),
            USE_PDL=use_pdl, num_warps=4, **launch)
    return q
