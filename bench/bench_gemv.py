"""The skinny GEMM kernel (llm_core/layers/kernels/gemv.py) against F.linear (cuBLAS) on real models' linear layers.

    python -m bench.bench_gemv --out bench/results/gemv_h100.json [--rows 1 2 4 8] [--sweep]
    TRITON_INTERPRET=1 python -m bench.bench_gemv --device cpu --tiny --sweep      (smoke test)

For each linear layer of each model (qkv, o, gate_up, down, lm_head; shapes from bench/shapes.py) and
each row count M: microseconds per call of F.linear and of skinny_linear, the weight streamed per
second, that as a share of the device-to-device copy bandwidth (bench_throughput.copy_bandwidth,
the same yardstick as the engine's weight-streaming limit), the speedup, and the largest error of the
kernel relative to F.linear's largest output. Times come from CUDA graphs of back-to-back calls, as a
decode step replays them (eager times, with Python launch costs, beside them). The calls rotate over
copies of the weight that together pass the L2 cache three times, so each reads its weight from HBM.
A second table adds the layers up per decode step of each model.

--sweep also times a grid of configurations (block_n, block_k, split_k, num_warps; then num_stages
2 and 3 for the best two) per layer at M = 1 (--sweep-rows) and prints the best next to
choose_config's, so that the heuristic can be tuned from one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from triton.compiler.errors import CompilationError
from triton.runtime.errors import OutOfResources

from bench.bench_throughput import copy_bandwidth
from bench.shapes import SHAPES
from llm_core.layers.kernels.gemv import MAX_SKINNY_ROWS, choose_config, device_num_sms, skinny_linear

GRAPH_CALLS = 20  # calls per CUDA graph (at least; more when there are more weight copies)
MAX_WEIGHT_COPIES = 32
# The sweep's grid: tiles of 2K..16K weight elements (smaller where K or N is smaller); 8 warps only on
# tiles of 8K and more; these split counts and choose_config's.
SWEEP_BLOCKS = [(n, k) for n in (8, 16, 32, 64) for k in (32, 64, 128, 256, 512) if 2048 <= n * k <= 16384]
SWEEP_SPLITS = (1, 2, 4, 8, 16)


def linear_shapes(model: str) -> dict[str, tuple[int, int]]:
    """Layer name -> weight shape (N, K) of one model."""
    s = SHAPES[model]
    h, i, heads, kv, d = (s["hidden_size"], s["intermediate_size"], s["num_attention_heads"],
                          s["num_key_value_heads"], s["head_dim"])
    return {"qkv": ((heads + 2 * kv) * d, h), "o": (h, heads * d), "gate_up": (2 * i, h), "down": (h, i),
            "lm_head": (s["vocab_size"], h)}


def make_weights(n: int, k: int, dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Copies of a random [n, k] weight that together pass 3x the L2 cache (one on the CPU)."""
    copies = 1
    if device.type == "cuda":
        l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 50 << 20)
        copies = min(MAX_WEIGHT_COPIES, max(1, -(-3 * l2_bytes // (n * k * dtype.itemsize))))
    return [torch.empty(n, k, dtype=dtype, device=device).normal_(0, 0.02) for _ in range(copies)]


def time_calls(fns: list, device: torch.device, reps: int) -> tuple[float, float]:
    """(graph us, eager us) per call of fns, called in turn. On the CPU: eager only, graph = eager."""
    for fn in fns:  # compile outside any capture
        fn()
    if device.type != "cuda":
        start = time.perf_counter()
        for _ in range(reps):
            for fn in fns:
                fn()
        eager = (time.perf_counter() - start) * 1e6 / (reps * len(fns))
        return eager, eager
    calls = [fns[i % len(fns)] for i in range(max(GRAPH_CALLS, len(fns)))]
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for fn in calls:
        fn()
    end.record()
    end.synchronize()
    eager = start.elapsed_time(end) * 1e3 / len(calls)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for fn in fns:
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for fn in calls:
            fn()
    graph.replay()
    times = []
    for _ in range(reps):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / len(calls))
    del graph
    return statistics.median(times), eager


def max_rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30)).item()


