"""Tensor parallelism: batch-1 decode and throughput of one random checkpoint at each TP size, in one run.

    python -m bench.bench_tensor_parallel --shape llama-3.1-8b --tp-sizes 1,2 --out tp.json
    python -m bench.bench_tensor_parallel --device cpu --shape tiny --num-requests 16 --max-len 64 --batch1-tokens 64  # smoke

For each size N (one engine at a time, shut down before the next starts; N GPUs, one process each,
NCCL with NVLink multicast off):
1. batch-1 decode tokens/s (greedy, 256 tokens after a 32-token prompt), against the weight-streaming
   limit of N GPUs (N x device copy bandwidth / weight bytes read per token; communication excluded);
2. output tokens/s of the nano-vllm workload (input and output lengths uniform in 100..max_len,
   ignore_eos, temperature 0.6), as bench_throughput runs it;
3. greedy agreement with TP 1 on 16 prompts of 64 tokens: the fraction of positions equal up to the
   first difference (bf16 all-reduces sum in another order than one GEMM, so this is reported, not
   asserted; tests/llm_core/distributed/test_tensor_parallel.py asserts equality in fp32).
Random weights: speed does not depend on weight values. Every rank captures CUDA graphs with the
collectives inside them; --enforce-eager runs all sizes without graphs (a fallback should capture
fail on some NCCL). Prints a table and writes JSON. Imports no service packages.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_throughput import batch1_decode, copy_bandwidth, run_ours, workload
from bench.shapes import streamed_bytes_per_token, write_random_llama
from llm_core import LLM, SamplingParams


def agreement(reference: list[list[int]], outputs: list[list[int]]) -> float:
    """Tokens equal before each sequence's first difference, over all tokens."""
    same = 0
    for ref, out in zip(reference, outputs):
        for a, b in zip(ref, out):
            if a != b:
                break
            same += 1
    return same / sum(len(r) for r in reference)


def run_size(model_dir: Path, tp: int, args, dtype: torch.dtype, prompts, out_lens, probe) -> dict:
    start = time.perf_counter()
    llm = LLM(str(model_dir), device=args.device, dtype=str(dtype).removeprefix("torch."),
              max_model_len=2 * args.max_len + 64, max_num_seqs=256, max_num_batched_tokens=args.max_num_batched_tokens,
              tensor_parallel_size=tp, enforce_eager=args.enforce_eager)
    startup_s = time.perf_counter() - start
    try:
        b1 = batch1_decode(llm, args.batch1_tokens)[0]
        run_ours(llm, prompts[:8], [16] * 8)  # warm-up
        seconds, tokens = run_ours(llm, prompts, out_lens)
        greedy = [o.token_ids for o in llm.generate(probe, SamplingParams(max_tokens=64, temperature=0.0,
                                                                           ignore_eos=True))]
        run = {"tensor_parallel_size": tp, "startup_s": startup_s, "num_blocks": llm.engine.num_blocks,
               "batch1_tok_s": b1, "output_tok_s": tokens / seconds, "workload_seconds": seconds,
               "preemptions": llm.engine.scheduler.num_preemptions, "greedy": greedy}
        print(f"TP {tp}: batch-1 {b1:.1f} tok/s, workload {tokens / seconds:.0f} out tok/s "
              f"({seconds:.1f} s), startup {startup_s:.0f} s", flush=True)
        return run
    finally:
        llm.engine.shutdown()
        del llm
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.1-8b")
    parser.add_argument("--tp-sizes", default="1,2", help="comma-separated tensor-parallel sizes")
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384)
    parser.add_argument("--batch1-tokens", type=int, default=256)
    parser.add_argument("--out", default="bench_tensor_parallel.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (at every size)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.tp_sizes.split(",")]
    device = torch.device(args.device)
    if device.type == "cuda" and torch.cuda.device_count() < max(sizes):
        raise SystemExit(f"--tp-sizes {args.tp_sizes} needs {max(sizes)} GPUs; {torch.cuda.device_count()} visible")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model_dir = write_random_llama(Path(tempfile.mkdtemp()) / args.shape, args.shape, device=args.device, dtype=dtype)
    bandwidth = copy_bandwidth(device)
    weight_bytes = streamed_bytes_per_token(args.shape, torch.empty((), dtype=dtype).element_size())
    vocab_size = json.loads((model_dir / "config.json").read_text())["vocab_size"]
    prompts, out_lens = workload(args.num_requests, args.max_len, vocab_size)
    rng = random.Random(1)
    probe = [[rng.randrange(10, vocab_size) for _ in range(64)] for _ in range(16)]
    runs = []
    for tp in sizes:
        run = run_size(model_dir, tp, args, dtype, prompts, out_lens, probe)
        base = runs[0] if runs else run
        run["weight_streaming_limit_tok_s"] = run["tensor_parallel_size"] * bandwidth / weight_bytes
        run["batch1_speedup"] = run["batch1_tok_s"] / base["batch1_tok_s"]
        run["output_speedup"] = run["output_tok_s"] / base["output_tok_s"]
        run["greedy_agreement_with_first"] = agreement(base["greedy"], run["greedy"])
        runs.append(run)
        result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                  "torch": torch.__version__, "shape": args.shape, "dtype": str(dtype),
                  "cuda_graphs": not args.enforce_eager, "copy_bandwidth_gbs": bandwidth / 1e9,
                  "workload": {"num_requests": args.num_requests, "max_len": args.max_len},
                  "runs": [{k: v for k, v in r.items() if k != "greedy"} for r in runs]}
        Path(args.out).write_text(json.dumps(result, indent=2))  # after each size: a later one may fail
    print(f"{args.shape} on {result['device']} ({dtype}), {args.num_requests}-request workload, max_len {args.max_len}")
    header = ("TP", "batch-1 tok/s", "limit tok/s", "x TP1", "workload out tok/s", "x TP1", "greedy = TP1", "startup s")
    print("  ".join(f"{h:>18}" for h in header))
    for run in runs:
        row = (run["tensor_parallel_size"], f"{run['batch1_tok_s']:.0f}", f"{run['weight_streaming_limit_tok_s']:.0f}",
               f"{run['batch1_speedup']:.2f}", f"{run['output_tok_s']:.0f}", f"{run['output_speedup']:.2f}",
               f"{run['greedy_agreement_with_first']:.1%}", f"{run['startup_s']:.0f}")
        print("  ".join(f"{str(v):>18}" for v in row))


if __name__ == "__main__":
    main()
