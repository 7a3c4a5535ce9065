"""Persistent decode layer: one kernel per decoder layer for a batch-1 decode step.

At batch 1 a layer streams its weights once (the 1B model: 120 MB in about 40 us on an H100) and
does little else, yet as eight kernels it took 60% longer (docs/performance.md): every kernel
boundary drains the GPU (the last program's tail, the next kernel's start, its first loads), and the
small kernels between the projections (norms, rotary, attention) sit wholly on that path. Here one
grid of programs, as many as the GPU holds at once (one per SM), runs the whole layer in five
stages separated by grid barriers (an arrival counter per barrier that every program adds 1 to and
waits on):

  A. q/k/v: every program takes RMSNorm of the residual stream h itself (2 x hidden bytes from L2)
     and computes rows of q/k/v, four rotary pairs of one head per task; it applies the rotary
     embedding and writes q to a buffer, k and v to the KV cache slot.
  B. attention: (kv head, split) tasks over the paged cache; the split of a kv head that finishes
     last combines the splits (an arrival counter per kv head).
  C. o projection, adding its rows into h.
  D. gate/up with RMSNorm of h taken again by every program; a task computes 4 rows of gate and the
     matching 4 of up and writes SiLU(gate) * up.
  E. down projection, adding its rows into h.

A program loads its first weight tile of a stage before it waits at the barrier (and of stage A
before the wait for the kernel before, with programmatic dependent launch), and the next tile before
it uses the current one, so the weight stream crosses the stage boundaries: the point of the kernel.
Weight tiles are [4, 2, KC] (two groups of 4 rows of KC columns; whole rows of K are KC chunks).

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

import torch
import triton
import triton.language as tl

from llm_core.attention.kernels.decode_attention import _combine_splits
from llm_core.attention.kernels.prefill_attention import LOG2E, M_INIT, attend_paged_tiles
from llm_core.layers.kernels.gemv import device_num_sms
from llm_core.layers.kernels.pdl import pdl_launch_args

# Counter slots: grid barriers after stages A..D, the exit count, then one per kv head (attention splits).
NUM_BARRIERS = tl.constexpr(4)
EXIT_SLOT = tl.constexpr(4)
HEAD_SLOTS = tl.constexpr(8)
COUNTER_SLOTS = 256
MAX_CHUNK = 2048  # columns of a weight tile (KC): 4 x 2 rows x 2048 bf16 = 32 KiB
ATTENTION_TILE_N = 64
MAX_ATTENTION_SPLITS = 16
# What the TIMING timestamps mark, in order (index = column of the timing buffer).
TIMING_POINTS = ("start", "waited for the kernel before", "q/k/v done", "barrier A passed", "attention done",
                 "barrier B passed", "o done", "barrier C passed", "gate/up done", "barrier D passed", "down done")

_COUNTERS: dict[torch.device, torch.Tensor] = {}


def layer_counters(device: torch.device) -> torch.Tensor:
    """The device's barrier counters ([COUNTER_SLOTS] int32, zero), allocated on first use, which must
    not be inside a CUDA graph capture."""
    counters = _COUNTERS.get(device)
    if counters is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("persistent decode counters are allocated on the first call, which must come before "
                               "CUDA graph capture")
        counters = _COUNTERS[device] = torch.zeros(COUNTER_SLOTS, dtype=torch.int32, device=device)
    return counters


@triton.jit
def _grid_arrive(counter_ptr):
    # Every thread's stores of this program come before the release (the CTA barrier, then one
    # thread's gpu-scope release: the pattern of a cooperative grid sync).
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
def _x_chunk(x_ptr, norm_w_ptr, rstd, k0, NORM: tl.constexpr, KC: tl.constexpr):
    # KC entries of the stage's input at k0: RMSNorm(h) (NORM) or a buffer of this launch.
    offs = k0 + tl.arange(0, KC)
    x = tl.load(x_ptr + offs, cache_modifier=".cg")
    if NORM:
        normed = (x.to(tl.float32) * rstd).to(x.dtype).to(tl.float32)
        x = (normed * tl.load(norm_w_ptr + offs).to(tl.float32)).to(x.dtype)
    return x


@triton.jit
def _linear_stage(w_ptr, w, pid, num_programs, x_ptr, norm_w_ptr, rstd, bias_ptr,
                  out_ptr, k_cache_ptr, v_cache_ptr, cos_sin_ptr, pos, slot,
                  STAGE: tl.constexpr, K: tl.constexpr, KC: tl.constexpr, NUM_TASKS: tl.constexpr,
                  HAS_BIAS: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, I: tl.constexpr):
    # Tasks pid, pid + P, ... of a stage; w is the first one's first tile (loaded by the caller).
    # STAGE 0: q/k/v + rotary + KV store; 1: o, added into out (h); 2: gate/up -> SiLU pairs
    # into out (act); 3: down, added into out (h).
    NUM_CHUNKS: tl.constexpr = K // KC
    NORM: tl.constexpr = STAGE == 0 or STAGE == 2
    my_tasks = tl.cdiv(tl.maximum(NUM_TASKS - pid, 0), num_programs)
    if NUM_CHUNKS == 1:
        x = _x_chunk(x_ptr, norm_w_ptr, rstd, 0, NORM, KC)
    offs_r = tl.arange(0, 4)
    offs_p = tl.arange(0, 2)
    for i in range(0, my_tasks):
        t = pid + i * num_programs
        acc = tl.zeros([4, 2, KC // 8], dtype=tl.float32)
        for c in tl.static_range(NUM_CHUNKS):
            # The next tile is in flight while this one is used.
            if c + 1 < NUM_CHUNKS:
                w_next = _load_tile(w_ptr, t, (c + 1) * KC, True, STAGE, K, KC, D, I)
            else:
                w_next = _load_tile(w_ptr, t + num_programs, 0, i + 1 < my_tasks, STAGE, K, KC, D, I)
            if NUM_CHUNKS > 1:
                x = _x_chunk(x_ptr, norm_w_ptr, rstd, c * KC, NORM, KC)
            prod = w.to(tl.float32) * x.to(tl.float32)[None, None, :]
            acc += tl.sum(tl.reshape(prod, [4, 2, KC // 8, 8]), axis=3)
            w = w_next
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
            r = tl.load(out_ptr + rows, cache_modifier=".cg")
            tl.store(out_ptr + rows, (y.to(tl.float32) + r.to(tl.float32)).to(y.dtype))


@triton.jit
def _attention_stage(pid, num_programs, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len,
                     part_m_ptr, part_l_ptr, part_acc_ptr, out_ptr, head_counters_ptr, qk_scale, sliding_window,
                     NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, BLOCK_H: tl.constexpr,
                     BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
                     SPLITS_PAD: tl.constexpr, USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr):
    # (kv head, split) tasks; the last split of a kv head to finish writes its GROUP heads' rows.
    GROUP: tl.constexpr = NH // NKV
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, DP)
    io_mask = (offs_h < GROUP)[:, None] & (offs_d < D)[None, :]
    q_pos = tl.zeros([BLOCK_H], dtype=tl.int32) + seq_len - 1
    split_size = tl.cdiv(tl.cdiv(seq_len, NUM_SPLITS), TILE_N) * TILE_N
    for t in range(pid, NKV * NUM_SPLITS, num_programs):
        kv_head = t // NUM_SPLITS
        split = t % NUM_SPLITS
        head = kv_head * GROUP + offs_h
        q = tl.load(q_ptr + head[:, None] * D + offs_d[None, :], mask=io_mask, other=0.0, cache_modifier=".cg")
        kv_begin = split * split_size
        kv_end = tl.minimum(kv_begin + split_size, seq_len)
        if USE_WINDOW:
            kv_begin = tl.maximum(kv_begin, tl.maximum(seq_len - sliding_window, 0) // TILE_N * TILE_N)
            kv_split = kv_begin
        else:
            kv_split = kv_begin + tl.maximum(kv_end - kv_begin, 0) // TILE_N * TILE_N
        acc = tl.zeros([BLOCK_H, DP], dtype=tl.float32)
        m_i = tl.full([BLOCK_H], M_INIT, dtype=tl.float32)
        l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
        acc, m_i, l_i = attend_paged_tiles(
            acc, m_i, l_i, q, q_pos, k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, kv_begin, kv_split,
            qk_scale, sliding_window, D, DP, NKV, BLOCK_SIZE, TILE_N, USE_WINDOW, False, DOT_PRECISION)
        acc, m_i, l_i = attend_paged_tiles(
            acc, m_i, l_i, q, q_pos, k_cache_ptr, v_cache_ptr, block_table_ptr, kv_head, kv_split, kv_end,
            qk_scale, sliding_window, D, DP, NKV, BLOCK_SIZE, TILE_N, USE_WINDOW, True, DOT_PRECISION)
        part = head.to(tl.int64) * NUM_SPLITS + split  # [BH]: partials [NH, NUM_SPLITS(, D)]
        tl.store(part_m_ptr + part, m_i, mask=offs_h < GROUP)
        tl.store(part_l_ptr + part, l_i, mask=offs_h < GROUP)
        tl.store(part_acc_ptr + part[:, None] * D + offs_d[None, :], acc, mask=io_mask)
        tl.debug_barrier()
        done = tl.atomic_add(head_counters_ptr + kv_head, 1, sem="acq_rel", scope="gpu")
        if done == NUM_SPLITS - 1:
            for g in tl.static_range(GROUP):
                _combine_splits(out_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, 0, NUM_SPLITS,
                                (kv_head * GROUP + g).to(tl.int64), kv_head * GROUP + g, 0, D, D, DP, SPLITS_PAD)
            tl.atomic_xchg(head_counters_ptr + kv_head, 0)


@triton.jit
def persistent_decode_layer_kernel(
    h_ptr, ln1_ptr, qkv_w_ptr, qkv_b_ptr, cos_sin_ptr, positions_ptr, slot_mapping_ptr, k_cache_ptr, v_cache_ptr,
    block_table_ptr, seq_lens_ptr, q_ptr, attn_ptr, part_m_ptr, part_l_ptr, part_acc_ptr,
    o_w_ptr, o_b_ptr, ln2_ptr, gu_w_ptr, gu_b_ptr, act_ptr, down_w_ptr, down_b_ptr, counters_ptr, timing_ptr,
    eps, qk_scale, sliding_window,
    H: tl.constexpr, HP: tl.constexpr, NH: tl.constexpr, NKV: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
    I: tl.constexpr, KC: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE_N: tl.constexpr,
    NUM_SPLITS: tl.constexpr, SPLITS_PAD: tl.constexpr, QKV_BIAS: tl.constexpr, O_BIAS: tl.constexpr,
    MLP_BIAS: tl.constexpr, USE_WINDOW: tl.constexpr, DOT_PRECISION: tl.constexpr, USE_PDL: tl.constexpr,
    TIMING: tl.constexpr,
):
    # TIMING: each program writes the GPU's global timer (ns) at TIMING_POINTS points to timing [P, 16].
    pid = tl.program_id(0)
    if TIMING:
        tl.store(timing_ptr + pid * 16, tl.extra.cuda.globaltimer())
    num_programs = tl.num_programs(0)
    TASKS_QKV: tl.constexpr = (NH + 2 * NKV) * D // 8
    TASKS_O: tl.constexpr = H // 8
    TASKS_GU: tl.constexpr = I // 4
    # Stage A's first weight tile needs nothing from the kernel before (PDL, pdl.py).
    w = _load_tile(qkv_w_ptr, pid, 0, pid < TASKS_QKV, 0, H, KC, D, I)
    if USE_PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 1, tl.extra.cuda.globaltimer())
    pos = tl.load(positions_ptr).to(tl.int64)
    slot = tl.load(slot_mapping_ptr).to(tl.int64)
    seq_len = tl.load(seq_lens_ptr)
    rstd = _rstd(h_ptr, eps, H, HP)
    _linear_stage(qkv_w_ptr, w, pid, num_programs, h_ptr, ln1_ptr, rstd, qkv_b_ptr, q_ptr, k_cache_ptr, v_cache_ptr,
                  cos_sin_ptr, pos, slot, 0, H, KC, TASKS_QKV, QKV_BIAS, NH, NKV, D, I)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 2, tl.extra.cuda.globaltimer())
    _grid_arrive(counters_ptr + 0)
    _grid_wait(counters_ptr + 0, num_programs)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 3, tl.extra.cuda.globaltimer())
    _attention_stage(pid, num_programs, q_ptr, k_cache_ptr, v_cache_ptr, block_table_ptr, seq_len,
                     part_m_ptr, part_l_ptr, part_acc_ptr, attn_ptr, counters_ptr + HEAD_SLOTS, qk_scale,
                     sliding_window, NH, NKV, D, DP, BLOCK_H, BLOCK_SIZE, TILE_N, NUM_SPLITS, SPLITS_PAD,
                     USE_WINDOW, DOT_PRECISION)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 4, tl.extra.cuda.globaltimer())
    _grid_arrive(counters_ptr + 1)
    w = _load_tile(o_w_ptr, pid, 0, pid < TASKS_O, 1, NH * D, KC, D, I)
    _grid_wait(counters_ptr + 1, num_programs)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 5, tl.extra.cuda.globaltimer())
    _linear_stage(o_w_ptr, w, pid, num_programs, attn_ptr, ln2_ptr, rstd, o_b_ptr, h_ptr, k_cache_ptr, v_cache_ptr,
                  cos_sin_ptr, pos, slot, 1, NH * D, KC, TASKS_O, O_BIAS, NH, NKV, D, I)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 6, tl.extra.cuda.globaltimer())
    _grid_arrive(counters_ptr + 2)
    w = _load_tile(gu_w_ptr, pid, 0, pid < TASKS_GU, 2, H, KC, D, I)
    _grid_wait(counters_ptr + 2, num_programs)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 7, tl.extra.cuda.globaltimer())
    rstd = _rstd(h_ptr, eps, H, HP)
    _linear_stage(gu_w_ptr, w, pid, num_programs, h_ptr, ln2_ptr, rstd, gu_b_ptr, act_ptr, k_cache_ptr, v_cache_ptr,
                  cos_sin_ptr, pos, slot, 2, H, KC, TASKS_GU, MLP_BIAS, NH, NKV, D, I)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 8, tl.extra.cuda.globaltimer())
    _grid_arrive(counters_ptr + 3)
    w = _load_tile(down_w_ptr, pid, 0, pid < TASKS_O, 3, I, KC, D, I)
    _grid_wait(counters_ptr + 3, num_programs)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 9, tl.extra.cuda.globaltimer())
    _linear_stage(down_w_ptr, w, pid, num_programs, act_ptr, ln2_ptr, rstd, down_b_ptr, h_ptr, k_cache_ptr,
                  v_cache_ptr, cos_sin_ptr, pos, slot, 3, I, KC, TASKS_O, MLP_BIAS, NH, NKV, D, I)
    if TIMING:
        tl.store(timing_ptr + pid * 16 + 10, tl.extra.cuda.globaltimer())
    # Every program has left every barrier once it counts here: the last one resets them.
    tl.debug_barrier()
    done = tl.atomic_add(counters_ptr + EXIT_SLOT, 1, sem="acq_rel", scope="gpu")
    if done == num_programs - 1:
        for b in tl.static_range(NUM_BARRIERS + 1):
            tl.atomic_xchg(counters_ptr + b, 0)


def chunk_columns(*ks: int, max_chunk: int = MAX_CHUNK) -> int:
    """KC: the largest power of two <= max_chunk dividing every K of the layer (0 if below 16)."""
    kc = max_chunk
    while kc >= 16 and any(k % kc for k in ks):
        kc //= 2
    return kc if kc >= 16 else 0


def persistent_decode_supported(hidden: int, num_heads: int, num_kv_heads: int, head_dim: int,
                                intermediate: int) -> bool:
    """Whether a layer of these sizes fits the kernel's tiling (module docstring)."""
    return (head_dim % 8 == 0 and hidden % 8 == 0 and intermediate % 4 == 0 and num_heads % num_kv_heads == 0
            and num_kv_heads <= COUNTER_SLOTS - HEAD_SLOTS.value
            and chunk_columns(hidden, num_heads * head_dim, intermediate) > 0)


