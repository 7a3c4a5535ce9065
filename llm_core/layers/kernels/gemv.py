"""Triton skinny GEMM (GEMV for a few rows): y [M, N] = x [M, K] @ weight [N, K]^T + bias, M <= 8.

At decode time a linear layer's cost is streaming its weight once; cuBLAS reaches half the memory
bandwidth on the small projections at M = 1. Here each program owns BLOCK_N output columns for every
row of x: it streams [BLOCK_N, BLOCK_K] tiles of weight rows (each thread 16 contiguous bytes of a
row, a warp 512 bytes), multiplies each tile with the matching [BLOCK_M, BLOCK_K] slice of x, so the
tile serves every row, and sums in fp32: within a thread at each step, across threads once at the end.
When N / BLOCK_N programs are too few to keep the memory system busy, K is split: each split writes
fp32 partial sums to a workspace [SPLIT_K, M, N] and a second kernel adds them, adds the bias, casts.

The launch configuration comes from choose_config(m, n, k, num_sms), a fixed rule of host values:
no autotuning and no host sync, so calls can be captured in CUDA graphs.

Layouts (checked in the TTGIR and SASS of sm_90 builds with Triton 3.6 and 3.8): the product keeps
the weight load's layout, so only x changes layout (through shared memory, a few hundred bytes a
step); with one row and no pipelining, each thread loads its own x elements instead (L1 hits, no
barrier in the loop).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

MAX_SKINNY_ROWS = 8
# Split K until there are about PROGRAMS_PER_SM programs per SM, when there are fewer than MIN_PROGRAMS_PER_SM.
PROGRAMS_PER_SM = 4
MIN_PROGRAMS_PER_SM = 2
MAX_SPLIT_K = 16
# Weight elements one program loads per step (16 KiB of bf16), and products of one step (BLOCK_M * tile).
TILE_ELEMENTS = 8192
STEP_PRODUCTS = 16384
REDUCE_BLOCK = 256
# One row (batch-1 decode), from the H100 sweep: 8 columns of 256 K-steps per program; split K in
# ONE_ROW_SPLIT_K when the column blocks are fewer than ONE_ROW_SPLIT_BELOW per SM (the 1B q/k/v,
# o and down projections, the 8B o and down), else not (gate/up, the 8B q/k/v). 5-13% faster per
# layer than the general rule below in bench_gemv's sweep; not measured in the engine yet.
ONE_ROW_BLOCK_N = 8
ONE_ROW_SPLIT_BELOW = 4
ONE_ROW_SPLIT_K = 4
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@triton.jit
def skinny_linear_kernel(
    x_ptr, weight_ptr, bias_ptr, out_ptr, M, N, K, k_per_split,
    stride_xm, stride_wn, stride_om, stride_os,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, VEC: tl.constexpr,
    EVEN_K: tl.constexpr, HAS_BIAS: tl.constexpr, IS_SPLIT: tl.constexpr, NUM_STAGES: tl.constexpr,
    X_PER_ELEMENT: tl.constexpr,
):
    # Program (column block, K split): columns [pid_n * BLOCK_N, +BLOCK_N) of every row over
    # K range [pid_k * k_per_split, +k_per_split). k_per_split is a multiple of BLOCK_K.
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Columns past N re-read weight row N - 1, so that weight loads need no row mask; never stored.
    rows = tl.minimum(offs_n, N - 1).to(tl.int64)
    # 3-D pointers, so that the product [BLOCK_M, BLOCK_N, BLOCK_K] takes the weight load's layout
    # (x is loaded first: where two loads' layouts meet, Triton keeps the later load's).
    w_ptrs = weight_ptr + rows[None, :, None] * stride_wn + offs_k[None, None, :]  # [1, BLOCK_N, BLOCK_K]
    x_ptrs = x_ptr + offs_m[:, None, None].to(tl.int64) * stride_xm + offs_k[None, None, :]  # [BLOCK_M, 1, BLOCK_K]
    if X_PER_ELEMENT:
        # Every thread loads the x of its own weight elements ([BLOCK_M, BLOCK_N, BLOCK_K], from L1)
        # instead of the tile of x going through shared memory to every warp, with barriers.
        x_ptrs += tl.zeros([1, BLOCK_N, 1], dtype=tl.int32)
    m_ok = (offs_m < M)[:, None, None]
    k_start = pid_k * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K // VEC], dtype=tl.float32)
    # Triton software-pipelines the loads of a loop without tl.dot only when the loop names its stages.
    for k0 in tl.range(k_start, k_end, BLOCK_K, num_stages=NUM_STAGES):
        if EVEN_K:
            x = tl.load(x_ptrs + k0, mask=m_ok, other=0.0)
            w = tl.load(w_ptrs + k0, eviction_policy="evict_first")
        else:
            k_ok = ((k0 + offs_k) < K)[None, None, :]
            x = tl.load(x_ptrs + k0, mask=m_ok & k_ok, other=0.0)
            w = tl.load(w_ptrs + k0, mask=k_ok, other=0.0, eviction_policy="evict_first")
        # [1, BLOCK_N, BLOCK_K] * [BLOCK_M, 1, BLOCK_K]: the tile serves every row. Each thread sums
        # its own VEC-element runs of K here; the sum across threads waits for the loop's end.
        prod = w.to(tl.float32) * x.to(tl.float32)
        acc += tl.sum(tl.reshape(prod, [BLOCK_M, BLOCK_N, BLOCK_K // VEC, VEC]), axis=3)
    acc = tl.sum(acc, axis=2)  # [BLOCK_M, BLOCK_N]
    offs_m = offs_m[:, None]
    n_ok = offs_n < N
    mask = (offs_m < M) & n_ok[None, :]
    if IS_SPLIT:  # out_ptr is the fp32 workspace [SPLIT_K, M, N]
        tl.store(out_ptr + pid_k * stride_os + offs_m * stride_om + offs_n[None, :], acc, mask=mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + offs_m * stride_om + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def skinny_reduce_kernel(partial_ptr, bias_ptr, out_ptr, N, stride_ps, stride_pm, stride_om,
                         SPLIT_K: tl.constexpr, BLOCK: tl.constexpr, HAS_BIAS: tl.constexpr):
    # Program (row, column block): out = sum of the SPLIT_K fp32 partials + bias, cast to out's dtype.
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):
        acc += tl.load(partial_ptr + s * stride_ps + row * stride_pm + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_om + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


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


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                  config: dict | None = None) -> torch.Tensor:
    """x [M, K] (M <= MAX_SKINNY_ROWS, rows may be strided, last dim contiguous) @ weight [N, K]^T
    (+ bias [N]) -> [M, N] in x's dtype, as F.linear, with fp32 sums. config: entries that override
    choose_config's (benchmarks, tests); a split_k past K's steps is cut to them. Launches only."""
    _check_inputs(x, weight, bias)
    m, k = x.shape
    n = weight.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)  # [M, N]
    if m == 0 or n == 0:
        return out
    cfg = {**choose_config(m, n, k, device_num_sms(x.device)), **(config or {})}
    block_n, block_k = cfg["block_n"], cfg["block_k"]
    k_per_split = max(1, triton.cdiv(triton.cdiv(k, block_k), cfg["split_k"])) * block_k
    split_k = max(1, triton.cdiv(k, k_per_split))
    bias_arg = out if bias is None else bias.contiguous()
    is_split = split_k > 1
    partial = torch.empty(split_k, m, n, dtype=torch.float32, device=x.device) if is_split else out
    skinny_linear_kernel[(triton.cdiv(n, block_n), split_k)](
        x, weight, bias_arg, partial, m, n, k, k_per_split,
        x.stride(0), weight.stride(0), partial.stride(-2), partial.stride(0) if is_split else 0,
        BLOCK_M=triton.next_power_of_2(m), BLOCK_N=block_n, BLOCK_K=block_k,
        VEC=min(block_k, 16 // x.element_size()), EVEN_K=k % block_k == 0,
        HAS_BIAS=bias is not None, IS_SPLIT=is_split, NUM_STAGES=cfg["num_stages"],
        X_PER_ELEMENT=m == 1 and cfg["num_stages"] == 1, num_warps=cfg["num_warps"],
    )
    if is_split:
        skinny_reduce_kernel[(m, triton.cdiv(n, REDUCE_BLOCK))](
            partial, bias_arg, out, n, partial.stride(0), partial.stride(1), out.stride(0),
            SPLIT_K=split_k, BLOCK=REDUCE_BLOCK, HAS_BIAS=bias is not None, num_warps=2,
        )
    return out
