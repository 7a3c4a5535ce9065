"""Warp-specialized decode: every decoder layer of a batch-1 decode step in one Gluon kernel, with a
weight stream that never waits for activations.

The persistent decode kernel (persistent_decode.py) loads each stage's weights into registers, so a
program's loads start only once the stage's input is known: every grid barrier and the attention
chain leave HBM idle. Here (bench/bench_ws_stream.py measured the design on the projections alone,
docs/performance.md) each program (one per SM) has two partitions:

- a producer warp copies the program's weight tiles for every stage of every layer, in the order the
  consumers use them, into a shared-memory ring with TMA (one mbarrier per slot; at most IN_FLIGHT
  slots in flight: more only delays the consumers' dependent loads behind them);
- four consumer warps run the layer as persistent_decode does (same stages, tasks and rounding; grid
  barriers between stages), staging each stage's input vector in shared memory as a wgmma B operand.

The GEMVs run on the tensor cores. A tile is 8 weight rows of K columns (2 rows when K = 8192, in
general 64 / (K / 256)) seen as 64 rows of 256 columns, one per (weight row, chunk of 256 columns):
the weight matrix itself viewed as rows of 256, four [64, 64] TMA boxes with the 128-byte swizzle
that wgmma reads. wgmma computes D[64, N] = A[64, 256] . B[256, N] with B[k, c] = x[256 c + k]
(N = K / 256 chunks); a weight row's result is the sum of the diagonal entries of its rows (chunk c
of the row against chunk c of x). The weights are addressed through one TMA descriptor over the
address span of every layer's weights (each weight's offset from the lowest one a multiple of 512
bytes) and a per-layer table of view rows, so the model's tensors are used where they are.

The Llama family's one-token decode steps take this kernel on Hopper where a model's sizes fit it
(llm_core/models/llama.py: `ws_decode`, on by default), else persistent_decode.

Stages per layer (grid barriers between them, as persistent_decode):
  A. RMSNorm(h) staged; q/k/v: a unit is 8 rows of a head and their rotary partners D / 2 on (two
     tiles); rotary on q and k; q to a buffer, k and v to cache slot `slot`.
  B. attention: (kv head, split) tasks over the paged cache on the tensor cores (mma_v2, the kv
     head's query heads as rows of 16); the split of a kv head that finishes last combines the
     splits (a counter per kv head, counted over the layers). The first tile of a program's task
     loads at the layer's beginning (PREFETCH_KV), its cache rows looked up once per launch.
  C. o projection over the attention output, added into h.
  D. RMSNorm(h) staged; gate/up: a unit is 8 gate rows and the matching 8 up rows; SiLU(gate) * up.
  E. down projection over that, added into h.
What a stage's chain would wait for loads ahead: rotary's cos / sin one unit ahead, h's rows for the
residual adds one tile ahead (loads do not move above the ring's waits by themselves).
Rounding as persistent_decode: GEMV outputs to bf16 before rotary, the residual add or SiLU, the
normalized row to bf16 before its weight. Supported: bf16, no biases, no sliding window, head_dim a
power of 2 from 16 to 128, at most 16 query heads per kv head, H, NH * D and I of 2048, 4096, 8192 or
16384 (K / 256 is wgmma's N, a multiple of 8 dividing 64) (`ws_decode_supported`); Hopper (TMA,
wgmma; Triton >= 3.6 with Gluon).
"""

from __future__ import annotations

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from llm_core.attention.kernels.prefill_attention import LOG2E, M_INIT
from llm_core.layers.kernels.persistent_decode import (EXIT_SLOT, HEAD_SLOTS, DecodeLayers, DecodeWorkspace,
                                                       attention_splits, default_num_programs, layer_counters)

# Triton 3.6 names the CTA-wide barrier thread_barrier; later versions, barrier.
_cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
MAX_SLOTS = 6  # ring slots of 32 KiB: as many as shared memory holds beside the staged inputs, at most 6
SHARED_MEMORY = 227 * 1024  # per block on Hopper
SCRATCH = 8 * 1024  # layout conversions and reductions (the compiler's)
IN_FLIGHT = 1  # slots in flight at most (bench_ws_stream: 1 was the fastest)
# When the first attention tile loads: 3 at the layer's beginning, beside the staging, as 16-byte
# vectors, taking the mma operands' layout during barrier A's wait; 2 at the layer's beginning in that
# layout; 1 during barrier A's wait; 0 after it. With cos / sin and h's rows loaded a unit / tile
# ahead and attention on mma_v2: 754 us per 1B launch against 850 at the start of the twelfth
# session (docs/performance.md).
PREFETCH_KV = 3
MAXNREG = 192  # the consumers' registers (168 spilled in the stage loops; 176-224 alike)
ATTENTION_TILE = 32
TIMING_POINTS = ("layer begins", "q/k/v staged", "q/k/v done", "barrier A passed", "attention done",
                 "barrier B passed", "o done", "barrier C passed", "gate/up staged", "gate/up done",
                 "barrier D passed", "down done", "barrier E passed", "attention: first tile's result",
                 "attention: split counted")
VIEW_FIELDS = gl.constexpr(4)  # per layer: view rows of qkv, o, gate_up, down
ADDR_FIELDS = gl.constexpr(4)  # per layer: ln1, ln2, k_cache, v_cache (element offsets from base_ptr)


# ----------------------------------------------------------------------------- producer


@gluon.jit
def ring_barriers(NBUF: gl.constexpr):
    # A ring's mbarriers, initialized: (ready: a slot's copy landed, empty: its consumers are done).
    ready = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(NBUF):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    fence_async_shared()
    return ready, empty


