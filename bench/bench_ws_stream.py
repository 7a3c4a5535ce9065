"""A warp-specialized weight stream for the batch-1 decode chain (Gluon prototype), against the limit.

    python -m bench.bench_ws_stream --timeline --out ws_stream.json

The question (issue 9, docs/performance.md): the persistent decode kernel streams each stage's
weights into registers, so its loads start only when the stage's activations are known, and every
grid barrier and the attention chain leave HBM idle. Would a stream that never waits for
activations be faster? Here, on the Llama-3.2-1B shape's decoder projections (q/k/v, o, gate/up,
down; every layer's weights packed into one buffer so that one TMA descriptor covers them), one
program per SM runs two partitions (Gluon `warp_specialize`, Hopper TMA and mbarriers; Triton >= 3.6):

- a producer warp copies the program's weight boxes for every stage of every layer into a
  shared-memory ring (one mbarrier per slot), in the order the consumers use them, never waiting for
  activations; at most D slots in flight at once;
- the consumer warps wait on grid barriers for a stage's input vector (RMSNorm of the residual
  where the layer has one), stage it in shared memory, and take the GEMV of each slot: `regs:`
  configurations load every weight box into registers; `wgmma:` ones leave it in shared memory for
  the tensor cores (the trick is described above ws_mma_chain_kernel).

No attention: the o projection reads q itself; `--spin-ns` adds a grid barrier and a spin of that
many nanoseconds where attention would be, to see whether the stream runs on through it. Every
configuration is checked against a torch reference of the same chain over 1 layer and over 16
(exits on a mismatch), then timed (median of 5 replays of a CUDA graph of 20 launches) with
ablations: no consumption of the boxes, no grid barriers, neither (copies only), no weight copies
(the consumers' cost alone). The persistent decode kernel over the same shape (with attention over
300 keys) is timed in the same run for scale. Prints a table and writes JSON; --timeline adds
per-point global-timer stamps.
"""

from __future__ import annotations

import argparse
import json

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from bench.bench_throughput import copy_bandwidth
from bench.profile_persistent_decode import build, graph_us, timeline_points
from llm_core.layers.kernels.ws_decode import ring_barriers, rows_of, slot_diagonal
from llm_core.layers.kernels import persistent_decode as pd

# The Llama-3.2-1B decoder shape; the packed buffer holds, per layer, rows of H columns: q/k/v, o,
# gate/up (groups of 4 gate rows then the matching 4 up rows), down ([H, I] row-major: 4 rows of H each).
H = gl.constexpr(2048)
QKV = gl.constexpr(3072)
I = gl.constexpr(8192)
O_OFF = gl.constexpr(3072)
GU_OFF = gl.constexpr(3072 + 2048)
DOWN_OFF = gl.constexpr(3072 + 2048 + 2 * 8192)
ROWS_PER_LAYER = gl.constexpr(3072 + 2048 + 2 * 8192 + 4 * 2048)
NUM_LAYERS = 16
PROGRAMS = 128  # every stage's rows split evenly
BOX_ROWS, BOX_COLS = 8, 256
# Triton 3.6 (the GPU machine's) names the CTA-wide barrier thread_barrier; later versions, barrier.
_cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier
TIMING_POINTS = ("layer begins", "qkv staged", "qkv done", "A arrived", "A passed", "o done", "B arrived",
                 "B passed", "gate/up staged", "gate/up done", "C arrived", "C passed", "down done", "D arrived",
                 "D passed")


