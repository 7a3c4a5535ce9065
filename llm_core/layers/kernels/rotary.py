"""Triton rotary embedding (rotate-half layout), applied to q and k in place in one launch."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(x_ptr, token, stride_t, stride_h, num_heads, cos, sin, offs_h, offs_d,
                  HALF: tl.constexpr):
    # cos, sin: [HALF] fp32 of this token's position; x rows: [BLOCK_H, HALF] halves.
    mask = (offs_h < num_heads)[:, None] & (offs_d < HALF)[None, :]
    base = x_ptr + token * stride_t + offs_h[:, None] * stride_h + offs_d[None, :]
    x1 = tl.load(base, mask=mask, other=0.0)
    x2 = tl.load(base + HALF, mask=mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    tl.store(base, (x1f * cos[None, :] - x2f * sin[None, :]).to(x1.dtype), mask=mask)
    tl.store(base + HALF, (x2f * cos[None, :] + x1f * sin[None, :]).to(x1.dtype), mask=mask)


@triton.jit
def rotary_embedding_kernel(
    q_ptr, k_ptr, positions_ptr, cos_sin_ptr, stride_q_t, stride_q_h, stride_k_t, stride_k_h,
    num_heads, num_kv_heads, HALF: tl.constexpr, HALF_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_KV: tl.constexpr,
):
    # One program per token: every q head and every k head of it.
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    offs_d = tl.arange(0, HALF_PAD)
    d_ok = offs_d < HALF
    cos = tl.load(cos_sin_ptr + pos * (2 * HALF) + offs_d, mask=d_ok, other=0.0)
    sin = tl.load(cos_sin_ptr + pos * (2 * HALF) + HALF + offs_d, mask=d_ok, other=0.0)
    _rotate_heads(q_ptr, token, stride_q_t, stride_q_h, num_heads, cos, sin, tl.arange(0, BLOCK_H), offs_d, HALF)
    _rotate_heads(k_ptr, token, stride_k_t, stride_k_h, num_kv_heads, cos, sin, tl.arange(0, BLOCK_KV), offs_d, HALF)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates q [T, H, D] and k [T, Hkv, D] (views allowed; last dim contiguous) in place at
    positions [T] with the fp32 table cos_sin [max_position, D] (cos then sin halves); returns them."""
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if (k.shape[0] != num_tokens or k.shape[2] != head_dim or q.stride(-1) != 1 or k.stride(-1) != 1
            or head_dim % 2 or cos_sin.shape[1] != head_dim or cos_sin.dtype != torch.float32
            or not cos_sin.is_contiguous()):
        raise ValueError(f"rotary_embedding: q {tuple(q.shape)} k {tuple(k.shape)} cos_sin {tuple(cos_sin.shape)} "
                         f"{cos_sin.dtype} need matching head dims, contiguous last dims and an fp32 table")
    half = head_dim // 2
    if num_tokens:
        rotary_embedding_kernel[(num_tokens,)](
            q, k, positions, cos_sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1), num_heads, num_kv_heads,
            HALF=half, HALF_PAD=triton.next_power_of_2(half), BLOCK_H=triton.next_power_of_2(num_heads),
            BLOCK_KV=triton.next_power_of_2(num_kv_heads), num_warps=4)
    return q, k
