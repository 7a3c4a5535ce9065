"""GPU microbenchmark of the paged attention kernels: prints a table and writes JSON.

    python bench/bench_attention.py OUT.json [--dtype bf16] [--head-dims 64 128] [--block-size 16]

Shapes are Llama-like (32 query heads, 8 kv heads). Every scenario checks the Triton result
against paged_attention_reference (relative L2 error) before timing it. Times are medians of
CUDA-graph replays (triton.testing.do_bench_cudagraph), as the engine runs decode steps:
eager launches cost 40-100 us of host time per call, more than a decode kernel's GPU time
(eager_ms shows it). Throughput: causal attention FLOPs (4 * visible keys *
D per query row and head) and the bytes of K/V the sequences must read at least once.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench, do_bench_cudagraph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_core.attention.kernels import decode_attention, prefill_attention, store_kv  # noqa: E402

# The module (its name is shadowed by the function in the package's namespace).
decode_module = importlib.import_module("llm_core.attention.kernels.decode_attention")
from llm_core.attention.metadata import AttentionMetadata  # noqa: E402
from llm_core.attention.torch_backend import paged_attention_reference  # noqa: E402

NUM_HEADS, NUM_KV_HEADS = 32, 8
# name -> (seq_len, q_len) per sequence
SCENARIOS = {
    "prefill 4x2048": [(2048, 2048)] * 4,
    "prefix hit 8x512 on 4096": [(4096, 512)] * 8,
    "mixed 2048 + 64 decodes@1024": [(2048, 2048)] + [(1024, 1)] * 64,
    "decode 64@2048": [(2048, 1)] * 64,
    "decode 256@1024": [(1024, 1)] * 256,
    "decode 8@8192": [(8192, 1)] * 8,
    "decode 1@32768": [(32768, 1)],
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_batch(specs, head_dim: int, block_size: int, dtype: torch.dtype):
    """Random q and a fully written paged cache; blocks are a random permutation of 1..N-1."""
    dev = "cuda"
    blocks_per_seq = [triton.cdiv(seq_len, block_size) for seq_len, _ in specs]
    num_blocks = 1 + sum(blocks_per_seq)
    shape = (num_blocks, block_size, NUM_KV_HEADS, head_dim)
    k_cache, v_cache = torch.randn(shape, dtype=dtype, device=dev), torch.randn(shape, dtype=dtype, device=dev)
    perm = torch.randperm(num_blocks - 1, device=dev).to(torch.int32) + 1
    block_tables = torch.zeros(len(specs), max(blocks_per_seq), dtype=torch.int32, device=dev)
    slots, start = [], 0
    for i, ((seq_len, q_len), num) in enumerate(zip(specs, blocks_per_seq)):
        block_tables[i, :num] = perm[start:start + num]
        start += num
        pos = torch.arange(seq_len - q_len, seq_len, device=dev)
        slots.append(block_tables[i, pos // block_size].long() * block_size + pos % block_size)
    query_start_loc = [0]
    for _, q_len in specs:
        query_start_loc.append(query_start_loc[-1] + q_len)
    seq_lens = [seq_len for seq_len, _ in specs]
    meta = AttentionMetadata(
        slot_mapping=torch.cat(slots), query_start_loc=torch.tensor(query_start_loc, dtype=torch.int32, device=dev),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev), block_tables=block_tables,
        max_query_len=max(q for _, q in specs), max_seq_len=max(seq_lens),
        query_start_loc_cpu=tuple(query_start_loc), seq_lens_cpu=tuple(seq_lens))
    q = torch.randn(query_start_loc[-1], NUM_HEADS, head_dim, dtype=dtype, device=dev)  # [T, H, D]
    return q, k_cache, v_cache, meta


def work(specs, head_dim: int, dtype: torch.dtype) -> tuple[float, float]:
    """(FLOPs, minimum bytes) of one attention call over these sequences."""
    flops = sum(4 * NUM_HEADS * head_dim * (q_len * (seq_len - q_len) + q_len * (q_len + 1) / 2)
                for seq_len, q_len in specs)
    elem = torch.finfo(dtype).bits // 8
    kv_bytes = sum(2 * seq_len * NUM_KV_HEADS * head_dim * elem for seq_len, _ in specs)
    q_out_bytes = 2 * sum(q for _, q in specs) * NUM_HEADS * head_dim * elem
    return flops, kv_bytes + q_out_bytes


def dense_sdpa(q, k_cache, v_cache, meta, scale):
    """torch SDPA on unpaged, equal-length sequences (a baseline); None where it does not apply."""
    lens = set(zip(meta.seq_lens_cpu, (b - a for a, b in zip(meta.query_start_loc_cpu, meta.query_start_loc_cpu[1:]))))
    if len(lens) != 1:
        return None
    ((seq_len, q_len),) = lens
    if q_len not in (1, seq_len):
        return None
    num_seqs = meta.num_seqs
    idx = meta.block_tables[:, :triton.cdiv(seq_len, k_cache.shape[1])].long()
    k = k_cache[idx].flatten(1, 2)[:, :seq_len].transpose(1, 2).contiguous()  # [B, Hkv, S, D]
    v = v_cache[idx].flatten(1, 2)[:, :seq_len].transpose(1, 2).contiguous()
    qd = q.view(num_seqs, q_len, NUM_HEADS, -1).transpose(1, 2).contiguous()  # [B, H, L, D]
    return lambda: F.scaled_dot_product_attention(qd, k, v, is_causal=q_len > 1, scale=scale, enable_gqa=True)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def with_reduce_kernel(fn):
    """fn with the splits combined by decode_reduce_kernel (no counter slots), as before the
    last split combined them itself."""
    def run():
        saved = decode_module.COUNTER_SLOTS
        decode_module.COUNTER_SLOTS = 0
        try:
            return fn()
        finally:
            decode_module.COUNTER_SLOTS = saved
    return run


def bench_scenario(name, specs, head_dim, block_size, dtype) -> list[dict]:
    q, k_cache, v_cache, meta = build_batch(specs, head_dim, block_size, dtype)
    scale = head_dim ** -0.5
    flops, nbytes = work(specs, head_dim, dtype)
    ref = paged_attention_reference(q, k_cache, v_cache, meta, scale)
    variants = {"triton unified": lambda: prefill_attention(q, k_cache, v_cache, meta, scale)}
    if meta.is_decode_only:
        variants["triton decode split-kv"] = lambda: decode_attention(q, k_cache, v_cache, meta, scale)
        variants["split-kv, reduce kernel"] = with_reduce_kernel(lambda: decode_attention(q, k_cache, v_cache, meta, scale))
        variants["triton decode 1 split"] = lambda: decode_attention(q, k_cache, v_cache, meta, scale, num_splits=1)
    sdpa = dense_sdpa(q, k_cache, v_cache, meta, scale)
    rows = []
    for variant, fn in list(variants.items()) + ([("torch sdpa (dense)", sdpa)] if sdpa else []):
        out = fn()
        err = rel_err(out.transpose(1, 2).reshape(q.shape) if out.dim() == 4 else out, ref)
        ms = do_bench_cudagraph(fn, rep=100, return_mode="median")
        eager_ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
        rows.append(dict(scenario=name, head_dim=head_dim, variant=variant, ms=ms, eager_ms=eager_ms, rel_err=err,
                         tflops=flops / ms / 1e9, gbps=nbytes / ms / 1e6))
    return rows


def bench_store(head_dim, block_size, dtype, num_tokens=8192) -> dict:
    q, k_cache, v_cache, meta = build_batch([(num_tokens, num_tokens)], head_dim, block_size, dtype)
    k = torch.randn(num_tokens, NUM_KV_HEADS, head_dim, dtype=dtype, device="cuda")
    v = torch.randn_like(k)
    store_kv(k, v, k_cache, v_cache, meta.slot_mapping)
    flat = k_cache.view(-1, NUM_KV_HEADS, head_dim)
    err = 0.0 if torch.equal(flat[meta.slot_mapping], k) else 1.0
    ms = do_bench_cudagraph(lambda: store_kv(k, v, k_cache, v_cache, meta.slot_mapping), rep=100, return_mode="median")
    nbytes = 4 * k.numel() * k.element_size()
    return dict(scenario=f"store_kv {num_tokens} tokens", head_dim=head_dim, variant="triton", ms=ms, eager_ms=float("nan"),
                rel_err=err, tflops=0.0, gbps=nbytes / ms / 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_path", type=Path)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS), help="names from SCENARIOS")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_attention needs a CUDA GPU")
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    rows = []
    for head_dim in args.head_dims:
        for name in args.scenarios:
            rows.extend(bench_scenario(name, SCENARIOS[name], head_dim, args.block_size, dtype))
            torch.cuda.empty_cache()
        rows.append(bench_store(head_dim, args.block_size, dtype))
    print(f"{'scenario':30} {'D':>4} {'variant':24} {'ms':>9} {'eager_ms':>9} {'TFLOP/s':>8} {'GB/s':>8} {'rel_err':>9}")
    for r in rows:
        print(f"{r['scenario']:30} {r['head_dim']:>4} {r['variant']:24} {r['ms']:9.4f} {r['eager_ms']:9.4f} {r['tflops']:8.1f} "
              f"{r['gbps']:8.0f} {r['rel_err']:9.2e}")
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__,
                dtype=args.dtype, block_size=args.block_size, num_heads=NUM_HEADS, num_kv_heads=NUM_KV_HEADS)
    args.json_path.parent.mkdir(parents=True, exist_ok=True)
    args.json_path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))


if __name__ == "__main__":
    main()