def bench_layer(model, layer, n, k, m, weights, device, copy_bw, reps) -> dict:
    x = torch.randn(m, k, dtype=weights[0].dtype, device=device)
    config = choose_config(m, n, k, device_num_sms(device))
    err = max_rel_err(skinny_linear(x, weights[0]), F.linear(x, weights[0]))
    cublas_us, cublas_eager = time_calls([lambda w=w: F.linear(x, w) for w in weights], device, reps)
    skinny_us, skinny_eager = time_calls([lambda w=w: skinny_linear(x, w) for w in weights], device, reps)
    mb = n * k * weights[0].element_size() / 1e6
    return dict(model=model, layer=layer, n=n, k=k, m=m, weight_mb=mb, cublas_us=cublas_us, skinny_us=skinny_us,
                cublas_gbps=mb / cublas_us / 1e3, skinny_gbps=mb / skinny_us / 1e3,
                cublas_pct=100 * mb * 1e12 / cublas_us / copy_bw, skinny_pct=100 * mb * 1e12 / skinny_us / copy_bw,
                speedup=cublas_us / skinny_us, cublas_eager_us=cublas_eager, skinny_eager_us=skinny_eager,
                max_rel_err=err, config=config)


def sweep_grid(m: int, n: int, k: int, num_sms: int) -> list[dict]:
    """Distinct configurations of SWEEP_BLOCKS and SWEEP_SPLITS that fit the shape (block_k 32 and
    64 only where K < 128), without more than 64 programs per SM."""
    small_k = k < 128
    grid, seen = [], set()
    for block_n, block_k in SWEEP_BLOCKS:
        if (block_k > max(32, triton.next_power_of_2(k)) or block_n > max(8, triton.next_power_of_2(n))
                or (block_k < 128 and not small_k)):
            continue
        steps = triton.cdiv(k, block_k)
        for split_k in (*SWEEP_SPLITS, choose_config(m, n, k, num_sms)["split_k"]):
            split_k = triton.cdiv(steps, triton.cdiv(steps, min(split_k, steps)))  # as skinny_linear cuts it
            if (block_n, block_k, split_k) in seen or triton.cdiv(n, block_n) * split_k > 64 * num_sms:
                continue
            seen.add((block_n, block_k, split_k))
            for num_warps in (4, 8) if block_n * block_k >= 8192 else (4,):
                grid.append(dict(block_n=block_n, block_k=block_k, split_k=split_k, num_warps=num_warps,
                                 num_stages=1))
    return grid


def sweep_layer(model, layer, n, k, m, weights, device, reps) -> dict:
    x = torch.randn(m, k, dtype=weights[0].dtype, device=device)
    ref = F.linear(x, weights[0])
    num_sms = device_num_sms(device)

    def timed(cfg):  # a configuration that does not fit the device or gives wrong sums: infinitely slow
        try:
            err = max_rel_err(skinny_linear(x, weights[0], config=cfg), ref)
            us = time_calls([lambda w=w: skinny_linear(x, w, config=cfg) for w in weights], device, reps)[0]
        except (OutOfResources, CompilationError) as e:
            return dict(config=cfg, us=float("inf"), max_rel_err=float("nan"), error=type(e).__name__)
        return dict(config=cfg, us=us if err < 2e-2 else float("inf"), max_rel_err=err)

    results = [timed(cfg) for cfg in sweep_grid(m, n, k, num_sms)]
    best = sorted(results, key=lambda r: r["us"])[:2]
    results += [timed({**r["config"], "num_stages": stages}) for r in best for stages in (2, 3)]
    default = timed(choose_config(m, n, k, num_sms))
    best = min([*results, default], key=lambda r: r["us"])
    return dict(model=model, layer=layer, n=n, k=k, m=m, num_configs=len(results), best=best, default=default,
                gain=default["us"] / best["us"])