@gluon.jit
def _fetch(desc, bufs, ready, empty, i, vrow, NBUF: gl.constexpr, IN_FLIGHT: gl.constexpr):
    # Tile i of the program's stream (view rows vrow..vrow+63, all 256 columns) into ring slot i % NBUF.
    slot = i % NBUF
    mbarrier.wait(empty.index(slot), ((i // NBUF) & 1) ^ 1)
    j = gl.maximum(i - IN_FLIGHT, 0)
    mbarrier.wait(ready.index(j % NBUF), (j // NBUF) & 1, pred=i >= IN_FLIGHT)
    fence_async_shared()  # the consumers' reads of the slot before the copy's writes
    mbarrier.expect(ready.index(slot), 4 * desc.block_type.nbytes)
    for c in gl.static_range(4):
        tma.async_copy_global_to_shared(desc, [vrow, c * 64], ready.index(slot), bufs.index(slot * 4 + c))
    return i + 1


@gluon.jit
def _producer(wv, bufs, ready, empty, views_ptr, num_layers, pid, P: gl.constexpr, H: gl.constexpr,
              NH: gl.constexpr, NKV: gl.constexpr, D: gl.constexpr, I: gl.constexpr, NBUF: gl.constexpr,
              IN_FLIGHT: gl.constexpr):
    NQ: gl.constexpr = H // 256  # chunks of the q/k/v and gate/up inputs
    NO: gl.constexpr = NH * D // 256
    NI: gl.constexpr = I // 256
    i = 0
    for layer in range(num_layers):
        qkv = gl.load(views_ptr + layer * VIEW_FIELDS)
        o = gl.load(views_ptr + layer * VIEW_FIELDS + 1)
        gu = gl.load(views_ptr + layer * VIEW_FIELDS + 2)
        down = gl.load(views_ptr + layer * VIEW_FIELDS + 3)
        for u in range(pid, (NH + 2 * NKV) * D // 16, P):
            row = (u // (D // 16)) * D + (u % (D // 16)) * 8
            i = _fetch(wv, bufs, ready, empty, i, qkv + row * NQ, NBUF, IN_FLIGHT)
            i = _fetch(wv, bufs, ready, empty, i, qkv + (row + D // 2) * NQ, NBUF, IN_FLIGHT)
        for t in range(pid, H // (64 // NO), P):
            i = _fetch(wv, bufs, ready, empty, i, o + t * 64, NBUF, IN_FLIGHT)
        for u in range(pid, I // 8, P):
            i = _fetch(wv, bufs, ready, empty, i, gu + u * 8 * NQ, NBUF, IN_FLIGHT)
            i = _fetch(wv, bufs, ready, empty, i, gu + (I + u * 8) * NQ, NBUF, IN_FLIGHT)
        for t in range(pid, H // (64 // NI), P):
            i = _fetch(wv, bufs, ready, empty, i, down + t * 64, NBUF, IN_FLIGHT)


# ----------------------------------------------------------------------------- consumers


@gluon.jit
def _mark(timing_ptr, layer, pid, P: gl.constexpr, point: gl.constexpr, TIMING: gl.constexpr):
    # TIMING builds: the global timer at TIMING_POINTS[point] into timing [num_layers, P, 16].
    if TIMING:
        t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)
        gl.store(timing_ptr + (layer * P + pid) * 16 + point, t)


@gluon.jit
def _mark_after(timing_ptr, layer, pid, P: gl.constexpr, point: gl.constexpr, dep, TIMING: gl.constexpr):
    # _mark once the int32 scalar dep is known (the timer read takes it as an operand).
    if TIMING:
        t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l,r", [dep], dtype=gl.int64, is_pure=False,
                                      pack=1)
        gl.store(timing_ptr + (layer * P + pid) * 16 + point, t)


@gluon.jit
def _grid_arrive(counter_ptr):
    # Every thread's stores before one thread's gpu-scope release (a release also waits for the loads
    # in flight: loads meant to overlap the wait are issued after the arrival).
    _cta_barrier()
    gl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")


@gluon.jit
def _grid_wait(counter_ptr, nb, P: gl.constexpr):
    # Wait for grid barrier number nb + 1 (every program arrived: (nb + 1) * P); returns nb + 1.
    seen = gl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    while seen < (nb + 1) * P:
        seen = gl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
    _cta_barrier()
    return nb + 1


@gluon.jit
def _grid_barrier(counter_ptr, nb, P: gl.constexpr):
    _grid_arrive(counter_ptr)
    return _grid_wait(counter_ptr, nb, P)


@gluon.jit
def _stage(xb, src_ptr, norm_ptr, eps, N: gl.constexpr, NORM: gl.constexpr, num_warps: gl.constexpr):
    # The stage input (N chunks of 256; RMSNorm of it where NORM, rounded as persistent_decode) into xb
    # as wgmma's B: box j holds [N, 64] = x[256 c + 64 j + k], bf16. One round trip: the input and the
    # norm's weights are loaded together, the input once (loading it again after the sum of squares,
    # a second round trip on the chain, took the 1B launch 945 us against 855-880 without it,
    # docs/performance.md).
    BL: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    offs = (gl.arange(0, N, layout=gl.SliceLayout(1, BL))[:, None] * 256
            + gl.arange(0, 64, layout=gl.SliceLayout(0, BL))[None, :])
    x0 = gl.load(src_ptr + offs, cache_modifier=".cg")
    x1 = gl.load(src_ptr + 64 + offs, cache_modifier=".cg")
    x2 = gl.load(src_ptr + 128 + offs, cache_modifier=".cg")
    x3 = gl.load(src_ptr + 192 + offs, cache_modifier=".cg")
    if NORM:
        w0 = gl.load(norm_ptr + offs).to(gl.float32)
        w1 = gl.load(norm_ptr + 64 + offs).to(gl.float32)
        w2 = gl.load(norm_ptr + 128 + offs).to(gl.float32)
        w3 = gl.load(norm_ptr + 192 + offs).to(gl.float32)
        f0 = x0.to(gl.float32)
        f1 = x1.to(gl.float32)
        f2 = x2.to(gl.float32)
        f3 = x3.to(gl.float32)
        ss = gl.sum(gl.sum(f0 * f0 + f1 * f1 + f2 * f2 + f3 * f3, axis=1), axis=0)
        rstd = gl.rsqrt(ss / (N * 256) + eps)
        x0 = ((f0 * rstd).to(gl.bfloat16).to(gl.float32) * w0).to(gl.bfloat16)
        x1 = ((f1 * rstd).to(gl.bfloat16).to(gl.float32) * w1).to(gl.bfloat16)
        x2 = ((f2 * rstd).to(gl.bfloat16).to(gl.float32) * w2).to(gl.bfloat16)
        x3 = ((f3 * rstd).to(gl.bfloat16).to(gl.float32) * w3).to(gl.bfloat16)
    xb.index(0).store(x0)
    xb.index(1).store(x1)
    xb.index(2).store(x2)
    xb.index(3).store(x3)
    fence_async_shared()
    _cta_barrier()


@gluon.jit
def slot_diagonal(bufs, ready, empty, xb, i, N: gl.constexpr, NBUF: gl.constexpr, CONSUME: gl.constexpr,
                  num_warps: gl.constexpr):
    # The next ring slot (a [64, 256] view tile) against x staged in xb (N chunks): z [64], view row
    # (w, c) against chunk c of x, the diagonal of D = A . B. CONSUME False: no wgmma (diagnostics).
    ML: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, N, 16])
    slot = i % NBUF
    mbarrier.wait(ready.index(slot), (i // NBUF) & 1)
    acc = gl.zeros([64, N], gl.float32, ML)
    if CONSUME:
        for j in gl.static_range(4):
            acc = warpgroup_mma(bufs.index(slot * 4 + j), xb.index(j).permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
    mbarrier.arrive(empty.index(slot))
    r = gl.arange(0, 64, layout=gl.SliceLayout(1, ML))
    c = gl.arange(0, N, layout=gl.SliceLayout(0, ML))
    return gl.sum(gl.where((r % N)[:, None] == c[None, :], acc, 0.0), axis=1), i + 1


@gluon.jit
def rows_of(z, first: gl.constexpr, R: gl.constexpr, N: gl.constexpr, num_warps: gl.constexpr):
    # Weight rows first..first+R-1 of the tile from slot_diagonal's z: y[j] = sum of z over the view
    # rows of weight row first + j (view row // N).
    B2: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [num_warps, 1], [1, 0])
    zc = gl.convert_layout(z, gl.SliceLayout(0, B2))
    v = gl.arange(0, 64, layout=gl.SliceLayout(0, B2))
    w = gl.arange(0, R, layout=gl.SliceLayout(1, B2))
    return gl.sum(gl.where((v // N)[None, :] == (w + first)[:, None], zc[None, :], 0.0), axis=1)


@gluon.jit
def _tile(bufs, ready, empty, xb, i, N: gl.constexpr, NBUF: gl.constexpr, num_warps: gl.constexpr):
    # The next ring slot against x: per weight row of the tile (64 / N of them), its bf16 result.
    z, i = slot_diagonal(bufs, ready, empty, xb, i, N, NBUF, True, num_warps)
    return rows_of(z, 0, 64 // N, N, num_warps).to(gl.bfloat16).to(gl.float32), i


@gluon.jit
def _qkv_stage(bufs, ready, empty, xb, i, q_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot, pid,
               P: gl.constexpr, H: gl.constexpr, NH: gl.constexpr, NKV: gl.constexpr, D: gl.constexpr,
               NBUF: gl.constexpr, num_warps: gl.constexpr):
    B2: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [num_warps, 1], [1, 0])
    e = gl.arange(0, 8, layout=gl.SliceLayout(1, B2))
    # Each unit's cos / sin load one unit ahead: loaded after the unit's tiles, they were a round trip
    # per unit on the stage's chain (loads do not move above the ring's waits).
    cs = cos_sin_ptr + pos * D + (pid % (D // 16)) * 8 + e
    cos_n = gl.load(cs)
    sin_n = gl.load(cs + D // 2)
    for u in range(pid, (NH + 2 * NKV) * D // 16, P):
        head = u // (D // 16)
        pair = (u % (D // 16)) * 8 + e  # rotary pair index within the head
        cos = cos_n
        sin = sin_n
        cs = cos_sin_ptr + pos * D + ((u + P) % (D // 16)) * 8 + e
        cos_n = gl.load(cs)
        sin_n = gl.load(cs + D // 2)
        x1, i = _tile(bufs, ready, empty, xb, i, H // 256, NBUF, num_warps)
        x2, i = _tile(bufs, ready, empty, xb, i, H // 256, NBUF, num_warps)
        if head < NH + NKV:
            y1 = x1 * cos - x2 * sin
            y2 = x2 * cos + x1 * sin
        else:
            y1 = x1
            y2 = x2
        if head < NH:
            gl.store(q_ptr + head * D + pair, y1.to(gl.bfloat16))
            gl.store(q_ptr + head * D + D // 2 + pair, y2.to(gl.bfloat16))
        else:
            cache = k_cache_ptr
            if head >= NH + NKV:
                cache = v_cache_ptr
            dst = cache + slot * (NKV * D) + ((head - NH) % NKV) * D + pair
            ok = (pair >= 0) & (slot >= 0)
            gl.store(dst, y1.to(gl.bfloat16), mask=ok)
            gl.store(dst + D // 2, y2.to(gl.bfloat16), mask=ok)
    return i


@gluon.jit
def _residual_stage(bufs, ready, empty, xb, i, src_ptr, h_ptr, eps, pid, P: gl.constexpr, H: gl.constexpr,
                    N: gl.constexpr, NBUF: gl.constexpr, num_warps: gl.constexpr):
    # o over the attention output (N = NH * D / 256), down over SiLU(gate) * up (N = I / 256): rows of
    # h += the projection's rows, each tile 64 / N rows that no other program writes in the stage.
    # Each tile's rows of h load one tile ahead (the first beside the staging): loaded after the
    # tile's product, they were a round trip per tile.
    B2: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [num_warps, 1], [1, 0])
    R: gl.constexpr = 64 // N
    w = gl.arange(0, R, layout=gl.SliceLayout(1, B2))
    r_n = gl.load(h_ptr + pid * R + w, mask=pid * R + w < H, other=0.0, cache_modifier=".cg")
    _stage(xb, src_ptr, src_ptr, eps, N, False, num_warps)
    for t in range(pid, H // R, P):
        rows = t * R + w
        r = r_n.to(gl.float32)
        r_n = gl.load(h_ptr + rows + P * R, mask=rows + P * R < H, other=0.0, cache_modifier=".cg")
        y, i = _tile(bufs, ready, empty, xb, i, N, NBUF, num_warps)
        gl.store(h_ptr + rows, (y + r).to(gl.bfloat16))
    return i


@gluon.jit
def _gate_up_stage(bufs, ready, empty, xb, i, act_ptr, pid, P: gl.constexpr, H: gl.constexpr, I: gl.constexpr,
                   NBUF: gl.constexpr, num_warps: gl.constexpr):
    B2: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [num_warps, 1], [1, 0])
    e = gl.arange(0, 8, layout=gl.SliceLayout(1, B2))
    for u in range(pid, I // 8, P):
        g, i = _tile(bufs, ready, empty, xb, i, H // 256, NBUF, num_warps)
        up, i = _tile(bufs, ready, empty, xb, i, H // 256, NBUF, num_warps)
        act = (g / (1.0 + gl.exp(-g))).to(gl.bfloat16).to(gl.float32) * up
        gl.store(act_ptr + u * 8 + e, act.to(gl.bfloat16))
    return i


@gluon.jit
def _split_range(split, seq_len, NUM_SPLITS: gl.constexpr, TILE_N: gl.constexpr):
    # Keys [begin, end) of a split: whole tiles, cdiv(cdiv(seq_len, NUM_SPLITS), TILE_N) per split.
    split_size = gl.cdiv(gl.cdiv(seq_len, NUM_SPLITS), TILE_N) * TILE_N
    begin = split * split_size
    return begin, gl.minimum(begin + split_size, seq_len)


@gluon.jit
def _tile_rows(block_table_ptr, start, end, BLOCK_SIZE: gl.constexpr, TILE_N: gl.constexpr, NL: gl.constexpr):
    # Cache rows of keys start..start+TILE_N-1 (through the block table) and which of them are < end,
    # in the 1-D layout NL.
    n = start + gl.arange(0, TILE_N, layout=NL)
    n_ok = n < end
    blocks = gl.load(block_table_ptr + n // BLOCK_SIZE, mask=n_ok, other=0)
    return blocks.to(gl.int64) * BLOCK_SIZE + n % BLOCK_SIZE, n_ok


@gluon.constexpr_function
def _operand_b(num_warps):
    # K^T [D, TILE_N] and V [TILE_N, D] as attention's mma_v2 B operands (_attend).
    mma = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, num_warps], instr_shape=[16, 8])
    return gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)


@gluon.constexpr_function
def _vector_rows(num_warps):
    # [TILE_N, D] as rows of 16-byte vectors: the early tile's loads.
    return gl.SliceLayout(0, gl.BlockedLayout([1, 1, 8], [1, 4, 8], [1, num_warps, 1], [2, 1, 0]))


@gluon.jit
def _load_kv(k_cache_ptr, v_cache_ptr, rows_k, ok_k, rows_v, ok_v, kv_head, NKV: gl.constexpr, D: gl.constexpr,
             num_warps: gl.constexpr):
    # K^T and V of a kv head at cache rows rows_k / rows_v (the key axes of _operand_b's K^T / V;
    # rows not ok read as zeros), bf16, as the B operands.
    KB: gl.constexpr = _operand_b(num_warps)
    kk = rows_k[None, :] * (NKV * D) + kv_head * D + gl.arange(0, D, layout=gl.SliceLayout(1, KB))[:, None]
    vv = rows_v[:, None] * (NKV * D) + kv_head * D + gl.arange(0, D, layout=gl.SliceLayout(0, KB))[None, :]
    k = gl.load(k_cache_ptr + kk, mask=ok_k[None, :], other=0.0, cache_modifier=".cg")
    v = gl.load(v_cache_ptr + vv, mask=ok_v[:, None], other=0.0, cache_modifier=".cg")
    return k, v


@gluon.jit
def _load_kv_vectors(k_cache_ptr, v_cache_ptr, rows, ok, kv_head, NKV: gl.constexpr, D: gl.constexpr,
                     num_warps: gl.constexpr):
    # K and V [TILE_N, D] of a kv head at cache rows `rows` (_vector_rows' key axis), in 16-byte loads.
    VL: gl.constexpr = _vector_rows(num_warps)
    kv = rows[:, None] * (NKV * D) + kv_head * D + gl.arange(0, D, layout=gl.SliceLayout(0, VL))[None, :]
    k = gl.load(k_cache_ptr + kv, mask=ok[:, None], other=0.0, cache_modifier=".cg")
    v = gl.load(v_cache_ptr + kv, mask=ok[:, None], other=0.0, cache_modifier=".cg")
    return k, v


@gluon.jit
def _kv_tile(k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, start, end, NKV: gl.constexpr, D: gl.constexpr,
             BLOCK_SIZE: gl.constexpr, TILE_N: gl.constexpr, num_warps: gl.constexpr):
    # K^T and V of keys start.. (keys at or past end read as zeros), as the B operands.
    KB: gl.constexpr = _operand_b(num_warps)
    rows_k, ok_k = _tile_rows(block_table_ptr, start, end, BLOCK_SIZE, TILE_N, gl.SliceLayout(0, KB))
    rows_v, ok_v = _tile_rows(block_table_ptr, start, end, BLOCK_SIZE, TILE_N, gl.SliceLayout(1, KB))
    return _load_kv(k_cache_ptr, v_cache_ptr, rows_k, ok_k, rows_v, ok_v, kv_head, NKV, D, num_warps)


@gluon.jit
def _first_tile_rows(pid, block_table_ptr, seq_len, NKV: gl.constexpr, BLOCK_SIZE: gl.constexpr,
                     TILE_N: gl.constexpr, NUM_SPLITS: gl.constexpr, NL: gl.constexpr):
    # Cache rows of the first tile of the program's first attention task without the step's own key
    # (stage A writes it; _attention_stage patches it in): the same in every layer, so looked up once.
    begin, end = _split_range(pid % NUM_SPLITS, seq_len, NUM_SPLITS, TILE_N)
    end = gl.where(pid < NKV * NUM_SPLITS, gl.minimum(end, seq_len - 1), begin)
    return _tile_rows(block_table_ptr, begin, end, BLOCK_SIZE, TILE_N, NL)


@gluon.jit
def _attend(acc, m_i, l_i, qa, kt, v, start, end, qk_scale, TILE_N: gl.constexpr, num_warps: gl.constexpr):
    # Online-softmax update with keys start..end-1 of tile (kt, v) on the tensor cores (log2 domain):
    # the GROUP query rows padded to 16 (qa: mma_v2's A operand, the padding rows zeros), S = qa . K^T
    # [16, TILE_N], O += P . V [16, D], p rounded to bf16 for the product (as persistent_decode's dot).
    MMA: gl.constexpr = _operand_b(num_warps).parent
    PA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    s = mma_v2(qa, kt, gl.zeros([16, TILE_N], gl.float32, MMA)) * qk_scale
    s = gl.where(((start + gl.arange(0, TILE_N, layout=gl.SliceLayout(0, MMA))) < end)[None, :], s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s - m_new[:, None])
    acc = mma_v2(gl.convert_layout(p.to(gl.bfloat16), PA), v, acc * alpha[:, None])
    return acc, m_new, l_i * alpha + gl.sum(p, axis=1)


@gluon.jit
def _split_task(k_first, v_first, t, pid, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len, slot, part_m_ptr,
               part_l_ptr, part_acc_ptr, qk_scale, timing_ptr, layer, P: gl.constexpr, NH: gl.constexpr,
               NKV: gl.constexpr, D: gl.constexpr, BLOCK_SIZE: gl.constexpr, TILE_N: gl.constexpr,
               NUM_SPLITS: gl.constexpr, TIMING: gl.constexpr, num_warps: gl.constexpr):
    # Task t's partials (m, l and acc of each query head of the kv head, the GROUP heads as rows
    # 0..GROUP-1 of 16) over its split's keys.
    GROUP: gl.constexpr = NH // NKV
    KB: gl.constexpr = _operand_b(num_warps)
    MMA: gl.constexpr = KB.parent
    QA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    kv_head = t // NUM_SPLITS
    split = t % NUM_SPLITS
    begin, end = _split_range(split, seq_len, NUM_SPLITS, TILE_N)
    rq = gl.arange(0, 16, layout=gl.SliceLayout(1, QA))
    dq = gl.arange(0, D, layout=gl.SliceLayout(0, QA))
    qa = gl.load(q_ptr + (kv_head * GROUP + rq)[:, None] * D + dq[None, :], mask=(rq < GROUP)[:, None], other=0.0,
                 cache_modifier=".cg")
    dk = gl.arange(0, D, layout=gl.SliceLayout(1, KB))  # K^T's rows
    dv = gl.arange(0, D, layout=gl.SliceLayout(0, KB))  # V's columns
    own_row = slot * (NKV * D) + kv_head * D
    k_own = gl.load(k_cache_ptr + own_row + dk, mask=(dk >= 0) & (slot >= 0), other=0.0, cache_modifier=".cg")
    v_own = gl.load(v_cache_ptr + own_row + dv, mask=(dv >= 0) & (slot >= 0), other=0.0, cache_modifier=".cg")
    kt = k_first
    v = v_first
    if t != pid:  # more tasks than programs
        kt, v = _kv_tile(k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, begin, gl.minimum(end, seq_len - 1),
                         NKV, D, BLOCK_SIZE, TILE_N, num_warps)
    own_k = (begin + gl.arange(0, TILE_N, layout=gl.SliceLayout(0, KB))) == seq_len - 1
    own_v = (begin + gl.arange(0, TILE_N, layout=gl.SliceLayout(1, KB))) == seq_len - 1
    kt = gl.where(own_k[None, :], k_own[:, None], kt)
    v = gl.where(own_v[:, None], v_own[None, :], v)
    acc = gl.zeros([16, D], gl.float32, MMA)
    m_i = gl.full([16], M_INIT, gl.float32, gl.SliceLayout(1, MMA))
    l_i = gl.zeros([16], gl.float32, gl.SliceLayout(1, MMA))
    acc, m_i, l_i = _attend(acc, m_i, l_i, qa, kt, v, begin, end, qk_scale, TILE_N, num_warps)
    if TIMING:  # the mark waits for the tile's result
        _mark_after(timing_ptr, layer, pid, P, 13, gl.max(l_i, axis=0).to(gl.int32), TIMING)
    for start in range(begin + TILE_N, end, TILE_N):  # the split's other tiles (long contexts)
        kt, v = _kv_tile(k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, start, end, NKV, D, BLOCK_SIZE,
                         TILE_N, num_warps)
        acc, m_i, l_i = _attend(acc, m_i, l_i, qa, kt, v, start, end, qk_scale, TILE_N, num_warps)
    r = gl.arange(0, 16, layout=gl.SliceLayout(1, MMA))
    part = (kv_head * GROUP + r).to(gl.int64) * NUM_SPLITS + split
    gl.store(part_m_ptr + part, m_i, mask=r < GROUP)
    gl.store(part_l_ptr + part, l_i, mask=r < GROUP)
    da = gl.arange(0, D, layout=gl.SliceLayout(0, MMA))
    gl.store(part_acc_ptr + part[:, None] * D + da[None, :], acc, mask=(r < GROUP)[:, None])


@gluon.jit
def _attention_stage(k_first, v_first, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len, slot, part_m_ptr,
                     part_l_ptr, part_acc_ptr, attn_ptr, head_counters_ptr, qk_scale, layer, pid, P: gl.constexpr,
                     NH: gl.constexpr, NKV: gl.constexpr, D: gl.constexpr, BLOCK_SIZE: gl.constexpr,
                     TILE_N: gl.constexpr, NUM_SPLITS: gl.constexpr, timing_ptr, TIMING: gl.constexpr,
                     num_warps: gl.constexpr):
    # (kv head, split) tasks: the GROUP query heads of the kv head against the split's keys, online
    # softmax on the tensor cores (_split_task); the split that finishes last combines the splits (as
    # persistent_decode's _attention_task). (k_first, v_first): the first tile (_first_tile_rows),
    # the step's own key patched in there.
    GROUP: gl.constexpr = NH // NKV
    for t in range(pid, NKV * NUM_SPLITS, P):
        kv_head = t // NUM_SPLITS
        _split_task(k_first, v_first, t, pid, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len, slot,
                    part_m_ptr, part_l_ptr, part_acc_ptr, qk_scale, timing_ptr, layer, P, NH, NKV, D, BLOCK_SIZE,
                    TILE_N, NUM_SPLITS, TIMING, num_warps)
        _cta_barrier()
        done = gl.atomic_add(head_counters_ptr + kv_head, 1, sem="acq_rel", scope="gpu")
        _mark_after(timing_ptr, layer, pid, P, 14, done, TIMING)
        if done == NUM_SPLITS * (layer + 1) - 1:
            CL: gl.constexpr = gl.BlockedLayout([1, 1, 8], [1, 4, 8], [num_warps, 1, 1], [2, 1, 0])
            MS: gl.constexpr = gl.SliceLayout(2, CL)  # [GROUP, NUM_SPLITS]
            AD: gl.constexpr = gl.SliceLayout(1, CL)  # [GROUP, D]
            g2 = kv_head * GROUP + gl.arange(0, GROUP, layout=gl.SliceLayout(1, MS))
            s2 = gl.arange(0, NUM_SPLITS, layout=gl.SliceLayout(0, MS))
            parts = g2[:, None] * NUM_SPLITS + s2[None, :]
            m = gl.load(part_m_ptr + parts, cache_modifier=".cg")
            ll = gl.load(part_l_ptr + parts, cache_modifier=".cg")
            da = gl.arange(0, D, layout=gl.SliceLayout(0, AD))
            accs = gl.load(part_acc_ptr + parts.to(gl.int64)[:, :, None] * D + da[None, None, :],
                           cache_modifier=".cg")
            weight = gl.exp2(m - gl.max(m, axis=1)[:, None])  # empty splits: m = M_INIT, weight 0
            total = gl.sum(ll * weight, axis=1)
            result = gl.sum(accs * weight[:, :, None], axis=1)
            result = result / gl.convert_layout(gl.where(total > 0, total, 1.0), gl.SliceLayout(1, AD))[:, None]
            ha = kv_head * GROUP + gl.arange(0, GROUP, layout=gl.SliceLayout(1, AD))
            gl.store(attn_ptr + ha[:, None] * D + da[None, :], result.to(gl.bfloat16))


@gluon.jit
def _consumer(bufs, ready, empty, xh, xo, xi, h_ptr, addrs_ptr, base_ptr, cos_sin_ptr, positions_ptr, slot_mapping_ptr,
              block_table_ptr, seq_lens_ptr, q_ptr, attn_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, act_ptr,
              counters_ptr, final_norm_w_ptr, normed_ptr, timing_ptr, num_layers, eps, final_eps, qk_scale, pid,
              P: gl.constexpr, H: gl.constexpr, NH: gl.constexpr, NKV: gl.constexpr, D: gl.constexpr,
              I: gl.constexpr, BLOCK_SIZE: gl.constexpr, TILE_N: gl.constexpr, NUM_SPLITS: gl.constexpr,
              NBUF: gl.constexpr, FINAL_NORM: gl.constexpr, TIMING: gl.constexpr, PREFETCH_KV: gl.constexpr,
              num_warps: gl.constexpr):
    pos = gl.load(positions_ptr).to(gl.int64)
    slot = gl.load(slot_mapping_ptr).to(gl.int64)
    seq_len = gl.load(seq_lens_ptr)
    # The first attention tile's cache rows (see PREFETCH_KV), looked up once: the same in every layer.
    KB: gl.constexpr = _operand_b(num_warps)
    if PREFETCH_KV == 3:
        rows, ok = _first_tile_rows(pid, block_table_ptr, seq_len, NKV, BLOCK_SIZE, TILE_N, NUM_SPLITS,
                                    gl.SliceLayout(1, _vector_rows(num_warps)))
    else:
        rows_k, ok_k = _first_tile_rows(pid, block_table_ptr, seq_len, NKV, BLOCK_SIZE, TILE_N, NUM_SPLITS,
                                        gl.SliceLayout(0, KB))
        rows_v, ok_v = _first_tile_rows(pid, block_table_ptr, seq_len, NKV, BLOCK_SIZE, TILE_N, NUM_SPLITS,
                                        gl.SliceLayout(1, KB))
    kv_head0 = pid // NUM_SPLITS
    i = 0
    nb = 0
    for layer in range(num_layers):
        _mark(timing_ptr, layer, pid, P, 0, TIMING)
        # Offsets from base_ptr, multiples of 8 elements (WsDecodeWeights): vector loads.
        ln1 = base_ptr + gl.multiple_of(gl.load(addrs_ptr + layer * ADDR_FIELDS), 8)
        ln2 = base_ptr + gl.multiple_of(gl.load(addrs_ptr + layer * ADDR_FIELDS + 1), 8)
        k_cache = base_ptr + gl.multiple_of(gl.load(addrs_ptr + layer * ADDR_FIELDS + 2), 8)
        v_cache = base_ptr + gl.multiple_of(gl.load(addrs_ptr + layer * ADDR_FIELDS + 3), 8)
        if PREFETCH_KV == 3:  # beside the staging, lands during stage A
            k_rows, v_rows = _load_kv_vectors(k_cache, v_cache, rows, ok, kv_head0, NKV, D, num_warps)
        if PREFETCH_KV == 2:
            k_first, v_first = _load_kv(k_cache, v_cache, rows_k, ok_k, rows_v, ok_v, kv_head0, NKV, D, num_warps)
        _stage(xh, h_ptr, ln1, eps, H // 256, True, num_warps)
        _mark(timing_ptr, layer, pid, P, 1, TIMING)
        i = _qkv_stage(bufs, ready, empty, xh, i, q_ptr, k_cache, v_cache, cos_sin_ptr, pos, slot, pid, P, H, NH,
                       NKV, D, NBUF, num_warps)
        _mark(timing_ptr, layer, pid, P, 2, TIMING)
        if PREFETCH_KV == 1:  # the first tile loads during the barrier's wait (the polls then wait behind it)
            _grid_arrive(counters_ptr)
            k_first, v_first = _load_kv(k_cache, v_cache, rows_k, ok_k, rows_v, ok_v, kv_head0, NKV, D, num_warps)
            nb = _grid_wait(counters_ptr, nb, P)
        elif PREFETCH_KV == 2:
            nb = _grid_barrier(counters_ptr, nb, P)
        elif PREFETCH_KV == 3:  # the operands' layouts during the barrier's wait
            _grid_arrive(counters_ptr)
            k_first = gl.convert_layout(gl.permute(k_rows, (1, 0)), KB)
            v_first = gl.convert_layout(v_rows, KB)
            nb = _grid_wait(counters_ptr, nb, P)
        else:
            nb = _grid_barrier(counters_ptr, nb, P)
            k_first, v_first = _load_kv(k_cache, v_cache, rows_k, ok_k, rows_v, ok_v, kv_head0, NKV, D, num_warps)
        _mark(timing_ptr, layer, pid, P, 3, TIMING)
        _attention_stage(k_first, v_first, q_ptr, k_cache, v_cache, block_table_ptr, seq_len, slot, part_m_ptr,
                         part_l_ptr, part_acc_ptr, attn_ptr, counters_ptr + HEAD_SLOTS, qk_scale, layer, pid, P, NH,
                         NKV, D, BLOCK_SIZE, TILE_N, NUM_SPLITS, timing_ptr, TIMING, num_warps)
        _mark(timing_ptr, layer, pid, P, 4, TIMING)
        nb = _grid_barrier(counters_ptr, nb, P)
        _mark(timing_ptr, layer, pid, P, 5, TIMING)
        i = _residual_stage(bufs, ready, empty, xo, i, attn_ptr, h_ptr, eps, pid, P, H, NH * D // 256, NBUF,
                            num_warps)
        _mark(timing_ptr, layer, pid, P, 6, TIMING)
        nb = _grid_barrier(counters_ptr, nb, P)
        _mark(timing_ptr, layer, pid, P, 7, TIMING)
        _stage(xh, h_ptr, ln2, eps, H // 256, True, num_warps)
        _mark(timing_ptr, layer, pid, P, 8, TIMING)
        i = _gate_up_stage(bufs, ready, empty, xh, i, act_ptr, pid, P, H, I, NBUF, num_warps)
        _mark(timing_ptr, layer, pid, P, 9, TIMING)
        nb = _grid_barrier(counters_ptr, nb, P)
        _mark(timing_ptr, layer, pid, P, 10, TIMING)
        i = _residual_stage(bufs, ready, empty, xi, i, act_ptr, h_ptr, eps, pid, P, H, I // 256, NBUF, num_warps)
        _mark(timing_ptr, layer, pid, P, 11, TIMING)
        nb = _grid_barrier(counters_ptr, nb, P)
        _mark(timing_ptr, layer, pid, P, 12, TIMING)
    # Every program has passed every barrier once it counts here: the last one resets the counters
    # (and sees all of h: the model's final norm).
    if gl.atomic_add(counters_ptr + EXIT_SLOT, 1, sem="acq_rel", scope="gpu") == P - 1:
        if FINAL_NORM:
            FL: gl.constexpr = gl.BlockedLayout([8], [32], [num_warps], [0])
            offs = gl.arange(0, H, layout=FL)
            hv = gl.load(h_ptr + offs, cache_modifier=".cg").to(gl.float32)
            rstd = gl.rsqrt(gl.sum(hv * hv, axis=0) / H + final_eps)
            normed = (hv * rstd).to(gl.bfloat16).to(gl.float32) * gl.load(final_norm_w_ptr + offs).to(gl.float32)
            gl.store(normed_ptr + offs, normed.to(gl.bfloat16))
        for kv in gl.static_range(NKV):
            gl.store(counters_ptr + HEAD_SLOTS + kv, 0)
        gl.atomic_xchg(counters_ptr, 0)
        gl.atomic_xchg(counters_ptr + EXIT_SLOT, 0)


@gluon.jit
def ws_decode_kernel(wv, views_ptr, addrs_ptr, base_ptr, h_ptr, cos_sin_ptr, positions_ptr, slot_mapping_ptr,
                     block_table_ptr, seq_lens_ptr, q_ptr, attn_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, act_ptr,
                     counters_ptr, final_norm_w_ptr, normed_ptr, timing_ptr, num_layers, eps, final_eps, qk_scale,
                     P: gl.constexpr, H: gl.constexpr, NH: gl.constexpr, NKV: gl.constexpr, D: gl.constexpr,
                     I: gl.constexpr, BLOCK_SIZE: gl.constexpr, TILE_N: gl.constexpr, NUM_SPLITS: gl.constexpr,
                     NBUF: gl.constexpr, IN_FLIGHT: gl.constexpr, FINAL_NORM: gl.constexpr, TIMING: gl.constexpr,
                     PREFETCH_KV: gl.constexpr, num_warps: gl.constexpr):
    pid = gl.program_id(0)
    bufs = gl.allocate_shared_memory(gl.bfloat16, [NBUF * 4, 64, 64], wv.layout)
    xh = gl.allocate_shared_memory(gl.bfloat16, [4, H // 256, 64], wv.layout)
    xo = gl.allocate_shared_memory(gl.bfloat16, [4, NH * D // 256, 64], wv.layout)
    xi = gl.allocate_shared_memory(gl.bfloat16, [4, I // 256, 64], wv.layout)
    ready, empty = ring_barriers(NBUF)
    gl.warp_specialize([
        (_consumer, (bufs, ready, empty, xh, xo, xi, h_ptr, addrs_ptr, base_ptr, cos_sin_ptr, positions_ptr,
                     slot_mapping_ptr, block_table_ptr, seq_lens_ptr, q_ptr, attn_ptr, part_m_ptr, part_l_ptr,
                     part_acc_ptr, act_ptr, counters_ptr, final_norm_w_ptr, normed_ptr, timing_ptr, num_layers, eps,
                     final_eps, qk_scale, pid, P, H, NH, NKV, D, I, BLOCK_SIZE, TILE_N, NUM_SPLITS, NBUF, FINAL_NORM,
                     TIMING, PREFETCH_KV, num_warps)),
        (_producer, (wv, bufs, ready, empty, views_ptr, num_layers, pid, P, H, NH, NKV, D, I, NBUF, IN_FLIGHT)),
    ], [1], [48])


# ----------------------------------------------------------------------------- host


def ws_decode_available(device: torch.device) -> bool:
    """Hopper: TMA and wgmma (the kernel is compiled for nothing else)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def ws_decode_supported(hidden: int, num_heads: int, num_kv_heads: int, head_dim: int, intermediate: int,
                        num_splits: int) -> bool:
    """Whether layers of these sizes fit the kernel's tiles (module docstring)."""
    def fits(k):  # K / 256 chunks: wgmma's N (a multiple of 8), dividing the 64 rows of a tile
        return k % 256 == 0 and k // 256 in (8, 16, 32, 64)

    def power_of_2(n):
        return n > 0 and n & (n - 1) == 0

    group = num_heads // num_kv_heads if num_kv_heads else 0
    return (fits(hidden) and fits(num_heads * head_dim) and fits(intermediate) and head_dim % 16 == 0
            and power_of_2(head_dim) and 16 <= head_dim <= 128 and num_heads % max(num_kv_heads, 1) == 0
            and power_of_2(group) and group <= 16 and power_of_2(num_splits) and num_kv_heads <= 248)


def ring_slots(hidden: int, attention_width: int, intermediate: int) -> int:
    """Ring slots that fit in shared memory beside the three staged inputs (bf16, 4 x K / 4 values each)."""
    staged = 2 * (hidden + attention_width + intermediate)
    return max(1, min(MAX_SLOTS, (SHARED_MEMORY - staged - SCRATCH) // (32 * 1024)))


def aligned_offsets(rows: list[list[torch.Tensor]], alignment: int, what: str):
    """(the tensor at the lowest address, each tensor's byte offset from it), every offset a multiple
    of `alignment` bytes (else ValueError)."""
    lowest = min((t for row in rows for t in row), key=lambda t: t.data_ptr())
    offsets = [[t.data_ptr() - lowest.data_ptr() for t in row] for row in rows]
    if any(off % alignment for row in offsets for off in row):
        raise ValueError(f"ws decode: every {what} must start a multiple of {alignment} bytes after the lowest")
    return lowest, offsets


class WsDecodeWeights:
    """What the kernel needs of DecodeLayers: one TMA descriptor over the address span of every layer's
    q/k/v, o, gate/up and down weights (viewed as rows of 256 bf16, boxes of [64, 64]), the view
    row of each weight per layer, and the addresses of each layer's norms and caches."""

    def __init__(self, layers: DecodeLayers) -> None:
        if layers.dtype != torch.bfloat16 or layers.qkv_bias or layers.o_bias or layers.mlp_bias:
            raise ValueError("ws decode: bf16 layers without biases only")
        weights = [[layer[name] for name in ("qkv", "o", "gate_up", "down")] for layer in layers.tensors]
        lowest, offsets = aligned_offsets(weights, 512, "weight")
        base = lowest.data_ptr()
        views = [[off // 512 for off in row] for row in offsets]
        end = max(w.data_ptr() + w.numel() * w.element_size() for row in weights for w in row)
        rows = (end - base) // 512
        if rows >= 2 ** 31:
            raise ValueError("ws decode: the weights span more than 1 TiB")
        layout = gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16)
        self.descriptor = TensorDescriptor(lowest, [rows, 256], [256, 1], [64, 64], layout)
        self.views = torch.tensor(views, dtype=torch.int32, device=layers.device)
        # The norms and caches as element offsets from the lowest of them, each a multiple of 16 bytes
        # (the kernel's vector loads).
        tensors = [[layer[name] for name in ("ln1", "ln2", "k_cache", "v_cache")] for layer in layers.tensors]
        self.addr_base, offsets = aligned_offsets(tensors, 16, "norm and cache")
        self.addrs = torch.tensor(offsets, dtype=torch.int64, device=layers.device) // 2
        self.layers = layers  # the tensors stay referenced


def attach_ws_weights(layers: DecodeLayers) -> WsDecodeWeights:
    """The kernel's addressing of these layers (WsDecodeWeights), built on first use and kept on them;
    ValueError where their tensors are placed so that it cannot address them."""
    weights = getattr(layers, "ws_weights", None)
    if weights is None:
        weights = layers.ws_weights = WsDecodeWeights(layers)
    return weights


def ws_decode(
    h: torch.Tensor, layers: DecodeLayers, *, positions: torch.Tensor, slot_mapping: torch.Tensor,
    block_table: torch.Tensor, seq_lens: torch.Tensor, cos_sin: torch.Tensor, scale: float, eps: float,
    workspace: DecodeWorkspace | None = None, num_programs: int | None = None,
    final_norm: tuple[torch.Tensor, float] | None = None, normed: torch.Tensor | None = None,
    timing: torch.Tensor | None = None, tile_n: int = ATTENTION_TILE, num_slots: int | None = None,
    prefetch_kv: int = PREFETCH_KV, maxnreg: int = MAXNREG,
) -> None:
    """persistent_decode's contract (see there), on the warp-specialized kernel; no sliding window."""
    if num_programs is None:
        num_programs = default_num_programs(h.device)
    nh, nkv, d = layers.num_heads, layers.num_kv_heads, layers.head_dim
    if workspace is None:
        workspace = DecodeWorkspace(nh, d, layers.intermediate, attention_splits(nkv, num_programs), h.dtype,
                                    h.device)
    if not ws_decode_supported(layers.hidden, nh, nkv, d, layers.intermediate, workspace.num_splits):
        raise ValueError("ws decode: these layer sizes do not fit the kernel's tiles")
    if h.numel() != layers.hidden or not h.is_contiguous() or h.dtype != torch.bfloat16:
        raise ValueError(f"ws decode: h {tuple(h.shape)} {h.dtype} must be {layers.hidden} contiguous bf16 values")
    if cos_sin.dtype != torch.float32 or cos_sin.shape[1] != d or not cos_sin.is_contiguous():
        raise ValueError(f"ws decode: cos_sin {tuple(cos_sin.shape)} {cos_sin.dtype} must be fp32 [max_position, {d}]")
    if (final_norm is None) != (normed is None):
        raise ValueError("ws decode: final_norm and normed come together")
    weights = attach_ws_weights(layers)
    if num_slots is None:
        num_slots = ring_slots(layers.hidden, nh * d, layers.intermediate)
    counters = layer_counters(h.device)
    ws_decode_kernel[(num_programs,)](
        weights.descriptor, weights.views, weights.addrs, weights.addr_base, h, cos_sin, positions, slot_mapping,
        block_table, seq_lens, workspace.q, workspace.attn, workspace.part_m, workspace.part_l, workspace.part_acc,
        workspace.act, counters, h if final_norm is None else final_norm[0], h if normed is None else normed,
        counters if timing is None else timing, layers.num_layers,
        eps, 1e-6 if final_norm is None else final_norm[1], scale * LOG2E,
        P=num_programs, H=layers.hidden, NH=nh, NKV=nkv, D=d, I=layers.intermediate, BLOCK_SIZE=layers.block_size,
        TILE_N=tile_n, NUM_SPLITS=workspace.num_splits, NBUF=num_slots, IN_FLIGHT=IN_FLIGHT,
        FINAL_NORM=final_norm is not None, TIMING=timing is not None, PREFETCH_KV=int(prefetch_kv), num_warps=4,
        maxnreg=maxnreg,
    )
