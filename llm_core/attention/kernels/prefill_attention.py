"""Unified varlen attention over the paged KV cache (prefill, prefix hits, chunked prefill, decode rows).

Flash-attention style: each program owns BLOCK_Q query rows of one sequence times the GROUP
query heads that share one kv head (so a K/V tile is loaded once for the whole group), walks
the sequence's keys in tiles of TILE_N through its block table, and keeps an online softmax
(running max m, running sum l, fp32 accumulator). Scores live in the log2 domain:
qk_scale = scale * log2(e), so exp2 replaces exp.

Program ids on axis 0 are "q-block slots": sequence i owns slots starting at
query_start_loc[i] // BLOCK_Q + i, which leaves room for its ceil(q_len / BLOCK_Q) blocks
without a host-side table; slots past a sequence's last block exit at once. Hence the grid
is num_tokens // BLOCK_Q + num_seqs and needs no device read on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from llm_core.attention.metadata import AttentionMetadata

LOG2E = 1.4426950408889634
# Finite start of the running max: a row whose first tiles are fully masked keeps
# exp2(m_old - m_new) = 1 instead of NaN (inf - inf).
M_INIT = tl.constexpr(-1.0e30)


@triton.jit
def load_kv_tile(ptrs, n_ok, d_ok, MASK_N: tl.constexpr, MASK_D: tl.constexpr):
    """Loads a [N, Dp] K or V tile, masking only what may be out of range (zeros there)."""
    if MASK_N:
        tile = tl.load(ptrs, mask=n_ok[:, None] & d_ok[None, :], other=0.0)
    elif MASK_D:
        tile = tl.load(ptrs, mask=d_ok[None, :], other=0.0)
    else:
        tile = tl.load(ptrs)
    return tile


@triton.jit
def softmax_step(s, m_i, l_i):
    """One online-softmax step over scores s [M, N] (log2 domain; hidden keys -inf): (p [M, N], the
    rescale alpha [M] of what was summed before, the new max m [M], the new sum l [M])."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    return p, alpha, m_new, l_i * alpha + tl.sum(p, 1)


