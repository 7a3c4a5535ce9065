"""Split-KV decode attention over the paged KV cache, for batches where every sequence has one query row.

One program per (sequence, kv head, split): the GROUP query heads sharing a kv head attend to
the split's slice of keys, so each K/V tile is read once per group. With one split the program
writes the normalized output; with several it writes its partial max m, sum l and unnormalized
acc (log2 domain, fp32); the split that finishes a (sequence, kv head) last rescales the splits
by exp2(m - max m) and divides (llm_core/layers/kernels/counters.py; decode_reduce_kernel does it
past SELF_REDUCE_MAX_SPLITS splits). Splits let a few long sequences fill the GPU.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from llm_core.attention.kernels.prefill_attention import LOG2E, M_INIT, attend_paged_tiles, check_paged_inputs
from llm_core.attention.metadata import AttentionMetadata
from llm_core.layers.kernels.counters import COUNTER_SLOTS, arrival_counters
from llm_core.layers.kernels.pdl import pdl_launch_args

# Tuned on an H100 in bf16 (bench/bench_attention.py, CUDA graphs): one sequence of 32k keys
# reads K/V at 2.2 TB/s (D=64, 64 splits) and 2.5 TB/s (D=128, 32 splits), 0.1-0.2 TB/s unsplit.
MAX_SPLITS = 128
MIN_KEYS_PER_SPLIT = 256
# Up to this many splits the last one combines them (no reduce kernel). H100, bench_attention, CUDA
# graphs: 4-33 splits 0-13% faster than the reduce kernel; 66 splits (D=64, one sequence of 32k) 25% slower.
SELF_REDUCE_MAX_SPLITS = 32


# Arguments that vary per eager step are not specialized: one compile, not one per value class.
@triton.jit(do_not_specialize=["num_splits", "stride_bt"])
def decode_attention_kernel(
    out_ptr, partial_m_ptr, partial_l_ptr, partial_acc_ptr, counters_ptr, q_ptr, k_cache_ptr, v_cache_ptr,
    block_tables_ptr, seq_lens_ptr, query_start_loc_ptr, qk_scale, sliding_window, num_splits,
    stride_q_t, stride_q_h, stride_o_t, stride_o_h, stride_bt,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr,
    IS_SPLIT: tl.constexpr, USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_PDL: tl.constexpr,
    SELF_REDUCE: tl.constexpr, SPLITS_PAD: tl.constexpr,
):
    # num_splits is a run-time value (not constexpr) so that a growing context never recompiles.
    # Each sequence cuts its own keys into num_splits whole tiles' worth, so the launch depends
    # on no host value of the step's lengths (a CUDA graph replays it for any lengths); splits
    # past a short sequence's end are empty and write m = M_INIT, l = 0.
    if USE_PDL:  # programmatic dependent launch (llm_core/layers/kernels/pdl.py)
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    token = tl.load(query_start_loc_ptr + seq).to(tl.int64)
    offs_h = tl.arange(0, BLOCK_H)
    head = kv_head * GROUP + offs_h  # [BH]
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    io_mask = (offs_h < GROUP)[:, None] & (offs_d < HEAD_DIM)[None, :]
    q = tl.load(q_ptr + token * stride_q_t + head[:, None] * stride_q_h + offs_d[None, :],
                mask=io_mask, other=0.0)  # [BH, Dp]
    q_pos = tl.zeros([BLOCK_H], dtype=tl.int32) + seq_len - 1

    split_size = tl.cdiv(tl.cdiv(seq_len, num_splits), TILE_N) * TILE_N
    kv_begin = split * split_size
    kv_end = tl.minimum(kv_begin + split_size, seq_len)
    if USE_WINDOW:
        kv_begin = tl.maximum(kv_begin, tl.maximum(seq_len - sliding_window, 0) // TILE_N * TILE_N)
    acc = tl.zeros([BLOCK_H, HEAD_DIM_PAD], dtype=tl.float32)
    m_i = tl.full([BLOCK_H], M_INIT, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    # Whole tiles of the split need no mask (the row sees every key); a window needs one everywhere.
    if USE_WINDOW:
        kv_split = kv_begin
    else:
        kv_split = kv_begin + tl.maximum(kv_end - kv_begin, 0) // TILE_N * TILE_N
    block_table_ptr = block_tables_ptr + seq * stride_bt
    acc, m_i, l_i = attend_paged_tiles(
        acc, m_i, l_i, q, q_pos, k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, kv_begin, kv_split,
        qk_scale, sliding_window, HEAD_DIM, HEAD_DIM_PAD, NUM_KV_HEADS, BLOCK_SIZE, TILE_N, USE_WINDOW,
        False, DOT_PRECISION)
    acc, m_i, l_i = attend_paged_tiles(
        acc, m_i, l_i, q, q_pos, k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, kv_split, kv_end,
        qk_scale, sliding_window, HEAD_DIM, HEAD_DIM_PAD, NUM_KV_HEADS, BLOCK_SIZE, TILE_N, USE_WINDOW,
        True, DOT_PRECISION)

    if not IS_SPLIT:
        acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        tl.store(out_ptr + token * stride_o_t + head[:, None] * stride_o_h + offs_d[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=io_mask)
    else:
        # partials: m, l [S, H, NUM_SPLITS]; acc [S, H, NUM_SPLITS, HEAD_DIM]
        part = (seq * (NUM_KV_HEADS * GROUP) + head).to(tl.int64) * num_splits + split  # [BH]
        tl.store(partial_m_ptr + part, m_i, mask=offs_h < GROUP)
        tl.store(partial_l_ptr + part, l_i, mask=offs_h < GROUP)
        tl.store(partial_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=io_mask)
        if SELF_REDUCE:
            # The split that finishes this (sequence, kv head) last combines the splits of its
            # GROUP heads (counters.py), instead of a reduce kernel.
            slot = seq * NUM_KV_HEADS + kv_head
            done = tl.atomic_add(counters_ptr + slot, 1, sem="acq_rel")
            if done == num_splits - 1:
                for g in tl.static_range(GROUP):
                    _combine_splits(out_ptr, partial_m_ptr, partial_l_ptr, partial_acc_ptr, token, num_splits,
                                    (seq * (NUM_KV_HEADS * GROUP) + kv_head * GROUP + g).to(tl.int64),
                                    kv_head * GROUP + g, stride_o_t, stride_o_h, HEAD_DIM, HEAD_DIM_PAD, SPLITS_PAD)
                tl.atomic_xchg(counters_ptr + slot, 0)


@triton.jit
def _combine_splits(out_ptr, partial_m_ptr, partial_l_ptr, partial_acc_ptr, token, num_splits, seq_head, head,
                    stride_o_t, stride_o_h, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                    SPLITS_PAD: tl.constexpr):
    # One head's output row from its splits' partials (seq_head = seq * num_heads + head).
    part = seq_head * num_splits + tl.arange(0, SPLITS_PAD)  # [SP]
    split_ok = tl.arange(0, SPLITS_PAD) < num_splits
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_ok = offs_d < HEAD_DIM
    m = tl.load(partial_m_ptr + part, mask=split_ok, other=float("-inf"), cache_modifier=".cg")
    l = tl.load(partial_l_ptr + part, mask=split_ok, other=0.0, cache_modifier=".cg")
    acc = tl.load(partial_acc_ptr + part[:, None] * HEAD_DIM + offs_d[None, :],
                  mask=split_ok[:, None] & d_ok[None, :], other=0.0, cache_modifier=".cg")  # [SP, Dp]
    weight = tl.exp2(m - tl.max(m, 0))  # empty splits have m = M_INIT: weight 0
    total = tl.sum(l * weight, 0)
    # A sequence with no keys at all (a padding row of a CUDA graph) gets zeros, not 0 / 0.
    result = tl.sum(acc * weight[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + token * stride_o_t + head * stride_o_h + offs_d, result.to(out_ptr.dtype.element_ty), mask=d_ok)


# Arguments that vary per eager step are not specialized: one compile, not one per value class.
@triton.jit(do_not_specialize=["num_splits"])
def decode_reduce_kernel(
    out_ptr, partial_m_ptr, partial_l_ptr, partial_acc_ptr, query_start_loc_ptr, num_splits, stride_o_t, stride_o_h,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, SPLITS_PAD: tl.constexpr,
    USE_PDL: tl.constexpr,
):
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    seq = tl.program_id(0)
    head = tl.program_id(1)
    token = tl.load(query_start_loc_ptr + seq).to(tl.int64)
    _combine_splits(out_ptr, partial_m_ptr, partial_l_ptr, partial_acc_ptr, token, num_splits,
                    (seq * NUM_HEADS + head).to(tl.int64), head, stride_o_t, stride_o_h, HEAD_DIM, HEAD_DIM_PAD,
                    SPLITS_PAD)


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    return torch.cuda.get_device_properties(device).multi_processor_count


def choose_num_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, head_dim: int,
                      device: torch.device) -> int:
    """Enough splits for 4 (D <= 64) or 2 (larger D) programs per SM, each of >= MIN_KEYS_PER_SPLIT keys."""
    programs_per_sm = 4 if head_dim <= 64 else 2
    wanted = programs_per_sm * _num_sms(device) // (num_seqs * num_kv_heads)
    return max(1, min(wanted, MAX_SPLITS, triton.cdiv(max_seq_len, MIN_KEYS_PER_SPLIT)))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                     scale: float, out: torch.Tensor | None = None, sliding_window: int | None = None,
                     num_splits: int | None = None, tile_n: int = 64, num_warps: int = 4,
                     num_stages: int = 3) -> torch.Tensor:
    """Attention of the single query row of each sequence (meta.is_decode_only) over its cached keys.

    q: [T, H, D] with T >= num_seqs; sequence i's row is query_start_loc[i]. Keys must already
    be stored. num_splits=None picks one from the device and meta.max_seq_len (host values);
    the launch reads no other host value of the lengths, so it may be captured in a CUDA graph
    (with meta.max_seq_len the longest length a replay will see). A sequence of length 0 gets
    a zero output row.
    """
    if not meta.is_decode_only:
        raise ValueError("decode_attention needs a batch with one query row per sequence")
    out = torch.empty_like(q) if out is None else out
    check_paged_inputs(q, k_cache, v_cache, out, meta)
    num_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    num_seqs, group = meta.num_seqs, num_heads // num_kv_heads
    if num_splits is None:
        num_splits = choose_num_splits(num_seqs, num_kv_heads, meta.max_seq_len, head_dim, q.device)
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    use_pdl, launch = pdl_launch_args(q.device)
    partial_m = partial_l = partial_acc = out  # unused placeholders when there is one split
    if num_splits > 1:
        partial_m = torch.empty(num_seqs, num_heads, num_splits, dtype=torch.float32, device=q.device)
        partial_l = torch.empty_like(partial_m)
        partial_acc = torch.empty(num_seqs, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
    # The last split of each (sequence, kv head) combines the splits itself, unless there are many
    # (its tail then outlasts a reduce kernel's parallel one) or more groups than counter slots.
    self_reduce = 1 < num_splits <= SELF_REDUCE_MAX_SPLITS and num_seqs * num_kv_heads < COUNTER_SLOTS
    counters = arrival_counters(q.device) if self_reduce else out
    decode_attention_kernel[(num_seqs, num_kv_heads, num_splits)](
        out, partial_m, partial_l, partial_acc, counters, q, k_cache, v_cache,
        meta.block_tables, meta.seq_lens, meta.query_start_loc, scale * LOG2E, sliding_window or 0, num_splits,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), meta.block_tables.stride(0),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, NUM_KV_HEADS=num_kv_heads,
        GROUP=group, BLOCK_H=max(16, triton.next_power_of_2(group)), BLOCK_SIZE=block_size, TILE_N=tile_n,
        IS_SPLIT=num_splits > 1, USE_WINDOW=sliding_window is not None,
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=num_warps, num_stages=num_stages,
        USE_PDL=use_pdl, SELF_REDUCE=self_reduce, SPLITS_PAD=triton.next_power_of_2(num_splits), **launch,
    )
    if num_splits > 1 and not self_reduce:
        decode_reduce_kernel[(num_seqs, num_heads)](
            out, partial_m, partial_l, partial_acc, meta.query_start_loc, num_splits, out.stride(0), out.stride(1),
            NUM_HEADS=num_heads, HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad,
            SPLITS_PAD=triton.next_power_of_2(num_splits), num_warps=4, USE_PDL=use_pdl, **launch,
        )
    return out
