"""GPU time of one batch-1 decode forward (the captured CUDA graph: every layer and the LM head)
for each way the engine can run it, in one process on one checkpoint.

    python -m bench.bench_decode_forward --shape llama-3.2-1b --out decode_forward.json

Variants: cuBLAS linears + the unfused Triton kernels; the Triton GEMV for the linears, unfused;
the fused decode path (`fused_decode`, llm_core/models/llama.py); the persistent layer kernel
(`persistent_decode`, llm_core/layers/kernels/persistent_decode.py; with the GEMV, the engine's
default on Hopper); the last three also with
programmatic dependent launch off (TRIBUTARY_DISABLE_PDL=1). Each engine is built, decodes a few
tokens, then its batch-1 graph is replayed back to back: median microseconds per replay over 5 runs
of 50, against the weight-streaming floor (weight bytes / copy bandwidth, as bench_throughput). For
the variants without PDL the graph's kernels are listed too (with PDL a kernel's time includes
its wait for the one before, so only the replay time is meaningful). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

import torch

from bench.bench_throughput import copy_bandwidth
from bench.profile_decode import kernel_table
from bench.shapes import streamed_bytes_per_token, write_random_llama
from llm_core import LLM, SamplingParams
from llm_core.layers.kernels.pdl import DISABLE_ENV

VARIANTS = [  # name, skinny_gemv, fused path, persistent layer kernel, PDL
    ("cuBLAS + unfused Triton kernels", False, False, False, True),
    ("Triton GEMV, unfused", True, False, False, True),
    ("Triton GEMV, unfused, no PDL", True, False, False, False),
    ("fused decode path", True, True, False, True),
    ("fused decode path, no PDL", True, True, False, False),
    ("persistent layer kernel (the default)", True, True, True, True),
    ("persistent layer kernel, no PDL", True, True, True, False),
]


def replay_us(graph, runs: int = 5, reps: int = 50) -> float:
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / reps)
    return statistics.median(times)


def measure(model_dir: Path, skinny: bool, fused: bool, persistent: bool, pdl: bool) -> dict:
    os.environ[DISABLE_ENV] = "0" if pdl else "1"
    try:
        llm = LLM(str(model_dir), device="cuda", dtype="bfloat16", max_model_len=2048, max_num_seqs=8,
                  skinny_gemv=skinny, fused_decode=fused, persistent_decode=persistent)
        llm.generate([[5] * 32], SamplingParams(max_tokens=16, ignore_eos=True))
        graph = llm.engine.runner.graphs._graphs[1]
        result = {"replay_us": replay_us(graph)}
        if not pdl or not (skinny or fused):
            kernels = kernel_table(graph.replay, 10, top=12)
            result["kernels"] = kernels
            result["kernel_sum_us"] = sum(k["us_per_step"] for k in kernel_table(graph.replay, 10, top=1000))
        del llm
        torch.cuda.empty_cache()
        return result
    finally:
        os.environ.pop(DISABLE_ENV, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--out", default="decode_forward.json")
    parser.add_argument("--variants", type=int, nargs="+", help="indices into the variant list (default: all)")
    args = parser.parse_args()
    device = torch.device("cuda")
    model_dir = write_random_llama(Path(tempfile.mkdtemp()) / args.shape, args.shape, device="cuda")
    floor_us = streamed_bytes_per_token(args.shape) / copy_bandwidth(device) * 1e6
    rows = []
    for index, (name, skinny, fused, persistent, pdl) in enumerate(VARIANTS):
        if args.variants is None or index in args.variants:
            rows.append({"variant": name, "skinny_gemv": skinny, "fused": fused, "persistent": persistent,
                         "pdl": pdl, **measure(model_dir, skinny, fused, persistent, pdl)})
    Path(args.out).write_text(json.dumps({"shape": args.shape, "device": torch.cuda.get_device_name(),
                                          "weight_streaming_floor_us": floor_us, "variants": rows}, indent=2))
    print(f"{args.shape} on {torch.cuda.get_device_name()}: weight-streaming floor {floor_us:.0f} us per forward")
    print(f"{'variant':<34} {'us/forward':>10} {'floor/time':>10} {'kernel sum us':>13}")
    for r in rows:
        ksum = f"{r['kernel_sum_us']:.0f}" if "kernel_sum_us" in r else "-"
        print(f"{r['variant']:<34} {r['replay_us']:>10.1f} {floor_us / r['replay_us']:>10.1%} {ksum:>13}")
    for r in rows:
        if "kernels" in r:
            print(f"\n{r['variant']}: kernels of one replay (us, calls)")
            for k in r["kernels"]:
                print(f"{k['us_per_step']:>8.1f} {k['calls_per_step']:>5.0f}  {k['kernel']}")


if __name__ == "__main__":
    main()