@triton.jit
def attend_paged_tiles(acc, m_i, l_i, q, q_pos, k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head,
                       kv_begin, kv_end, qk_scale, sliding_window,
                       HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
                       BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr, USE_WINDOW: tl.constexpr,
                       MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Online-softmax update of (acc [M, Dp], m_i [M], l_i [M]) with keys kv_begin..kv_end-1.

    q: [M, Dp]; q_pos: [M] absolute position of each row; key n is visible to a row when
    n <= q_pos (and n > q_pos - sliding_window with USE_WINDOW). Keys >= kv_end are not read.
    MASKED=False is the fast path for whole tiles that every row sees entirely: the caller
    guarantees kv_end - kv_begin is a multiple of TILE_N and no key is hidden from a row.
    """
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    d_ok = offs_d < HEAD_DIM
    for start in range(kv_begin, kv_end, TILE_N):
        offs_n = start + tl.arange(0, TILE_N)
        n_ok = offs_n < kv_end
        if MASKED:
            block_ids = tl.load(block_table_ptr + offs_n // BLOCK_SIZE, mask=n_ok, other=0)
        else:
            block_ids = tl.load(block_table_ptr + offs_n // BLOCK_SIZE)
        slots = block_ids.to(tl.int64) * BLOCK_SIZE + offs_n % BLOCK_SIZE  # [N] cache row of each key
        offs_kv = slots[:, None] * (NUM_KV_HEADS * HEAD_DIM) + kv_head * HEAD_DIM + offs_d[None, :]  # [N, Dp]
        k = load_kv_tile(k_cache_ptr + offs_kv, n_ok, d_ok, MASKED, HEAD_DIM != HEAD_DIM_PAD)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [M, N]
        if MASKED:
            visible = (offs_n[None, :] <= q_pos[:, None]) & n_ok[None, :]
            if USE_WINDOW:
                visible = visible & (offs_n[None, :] > q_pos[:, None] - sliding_window)
            s = tl.where(visible, s, float("-inf"))
        p, alpha, m_new, l_i = softmax_step(s, m_i, l_i)
        v = load_kv_tile(v_cache_ptr + offs_kv, n_ok, d_ok, MASKED, HEAD_DIM != HEAD_DIM_PAD)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def find_seq_idx(query_start_loc_ptr, q_block, num_seqs, BLOCK_Q: tl.constexpr):
    """The last sequence i whose first q-block slot (query_start_loc[i] // BLOCK_Q + i) is <= q_block."""
    lo: tl.int32 = 0
    hi: tl.int32 = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        first_slot = tl.load(query_start_loc_ptr + mid) // BLOCK_Q + mid
        if first_slot <= q_block:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


# Arguments that vary per eager step are not specialized: one compile, not one per value class.
@triton.jit(do_not_specialize=["num_seqs", "stride_bt"])
def prefill_attention_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, query_start_loc_ptr,
    qk_scale, sliding_window, num_seqs,
    stride_q_t, stride_q_h, stride_o_t, stride_o_h, stride_bt,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, NUM_KV_HEADS: tl.constexpr,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    TILE_N: tl.constexpr, USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    BLOCK_M: tl.constexpr = BLOCK_Q * GROUP_PAD
    q_block = tl.program_id(0)
    kv_head = tl.program_id(1)
    seq = find_seq_idx(query_start_loc_ptr, q_block, num_seqs, BLOCK_Q)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    q_block_local = q_block - (q_start // BLOCK_Q + seq)
    if q_block_local * BLOCK_Q >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    first_pos = seq_len - q_len  # position of the sequence's query row 0

    # Tile row m is query row m // GROUP_PAD of this block, head kv_head * GROUP + m % GROUP_PAD.
    offs_m = tl.arange(0, BLOCK_M)
    row = q_block_local * BLOCK_Q + offs_m // GROUP_PAD  # [M] row within the sequence
    head = kv_head * GROUP + offs_m % GROUP_PAD  # [M]
    row_ok = (row < q_len) & (offs_m % GROUP_PAD < GROUP)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    io_mask = row_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
    token = (q_start + row).to(tl.int64)
    q = tl.load(q_ptr + token[:, None] * stride_q_t + head[:, None] * stride_q_h + offs_d[None, :],
                mask=io_mask, other=0.0)  # [M, Dp]
    q_pos = first_pos + row

    # Keys [kv_begin, kv_split) are whole tiles that every row of the block sees (no mask);
    # [kv_split, kv_end) holds the causal diagonal (and, with a window, everything).
    block_first_pos = first_pos + q_block_local * BLOCK_Q
    kv_end = tl.minimum(seq_len, block_first_pos + BLOCK_Q)
    if USE_WINDOW:
        kv_begin = tl.maximum(block_first_pos - sliding_window + 1, 0) // TILE_N * TILE_N
        kv_split = kv_begin
    else:
        kv_begin = 0
        kv_split = (block_first_pos + 1) // TILE_N * TILE_N
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], M_INIT, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    block_table_ptr = block_tables_ptr + seq * stride_bt
    acc, m_i, l_i = attend_paged_tiles(
        acc, m_i, l_i, q, q_pos, k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, kv_begin, kv_split,
        qk_scale, sliding_window, HEAD_DIM, HEAD_DIM_PAD, NUM_KV_HEADS, BLOCK_SIZE, TILE_N, USE_WINDOW,
        False, DOT_PRECISION)
    acc, m_i, l_i = attend_paged_tiles(
        acc, m_i, l_i, q, q_pos, k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, kv_split, kv_end,
        qk_scale, sliding_window, HEAD_DIM, HEAD_DIM_PAD, NUM_KV_HEADS, BLOCK_SIZE, TILE_N, USE_WINDOW,
        True, DOT_PRECISION)
    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + token[:, None] * stride_o_t + head[:, None] * stride_o_h + offs_d[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=io_mask)


def check_paged_inputs(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, out: torch.Tensor,
                       meta: AttentionMetadata) -> None:
    """Raises ValueError unless shapes, dtypes and strides are what the attention kernels assume."""
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    if k_cache.shape[3] != head_dim or v_cache.shape != k_cache.shape or num_heads % num_kv_heads:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)} k_cache {tuple(k_cache.shape)} v_cache {tuple(v_cache.shape)}")
    if not (q.dtype == k_cache.dtype == v_cache.dtype == out.dtype):
        raise ValueError(f"dtype mismatch: q {q.dtype} k_cache {k_cache.dtype} v_cache {v_cache.dtype} out {out.dtype}")
    if block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two, got {block_size}")
    if q.stride(-1) != 1 or out.stride(-1) != 1 or out.shape != q.shape:
        raise ValueError("q and out need the same shape and a contiguous last dimension")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous()):
        raise ValueError("k_cache and v_cache must be contiguous")
    for name in ("query_start_loc", "seq_lens", "block_tables"):
        tensor = getattr(meta, name)
        if tensor.dtype != torch.int32 or tensor.stride(-1) != 1:
            raise ValueError(f"meta.{name} must be int32 with a contiguous last dimension")


def prefill_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                      scale: float, out: torch.Tensor | None = None, sliding_window: int | None = None,
                      block_m: int | None = None, tile_n: int = 64, num_warps: int | None = None,
                      num_stages: int | None = None) -> torch.Tensor:
    """Causal attention of every query row of q [T, H, D] over its sequence's cached keys; returns out.

    Any mix of prefill, prefix-hit, chunked-prefill and decode rows. The keys must already be
    stored. Rows of out past query_start_loc[-1] are left untouched. block_m (rows of a tile,
    query rows times padded group), tile_n (keys per tile), num_warps and num_stages are
    tuning knobs.
    """
    out = torch.empty_like(q) if out is None else out
    check_paged_inputs(q, k_cache, v_cache, out, meta)
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads, block_size = k_cache.shape[2], k_cache.shape[1]
    group = num_heads // num_kv_heads
    group_pad = triton.next_power_of_2(group)
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    # Tuned on an H100 in bf16 (bench/bench_attention.py): 64-row tiles for D <= 64, 128 above.
    if block_m is None:
        block_m = min(64 if head_dim_pad <= 64 else 128, max(16, triton.next_power_of_2(meta.max_query_len * group_pad)))
    block_q = max(1, block_m // group_pad)
    grid = (num_tokens // block_q + meta.num_seqs, num_kv_heads)
    prefill_attention_kernel[grid](
        out, q, k_cache, v_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc,
        scale * LOG2E, sliding_window or 0, meta.num_seqs,
        q.stride(0), q.stride(1), out.stride(0), out.stride(1), meta.block_tables.stride(0),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, NUM_KV_HEADS=num_kv_heads,
        GROUP=group, GROUP_PAD=group_pad, BLOCK_Q=block_q, BLOCK_SIZE=block_size, TILE_N=tile_n,
        USE_WINDOW=sliding_window is not None, DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=num_warps or 4, num_stages=num_stages or (2 if head_dim_pad <= 64 else 3),
    )
    return out
