"""Triton skinny GEMM (GEMV for a few rows): y [M, N] = x [M, K] @ weight [N, K]^T + bias, M <= 8.

At decode time a linear layer's cost is streaming its weight once; cuBLAS reaches half the memory
bandwidth on the small projections at M = 1. Here each program owns BLOCK_N output columns for every
row of x: it streams [BLOCK_N, BLOCK_K] tiles of weight rows (each thread 16 contiguous bytes of a
row, a warp 512 bytes), multiplies each tile with the matching [BLOCK_M, BLOCK_K] slice of x, so the
tile serves every row, and sums in fp32: within a thread at each step, across threads once at the end.
When N / BLOCK_N programs are too few to keep the memory system busy, K is split: each split writes
fp32 partial sums to a workspace [SPLIT_K, M, N], and the split that finishes a column block last
(arrival counters, counters.py) adds them in order, adds the bias, casts: one launch, no reduce kernel.

Each program loads its first two weight tiles before it waits for the kernel before it
(programmatic dependent launch on Hopper, pdl.py), then keeps three tiles in flight. Fused
epilogues for the fused decode path (llm_core/models/llama.py): the residual add with the next
RMSNorm (the program that finishes last normalizes the whole row), SiLU-and-mul of gate/up
column-block pairs (the second of a pair to finish writes it), and each row's argmax (the LM head of
a greedy step: skinny_argmax; every program folds its columns' best into one packed 64-bit value
per row with an atomic max, the last one decodes it), so that no logits are written or read again.

The launch configuration comes from choose_config(m, n, k, num_sms), a fixed rule of host values:
no autotuning and no host sync, so calls can be captured in CUDA graphs. Linear layers dispatch
here for one row only (DISPATCH_MAX_ROWS): with two rows and more cuBLAS's tensor cores win.

Layouts (checked in the TTGIR and SASS of sm_90 builds with Triton 3.6 and 3.8): the product keeps
the weight load's layout, so only x changes layout (through shared memory, a few hundred bytes a
step); with one row and no pipelining, each thread loads its own x elements instead (L1 hits, no
barrier in the loop).
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import triton
import triton.language as tl

from llm_core.layers.kernels.counters import GRID_SLOT, arrival_counters, zeroed_counters
from llm_core.layers.kernels.pdl import pdl_launch_args

MAX_SKINNY_ROWS = 8
# Linear layers (distributed/layers.py) dispatch here only up to this many rows: on the H100 the
# kernel wins at one row and loses from two (bench_gemv, 1B decode step: 1.08x at M = 1, 0.80x at M = 2).
DISPATCH_MAX_ROWS = 1
# Split K until there are about PROGRAMS_PER_SM programs per SM, when there are fewer than MIN_PROGRAMS_PER_SM.
PROGRAMS_PER_SM = 4
MIN_PROGRAMS_PER_SM = 2
MAX_SPLIT_K = 16
# Weight elements one program loads per step (16 KiB of bf16), and products of one step (BLOCK_M * tile).
TILE_ELEMENTS = 8192
STEP_PRODUCTS = 16384
# Arrival counters (counters.py): split-K column blocks use slots [0, PAIR_SLOTS), SiLU pairs
# [PAIR_SLOTS, GRID_SLOT), the residual epilogue GRID_SLOT.
PAIR_SLOTS = GRID_SLOT // 2
# One row (batch-1 decode), from the H100 sweep: 8 columns of 256 K-steps per program; split K in
# ONE_ROW_SPLIT_K when the column blocks are fewer than ONE_ROW_SPLIT_BELOW per SM (the 1B q/k/v,
# o and down projections, the 8B o and down), else not (gate/up, the 8B q/k/v). 5-13% faster per
# layer than the general rule below in bench_gemv's sweep.
ONE_ROW_BLOCK_N = 8
ONE_ROW_SPLIT_BELOW = 4
ONE_ROW_SPLIT_K = 4
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def _load_x(x_ptrs, k0, x_ok, offs_k, K, EVEN_K: tl.constexpr):
    # The [BLOCK_M, 1 or BLOCK_N, BLOCK_K] slice of x at K offset k0.
    ok = x_ok
    if not EVEN_K:
        ok = ok & ((k0 + offs_k) < K)[None, None, :]
    return tl.load(x_ptrs + k0, mask=ok, other=0.0)


@triton.jit
def _load_w(w_ptrs, k0, offs_k, K, EVEN_K: tl.constexpr):
    if EVEN_K:
        return tl.load(w_ptrs + k0, eviction_policy="evict_first")
    return tl.load(w_ptrs + k0, mask=((k0 + offs_k) < K)[None, None, :], other=0.0, eviction_policy="evict_first")


@triton.jit
def _mac(acc, w, x, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VEC: tl.constexpr):
    # [1, BLOCK_N, BLOCK_K] * [BLOCK_M, 1, BLOCK_K]: the tile serves every row. Each thread sums
    # its own VEC-element runs of K here; the sum across threads waits for the loop's end.
    prod = w.to(tl.float32) * x.to(tl.float32)
    return acc + tl.sum(tl.reshape(prod, [BLOCK_M, BLOCK_N, BLOCK_K // VEC, VEC]), axis=3)


@triton.jit
def _finish(acc, bias, r, pid_n, offs_m, offs_n, M, N, out_ptr, stride_om,
            sumsq_part_ptr, norm_w_ptr, normed_ptr, eps, act_ptr, counters_ptr,
            HAS_BIAS: tl.constexpr, EPILOGUE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
            BLOCKS_PAD: tl.constexpr, N_PAD: tl.constexpr, GRID_SLOT: tl.constexpr, PAIR_SLOTS: tl.constexpr):
    # acc [BLOCK_M, BLOCK_N] fp32: the whole sums of columns offs_n; y = acc + bias in out's dtype.
    # EPILOGUE 0: store y. 1 (residual + RMSNorm): store h = y + residual (the next residual
    # stream) and its row sums of squares per column block; the program that finishes last adds
    # those up in order and writes RMSNorm(h) (every column) to normed. 2 (SiLU pairs): store y;
    # of column blocks j (gate) and j + half (up), the one that finishes second writes
    # silu(gate) * up to act. 3 (argmax): nothing stored; act_ptr: the packed row maxima (int64 [M],
    # zero between launches: _argmax_keys), out_ptr's dtype the rounding, normed_ptr: the tokens
    # (int64 [M]) written by the program that finishes last; N here: the columns that count.
    # Each rounds where the unfused layers round. bias [BLOCK_N] and the
    # residual tile r [BLOCK_M, BLOCK_N] were loaded early (they come from L2 / an earlier kernel).
    m_ok = offs_m < M
    n_ok = offs_n < N
    mask = m_ok[:, None] & n_ok[None, :]
    if HAS_BIAS:
        acc += bias.to(tl.float32)[None, :]
    y = acc.to(out_ptr.dtype.element_ty)
    out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
    num_blocks = tl.num_programs(0)
    if EPILOGUE == 1:
        h = (y.to(tl.float32) + r.to(tl.float32)).to(out_ptr.dtype.element_ty)
        tl.store(out_ptrs, h, mask=mask)
        hf = tl.where(mask, h.to(tl.float32), 0.0)
        tl.store(sumsq_part_ptr + offs_m * num_blocks + pid_n, tl.sum(hf * hf, axis=1), mask=m_ok)
        # acq_rel: this block's stores are visible to whichever program sees the last count
        done = tl.atomic_add(counters_ptr + GRID_SLOT, 1, sem="acq_rel")
        if done == num_blocks - 1:
            # Every load at once (one round trip to L2): the blocks' sums of squares, all of h, the weight.
            offs_b = tl.arange(0, BLOCKS_PAD)
            part = tl.load(sumsq_part_ptr + offs_m[:, None] * num_blocks + offs_b[None, :],
                           mask=m_ok[:, None] & (offs_b < num_blocks)[None, :], other=0.0, cache_modifier=".cg")
            offs_c = tl.arange(0, N_PAD)
            c_mask = m_ok[:, None] & (offs_c < N)[None, :]
            hh = tl.load(out_ptr + offs_m[:, None] * stride_om + offs_c[None, :], mask=c_mask, other=0.0,
                         cache_modifier=".cg")
            w = tl.load(norm_w_ptr + offs_c, mask=offs_c < N, other=0.0).to(tl.float32)[None, :]
            rstd = tl.rsqrt(tl.sum(part, axis=1) / N + eps)[:, None]  # [BLOCK_M, 1]
            normed = (hh.to(tl.float32) * rstd).to(hh.dtype).to(tl.float32)
            tl.store(normed_ptr + offs_m[:, None] * stride_om + offs_c[None, :], (normed * w).to(hh.dtype),
                     mask=c_mask)
            tl.atomic_xchg(counters_ptr + GRID_SLOT, 0)  # ready for the next launch
    elif EPILOGUE == 2:
        tl.store(out_ptrs, y, mask=mask)
        half = num_blocks // 2
        pair = pid_n % half
        done = tl.atomic_add(counters_ptr + PAIR_SLOTS + pair, 1, sem="acq_rel")
        if done == 1:
            other = tl.load(out_ptr + offs_m[:, None] * stride_om + (offs_n + tl.where(pid_n < half, 1, -1) * half
                                                                      * BLOCK_N)[None, :],
                            mask=m_ok[:, None], other=0.0, cache_modifier=".cg")
            gate = tl.where(pid_n < half, y, other).to(tl.float32)
            up = tl.where(pid_n < half, other, y).to(tl.float32)
            act = (gate / (1.0 + tl.exp(-gate))).to(y.dtype).to(tl.float32) * up
            offs_a = pair * BLOCK_N + tl.arange(0, BLOCK_N)
            tl.store(act_ptr + offs_m[:, None] * (N // 2) + offs_a[None, :], act.to(y.dtype), mask=m_ok[:, None])
            tl.atomic_xchg(counters_ptr + PAIR_SLOTS + pair, 0)
    elif EPILOGUE == 3:
        keys = tl.max(_argmax_keys(y.to(tl.float32), offs_n, mask), axis=1)  # [BLOCK_M]
        tl.atomic_max(act_ptr + offs_m, keys, mask=m_ok, sem="relaxed")
        # acq_rel: this program's maximum is in before whichever program sees the last count
        done = tl.atomic_add(counters_ptr, 1, sem="acq_rel")
        if done == num_blocks - 1:
            best = tl.atomic_xchg(act_ptr + offs_m, tl.zeros([BLOCK_M], dtype=tl.int64), mask=m_ok)
            low = tl.full([BLOCK_M], 0x7FFFFFFF, dtype=tl.int64)
            tl.store(normed_ptr + offs_m, low - (best & low), mask=m_ok)
            tl.atomic_xchg(counters_ptr, 0)  # ready for the next launch
    else:
        tl.store(out_ptrs, y, mask=mask)


@triton.jit
def _argmax_keys(v, cols, mask):
    # fp32 values v -> int64 keys ordered as (value, then the lower column), all > 0: the value's
    # bits made monotonic as a signed integer (a negative's 31 low bits inverted), moved to [0, 2^32)
    # and into bits 31..62, and 0x7FFFFFFF - column below. A positive NaN ranks above +inf, as
    # torch.argmax ranks NaN first; masked entries rank below every value (key 0).
    bits = v.to(tl.int32, bitcast=True)
    ordered = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64) + tl.full(v.shape, 1 << 31, dtype=tl.int64)
    low = tl.full(cols.shape, 0x7FFFFFFF, dtype=tl.int64)
    keys = (ordered << 31) | (low - cols.to(tl.int64))[None, :]
    return tl.where(mask, keys, tl.zeros(keys.shape, dtype=tl.int64))


@triton.jit
def skinny_linear_kernel(
    x_ptr, weight_ptr, bias_ptr, out_ptr, residual_ptr, sumsq_part_ptr, norm_w_ptr, normed_ptr, act_ptr,
    workspace_ptr, counters_ptr, M, N, K, k_per_split, eps,
    stride_xm, stride_wn, stride_om, stride_rm,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VEC: tl.constexpr,
    EVEN_K: tl.constexpr, HAS_BIAS: tl.constexpr, IS_SPLIT: tl.constexpr, NUM_STAGES: tl.constexpr,
    X_SHAPE_N: tl.constexpr, EPILOGUE: tl.constexpr, USE_PDL: tl.constexpr,
    BLOCKS_PAD: tl.constexpr, N_PAD: tl.constexpr, GRID_SLOT: tl.constexpr, PAIR_SLOTS: tl.constexpr,
):
    # Program (column block, K split): columns [pid_n * BLOCK_N, +BLOCK_N) of every row over
    # K range [pid_k * k_per_split, +k_per_split). k_per_split is a multiple of BLOCK_K.
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Columns past N re-read weight row N - 1, so that weight loads need no row mask; never stored.
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    w_ptrs = weight_ptr + rows[None, :, None] * stride_wn + offs_k[None, None, :]  # [1, BLOCK_N, BLOCK_K]
    x_ptrs = x_ptr + offs_m[:, None, None].to(tl.int64) * stride_xm + offs_k[None, None, :]  # [BLOCK_M, 1, BLOCK_K]
    if X_SHAPE_N > 1:
        # Every thread loads the x of its own weight elements ([BLOCK_M, BLOCK_N, BLOCK_K], from L1)
        # instead of the tile of x going through shared memory to every warp, with barriers.
        x_ptrs += tl.zeros([1, X_SHAPE_N, 1], dtype=tl.int32)
    x_ok = (offs_m < M)[:, None, None]
    k_start = pid_k * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    k_last = k_start + (k_end - k_start - 1) // BLOCK_K * BLOCK_K
    # The first two weight tiles need nothing from the kernel before: they are in flight during the
    # wait (on the 1B model's small projections that is all of a program's weight). With one tile,
    # the second load repeats the first (an L1/L2 hit) and is not used.
    num_tiles = (k_last - k_start) // BLOCK_K + 1
    w0 = _load_w(w_ptrs, k_start, offs_k, K, EVEN_K)
    w1 = _load_w(w_ptrs, tl.minimum(k_start + BLOCK_K, k_last), offs_k, K, EVEN_K)
    bias = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)
    if USE_PDL:
        tl.extra.cuda.gdc_wait()
    r = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if EPILOGUE == 1:  # the residual tile, early: its latency hides behind the weight stream
        r = tl.load(residual_ptr + offs_m[:, None] * stride_rm + offs_n[None, :],
                    mask=(offs_m < M)[:, None] & (offs_n < N)[None, :], other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K // VEC], dtype=tl.float32)
    # Each step loads the tile two ahead before using the current one (three tiles in flight).
    for i in tl.range(0, num_tiles - 2, num_stages=NUM_STAGES):
        k0 = k_start + i * BLOCK_K
        w2 = _load_w(w_ptrs, k0 + 2 * BLOCK_K, offs_k, K, EVEN_K)
        acc = _mac(acc, w0, _load_x(x_ptrs, k0, x_ok, offs_k, K, EVEN_K), BLOCK_M, BLOCK_N, BLOCK_K, VEC)
        w0 = w1
        w1 = w2
    # The last two tiles (or the only one).
    x = _load_x(x_ptrs, tl.maximum(k_last - BLOCK_K, k_start), x_ok, offs_k, K, EVEN_K)
    acc = _mac(acc, w0, x, BLOCK_M, BLOCK_N, BLOCK_K, VEC)
    if num_tiles > 1:
        acc = _mac(acc, w1, _load_x(x_ptrs, k_last, x_ok, offs_k, K, EVEN_K), BLOCK_M, BLOCK_N, BLOCK_K, VEC)
    acc = tl.sum(acc, axis=2)  # [BLOCK_M, BLOCK_N]
    if IS_SPLIT:
        # Partial sums to workspace [SPLIT_K, M, N]; the split that finishes a column block last
        # adds the splits in order and finishes it (no second kernel).
        part_ptrs = workspace_ptr + offs_m[:, None] * N + offs_n[None, :]
        tile_ok = (offs_m < M)[:, None] & (offs_n < N)[None, :]
        tl.store(part_ptrs + pid_k * M * N, acc, mask=tile_ok)
        num_splits = tl.num_programs(1)
        done = tl.atomic_add(counters_ptr + pid_n, 1, sem="acq_rel")
        if done == num_splits - 1:
            total = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
            for s in range(0, num_splits):
                total += tl.load(part_ptrs + s * M * N, mask=tile_ok, other=0.0, cache_modifier=".cg")
            tl.atomic_xchg(counters_ptr + pid_n, 0)  # ready for the next launch
            _finish(total, bias, r, pid_n, offs_m, offs_n, M, N, out_ptr, stride_om, sumsq_part_ptr, norm_w_ptr,
                    normed_ptr, eps, act_ptr, counters_ptr, HAS_BIAS, EPILOGUE, BLOCK_M, BLOCK_N, BLOCKS_PAD, N_PAD,
                    GRID_SLOT, PAIR_SLOTS)
    else:
        _finish(acc, bias, r, pid_n, offs_m, offs_n, M, N, out_ptr, stride_om, sumsq_part_ptr, norm_w_ptr,
                normed_ptr, eps, act_ptr, counters_ptr, HAS_BIAS, EPILOGUE, BLOCK_M, BLOCK_N, BLOCKS_PAD, N_PAD,
                GRID_SLOT, PAIR_SLOTS)


@functools.lru_cache(maxsize=None)
def device_num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    return torch.cuda.get_device_properties(device).multi_processor_count


def choose_config(m: int, n: int, k: int, num_sms: int) -> dict:
    """The launch configuration for x [m, k] @ weight [n, k]^T on a device with num_sms SMs.

    One row: the sweep's rule (ONE_ROW_*). Otherwise: BLOCK_K: 256 (a warp's 32 lanes read 512 contiguous bytes of a bf16 row). BLOCK_N: a tile of
    TILE_ELEMENTS weight elements, halved while the step's products (rows * tile), which live in
    registers, pass STEP_PRODUCTS. SPLIT_K: 1 while the column blocks alone give
    MIN_PROGRAMS_PER_SM programs per SM; else enough splits for PROGRAMS_PER_SM programs per SM,
    each of whole BLOCK_K steps and none empty. num_stages: of the K loop's software pipeline
    (cp.async into shared memory); 1 streams through registers only.
    """
    block_m = triton.next_power_of_2(max(m, 1))
    block_k = min(256, max(16, triton.next_power_of_2(k)))
    if m == 1:  # the H100 sweep's winners (bench/results/gemv_h100.json, Llama 1B and 8B shapes)
        block_n = ONE_ROW_BLOCK_N
        num_steps_k = triton.cdiv(k, block_k)
        split_k = 1
        if triton.cdiv(n, block_n) < ONE_ROW_SPLIT_BELOW * num_sms and num_steps_k > 1:
            split_k = min(ONE_ROW_SPLIT_K, num_steps_k)
            split_k = triton.cdiv(num_steps_k, triton.cdiv(num_steps_k, split_k))
        return {"block_n": block_n, "block_k": block_k, "split_k": split_k, "num_warps": 4, "num_stages": 1}
    tile = TILE_ELEMENTS
    while block_m * tile > STEP_PRODUCTS and tile > 2048:
        tile //= 2
    block_n = min(max(8, tile // block_k), max(8, triton.next_power_of_2(n)))
    num_blocks_n, num_steps_k = triton.cdiv(n, block_n), triton.cdiv(k, block_k)
    split_k = 1
    if num_blocks_n < MIN_PROGRAMS_PER_SM * num_sms and num_steps_k > 1:
        split_k = min(triton.cdiv(PROGRAMS_PER_SM * num_sms, num_blocks_n), num_steps_k, MAX_SPLIT_K)
        split_k = triton.cdiv(num_steps_k, triton.cdiv(num_steps_k, split_k))
    return {"block_n": block_n, "block_k": block_k, "split_k": split_k, "num_warps": 4, "num_stages": 1}


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"skinny_linear needs x [M, K] and weight [N, K]; got x {tuple(x.shape)}, "
                         f"weight {tuple(weight.shape)}")
    if x.shape[0] > MAX_SKINNY_ROWS:
        raise ValueError(f"skinny_linear takes at most {MAX_SKINNY_ROWS} rows; got {x.shape[0]}")
    if x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"skinny_linear needs contiguous last dims; got x stride {x.stride()}, "
                         f"weight stride {weight.stride()}")
    if x.dtype not in DTYPES or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        raise ValueError(f"skinny_linear needs one of {DTYPES} for x, weight and bias; got {x.dtype}, "
                         f"{weight.dtype}, {None if bias is None else bias.dtype}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"skinny_linear: bias {tuple(bias.shape)} does not match weight {tuple(weight.shape)}")


@dataclasses.dataclass(frozen=True)
class NormOutput:
    """RMSNorm(h) = weight * h / rms(h) of the launch's residual output h, written beside it."""
    weight: torch.Tensor  # [N]
    eps: float


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                  config: dict | None = None, residual: torch.Tensor | None = None, norm: NormOutput | None = None,
                  silu_pairs: bool = False):
    """x [M, K] (M <= MAX_SKINNY_ROWS, rows may be strided, last dim contiguous) @ weight [N, K]^T
    (+ bias [N]) -> y [M, N] in x's dtype, as F.linear, with fp32 sums. Launches only (one kernel:
    with K split, the split that finishes a column block last sums it). config: entries that
    override choose_config's (benchmarks, tests); a split_k past K's steps is cut to them.

    Fused epilogues (the fused decode path), each rounding where the unfused layers do:
    - residual [M, N] and norm (NormOutput): returns (h, RMSNorm(h)) with h = y + residual, the
      next residual stream (the residual add and RMSNorm of the next layer);
    - silu_pairs: weight holds gate then up ([2I, K]); returns silu(gate) * up [M, I] (SiLU-and-mul).
    """
    _check_inputs(x, weight, bias)
    m, k = x.shape
    n = weight.shape[0]
    if (residual is None) != (norm is None):
        raise ValueError("skinny_linear: residual and norm come together")
    if residual is not None and silu_pairs:
        raise ValueError("skinny_linear: residual and silu_pairs do not combine")
    if residual is not None and (residual.shape != (m, n) or residual.dtype != x.dtype or residual.stride(1) != 1):
        raise ValueError(f"skinny_linear: residual {tuple(residual.shape)} {residual.dtype} must be [{m}, {n}] "
                         f"{x.dtype} with a contiguous last dim")
    if norm is not None and norm.weight.shape != (n,):
        raise ValueError(f"skinny_linear: norm weight {tuple(norm.weight.shape)} must be [{n}]")
    if silu_pairs and n % 2:
        raise ValueError(f"skinny_linear(silu_pairs=True) needs an even number of output features; got {n}")
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)  # [M, N]: y, or h
    second = None
    if residual is not None:
        second = torch.empty(m, n, dtype=x.dtype, device=x.device)  # RMSNorm(h)
    elif silu_pairs:
        second = torch.empty(m, n // 2, dtype=x.dtype, device=x.device)  # silu(gate) * up
    if m == 0 or n == 0:
        return out if second is None else (out, second) if residual is not None else second
    return _launch(x, weight, bias, config, out, second, residual, norm, silu_pairs)


def skinny_argmax(x: torch.Tensor, weight: torch.Tensor, num_columns: int | None = None, *,
                  config: dict | None = None) -> torch.Tensor:
    """argmax over the first num_columns (default all) of skinny_linear(x, weight) per row, as int64
    [M], from one launch that writes no logits (epilogue 3): the logits rounded to x's dtype, ties to
    the lowest column, like torch.argmax of the logits in fp32. The greedy step's LM head."""
    _check_inputs(x, weight, None)
    m = x.shape[0]
    n = weight.shape[0] if num_columns is None else num_columns
    if not 0 < n <= weight.shape[0] or m == 0:
        raise ValueError(f"skinny_argmax: {n} columns of {weight.shape[0]}, {m} rows")
    tokens = torch.empty(m, dtype=torch.int64, device=x.device)
    # K unsplit: every program has whole sums (the LM head's column blocks fill any GPU anyway)
    _launch(x, weight[:n], None, {**(config or {}), "split_k": 1}, x, tokens, None, None, False, argmax=True)
    return tokens


def _argmax_buffers(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed row maxima int64 [MAX_SKINNY_ROWS], arrival counter int32 [1]): zeros between launches."""
    buf = zeroed_counters("gemv argmax", device, 2 * MAX_SKINNY_ROWS + 2)
    return buf[:2 * MAX_SKINNY_ROWS].view(torch.int64), buf[2 * MAX_SKINNY_ROWS:]


def _launch(x, weight, bias, config, out, second, residual, norm, silu_pairs, argmax=False):
    m, k = x.shape
    n = weight.shape[0]
    cfg = {**choose_config(m, n, k, device_num_sms(x.device)), **(config or {})}
    block_n, block_k = cfg["block_n"], cfg["block_k"]
    if silu_pairs:  # a column block is all gate or all up
        while (n // 2) % block_n:
            block_n //= 2
    k_per_split = max(1, triton.cdiv(triton.cdiv(k, block_k), cfg["split_k"])) * block_k
    split_k = max(1, triton.cdiv(k, k_per_split))
    num_blocks_n = triton.cdiv(n, block_n)
    is_split = split_k > 1
    if is_split and num_blocks_n > PAIR_SLOTS:
        raise ValueError(f"skinny_linear: {num_blocks_n} column blocks with split K; at most {PAIR_SLOTS}")
    if silu_pairs and num_blocks_n // 2 > GRID_SLOT - PAIR_SLOTS:
        raise ValueError(f"skinny_linear: {num_blocks_n} column blocks with silu_pairs; at most "
                         f"{2 * (GRID_SLOT - PAIR_SLOTS)}")
    counters = arrival_counters(x.device) if is_split or second is not None else out
    packed = out
    if argmax:
        packed, counters = _argmax_buffers(x.device)
    workspace = torch.empty(split_k, m, n, dtype=torch.float32, device=x.device) if is_split else out
    sumsq_part = (torch.empty(m, num_blocks_n, dtype=torch.float32, device=x.device)
                  if residual is not None else out)
    use_pdl, launch = pdl_launch_args(x.device)
    x_per_element = m == 1 and cfg["num_stages"] == 1
    skinny_linear_kernel[(num_blocks_n, split_k)](
        x, weight, out if bias is None else bias.contiguous(), out, out if residual is None else residual,
        sumsq_part, out if norm is None else norm.weight, second if residual is not None or argmax else out,
        second if silu_pairs else packed, workspace, counters, m, n, k, k_per_split,
        0.0 if norm is None else norm.eps,
        x.stride(0), weight.stride(0), out.stride(0), 0 if residual is None else residual.stride(0),
        BLOCK_M=triton.next_power_of_2(m), BLOCK_N=block_n, BLOCK_K=block_k,
        VEC=min(block_k, 16 // x.element_size()), EVEN_K=k % block_k == 0,
        HAS_BIAS=bias is not None, IS_SPLIT=is_split, NUM_STAGES=cfg["num_stages"],
        X_SHAPE_N=block_n if x_per_element else 1,
        EPILOGUE=1 if residual is not None else 2 if silu_pairs else 3 if argmax else 0,
        USE_PDL=use_pdl, BLOCKS_PAD=triton.next_power_of_2(num_blocks_n) if residual is not None else 1,
        N_PAD=triton.next_power_of_2(n) if residual is not None else 1, GRID_SLOT=GRID_SLOT, PAIR_SLOTS=PAIR_SLOTS,
        num_warps=cfg["num_warps"], **launch,
    )
    if residual is not None:
        return out, second
    return second if silu_pairs else out