@gluon.jit
def _produce(desc, bufs, ready, empty, i, row, col, NBUF: gl.constexpr, CH: gl.constexpr, BK: gl.constexpr,
             D: gl.constexpr, PRODUCE: gl.constexpr):
    slot = i % NBUF
    mbarrier.wait(empty.index(slot), ((i // NBUF) & 1) ^ 1)
    # At most D slots in flight: the copy D slots back has landed.
    j = gl.maximum(i - D, 0)
    mbarrier.wait(ready.index(j % NBUF), (j // NBUF) & 1, pred=i >= D)
    # The consumers' reads of this slot (generic proxy) before the copy's writes (async proxy).
    fence_async_shared()
    if PRODUCE:
        mbarrier.expect(ready.index(slot), CH * desc.block_type.nbytes)
        for c in gl.static_range(CH):
            tma.async_copy_global_to_shared(desc, [row, col + c * BK], ready.index(slot), bufs.index(slot * CH + c))
    else:
        mbarrier.arrive(ready.index(slot))
    return i + 1


@gluon.jit
def _producer(d2k, d8k, bufs, ready, empty, pid, NUM_LAYERS: gl.constexpr, NBUF: gl.constexpr, BR: gl.constexpr,
              BK: gl.constexpr, P: gl.constexpr, CH: gl.constexpr, D: gl.constexpr, PRODUCE: gl.constexpr):
    i = 0
    for layer in range(NUM_LAYERS):
        base = layer * ROWS_PER_LAYER
        for t in range(QKV // P // BR):
            for c in range(H // BK // CH):
                i = _produce(d2k, bufs, ready, empty, i, base + pid * (QKV // P) + t * BR, c * CH * BK, NBUF, CH, BK,
                             D, PRODUCE)
        for t in range(H // P // BR):
            for c in range(H // BK // CH):
                i = _produce(d2k, bufs, ready, empty, i, base + O_OFF + pid * (H // P) + t * BR, c * CH * BK, NBUF,
                             CH, BK, D, PRODUCE)
        for t in range(2 * I // P // BR):
            for c in range(H // BK // CH):
                i = _produce(d2k, bufs, ready, empty, i, base + GU_OFF + pid * (2 * I // P) + t * BR, c * CH * BK,
                             NBUF, CH, BK, D, PRODUCE)
        for t in range(H // P // BR):
            for c in range(I // BK // CH):
                i = _produce(d8k, bufs, ready, empty, i, (base + DOWN_OFF) // 4 + pid * (H // P) + t * BR,
                             c * CH * BK, NBUF, CH, BK, D, PRODUCE)


@gluon.jit
def _mark(timing_ptr, point: gl.constexpr, TIMING: gl.constexpr):
    if TIMING:
        t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)
        gl.store(timing_ptr + point, t)


@gluon.jit
def _barrier(counter_ptr, nb, P: gl.constexpr, timing_ptr, point: gl.constexpr, BARRIERS: gl.constexpr,
             TIMING: gl.constexpr):
    # Grid barrier number nb + 1 (every program adds 1 to the counter, waits for (nb + 1) * P); returns nb + 1.
    target = (nb + 1) * P
    if BARRIERS:
        _cta_barrier()
        gl.atomic_add(counter_ptr, 1, sem="release", scope="gpu")
        _mark(timing_ptr, point, TIMING)
        seen = gl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        while seen < target:
            seen = gl.atomic_add(counter_ptr, 0, sem="acquire", scope="gpu")
        _cta_barrier()
        _mark(timing_ptr, point + 1, TIMING)
    return nb + 1


@gluon.jit
def _exit(counters_ptr, P: gl.constexpr):
    # The last program out sets the counters back to 0 for the next launch.
    if gl.atomic_add(counters_ptr + 1, 1, sem="acq_rel", scope="gpu") == P - 1:
        gl.store(counters_ptr, 0)
        gl.store(counters_ptr + 1, 0)


@gluon.jit
def _spin(ns):
    t0 = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)
    t = t0
    while t - t0 < ns:
        t = gl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=gl.int64, is_pure=False, pack=1)


@gluon.jit
def _stage_x(xs, src_ptr, norm_ptr, eps, N: gl.constexpr, NORM: gl.constexpr, BK: gl.constexpr, X2: gl.constexpr,
             L: gl.constexpr):
    # The stage's input vector (RMSNorm of it, rounded as the model rounds, where NORM) into xs, [N / BK] rows.
    rstd = 1.0
    if NORM:
        r = gl.arange(0, N // BK, layout=gl.SliceLayout(1, X2))
        c = gl.arange(0, BK, layout=gl.SliceLayout(0, X2))
        x = gl.load(src_ptr + r[:, None] * BK + c[None, :], cache_modifier=".cg")
        rstd = gl.rsqrt(gl.sum(gl.sum(x * x, axis=1), axis=0) / N + eps)
    offs = (gl.arange(0, 1, layout=gl.SliceLayout(1, L))[:, None] * BK
            + gl.arange(0, BK, layout=gl.SliceLayout(0, L))[None, :])
    for k in gl.static_range(N // BK):
        x = gl.load(src_ptr + k * BK + offs, cache_modifier=".cg")
        if NORM:
            g = gl.load(norm_ptr + k * BK + offs).to(gl.float32)
            x = (x * rstd).to(gl.bfloat16).to(gl.float32) * g
        xs.index(k).store(x)
    _cta_barrier()


@gluon.jit
def _consume_rows(bufs, ready, empty, xs, i, K: gl.constexpr, NBUF: gl.constexpr, BR: gl.constexpr,
                  BK: gl.constexpr, L: gl.constexpr, CH: gl.constexpr, CONSUME: gl.constexpr):
    acc = gl.zeros([BR, BK], gl.float32, L)
    for kk in range(K // BK // CH):
        slot = i % NBUF
        mbarrier.wait(ready.index(slot), (i // NBUF) & 1)
        if CONSUME:
            for c in gl.static_range(CH):
                w = bufs.index(slot * CH + c).load(L)
                acc += w.to(gl.float32) * xs.index(kk * CH + c).load(L)
        mbarrier.arrive(empty.index(slot))
        i += 1
    return gl.sum(acc, axis=1), i


@gluon.jit
def _consume_gate_up(bufs, ready, empty, xs, i, K: gl.constexpr, NBUF: gl.constexpr, BR: gl.constexpr,
                     BK: gl.constexpr, L: gl.constexpr, CH: gl.constexpr, CONSUME: gl.constexpr):
    acc_g = gl.zeros([BR // 2, BK], gl.float32, L)
    acc_u = gl.zeros([BR // 2, BK], gl.float32, L)
    for kk in range(K // BK // CH):
        slot = i % NBUF
        mbarrier.wait(ready.index(slot), (i // NBUF) & 1)
        if CONSUME:
            for c in gl.static_range(CH):
                buf = bufs.index(slot * CH + c)
                xk = xs.index(kk * CH + c).load(L)
                acc_g += buf.slice(0, BR // 2).load(L).to(gl.float32) * xk
                acc_u += buf.slice(BR // 2, BR // 2).load(L).to(gl.float32) * xk
        mbarrier.arrive(empty.index(slot))
        i += 1
    g = gl.sum(acc_g, axis=1)
    return g / (1.0 + gl.exp(-g)) * gl.sum(acc_u, axis=1), i


@gluon.jit
def _residual_stage(bufs, ready, empty, xs, i, src_ptr, h_ptr, eps, pid, K: gl.constexpr, NBUF: gl.constexpr,
                    BR: gl.constexpr, BK: gl.constexpr, P: gl.constexpr, CH: gl.constexpr, CONSUME: gl.constexpr,
                    L: gl.constexpr, X2: gl.constexpr):
    # A projection over src (K values) whose rows add into the residual stream h: o over q, down over
    # SiLU(gate) * up. No other program writes this program's rows of h in the stage.
    _stage_x(xs, src_ptr, src_ptr, eps, K, False, BK, X2, L)
    for t in range(H // P // BR):
        y, i = _consume_rows(bufs, ready, empty, xs, i, K, NBUF, BR, BK, L, CH, CONSUME)
        rows = pid * (H // P) + t * BR + gl.arange(0, BR, layout=gl.SliceLayout(1, L))
        gl.store(h_ptr + rows, gl.load(h_ptr + rows, cache_modifier=".cg") + y)
    return i


@gluon.jit
def _consumer(bufs, ready, empty, xs, timing_ptr, h_ptr, qkv_ptr, act_ptr, ln_ptr, counters_ptr, eps, spin_ns, pid,
              NUM_LAYERS: gl.constexpr, NBUF: gl.constexpr, BR: gl.constexpr, BK: gl.constexpr, P: gl.constexpr,
              CH: gl.constexpr, SPIN: gl.constexpr, CONSUME: gl.constexpr, BARRIERS: gl.constexpr,
              TIMING: gl.constexpr, num_warps: gl.constexpr):
    # 4 warps along the rows of a box, the rest along its columns.
    L: gl.constexpr = gl.BlockedLayout([1, 8 // (num_warps // 4)], [1, 32], [4, num_warps // 4], [1, 0])
    X2: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [num_warps, 1], [1, 0])
    R1: gl.constexpr = gl.SliceLayout(1, L)
    i = 0
    nb = 0
    for layer in range(NUM_LAYERS):
        tp = timing_ptr + (layer * P + pid) * 16
        _mark(tp, 0, TIMING)
        _stage_x(xs, h_ptr, ln_ptr + layer * 2 * H, eps, H, True, BK, X2, L)
        _mark(tp, 1, TIMING)
        for t in range(QKV // P // BR):
            y, i = _consume_rows(bufs, ready, empty, xs, i, H, NBUF, BR, BK, L, CH, CONSUME)
            gl.store(qkv_ptr + pid * (QKV // P) + t * BR + gl.arange(0, BR, layout=R1), y)
        _mark(tp, 2, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 3, BARRIERS, TIMING)
        if SPIN:
            _spin(spin_ns)
            nb = _barrier(counters_ptr, nb, P, tp, 3, BARRIERS, False)
        i = _residual_stage(bufs, ready, empty, xs, i, qkv_ptr, h_ptr, eps, pid, H, NBUF, BR, BK, P, CH, CONSUME, L, X2)
        _mark(tp, 5, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 6, BARRIERS, TIMING)
        _stage_x(xs, h_ptr, ln_ptr + layer * 2 * H + H, eps, H, True, BK, X2, L)
        _mark(tp, 8, TIMING)
        for t in range(2 * I // P // BR):
            a, i = _consume_gate_up(bufs, ready, empty, xs, i, H, NBUF, BR, BK, L, CH, CONSUME)
            gl.store(act_ptr + pid * (I // P) + t * (BR // 2) + gl.arange(0, BR // 2, layout=R1), a)
        _mark(tp, 9, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 10, BARRIERS, TIMING)
        i = _residual_stage(bufs, ready, empty, xs, i, act_ptr, h_ptr, eps, pid, I, NBUF, BR, BK, P, CH, CONSUME, L, X2)
        _mark(tp, 12, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 13, BARRIERS, TIMING)
    _exit(counters_ptr, P)


@gluon.jit
def ws_chain_kernel(d2k, d8k, timing_ptr, h_ptr, qkv_ptr, act_ptr, ln_ptr, counters_ptr, eps, spin_ns,
                    NUM_LAYERS: gl.constexpr, NBUF: gl.constexpr, BR: gl.constexpr, BK: gl.constexpr,
                    P: gl.constexpr, CH: gl.constexpr, D: gl.constexpr, SPIN: gl.constexpr, CONSUME: gl.constexpr,
                    BARRIERS: gl.constexpr, PRODUCE: gl.constexpr, TIMING: gl.constexpr, num_warps: gl.constexpr):
    pid = gl.program_id(0)
    bufs = gl.allocate_shared_memory(gl.bfloat16, [NBUF * CH, BR, BK], d2k.layout)
    ready = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NBUF, 1], mbarrier.MBarrierLayout())
    xs = gl.allocate_shared_memory(gl.float32, [I // BK, 1, BK], gl.SwizzledSharedLayout(1, 1, 1, [1, 0]))
    for s in gl.static_range(NBUF):
        mbarrier.init(ready.index(s), count=1)
        mbarrier.init(empty.index(s), count=1)
    fence_async_shared()
    gl.warp_specialize([
        (_consumer, (bufs, ready, empty, xs, timing_ptr, h_ptr, qkv_ptr, act_ptr, ln_ptr, counters_ptr, eps, spin_ns,
                     pid, NUM_LAYERS, NBUF, BR, BK, P, CH, SPIN, CONSUME, BARRIERS, TIMING, num_warps)),
        (_producer, (d2k, d8k, bufs, ready, empty, pid, NUM_LAYERS, NBUF, BR, BK, P, CH, D, PRODUCE)),
    ], [1], [48])


# The consumers' GEMV on the tensor cores (`--configs wgmma:...`). A task of 8 weight rows x 2048 (or 2
# rows x 8192) is viewed as [64, 256]: one row per (weight row, chunk of 256 columns), which is the
# weight buffer itself seen as rows of 256 (one TMA descriptor, boxes of [64, 64] with the 128-byte
# swizzle wgmma reads). Then D[64, N] = A[64, 256] . B[256, N] with B[k, c] = x[c * 256 + k] (N = K /
# 256 chunks, x staged in bf16 as the tensor cores take it) holds every row's dot product with every
# chunk of x, and a weight row's result is the sum of the diagonal entries of its rows (its chunk c
# against chunk c of x): 8x the arithmetic of the GEMV, which the tensor cores do not notice, and no
# weight passes through registers. Weight row r of a matrix of K columns at packed row R0 (rows of H)
# is view row (R0 * H + r * K) / 256.


@gluon.jit
def _mma_producer(wv, bufs, ready, empty, pid, NUM_LAYERS: gl.constexpr, NBUF: gl.constexpr, P: gl.constexpr,
                  D: gl.constexpr, PRODUCE: gl.constexpr):
    # One slot per task: view rows of 8 weight rows x 2048 (q/k/v, o, gate/up) or 2 rows x 8192 (down).
    i = 0
    for layer in range(NUM_LAYERS):
        base = layer * ROWS_PER_LAYER
        for t in range(QKV // P // 8):
            vrow = (base + pid * (QKV // P) + t * 8) * 8
            i = _produce(wv, bufs, ready, empty, i, vrow, 0, NBUF, 4, 64, D, PRODUCE)
        for t in range(H // P // 8):
            vrow = (base + O_OFF + pid * (H // P) + t * 8) * 8
            i = _produce(wv, bufs, ready, empty, i, vrow, 0, NBUF, 4, 64, D, PRODUCE)
        for t in range(2 * I // P // 8):
            vrow = (base + GU_OFF + pid * (2 * I // P) + t * 8) * 8
            i = _produce(wv, bufs, ready, empty, i, vrow, 0, NBUF, 4, 64, D, PRODUCE)
        for t in range(H // P // 2):
            vrow = (base + DOWN_OFF) * 8 + (pid * (H // P) + t * 2) * 32
            i = _produce(wv, bufs, ready, empty, i, vrow, 0, NBUF, 4, 64, D, PRODUCE)


@gluon.jit
def _stage_b(xb, src_ptr, norm_ptr, eps, N: gl.constexpr, NORM: gl.constexpr, num_warps: gl.constexpr):
    # x (N chunks of 256) into xb as B: box j holds [N, 64] = x[c * 256 + j * 64 + k], bf16.
    BL: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    c = gl.arange(0, N, layout=gl.SliceLayout(1, BL))
    k = gl.arange(0, 64, layout=gl.SliceLayout(0, BL))
    offs = c[:, None] * 256 + k[None, :]
    rstd = 1.0
    if NORM:
        ss = 0.0
        for j in gl.static_range(4):
            x = gl.load(src_ptr + j * 64 + offs, cache_modifier=".cg")
            ss += gl.sum(gl.sum(x * x, axis=1), axis=0)
        rstd = gl.rsqrt(ss / (N * 256) + eps)
    for j in gl.static_range(4):
        x = gl.load(src_ptr + j * 64 + offs, cache_modifier=".cg")
        if NORM:
            x = (x * rstd).to(gl.bfloat16).to(gl.float32) * gl.load(norm_ptr + j * 64 + offs).to(gl.float32)
        xb.index(j).store(x.to(gl.bfloat16))
    fence_async_shared()
    _cta_barrier()


@gluon.jit
def _mma_residual_stage(bufs, ready, empty, xb, i, src_ptr, h_ptr, eps, pid, N: gl.constexpr, NBUF: gl.constexpr,
                        P: gl.constexpr, CONSUME: gl.constexpr, num_warps: gl.constexpr):
    # A projection whose rows add into the residual stream h: o over q (N = 8 chunks of x, 8 weight rows
    # a tile), down over SiLU(gate) * up (N = 32, 2 rows a tile).
    R: gl.constexpr = 64 // N
    B2: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [num_warps, 1], [1, 0])
    _stage_b(xb, src_ptr, src_ptr, eps, N, False, num_warps)
    for t in range(H // P // R):
        z, i = slot_diagonal(bufs, ready, empty, xb, i, N, NBUF, CONSUME, num_warps)
        rows = pid * (H // P) + t * R + gl.arange(0, R, layout=gl.SliceLayout(1, B2))
        gl.store(h_ptr + rows, gl.load(h_ptr + rows, cache_modifier=".cg") + rows_of(z, 0, R, N, num_warps))
    return i


@gluon.jit
def _mma_consumer(bufs, ready, empty, xb, xb32, timing_ptr, h_ptr, qkv_ptr, act_ptr, ln_ptr, counters_ptr, eps,
                  spin_ns, pid,
                  NUM_LAYERS: gl.constexpr, NBUF: gl.constexpr, P: gl.constexpr, SPIN: gl.constexpr,
                  CONSUME: gl.constexpr, BARRIERS: gl.constexpr, TIMING: gl.constexpr, num_warps: gl.constexpr):
    B2: gl.constexpr = gl.BlockedLayout([1, 2], [1, 32], [num_warps, 1], [1, 0])
    R8 = gl.arange(0, 8, layout=gl.SliceLayout(1, B2))
    R4 = gl.arange(0, 4, layout=gl.SliceLayout(1, B2))
    i = 0
    nb = 0
    for layer in range(NUM_LAYERS):
        tp = timing_ptr + (layer * P + pid) * 16
        _mark(tp, 0, TIMING)
        _stage_b(xb, h_ptr, ln_ptr + layer * 2 * H, eps, 8, True, num_warps)
        _mark(tp, 1, TIMING)
        for t in range(QKV // P // 8):
            z, i = slot_diagonal(bufs, ready, empty, xb, i, 8, NBUF, CONSUME, num_warps)
            gl.store(qkv_ptr + pid * (QKV // P) + t * 8 + R8, rows_of(z, 0, 8, 8, num_warps))
        _mark(tp, 2, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 3, BARRIERS, TIMING)
        if SPIN:
            _spin(spin_ns)
            nb = _barrier(counters_ptr, nb, P, tp, 3, BARRIERS, False)
        i = _mma_residual_stage(bufs, ready, empty, xb, i, qkv_ptr, h_ptr, eps, pid, 8, NBUF, P, CONSUME, num_warps)
        _mark(tp, 5, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 6, BARRIERS, TIMING)
        _stage_b(xb, h_ptr, ln_ptr + layer * 2 * H + H, eps, 8, True, num_warps)
        _mark(tp, 8, TIMING)
        for t in range(2 * I // P // 8):
            z, i = slot_diagonal(bufs, ready, empty, xb, i, 8, NBUF, CONSUME, num_warps)
            g = rows_of(z, 0, 4, 8, num_warps)
            u = rows_of(z, 4, 4, 8, num_warps)
            gl.store(act_ptr + pid * (I // P) + t * 4 + R4, g / (1.0 + gl.exp(-g)) * u)
        _mark(tp, 9, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 10, BARRIERS, TIMING)
        i = _mma_residual_stage(bufs, ready, empty, xb32, i, act_ptr, h_ptr, eps, pid, 32, NBUF, P, CONSUME,
                                num_warps)
        _mark(tp, 12, TIMING)
        nb = _barrier(counters_ptr, nb, P, tp, 13, BARRIERS, TIMING)
    _exit(counters_ptr, P)


@gluon.jit
def ws_mma_chain_kernel(wv, timing_ptr, h_ptr, qkv_ptr, act_ptr, ln_ptr, counters_ptr, eps, spin_ns,
                        NUM_LAYERS: gl.constexpr, NBUF: gl.constexpr, P: gl.constexpr, D: gl.constexpr,
                        SPIN: gl.constexpr, CONSUME: gl.constexpr, BARRIERS: gl.constexpr, PRODUCE: gl.constexpr,
                        TIMING: gl.constexpr, num_warps: gl.constexpr):
    pid = gl.program_id(0)
    bufs = gl.allocate_shared_memory(gl.bfloat16, [NBUF * 4, 64, 64], wv.layout)
    xb = gl.allocate_shared_memory(gl.bfloat16, [4, 8, 64], wv.layout)
    xb32 = gl.allocate_shared_memory(gl.bfloat16, [4, 32, 64], wv.layout)
    ready, empty = ring_barriers(NBUF)
    gl.warp_specialize([
        (_mma_consumer, (bufs, ready, empty, xb, xb32, timing_ptr, h_ptr, qkv_ptr, act_ptr, ln_ptr, counters_ptr, eps,
                         spin_ns, pid, NUM_LAYERS, NBUF, P, SPIN, CONSUME, BARRIERS, TIMING, num_warps)),
        (_mma_producer, (wv, bufs, ready, empty, pid, NUM_LAYERS, NBUF, P, D, PRODUCE)),
    ], [1], [48])


class Chain:
    """Random 1B-shaped projections packed for the kernel, its buffers, and a torch reference."""

    def __init__(self, device: str = "cuda") -> None:
        h, qkv, inter, rows = int(H), int(QKV), int(I), int(ROWS_PER_LAYER)
        gen = torch.Generator(device=device).manual_seed(1)

        def rnd(*shape):
            return (torch.randn(*shape, generator=gen, device=device) * 0.02).to(torch.bfloat16)

        self.w = torch.empty(NUM_LAYERS * rows, h, dtype=torch.bfloat16, device=device)
        self.ln = (1 + 0.02 * torch.randn(NUM_LAYERS, 2, h, generator=gen, device=device)).to(torch.bfloat16)
        self.layers = []
        for layer in range(NUM_LAYERS):
            w_qkv, w_o, gate, up, down = rnd(qkv, h), rnd(h, h), rnd(inter, h), rnd(inter, h), rnd(h, inter)
            b = layer * rows
            self.w[b:b + qkv] = w_qkv
            self.w[b + qkv:b + qkv + h] = w_o
            self.w[b + qkv + h:b + qkv + h + 2 * inter] = torch.stack(
                [gate.view(inter // 4, 4, h), up.view(inter // 4, 4, h)], 1).reshape(2 * inter, h)
            self.w[b + rows - 4 * h:b + rows] = down.reshape(4 * h, h)
            self.layers.append((w_qkv, w_o, gate, up, down))
        layout = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=16, rank=2)
        self.d2k = TensorDescriptor(self.w, [NUM_LAYERS * rows, h], [h, 1], [BOX_ROWS, BOX_COLS], layout)
        self.d8k = TensorDescriptor(self.w, [NUM_LAYERS * rows // 4, 4 * h], [4 * h, 1], [BOX_ROWS, BOX_COLS], layout)
        view = self.w.view(-1, 256)
        self.wv = TensorDescriptor(view, list(view.shape), [256, 1], [64, 64],
                                   gl.NVMMASharedLayout.get_default_for([64, 64], gl.bfloat16))
        self.h0 = torch.randn(h, generator=gen, device=device)
        self.qkv = torch.zeros(qkv, device=device)
        self.act = torch.zeros(inter, device=device)
        self.counters = torch.zeros(8, dtype=torch.int32, device=device)
        self.timing = torch.zeros(NUM_LAYERS, PROGRAMS, 16, dtype=torch.int64, device=device)

    def launch(self, h: torch.Tensor, cfg: dict, timing: bool = False, num_layers: int = NUM_LAYERS) -> None:
        flags = dict(NUM_LAYERS=num_layers, NBUF=cfg["nbuf"], P=PROGRAMS, D=cfg["d"], SPIN=cfg["spin_ns"] > 0,
                     CONSUME=cfg["consume"], BARRIERS=cfg["barriers"], PRODUCE=cfg["produce"], TIMING=timing,
                     num_warps=cfg["warps"], maxnreg=168)
        args = (self.timing, h, self.qkv, self.act, self.ln, self.counters, 1e-5, cfg["spin_ns"])
        if cfg["kind"] == "wgmma":
            ws_mma_chain_kernel[(PROGRAMS,)](self.wv, *args, **flags)
        else:
            ws_chain_kernel[(PROGRAMS,)](self.d2k, self.d8k, *args, BR=BOX_ROWS, BK=BOX_COLS, CH=cfg["ch"], **flags)

    def reference(self, num_layers: int = NUM_LAYERS, bf16_inputs: bool = False) -> torch.Tensor:
        """The chain in fp32 from the same bf16 weights; with bf16_inputs, every GEMV input rounded to bf16
        (as the wgmma consumers take it, and as the model has it)."""
        h = self.h0.clone()
        n = int(H)

        def rounded(x):
            return x.to(torch.bfloat16).float() if bf16_inputs else x

        def norm(x, g):
            return rounded((x * torch.rsqrt((x * x).sum() / n + 1e-5)).to(torch.bfloat16).float() * g.float())

        for layer, (w_qkv, w_o, gate, up, down) in enumerate(self.layers[:num_layers]):
            q = w_qkv.float() @ norm(h, self.ln[layer, 0])
            h = h + w_o.float() @ rounded(q[:n])
            x = norm(h, self.ln[layer, 1])
            h = h + down.float() @ rounded(torch.nn.functional.silu(gate.float() @ x) * (up.float() @ x))
        return h


def timeline(chain: Chain, cfg: dict) -> list[dict]:
    """Per point: us since the layer began (first / median / last program; timeline_points)."""
    chain.timing.zero_()
    chain.launch(chain.h0.clone(), cfg, timing=True)
    torch.cuda.synchronize()
    return timeline_points(chain.timing, TIMING_POINTS)


def check(chain: Chain, cfg: dict) -> dict:
    """The kernel against the torch reference over 1 layer and over 16 (errors there grow layer by layer:
    the chain amplifies rounding differences), and its counters back at 0; exits on a mismatch."""
    errors = {}
    for num_layers, tolerance in ((1, 2e-3), (NUM_LAYERS, 2e-2)):
        h = chain.h0.clone()
        chain.launch(h, cfg, num_layers=num_layers)
        torch.cuda.synchronize()
        ref = chain.reference(num_layers, bf16_inputs=cfg["kind"] == "wgmma")
        err = ((h - ref).norm() / ref.norm()).item()
        if not err < tolerance or chain.counters.any():
            raise SystemExit(f"{cfg}: {num_layers} layer(s) differ from the reference (relative error {err:.2e}, "
                             f"tolerance {tolerance}) or left the counters set ({chain.counters.tolist()})")
        errors[f"rel_err_{num_layers}_layers"] = err
    return errors


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", nargs="+",
                        default=["regs:5,8,5,4", "regs:12,4,3,8", "wgmma:6,1", "wgmma:6,2", "wgmma:4,1"],
                        help="regs:ring slots,boxes per slot,slots in flight at most,consumer warps (GEMV in "
                             "registers) or wgmma:ring slots,slots in flight at most (GEMV on the tensor cores, "
                             "slots of 32 KiB, 4 warps)")
    parser.add_argument("--spin-ns", type=int, default=5000)
    parser.add_argument("--timeline", action="store_true")
    parser.add_argument("--out", default="ws_stream.json")
    args = parser.parse_args()
    chain = Chain()
    bandwidth = copy_bandwidth(torch.device("cuda"))
    nbytes = chain.w.numel() * 2
    floor_us = nbytes / bandwidth * 1e6
    rows = []
    for spec in args.configs:
        kind, numbers = spec.split(":")
        if kind == "wgmma":
            nbuf, d = map(int, numbers.split(","))
            base = dict(kind=kind, nbuf=nbuf, d=d, warps=4)
        else:
            nbuf, ch, d, warps = map(int, numbers.split(","))
            base = dict(kind=kind, nbuf=nbuf, ch=ch, d=d, warps=warps)
        base.update(spin_ns=0, consume=True, barriers=True, produce=True)
        errors = check(chain, base)
        variants = [("full", {}), (f"+ {args.spin_ns} ns spin", dict(spin_ns=args.spin_ns)),
                    ("boxes not consumed", dict(consume=False)), ("no grid barriers", dict(barriers=False)),
                    ("copies only", dict(consume=False, barriers=False)), ("consumers only", dict(produce=False))]
        for name, change in variants:
            cfg = {**base, **change}
            h = chain.h0.clone()  # (its values drift over the replays; nothing depends on them)
            us, _ = graph_us(lambda: chain.launch(h, cfg))
            row = {"config": spec, **cfg, "variant": name, "us": us, "us_per_layer": us / NUM_LAYERS,
                   "tb_s": nbytes / us / 1e6, "floor_over_time": floor_us / us, **errors}
            if args.timeline and name in ("full", "consumers only"):
                row["timeline"] = timeline(chain, cfg)
            rows.append(row)
    layers, step, h_pd, layer_bytes = build("llama-3.2-1b", 300)
    workspace = pd.DecodeWorkspace(layers.num_heads, layers.head_dim, layers.intermediate,
                                   pd.attention_splits(layers.num_kv_heads,
                                                       torch.cuda.get_device_properties(0).multi_processor_count),
                                   h_pd.dtype, h_pd.device)
    pd_us, _ = graph_us(lambda: pd.persistent_decode(h_pd, layers, **step, workspace=workspace))
    out = {"device": torch.cuda.get_device_name(), "copy_bandwidth_gbs": bandwidth / 1e9, "chain_weight_bytes": nbytes,
           "floor_us": floor_us, "persistent_decode_us_300_keys": pd_us,
           "persistent_decode_floor_us": layer_bytes * NUM_LAYERS / bandwidth * 1e6, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"{out['device']}: 16 layers' projections ({nbytes / 1e6:.0f} MB) stream in {floor_us:.1f} us at the copy "
          f"bandwidth ({bandwidth / 1e9:.0f} GB/s); persistent decode kernel (with attention, 300 keys): "
          f"{pd_us:.1f} us (floor {out['persistent_decode_floor_us']:.1f})")
    print(f"{'config':<18}{'variant':<22}{'us':>9}{'us/layer':>10}{'TB/s':>7}{'floor/t':>9}"
          f"{'err 1 layer':>13}{'err 16':>10}")
    for r in rows:
        print(f"{r['config']:<18}{r['variant']:<22}{r['us']:>9.1f}{r['us_per_layer']:>10.2f}{r['tb_s']:>7.2f}"
              f"{r['floor_over_time']:>9.1%}{r['rel_err_1_layers']:>13.1e}{r['rel_err_16_layers']:>10.1e}")
    for r in rows:
        if "timeline" in r:
            print(f"\n{r['config']} {r['variant']}: us since the layer began (first / median / last program)")
            for p in r["timeline"]:
                print(f"  {p['point']:<16}{p['first_us']:8.2f}{p['median_us']:8.2f}{p['last_us']:8.2f}")


if __name__ == "__main__":
    main()