def print_tables(rows: list[dict], sweeps: list[dict], layer_counts: dict[str, int]) -> None:
    print("| model | layer | N x K | M | MB | cuBLAS us | skinny us | cuBLAS GB/s | skinny GB/s | cuBLAS % copy "
          "| skinny % copy | speedup | eager cuBLAS us | eager skinny us | max rel err | config |")
    print("|" + "---|" * 16)
    for r in rows:
        c = r["config"]
        print(f"| {r['model']} | {r['layer']} | {r['n']} x {r['k']} | {r['m']} | {r['weight_mb']:.1f} "
              f"| {r['cublas_us']:.2f} | {r['skinny_us']:.2f} | {r['cublas_gbps']:.0f} | {r['skinny_gbps']:.0f} "
              f"| {r['cublas_pct']:.0f} | {r['skinny_pct']:.0f} | {r['speedup']:.2f} | {r['cublas_eager_us']:.1f} "
              f"| {r['skinny_eager_us']:.1f} | {r['max_rel_err']:.1e} | {c['block_n']}x{c['block_k']} "
              f"s{c['split_k']} w{c['num_warps']} st{c['num_stages']} |")
    print("\nPer decode step (every layer of the model once, lm_head once):\n")
    print("| model | M | cuBLAS us | skinny us | speedup |")
    print("|---|---|---|---|---|")
    for model, m in sorted({(r["model"], r["m"]) for r in rows}):
        mine = [r for r in rows if r["model"] == model and r["m"] == m]
        cublas = sum(r["cublas_us"] * (1 if r["layer"] == "lm_head" else layer_counts[model]) for r in mine)
        skinny = sum(r["skinny_us"] * (1 if r["layer"] == "lm_head" else layer_counts[model]) for r in mine)
        print(f"| {model} | {m} | {cublas:.0f} | {skinny:.0f} | {cublas / skinny:.2f} |")
    if sweeps:
        print("\n| model | layer | N x K | M | configs | choose_config us | best us | gain | best config |")
        print("|---|---|---|---|---|---|---|---|---|")
        for s in sweeps:
            print(f"| {s['model']} | {s['layer']} | {s['n']} x {s['k']} | {s['m']} | {s['num_configs']} "
                  f"| {s['default']['us']:.2f} | {s['best']['us']:.2f} | {s['gain']:.2f} | {s['best']['config']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_gemv.json"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", nargs="+", default=["llama-3.2-1b", "llama-3.1-8b"])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--tiny", action="store_true", help="the tiny shape and few repetitions (CPU smoke test)")
    parser.add_argument("--sweep", action="store_true", help="also time a grid of kernel configurations")
    parser.add_argument("--sweep-rows", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    if max(args.rows + args.sweep_rows) > MAX_SKINNY_ROWS:
        parser.error(f"at most {MAX_SKINNY_ROWS} rows")
    device = torch.device(args.device)
    models = ["tiny"] if args.tiny else args.models
    reps = 2 if device.type != "cuda" else 10
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    began = time.perf_counter()
    copy_bw = copy_bandwidth(device)
    rows, sweeps = [], []
    for model in models:
        for layer, (n, k) in linear_shapes(model).items():
            weights = make_weights(n, k, dtype, device)
            rows += [bench_layer(model, layer, n, k, m, weights, device, copy_bw, reps) for m in args.rows]
            if args.sweep:
                sweeps += [sweep_layer(model, layer, n, k, m, weights, device, reps) for m in args.sweep_rows]
            del weights
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print_tables(rows, sweeps, {model: SHAPES[model]["num_hidden_layers"] for model in models})
    elapsed = time.perf_counter() - began
    print(f"\ncopy bandwidth {copy_bw / 1e9:.0f} GB/s (read + write); {elapsed:.0f} s")
    meta = dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                torch=torch.__version__, triton=triton.__version__, dtype=str(dtype), copy_bandwidth=copy_bw,
                num_sms=device_num_sms(device), seconds=elapsed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(meta=meta, rows=rows, sweeps=sweeps), indent=2))


if __name__ == "__main__":
    main()
