"""Persistent decode: every decoder layer of a batch-1 decode step in one kernel.

At batch 1 a layer streams its weights once (the 1B model: 120 MB in about 40 us on an H100) and
does little else, yet as eight kernels per layer it took 60% longer (docs/performance.md): every
kernel boundary drains the GPU (the last program's tail, the next kernel's start, its first loads),
and the small kernels between the projections (norms, rotary, attention) sit wholly on that path.
Here one grid of programs, as many as the GPU holds at once (one per SM), runs every layer in five
stages separated by grid barriers (one counter that every program adds 1 to at each barrier and
waits on until it reaches the barrier's number times the grid):

  A. q/k/v: every program takes RMSNorm of the residual stream h itself (2 x hidden bytes from L2)
     and computes rows of q/k/v, four rotary pairs of one head per task; it applies the rotary
     embedding and writes q to a buffer, k and v to the KV cache slot.
  B. attention: (kv head, split) tasks over the paged cache, at most one per program; the first
     tile of old keys is loaded before barrier A, the step's own key patched in after it; the split
     of a kv head that finishes last combines the splits (an arrival counter per kv head).
  C. o projection, adding its rows into h.
  D. gate/up with RMSNorm of h taken again by every program; a task computes 4 rows of gate and the
     matching 4 of up and writes SiLU(gate) * up.
  E. down projection, adding its rows into h; then a barrier before the next layer's stage A.

A program loads its first weight tiles of a stage between its arrival at the barrier and its wait
(and of layer 0's stage A before the wait for the kernel before, with programmatic dependent
launch), and the next tiles before it uses the current one, so the weight stream crosses the stage
boundaries: the point of the kernel. Weight tiles are [4, 2, KC] (two groups of 4 rows of KC
columns; rows of K columns are K / KC tiles). Each layer's weights and caches are found through a
table of addresses (DecodeLayers), so one launch covers the model. Where the time goes:
bench/profile_persistent_decode.py.

The grid barriers need every program resident at once: the grid is at most one program per SM
(`num_programs`), each of which fits on an SM alone. Loads of anything written in the same launch
bypass L1 (`.cg`), since L1 is not coherent across SMs. The last program to finish sets the
counters back to 0 (so the buffer is zero between launches; launches on one stream run one after
another). Under the Triton interpreter (CPU tests), programs run one after another, so the grid must
be one program there.

Each value is rounded where the unfused layers round (llm_core/layers/kernels/rms_norm.py, gemv.py,
rotary_store.py, silu_and_mul.py): GEMV outputs to the activation dtype before rotary, residual add
or SiLU; RMSNorm's normalized row before its weight.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from llm_core.attention.kernels.prefill_attention import LOG2E, M_INIT, softmax_step
from llm_core.layers.kernels.counters import zeroed_counters
from llm_core.layers.kernels.gemv import device_num_sms
from llm_core.layers.kernels.pdl import pdl_launch_args

# Counter slots: 0 counts every grid-barrier arrival of a launch, EXIT_SLOT the programs done; from
# HEAD_SLOTS one per kv head (attention splits).
EXIT_SLOT = tl.constexpr(1)
HEAD_SLOTS = tl.constexpr(8)
# The per-layer pointer table's fields (int64 addresses; a missing bias is 0).
LAYER_FIELDS = ("ln1", "qkv", "qkv_bias", "o", "o_bias", "ln2", "gate_up", "gate_up_bias", "down", "down_bias",
                "k_cache", "v_cache")
NUM_FIELDS = tl.constexpr(len(LAYER_FIELDS))
(LN1, QKV, QKV_B, O, O_B, LN2, GATE_UP, GATE_UP_B, DOWN, DOWN_B, K_CACHE, V_CACHE) = (
    tl.constexpr(i) for i in range(len(LAYER_FIELDS)))
COUNTER_SLOTS = 256
# Columns of a weight tile (KC) and tiles in flight per program: 4 x 2 rows x 2048 bf16 = 32 KiB, two
# in flight. On an H100 no tile shape or depth streams the 1B gate/up faster than about 2.7 TB/s
# (bench/bench_weight_stream.py; torch.mv 2.6), and this one was the fastest in the kernel
# (bench/profile_persistent_decode.py; docs/performance.md).
MAX_CHUNK = 2048
DEPTH = 2
ATTENTION_TILE_N = 64
MAX_ATTENTION_SPLITS = 16
# What the TIMING timestamps mark (index = column of the timing buffer). Per layer; "start" is layer
# 0's only (the launch); the last four are the attention chain's, of programs with an attention task
# ("splits combined": the split of each kv head that finished last). Column 15 of layer 0 holds the
# program's SM (%smid).
TIMING_POINTS = ("start", "layer begins", "q/k/v done", "barrier A passed", "attention done",
                 "barrier B passed", "o done", "barrier C passed", "gate/up done", "barrier D passed", "down done",
                 "attention inputs loaded", "attention tiles done", "split counted", "splits combined")

def layer_counters(device: torch.device) -> torch.Tensor:
    """The device's barrier counters ([COUNTER_SLOTS] int32, zero; counters.py)."""
    return zeroed_counters("persistent decode counters", device, COUNTER_SLOTS)


@triton.jit
def _grid_arrive(counter_ptr):
    # Every thread's stores of this program come before the release (the CTA barrier, then one
    # thread's gpu-scope release: the pattern of a cooperative grid sync). The release waits for
    # every load the thread has in flight too, so a stage's prefetch is issued after the arrival,
    # before the wait (_grid_wait): one barrier number per arrive/wait pair, counted by the caller.
    tl.debug_barrier()
    tl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")


