"""Triton kernel that writes one step's keys and values into the paged KV cache."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def store_kv_kernel(
    k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr,
    stride_k_t, stride_k_h, stride_v_t, stride_v_h,
    HEAD_DIM: tl.constexpr, ROW_SIZE: tl.constexpr, BLOCK: tl.constexpr,
):
    # One program per token: its Hkv * D values go to one cache row of ROW_SIZE contiguous elements.
    token = tl.program_id(0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = (offs < ROW_SIZE) & (slot >= 0)
    head, dim = offs // HEAD_DIM, offs % HEAD_DIM
    token64 = token.to(tl.int64)
    key = tl.load(k_ptr + token64 * stride_k_t + head * stride_k_h + dim, mask=mask)
    value = tl.load(v_ptr + token64 * stride_v_t + head * stride_v_h + dim, mask=mask)
    tl.store(k_cache_ptr + slot * ROW_SIZE + offs, key, mask=mask)
    tl.store(v_cache_ptr + slot * ROW_SIZE + offs, value, mask=mask)


def store_kv(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Writes k[t], v[t] ([T, Hkv, D], last dim contiguous) to cache slot slot_mapping[t] (-1: skip).

    k_cache/v_cache: [num_blocks, block_size, Hkv, D], contiguous, of k's dtype.
    """
    num_tokens, num_kv_heads, head_dim = k.shape
    if v.shape != k.shape or k_cache.shape[2:] != k.shape[1:] or v_cache.shape != k_cache.shape:
        raise ValueError(f"shape mismatch: k {tuple(k.shape)} v {tuple(v.shape)} "
                         f"k_cache {tuple(k_cache.shape)} v_cache {tuple(v_cache.shape)}")
    if not (k.dtype == v.dtype == k_cache.dtype == v_cache.dtype):
        raise ValueError(f"dtype mismatch: k {k.dtype} v {v.dtype} k_cache {k_cache.dtype} v_cache {v_cache.dtype}")
    if k.stride(-1) != 1 or v.stride(-1) != 1:
        raise ValueError("k and v need a contiguous last dimension")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache and v_cache must be contiguous")
    if slot_mapping.shape != (num_tokens,) or slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slot_mapping must be [{num_tokens}] int32/int64, got {tuple(slot_mapping.shape)} {slot_mapping.dtype}")
    if num_tokens == 0:
        return
    row_size = num_kv_heads * head_dim
    store_kv_kernel[(num_tokens,)](
        k, v, k_cache, v_cache, slot_mapping,
        k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        HEAD_DIM=head_dim, ROW_SIZE=row_size, BLOCK=triton.next_power_of_2(row_size),
        num_warps=4 if row_size >= 1024 else 1,
    )