@functools.lru_cache(maxsize=None)
def default_num_programs(device: torch.device) -> int:
    """One program per SM on CUDA (all resident at once); one under the interpreter (module docstring)."""
    return device_num_sms(device) if device.type == "cuda" else 1



class DecodeWorkspace:
    """Buffers of one layer launch, reused by every layer of a forward: q and the attention output
    [NH * D], the attention splits' partials, SiLU(gate) * up [I]."""

    def __init__(self, num_heads: int, head_dim: int, intermediate: int, num_splits: int, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.num_splits = num_splits
        self.q = torch.empty(num_heads * head_dim, dtype=dtype, device=device)
        self.attn = torch.empty(num_heads * head_dim, dtype=dtype, device=device)
        self.part_m = torch.empty(num_heads, num_splits, dtype=torch.float32, device=device)
        self.part_l = torch.empty(num_heads, num_splits, dtype=torch.float32, device=device)
        self.part_acc = torch.empty(num_heads, num_splits, head_dim, dtype=torch.float32, device=device)
        self.act = torch.empty(intermediate, dtype=dtype, device=device)


def attention_splits(num_kv_heads: int, num_programs: int) -> int:
    """Splits of the keys per kv head: enough for one attention task per program, at most MAX_ATTENTION_SPLITS."""
    return max(1, min(MAX_ATTENTION_SPLITS, num_programs // num_kv_heads))


def persistent_decode_layer(
    h: torch.Tensor, *, ln1: torch.Tensor, qkv_weight: torch.Tensor, o_weight: torch.Tensor, ln2: torch.Tensor,
    gate_up_weight: torch.Tensor, down_weight: torch.Tensor, eps: float, num_heads: int,
    k_cache: torch.Tensor, v_cache: torch.Tensor, positions: torch.Tensor, slot_mapping: torch.Tensor,
    block_table: torch.Tensor, seq_lens: torch.Tensor, cos_sin: torch.Tensor, scale: float,
    qkv_bias: torch.Tensor | None = None, o_bias: torch.Tensor | None = None,
    gate_up_bias: torch.Tensor | None = None, down_bias: torch.Tensor | None = None,
    sliding_window: int | None = None, workspace: DecodeWorkspace | None = None,
    num_programs: int | None = None, num_warps: int = 8, max_chunk: int = MAX_CHUNK,
    timing: torch.Tensor | None = None,
) -> None:
    """One Llama-family decoder layer for one token, in place: h [H] (the residual stream, the layer's
    input) becomes the layer's output h + attn + mlp, and the token's k/v go to cache slot
    slot_mapping[0]. positions, slot_mapping, seq_lens: device tensors of one entry (the token's
    position, its cache slot (-1: not stored), the context length including it); block_table: the
    sequence's row of block ids. Weights as the Llama modules hold them: qkv [(NH + 2 NKV) D, H]
    (q, k, v heads), o [H, NH D], gate_up [2 I, H] (gate, up), down [H, I]. cos_sin: fp32
    [max_position, D]. Reads no device value on the host (CUDA-graph safe). timing: int64
    [num_programs, 16] to receive each program's timestamps (TIMING_POINTS, bench/ diagnostics)."""
    hidden = h.numel()
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    intermediate = down_weight.shape[1]
    if not h.is_contiguous() or not persistent_decode_supported(hidden, num_heads, num_kv_heads, head_dim,
                                                                 intermediate):
        raise ValueError(f"persistent_decode_layer: hidden {hidden}, {num_heads} heads / {num_kv_heads} kv heads of "
                         f"{head_dim}, intermediate {intermediate} do not fit the kernel's tiles")
    expected = {"qkv_weight": (qkv_weight, ((num_heads + 2 * num_kv_heads) * head_dim, hidden)),
                "o_weight": (o_weight, (hidden, num_heads * head_dim)),
                "gate_up_weight": (gate_up_weight, (2 * intermediate, hidden)),
                "down_weight": (down_weight, (hidden, intermediate))}
    for name, (weight, shape) in expected.items():
        if tuple(weight.shape) != shape or not weight.is_contiguous() or weight.dtype != h.dtype:
            raise ValueError(f"persistent_decode_layer: {name} {tuple(weight.shape)} {weight.dtype} must be a "
                             f"contiguous {list(shape)} {h.dtype}")
    if not (k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.shape == v_cache.shape
            and k_cache.dtype == v_cache.dtype == h.dtype):
        raise ValueError("persistent_decode_layer: k/v caches must be contiguous, alike, of h's dtype")
    if cos_sin.dtype != torch.float32 or cos_sin.shape[1] != head_dim or not cos_sin.is_contiguous():
        raise ValueError(f"persistent_decode_layer: cos_sin {tuple(cos_sin.shape)} {cos_sin.dtype} must be fp32 "
                         f"[max_position, {head_dim}]")
    if num_programs is None:
        num_programs = default_num_programs(h.device)
    if workspace is None:
        workspace = DecodeWorkspace(num_heads, head_dim, intermediate, attention_splits(num_kv_heads, num_programs),
                                    h.dtype, h.device)
    counters = layer_counters(h.device)
    use_pdl, launch = pdl_launch_args(h.device)
    dummy = h
    persistent_decode_layer_kernel[(num_programs,)](
        h, ln1, qkv_weight, dummy if qkv_bias is None else qkv_bias, cos_sin, positions, slot_mapping,
        k_cache, v_cache, block_table, seq_lens, workspace.q, workspace.attn, workspace.part_m, workspace.part_l,
        workspace.part_acc, o_weight, dummy if o_bias is None else o_bias, ln2, gate_up_weight,
        dummy if gate_up_bias is None else gate_up_bias, workspace.act, down_weight,
        dummy if down_bias is None else down_bias, counters, counters if timing is None else timing, eps, scale * LOG2E, sliding_window or 0,
        H=hidden, HP=triton.next_power_of_2(hidden), NH=num_heads, NKV=num_kv_heads, D=head_dim,
        DP=max(16, triton.next_power_of_2(head_dim)), I=intermediate,
        KC=chunk_columns(hidden, num_heads * head_dim, intermediate, max_chunk=max_chunk),
        BLOCK_H=max(16, triton.next_power_of_2(num_heads // num_kv_heads)), BLOCK_SIZE=k_cache.shape[1],
        TILE_N=ATTENTION_TILE_N, NUM_SPLITS=workspace.num_splits,
        SPLITS_PAD=triton.next_power_of_2(workspace.num_splits), QKV_BIAS=qkv_bias is not None,
        O_BIAS=o_bias is not None, MLP_BIAS=gate_up_bias is not None,
        USE_WINDOW=sliding_window is not None, DOT_PRECISION="ieee" if h.dtype == torch.float32 else "tf32",
        USE_PDL=use_pdl, TIMING=timing is not None, num_warps=num_warps, **launch,
    )