@triton.jit
def _grid_wait(counter_ptr, target):
    seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _task_rows(t, STAGE: tl.constexpr, D: tl.constexpr, I: tl.constexpr):
    # (first row, row distance of the second group of 4) of task t of a stage.
    if STAGE == 0:  # q/k/v: rotary pairs 4g..4g+3 of head t // (D // 8), and their partners D / 2 on
        base = (t // (D // 8)) * D + (t % (D // 8)) * 4
        dist = D // 2
    elif STAGE == 2:  # gate rows 4t..4t+3 and the up rows I further on
        base = t * 4
        dist = I
    else:  # o, down: rows 8t..8t+7
        base = t * 8
        dist = 4
    return base, dist


@triton.jit
def _load_tile(w_ptr, t, k0, ok, STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr, D: tl.constexpr,
               I: tl.constexpr):
    # The [4, 2, KC] weight tile of task t at columns k0 (nothing is read when not ok).
    base, dist = _task_rows(t, STAGE, D, I)
    rows = base + tl.arange(0, 4)[:, None] + tl.arange(0, 2)[None, :] * dist  # [4, 2]
    offs_k = k0 + tl.arange(0, KC)
    ptrs = w_ptr + rows.to(tl.int64)[:, :, None] * K + offs_k[None, None, :]
    return tl.load(ptrs, mask=(offs_k < K)[None, None, :] & ok, other=0.0, eviction_policy="evict_first")


@triton.jit
def _rstd(h_ptr, eps, H: tl.constexpr, HP: tl.constexpr):
    offs = tl.arange(0, HP)
    h = tl.load(h_ptr + offs, mask=offs < H, other=0.0, cache_modifier=".cg").to(tl.float32)
    return tl.rsqrt(tl.sum(h * h, 0) / H + eps)


@triton.jit
def _x_raw(x_ptr, norm_w_ptr, k0, NORM: tl.constexpr, KC: tl.constexpr):
    # The stage input's KC entries at k0 as loaded (a buffer of this launch: h, attn or act), and
    # the RMSNorm weight's entries (NORM), to be combined by _x_use when the tile is used.
    offs = k0 + tl.arange(0, KC)
    x = tl.load(x_ptr + offs, cache_modifier=".cg")
    g = x
    if NORM:
        g = tl.load(norm_w_ptr + offs)
    return x, g


@triton.jit
def _x_use(x, g, rstd, NORM: tl.constexpr):
    if NORM:  # RMSNorm(h), rounded as the RMSNorm kernel rounds
        normed = (x.to(tl.float32) * rstd).to(x.dtype).to(tl.float32)
        x = (normed * g.to(tl.float32)).to(x.dtype)
    return x


@triton.jit
def _my_tasks(pid, num_programs, NUM_TASKS: tl.constexpr):
    # (first task, number of tasks) of this program in a stage: contiguous ranges, so that a program's
    # weight rows are contiguous too (few pages, few TLB misses); program p starts at
    # p * (T // P) + min(p, T % P).
    base = NUM_TASKS // num_programs
    extra = NUM_TASKS % num_programs
    return pid * base + tl.minimum(pid, extra), base + (pid < extra).to(tl.int32)


@triton.jit
def _stage_tile(w_ptr, j, n_tiles, first, STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr, D: tl.constexpr,
                I: tl.constexpr):
    # Tile j of this program's stream in a stage: chunk j % (K / KC) of task first + j // (K / KC).
    NUM_CHUNKS: tl.constexpr = K // KC
    return _load_tile(w_ptr, first + j // NUM_CHUNKS, (j % NUM_CHUNKS) * KC, j < n_tiles, STAGE, K, KC, D, I)


@triton.jit
def _stage_resid(h_ptr, j, n_tiles, first, STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr, D: tl.constexpr,
                 I: tl.constexpr):
    # Stages 1 and 3 (o, down: rows added into h): the rows of h that tile j's task adds to, loaded
    # with the task's last tile (fp32 [4, 2]); zeros otherwise. This program's own earlier stage
    # wrote them (tasks split alike), so they may load before the barrier's wait.
    NUM_CHUNKS: tl.constexpr = K // KC
    r = tl.zeros([4, 2], dtype=tl.float32)
    if STAGE == 1 or STAGE == 3:
        base, dist = _task_rows(first + j // NUM_CHUNKS, STAGE, D, I)
        rows = base + tl.arange(0, 4)[:, None] + tl.arange(0, 2)[None, :] * dist
        ok = (j % NUM_CHUNKS == NUM_CHUNKS - 1) & (j < n_tiles)
        r = tl.load(h_ptr + rows, mask=(rows >= 0) & ok, other=0.0, cache_modifier=".cg").to(tl.float32)
    return r


@triton.jit
def _prefetch_stage(w_ptr, h_ptr, pid, num_programs, STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr,
                    NUM_TASKS: tl.constexpr, D: tl.constexpr, I: tl.constexpr, DEPTH: tl.constexpr):
    # The first DEPTH weight tiles of this program's stream in a stage and their residual rows
    # (_stage_resid), loaded before the wait at the barrier that the stage waits for; with DEPTH 2
    # the last two entries are unused copies.
    first, num = _my_tasks(pid, num_programs, NUM_TASKS)
    n = num * (K // KC)
    w0 = _stage_tile(w_ptr, 0, n, first, STAGE, K, KC, D, I)
    w1 = _stage_tile(w_ptr, 1, n, first, STAGE, K, KC, D, I)
    r0 = _stage_resid(h_ptr, 0, n, first, STAGE, K, KC, D, I)
    r1 = _stage_resid(h_ptr, 1, n, first, STAGE, K, KC, D, I)
    w2, w3, r2, r3 = w0, w1, r0, r1
    if DEPTH == 4:
        w2 = _stage_tile(w_ptr, 2, n, first, STAGE, K, KC, D, I)
        w3 = _stage_tile(w_ptr, 3, n, first, STAGE, K, KC, D, I)
        r2 = _stage_resid(h_ptr, 2, n, first, STAGE, K, KC, D, I)
        r3 = _stage_resid(h_ptr, 3, n, first, STAGE, K, KC, D, I)
    return w0, w1, w2, w3, r0, r1, r2, r3


@triton.jit
def _use_tile(acc, w, r, xr, xg, x, tile, n_tiles, first, rstd, bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr,
              cos_sin_ptr, pos, slot, STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr, HAS_BIAS: tl.constexpr,
              NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, I: tl.constexpr):
    # Adds tile `tile` (weights w; its x chunk xr/xg, or x when K is one chunk) into acc; at a task's
    # last chunk finishes the task (r: its residual rows, _stage_resid) and returns zeros. Tiles past
    # n_tiles were loaded as zeros (no memory traffic) and finish nothing.
    NUM_CHUNKS: tl.constexpr = K // KC
    if NUM_CHUNKS > 1:
        x = _x_use(xr, xg, rstd, STAGE == 0 or STAGE == 2)
    prod = w.to(tl.float32) * x.to(tl.float32)[None, None, :]
    acc += tl.sum(tl.reshape(prod, [4, 2, KC // 8, 8]), axis=3)
    if (tile % NUM_CHUNKS == NUM_CHUNKS - 1) & (tile < n_tiles):
        _finish_task(acc, r, first + tile // NUM_CHUNKS, bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr,
                     cos_sin_ptr, pos, slot, STAGE, HAS_BIAS, NH, NKV, D, I)
        acc = tl.zeros([4, 2, KC // 8], dtype=tl.float32)
    return acc


@triton.jit
def _linear_stage(w_ptr, tiles, pid, num_programs, x_ptr, norm_w_ptr, rstd, bias_ptr,
                  out_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot,
                  STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr, NUM_TASKS: tl.constexpr,
                  HAS_BIAS: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, I: tl.constexpr,
                  DEPTH: tl.constexpr):
    # This program's tasks of a stage as one stream of [4, 2, KC] tiles with DEPTH (2 or 4) in
    # flight; `tiles` holds the first ones (_prefetch_stage). The loop is unrolled by DEPTH so that
    # each tile register is refilled by its own load: rotating tiles through registers would wait
    # for every load in flight at each step. STAGE 0: q/k/v + rotary + KV store; 1: o, added into out (h);
    # 2: gate/up -> SiLU pairs into out (act); 3: down, added into out (h).
    NUM_CHUNKS: tl.constexpr = K // KC
    NORM: tl.constexpr = STAGE == 0 or STAGE == 2
    first, num = _my_tasks(pid, num_programs, NUM_TASKS)
    n_tiles = num * NUM_CHUNKS
    w0, w1, w2, w3, r0, r1, r2, r3 = tiles
    # x: the stage's input when K is one chunk; else chunks x0..x3 (with RMSNorm weights g0..g3)
    # travel with tiles w0..w3.
    x0, g0 = _x_raw(x_ptr, norm_w_ptr, 0, NORM, KC)
    x = _x_use(x0, g0, rstd, NORM)
    x1, g1 = _x_raw(x_ptr, norm_w_ptr, (1 % NUM_CHUNKS) * KC, NORM, KC)
    x2, g2 = _x_raw(x_ptr, norm_w_ptr, (2 % NUM_CHUNKS) * KC, NORM, KC)
    x3, g3 = _x_raw(x_ptr, norm_w_ptr, (3 % NUM_CHUNKS) * KC, NORM, KC)
    acc = tl.zeros([4, 2, KC // 8], dtype=tl.float32)
    for j in range(0, n_tiles, DEPTH):
        # Each slot uses its tile, then loads the one DEPTH ahead into the same registers.
        acc, w0, r0, x0, g0 = _slot(acc, w0, r0, x0, g0, x, j, 0, n_tiles, first, w_ptr, x_ptr, norm_w_ptr, rstd,
                                    bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, STAGE, K, KC,
                                    HAS_BIAS, NH, NKV, D, I, DEPTH)
        acc, w1, r1, x1, g1 = _slot(acc, w1, r1, x1, g1, x, j, 1, n_tiles, first, w_ptr, x_ptr, norm_w_ptr, rstd,
                                    bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, STAGE, K, KC,
                                    HAS_BIAS, NH, NKV, D, I, DEPTH)
        if DEPTH == 4:
            acc, w2, r2, x2, g2 = _slot(acc, w2, r2, x2, g2, x, j, 2, n_tiles, first, w_ptr, x_ptr, norm_w_ptr, rstd,
                                        bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, STAGE, K,
                                        KC, HAS_BIAS, NH, NKV, D, I, DEPTH)
            acc, w3, r3, x3, g3 = _slot(acc, w3, r3, x3, g3, x, j, 3, n_tiles, first, w_ptr, x_ptr, norm_w_ptr, rstd,
                                        bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, STAGE, K,
                                        KC, HAS_BIAS, NH, NKV, D, I, DEPTH)


@triton.jit
def _slot(acc, w, r, xr, xg, x, j, s: tl.constexpr, n_tiles, first, w_ptr, x_ptr, norm_w_ptr, rstd, bias_ptr, out_ptr,
          k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr,
          HAS_BIAS: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, I: tl.constexpr,
          DEPTH: tl.constexpr):
    # Slot s of an unrolled step at tile j: uses tile j + s (w, r, xr/xg), returns the accumulator and
    # tile j + s + DEPTH's weights, residual rows and x chunk (loads in flight).
    NUM_CHUNKS: tl.constexpr = K // KC
    acc = _use_tile(acc, w, r, xr, xg, x, j + s, n_tiles, first, rstd, bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr,
                    cos_sin_ptr, pos, slot, STAGE, K, KC, HAS_BIAS, NH, NKV, D, I)
    w = _stage_tile(w_ptr, j + s + DEPTH, n_tiles, first, STAGE, K, KC, D, I)
    r = _stage_resid(out_ptr, j + s + DEPTH, n_tiles, first, STAGE, K, KC, D, I)
    if NUM_CHUNKS > 1:
        xr, xg = _x_raw(x_ptr, norm_w_ptr, ((j + s + DEPTH) % NUM_CHUNKS) * KC, STAGE == 0 or STAGE == 2, KC)
    return acc, w, r, xr, xg


@triton.jit
def _finish_task(acc, r, t, bias_ptr, out_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, STAGE: tl.constexpr,
                 HAS_BIAS: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, I: tl.constexpr):
    # Task t's rows from its sums acc [4, 2, KC // 8] (_linear_stage's STAGE).
    offs_r = tl.arange(0, 4)
    offs_p = tl.arange(0, 2)
    base, dist = _task_rows(t, STAGE, D, I)
    rows = base + offs_r[:, None] + offs_p[None, :] * dist  # [4, 2]
    y = tl.sum(acc, axis=2)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rows).to(tl.float32)
    y = y.to(out_ptr.dtype.element_ty)
    if STAGE == 0:
        head = t // (D // 8)
        pair = (t % (D // 8)) * 4 + offs_r  # [4] rotary pair index within the head
        cols = pair[:, None] + offs_p[None, :] * (D // 2)  # [4, 2] within the head
        if head < NH + NKV:  # q or k: rotate
            cos = tl.load(cos_sin_ptr + pos * D + pair)
            sin = tl.load(cos_sin_ptr + pos * D + D // 2 + pair)
            x1, x2 = tl.split(y)
            x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
            y = tl.join((x1f * cos - x2f * sin).to(y.dtype), (x2f * cos + x1f * sin).to(y.dtype))
        if head < NH:
            tl.store(out_ptr + head * D + cols, y)
        elif head < NH + NKV:
            tl.store(k_cache_ptr + slot * (NKV * D) + (head - NH) * D + cols, y, mask=(cols >= 0) & (slot >= 0))
        else:
            tl.store(v_cache_ptr + slot * (NKV * D) + (head - NH - NKV) * D + cols, y,
                     mask=(cols >= 0) & (slot >= 0))
    elif STAGE == 2:
        gate, up = tl.split(y)
        gf = gate.to(tl.float32)
        act = (gf / (1.0 + tl.exp(-gf))).to(y.dtype).to(tl.float32) * up.to(tl.float32)
        tl.store(out_ptr + t * 4 + offs_r, act.to(y.dtype))
    else:
        tl.store(out_ptr + rows, (y.to(tl.float32) + r).to(y.dtype))


@triton.jit
def _pass_barrier(counters_ptr, count, num_programs, w_ptr, h_ptr, pid, STAGE: tl.constexpr, K: tl.constexpr,
                  KC: tl.constexpr, NUM_TASKS: tl.constexpr, D: tl.constexpr, I: tl.constexpr, DEPTH: tl.constexpr):
    # Grid barrier number `count`: arrive, load the next stage's first tiles (_prefetch_stage; after the
    # arrival, whose release would wait for them), wait. Returns the tiles.
    _grid_arrive(counters_ptr)
    tiles = _prefetch_stage(w_ptr, h_ptr, pid, num_programs, STAGE, K, KC, NUM_TASKS, D, I, DEPTH)
    _grid_wait(counters_ptr, count * num_programs)
    return tiles


@triton.jit
def _layer_ptr(table_ptr, layer, field, DT: tl.constexpr):
    # Field `field` of layer `layer` in the pointer table (NUM_FIELDS int64 addresses per layer). The
    # addresses are 16-byte aligned (DecodeLayers checks): said here, or loads would not be vectorized.
    return tl.multiple_of(tl.load(table_ptr + layer * NUM_FIELDS + field).to(tl.pointer_type(DT)), 16)


@triton.jit
def _split_range(split, seq_len, sliding_window, NUM_SPLITS: tl.constexpr, TILE_N: tl.constexpr,
                 USE_WINDOW: tl.constexpr):
    # Keys [begin, end) of a split: whole tiles, each split cdiv(cdiv(seq_len, NUM_SPLITS), TILE_N) tiles.
    split_size = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), TILE_N) * TILE_N
    begin = split * split_size
    end = tl.minimum(begin + split_size, seq_len)
    if USE_WINDOW:
        begin = tl.maximum(begin, tl.maximum(seq_len - sliding_window, 0) // TILE_N * TILE_N)
    return begin, end


@triton.jit
def _kv_tile(k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, start, end, NKV: tl.constexpr, D: tl.constexpr,
             DP: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr):
    # K and V [TILE_N, DP] of keys start.. (rows at or past `end` read as zeros), both loads at once.
    offs_n = start + tl.arange(0, TILE_N)
    offs_d = tl.arange(0, DP)
    n_ok = offs_n < end
    block_ids = tl.load(block_table_ptr + offs_n // BLOCK_SIZE, mask=n_ok, other=0)
    rows = block_ids.to(tl.int64) * BLOCK_SIZE + offs_n % BLOCK_SIZE
    offs = rows[:, None] * (NKV * D) + kv_head * D + offs_d[None, :]
    mask = n_ok[:, None] & (offs_d < D)[None, :]
    k = tl.load(k_cache_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")
    v = tl.load(v_cache_ptr + offs, mask=mask, other=0.0, cache_modifier=".cg")
    return k, v


@triton.jit
def _attend(acc, m_i, l_i, q, k, v, start, end, q_pos, qk_scale, sliding_window, TILE_N: tl.constexpr,
            USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # Online-softmax update with the keys start..end-1 of tile (k, v) (log2 domain, as the attention kernels).
    offs_n = start + tl.arange(0, TILE_N)
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale  # [BH, N]
    visible = (offs_n[None, :] < end) & (offs_n[None, :] <= q_pos[:, None])
    if USE_WINDOW:
        visible = visible & (offs_n[None, :] > q_pos[:, None] - sliding_window)
    p, alpha, m_new, l_i = softmax_step(tl.where(visible, s, float("-inf")), m_i, l_i)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, m_new, l_i


@triton.jit
def _first_kv_tile(t, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len, sliding_window, NKV: tl.constexpr,
                   D: tl.constexpr, DP: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr,
                   NUM_SPLITS: tl.constexpr, USE_WINDOW: tl.constexpr):
    # The first tile of attention task t's keys, without the step's own key (stage A writes it): this
    # load needs nothing from stage A, so it is issued before barrier A. Nothing is read for t past
    # the last task.
    begin, end = _split_range(t % NUM_SPLITS, seq_len, sliding_window, NUM_SPLITS, TILE_N, USE_WINDOW)
    end = tl.where(t < NKV * NUM_SPLITS, tl.minimum(end, seq_len - 1), begin)
    return _kv_tile(k_cache_ptr, v_cache_ptr, block_table_ptr, t // NUM_SPLITS, begin, end, NKV, D, DP, BLOCK_SIZE,
                    TILE_N)


@triton.jit
def _attention_task(t, k, v, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len, slot,
                    part_m_ptr, part_l_ptr, part_acc_ptr, out_ptr, head_counters_ptr, qk_scale, sliding_window,
                    NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BLOCK_H: tl.constexpr,
                    GROUP_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr,
                    NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, USE_WINDOW: tl.constexpr,
                    DOT_PRECISION: tl.constexpr, timing_ptr, layer, pid, num_programs, TIMING: tl.constexpr):
    # Task t = (kv head, split); (k, v): its first tile from _first_kv_tile. The split of a kv head
    # that finishes last combines the splits of the head's GROUP query heads into out.
    GROUP: tl.constexpr = NH // NKV
    kv_head = t // NUM_SPLITS
    split = t % NUM_SPLITS
    begin, end = _split_range(split, seq_len, sliding_window, NUM_SPLITS, TILE_N, USE_WINDOW)
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, DP)
    d_ok = offs_d < D
    head = kv_head * GROUP + offs_h
    io_mask = (offs_h < GROUP)[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + head[:, None] * D + offs_d[None, :], mask=io_mask, other=0.0, cache_modifier=".cg")
    q_pos = tl.zeros([BLOCK_H], dtype=tl.int32) + seq_len - 1
    # The step's own key and value (position seq_len - 1, cache slot `slot`), written in stage A.
    offs_n = begin + tl.arange(0, TILE_N)
    own = ((offs_n == seq_len - 1) & (offs_n < end))[:, None]
    own_row = slot * (NKV * D) + kv_head * D + offs_d
    k_own = tl.load(k_cache_ptr + own_row, mask=d_ok & (slot >= 0), other=0.0, cache_modifier=".cg")
    v_own = tl.load(v_cache_ptr + own_row, mask=d_ok & (slot >= 0), other=0.0, cache_modifier=".cg")
    k = tl.where(own, k_own[None, :], k)
    v = tl.where(own, v_own[None, :], v)
    _mark(timing_ptr, layer, pid, num_programs, 11, TIMING)
    acc = tl.zeros([BLOCK_H, DP], dtype=tl.float32)
    m_i = tl.full([BLOCK_H], M_INIT, dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    acc, m_i, l_i = _attend(acc, m_i, l_i, q, k, v, begin, end, q_pos, qk_scale, sliding_window, TILE_N,
                            USE_WINDOW, DOT_PRECISION)
    for start in range(begin + TILE_N, end, TILE_N):  # the split's other tiles (long contexts)
        k, v = _kv_tile(k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, start, end, NKV, D, DP, BLOCK_SIZE,
                        TILE_N)
        acc, m_i, l_i = _attend(acc, m_i, l_i, q, k, v, start, end, q_pos, qk_scale, sliding_window, TILE_N,
                                USE_WINDOW, DOT_PRECISION)
    _mark(timing_ptr, layer, pid, num_programs, 12, TIMING)
    part = head.to(tl.int64) * NUM_SPLITS + split  # [BH]: partials [NH, NUM_SPLITS(, D)]
    tl.store(part_m_ptr + part, m_i, mask=offs_h < GROUP)
    tl.store(part_l_ptr + part, l_i, mask=offs_h < GROUP)
    tl.store(part_acc_ptr + part[:, None] * D + offs_d[None, :], acc, mask=io_mask)
    tl.debug_barrier()
    # The head's counter counts every layer's splits (the kernel's last program sets it back to 0).
    done = tl.atomic_add(head_counters_ptr + kv_head, 1, sem="acq_rel", scope="gpu")
    _mark(timing_ptr, layer, pid, num_programs, 13, TIMING)
    if done == NUM_SPLITS * (layer + 1) - 1:
        # Every split of the GROUP heads at once (one round trip to L2).
        offs_g = tl.arange(0, GROUP_PAD)
        offs_s = tl.arange(0, SPLITS_PAD)
        heads = kv_head * GROUP + offs_g
        parts = heads[:, None] * NUM_SPLITS + offs_s[None, :]  # [GP, SP]
        ok = (offs_g < GROUP)[:, None] & (offs_s < NUM_SPLITS)[None, :]
        m = tl.load(part_m_ptr + parts, mask=ok, other=M_INIT, cache_modifier=".cg")
        l = tl.load(part_l_ptr + parts, mask=ok, other=0.0, cache_modifier=".cg")
        accs = tl.load(part_acc_ptr + parts[:, :, None] * D + offs_d[None, None, :],
                       mask=ok[:, :, None] & d_ok[None, None, :], other=0.0, cache_modifier=".cg")
        weight = tl.exp2(m - tl.max(m, 1)[:, None])  # empty splits have m = M_INIT: weight 0
        total = tl.sum(l * weight, 1)
        result = tl.sum(accs * weight[:, :, None], 1) / tl.where(total > 0, total, 1.0)[:, None]  # [GP, DP]
        tl.store(out_ptr + heads[:, None] * D + offs_d[None, :], result.to(out_ptr.dtype.element_ty),
                 mask=(offs_g < GROUP)[:, None] & d_ok[None, :])
        _mark(timing_ptr, layer, pid, num_programs, 14, TIMING)


@triton.jit
def _mark(timing_ptr, layer, pid, num_programs, point: tl.constexpr, TIMING: tl.constexpr):
    if TIMING:
        tl.store(timing_ptr + (layer * num_programs + pid) * 16 + point, tl.extra.cuda.globaltimer())


@triton.jit
def persistent_decode_kernel(
    h_ptr, table_ptr, cos_sin_ptr, positions_ptr, slot_mapping_ptr, block_table_ptr, seq_lens_ptr,
    q_ptr, attn_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, act_ptr, counters_ptr, timing_ptr,
    final_norm_w_ptr, normed_ptr, num_layers, eps, final_eps, qk_scale, sliding_window,
    H: tl.constexpr, HP: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
    I: tl.constexpr, KC: tl.constexpr, BLOCK_H: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    TILE_N: tl.constexpr, NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, QKV_BIAS: tl.constexpr,
    O_BIAS: tl.constexpr, MLP_BIAS: tl.constexpr, USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr,
    USE_PDL: tl.constexpr, TIMING: tl.constexpr, DEPTH: tl.constexpr, FINAL_NORM: tl.constexpr,
    NKV_PAD: tl.constexpr,
):
    # Every decoder layer of one token (module docstring); TIMING: timestamps of TIMING_POINTS per
    # layer and program into timing [num_layers, P, 16]. FINAL_NORM: the program that finishes last
    # also writes RMSNorm(h) with final_norm_w into normed (the model's final norm).
    DT: tl.constexpr = h_ptr.dtype.element_ty
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    TASKS_QKV: tl.constexpr = (NH + 2 * NKV) * D // 8
    TASKS_O: tl.constexpr = H // 8
    TASKS_GU: tl.constexpr = I // 4
    TASKS_ATTN: tl.constexpr = NKV * NUM_SPLITS
    _mark(timing_ptr, 0, pid, num_programs, 0, TIMING)
    if TIMING:  # column 15 of layer 0: the SM the program runs on
        smid = tl.inline_asm_elementwise("mov.u32 $0, %smid;", "=r,r", [pid], dtype=tl.int32, is_pure=True, pack=1)
        tl.store(timing_ptr + pid * 16 + 15, smid.to(tl.int64))
    # Layer 0's first weight tile needs nothing from the kernel before (PDL, pdl.py).
    tiles = _prefetch_stage(_layer_ptr(table_ptr, 0, QKV, DT), h_ptr, pid, num_programs, 0, H, KC, TASKS_QKV, D, I,
                            DEPTH)
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    pos = tl.load(positions_ptr).to(tl.int64)
    slot = tl.load(slot_mapping_ptr).to(tl.int64)
    seq_len = tl.load(seq_lens_ptr)
    barriers = 0
    for layer in range(0, num_layers):
        _mark(timing_ptr, layer, pid, num_programs, 1, TIMING)
        # Every address of the layer up front: a barrier's arrival (a release) waits for loads in flight.
        k_cache_ptr = _layer_ptr(table_ptr, layer, K_CACHE, DT)
        v_cache_ptr = _layer_ptr(table_ptr, layer, V_CACHE, DT)
        o_w_ptr = _layer_ptr(table_ptr, layer, O, DT)
        gu_w_ptr = _layer_ptr(table_ptr, layer, GATE_UP, DT)
        down_w_ptr = _layer_ptr(table_ptr, layer, DOWN, DT)
        next_qkv_ptr = _layer_ptr(table_ptr, tl.minimum(layer + 1, num_layers - 1), QKV, DT)
        rstd = _rstd(h_ptr, eps, H, HP)
        _linear_stage(_layer_ptr(table_ptr, layer, QKV, DT), tiles, pid, num_programs, h_ptr,
                      _layer_ptr(table_ptr, layer, LN1, DT), rstd, _layer_ptr(table_ptr, layer, QKV_B, DT), q_ptr,
                      k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, 0, H, KC, TASKS_QKV, QKV_BIAS, NH, NKV, D, I,
                      DEPTH)
        _mark(timing_ptr, layer, pid, num_programs, 2, TIMING)
        # The first tile of this program's attention task loads while the others finish q/k/v.
        _grid_arrive(counters_ptr)
        k_first, v_first = _first_kv_tile(pid, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len, sliding_window,
                                          NKV, D, DP, BLOCK_SIZE, TILE_N, NUM_SPLITS, USE_WINDOW)
        barriers += 1
        _grid_wait(counters_ptr, barriers * num_programs)
        _mark(timing_ptr, layer, pid, num_programs, 3, TIMING)
        for t in range(pid, TASKS_ATTN, num_programs):
            if t != pid:  # more tasks than programs (the interpreter's one program)
                k_first, v_first = _first_kv_tile(t, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len,
                                                  sliding_window, NKV, D, DP, BLOCK_SIZE, TILE_N, NUM_SPLITS,
                                                  USE_WINDOW)
            _attention_task(t, k_first, v_first, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len, slot,
                            part_m_ptr, part_l_ptr, part_acc_ptr, attn_ptr, counters_ptr + HEAD_SLOTS, qk_scale,
                            sliding_window, NH, NKV, D, DP, BLOCK_H, GROUP_PAD, BLOCK_SIZE, TILE_N, NUM_SPLITS,
                            SPLITS_PAD, USE_WINDOW, DOT_PRECISION, timing_ptr, layer, pid, num_programs, TIMING)
        _mark(timing_ptr, layer, pid, num_programs, 4, TIMING)
        barriers += 1
        tiles = _pass_barrier(counters_ptr, barriers, num_programs, o_w_ptr, h_ptr, pid,
                              1, NH * D, KC, TASKS_O, D, I, DEPTH)
        _mark(timing_ptr, layer, pid, num_programs, 5, TIMING)
        _linear_stage(o_w_ptr, tiles, pid, num_programs, attn_ptr, h_ptr, rstd, _layer_ptr(table_ptr, layer, O_B, DT),
                      h_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, 1, NH * D, KC, TASKS_O, O_BIAS,
                      NH, NKV, D, I, DEPTH)
        _mark(timing_ptr, layer, pid, num_programs, 6, TIMING)
        barriers += 1
        tiles = _pass_barrier(counters_ptr, barriers, num_programs, gu_w_ptr, h_ptr, pid,
                              2, H, KC, TASKS_GU, D, I, DEPTH)
        _mark(timing_ptr, layer, pid, num_programs, 7, TIMING)
        rstd = _rstd(h_ptr, eps, H, HP)
        _linear_stage(gu_w_ptr, tiles, pid, num_programs, h_ptr, _layer_ptr(table_ptr, layer, LN2, DT), rstd,
                      _layer_ptr(table_ptr, layer, GATE_UP_B, DT), act_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr,
                      pos, slot, 2, H, KC, TASKS_GU, MLP_BIAS, NH, NKV, D, I, DEPTH)
        _mark(timing_ptr, layer, pid, num_programs, 8, TIMING)
        barriers += 1
        tiles = _pass_barrier(counters_ptr, barriers, num_programs, down_w_ptr, h_ptr, pid,
                              3, I, KC, TASKS_O, D, I, DEPTH)
        _mark(timing_ptr, layer, pid, num_programs, 9, TIMING)
        _linear_stage(down_w_ptr, tiles, pid, num_programs, act_ptr, h_ptr, rstd,
                      _layer_ptr(table_ptr, layer, DOWN_B, DT),
                      h_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, 3, I, KC, TASKS_O, MLP_BIAS,
                      NH, NKV, D, I, DEPTH)
        _mark(timing_ptr, layer, pid, num_programs, 10, TIMING)
        if layer + 1 < num_layers:
            # The next layer's first tile loads while the others finish down.
            barriers += 1
            tiles = _pass_barrier(counters_ptr, barriers, num_programs, next_qkv_ptr, h_ptr, pid,
                                  0, H, KC, TASKS_QKV, D, I, DEPTH)
    # Every program has left every barrier once it counts here: the last one resets the counters
    # (and sees every program's rows of h: the final norm).
    tl.debug_barrier()
    done = tl.atomic_add(counters_ptr + EXIT_SLOT, 1, sem="acq_rel", scope="gpu")
    if done == num_programs - 1:
        if FINAL_NORM:  # rounded as the RMSNorm kernel rounds (_x_use)
            offs = tl.arange(0, HP)
            hv = tl.load(h_ptr + offs, mask=offs < H, other=0.0, cache_modifier=".cg")
            g = tl.load(final_norm_w_ptr + offs, mask=offs < H, other=0.0)
            rstd = tl.rsqrt(tl.sum(hv.to(tl.float32) * hv.to(tl.float32), 0) / H + final_eps)
            tl.store(normed_ptr + offs, _x_use(hv, g, rstd, True), mask=offs < H)
        heads = tl.arange(0, NKV_PAD)
        tl.store(counters_ptr + HEAD_SLOTS + heads, tl.zeros([NKV_PAD], dtype=tl.int32), mask=heads < NKV)
        tl.atomic_xchg(counters_ptr, 0)
        tl.atomic_xchg(counters_ptr + EXIT_SLOT, 0)


def chunk_columns(*ks: int, max_chunk: int = MAX_CHUNK) -> int:
    """KC: the largest power of two <= max_chunk dividing every K of the layer (0 if below 16)."""
    kc = max_chunk
    while kc >= 16 and any(k % kc for k in ks):
        kc //= 2
    return kc if kc >= 16 else 0


def persistent_decode_supported(hidden: int, num_heads: int, num_kv_heads: int, head_dim: int,
                                intermediate: int) -> bool:
    """Whether layers of these sizes fit the kernel's tiling (module docstring)."""
    return (head_dim % 8 == 0 and hidden % 8 == 0 and intermediate % 4 == 0 and num_heads % num_kv_heads == 0
            and num_kv_heads <= COUNTER_SLOTS - HEAD_SLOTS.value
            and chunk_columns(hidden, num_heads * head_dim, intermediate) > 0)


@functools.lru_cache(maxsize=None)
def default_num_programs(device: torch.device) -> int:
    """One program per SM on CUDA (all resident at once); one under the interpreter (module docstring).
    Under MPS with CUDA_MPS_ACTIVE_THREAD_PERCENTAGE, that share of the SMs (a client may not get
    more at once, and a grid barrier over more programs than run at once never opens)."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return 1
    sms = device_num_sms(device)
    share = os.environ.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
    if share:
        try:
            sms = max(1, int(sms * float(share) / 100))
        except ValueError:
            pass
    return sms


def attention_splits(num_kv_heads: int, num_programs: int) -> int:
    """Splits of the keys per kv head: at most one attention task per program, at most MAX_ATTENTION_SPLITS."""
    return max(1, min(MAX_ATTENTION_SPLITS, num_programs // num_kv_heads))


class DecodeWorkspace:
    """Buffers of one launch, reused by every layer: q and the attention output [NH * D], the
    attention splits' partials, SiLU(gate) * up [I]."""

    def __init__(self, num_heads: int, head_dim: int, intermediate: int, num_splits: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.num_splits = num_splits
        self.q = torch.empty(num_heads * head_dim, dtype=dtype, device=device)
        self.attn = torch.empty(num_heads * head_dim, dtype=dtype, device=device)
        self.part_m = torch.empty(num_heads, num_splits, dtype=torch.float32, device=device)
        self.part_l = torch.empty(num_heads, num_splits, dtype=torch.float32, device=device)
        self.part_acc = torch.empty(num_heads, num_splits, head_dim, dtype=torch.float32, device=device)
        self.act = torch.empty(intermediate, dtype=dtype, device=device)


class DecodeLayers:
    """The pointer table of a model's decoder layers (weights and KV caches) for the kernel, checked once.

    layers: one dict per layer with the LAYER_FIELDS tensors (biases may be None), as the Llama
    modules hold them: ln1/ln2 [H]; qkv [(NH + 2 NKV) D, H] (q, k, v heads); o [H, NH D];
    gate_up [2 I, H] (gate, up); down [H, I]; k_cache/v_cache [num_blocks, block_size, NKV, D].
    The table holds addresses: the tensors are kept referenced here.
    """

    def __init__(self, layers: list[dict[str, torch.Tensor | None]], num_heads: int) -> None:
        if not layers:
            raise ValueError("DecodeLayers needs at least one layer")
        first = layers[0]
        self.tensors = layers
        self.num_layers = len(layers)
        self.num_heads = num_heads
        self.hidden = first["ln1"].numel()
        self.block_size, self.num_kv_heads, self.head_dim = first["k_cache"].shape[1:]
        self.intermediate = first["down"].shape[1]
        self.dtype = first["qkv"].dtype
        self.device = first["qkv"].device
        self.qkv_bias, self.o_bias = first["qkv_bias"] is not None, first["o_bias"] is not None
        self.mlp_bias = first["gate_up_bias"] is not None
        if not persistent_decode_supported(self.hidden, num_heads, self.num_kv_heads, self.head_dim,
                                           self.intermediate):
            raise ValueError(f"persistent decode: hidden {self.hidden}, {num_heads} heads / {self.num_kv_heads} kv "
                             f"heads of {self.head_dim}, intermediate {self.intermediate} do not fit the kernel's "
                             "tiles")
        h, nh, nkv, d, inter = self.hidden, num_heads, self.num_kv_heads, self.head_dim, self.intermediate
        shapes = {"ln1": (h,), "ln2": (h,), "qkv": ((nh + 2 * nkv) * d, h), "qkv_bias": ((nh + 2 * nkv) * d,),
                  "o": (h, nh * d), "o_bias": (h,), "gate_up": (2 * inter, h), "gate_up_bias": (2 * inter,),
                  "down": (h, inter), "down_bias": (h,), "k_cache": tuple(first["k_cache"].shape),
                  "v_cache": tuple(first["k_cache"].shape)}
        optional = {"qkv_bias": self.qkv_bias, "o_bias": self.o_bias, "gate_up_bias": self.mlp_bias,
                    "down_bias": self.mlp_bias}
        rows = []
        for index, layer in enumerate(layers):
            row = []
            for name in LAYER_FIELDS:
                tensor = layer.get(name)
                if tensor is None:
                    if optional.get(name, True) is not False:
                        raise ValueError(f"persistent decode: layer {index} has no {name}")
                    row.append(0)
                    continue
                if optional.get(name) is False:
                    raise ValueError(f"persistent decode: layer {index} has a {name}, layer 0 none")
                if (tuple(tensor.shape) != shapes[name] or tensor.dtype != self.dtype or not tensor.is_contiguous()
                        or tensor.device != self.device or tensor.data_ptr() % 16):
                    raise ValueError(f"persistent decode: layer {index} {name} {tuple(tensor.shape)} {tensor.dtype} "
                                     f"must be a contiguous, 16-byte aligned {list(shapes[name])} {self.dtype} on "
                                     f"{self.device}")
                row.append(tensor.data_ptr())
            rows.append(row)
        self.table = torch.tensor(rows, dtype=torch.int64, device=self.device)


def persistent_decode(
    h: torch.Tensor, layers: DecodeLayers, *, positions: torch.Tensor, slot_mapping: torch.Tensor,
    block_table: torch.Tensor, seq_lens: torch.Tensor, cos_sin: torch.Tensor, scale: float, eps: float,
    sliding_window: int | None = None, workspace: DecodeWorkspace | None = None, num_programs: int | None = None,
    num_warps: int = 8, max_chunk: int = MAX_CHUNK, depth: int = DEPTH, timing: torch.Tensor | None = None,
    final_norm: tuple[torch.Tensor, float] | None = None, normed: torch.Tensor | None = None,
) -> None:
    """Every decoder layer of `layers` for one token, in place: h [H] (the residual stream: the
    embedding) becomes the last layer's output, and the token's k/v go to cache slot
    slot_mapping[0] of each layer. positions, slot_mapping, seq_lens: device tensors of one entry
    (the token's position, its cache slot (-1: not stored), the context length including it);
    block_table: the sequence's row of block ids. cos_sin: fp32 [max_position, D]. Reads no device
    value on the host (CUDA-graph safe). timing: int64 [num_layers, num_programs, 16] to receive
    each program's timestamps (TIMING_POINTS; bench/ diagnostics). final_norm (weight [H], eps) and
    normed [H]: RMSNorm of the last layer's output written to normed as well (the model's final
    norm, without a kernel of its own)."""
    if h.numel() != layers.hidden or not h.is_contiguous() or h.dtype != layers.dtype:
        raise ValueError(f"persistent decode: h {tuple(h.shape)} {h.dtype} must be {layers.hidden} contiguous "
                         f"{layers.dtype} values")
    d = layers.head_dim
    if cos_sin.dtype != torch.float32 or cos_sin.shape[1] != d or not cos_sin.is_contiguous():
        raise ValueError(f"persistent decode: cos_sin {tuple(cos_sin.shape)} {cos_sin.dtype} must be fp32 "
                         f"[max_position, {d}]")
    if (final_norm is None) != (normed is None):
        raise ValueError("persistent decode: final_norm and normed come together")
    if normed is not None and (normed.numel() != layers.hidden or not normed.is_contiguous()
                               or normed.dtype != layers.dtype or final_norm[0].shape != (layers.hidden,)
                               or not final_norm[0].is_contiguous()):
        raise ValueError(f"persistent decode: normed {tuple(normed.shape)} {normed.dtype} and the final norm weight "
                         f"{tuple(final_norm[0].shape)} must be {layers.hidden} contiguous {layers.dtype} values")
    if num_programs is None:
        num_programs = default_num_programs(h.device)
    nh, nkv = layers.num_heads, layers.num_kv_heads
    if workspace is None:
        workspace = DecodeWorkspace(nh, d, layers.intermediate, attention_splits(nkv, num_programs), h.dtype,
                                    h.device)
    counters = layer_counters(h.device)
    use_pdl, launch = pdl_launch_args(h.device)
    persistent_decode_kernel[(num_programs,)](
        h, layers.table, cos_sin, positions, slot_mapping, block_table, seq_lens, workspace.q, workspace.attn,
        workspace.part_m, workspace.part_l, workspace.part_acc, workspace.act, counters,
        counters if timing is None else timing, h if final_norm is None else final_norm[0],
        h if normed is None else normed, layers.num_layers, eps, 1e-6 if final_norm is None else final_norm[1],
        scale * LOG2E, sliding_window or 0,
        H=layers.hidden, HP=triton.next_power_of_2(layers.hidden), NH=nh, NKV=nkv, D=d,
        DP=max(16, triton.next_power_of_2(d)), I=layers.intermediate,
        KC=chunk_columns(layers.hidden, nh * d, layers.intermediate, max_chunk=max_chunk),
        BLOCK_H=max(16, triton.next_power_of_2(nh // nkv)), GROUP_PAD=triton.next_power_of_2(nh // nkv),
        BLOCK_SIZE=layers.block_size, TILE_N=ATTENTION_TILE_N, NUM_SPLITS=workspace.num_splits,
        SPLITS_PAD=triton.next_power_of_2(workspace.num_splits), QKV_BIAS=layers.qkv_bias, O_BIAS=layers.o_bias,
        MLP_BIAS=layers.mlp_bias, USE_WINDOW=sliding_window is not None,
        DOT_PRECISION="ieee" if h.dtype == torch.float32 else "tf32", USE_PDL=use_pdl, TIMING=timing is not None,
        DEPTH=depth, FINAL_NORM=final_norm is not None, NKV_PAD=triton.next_power_of_2(nkv), num_warps=num_warps,
        **launch,
    )
