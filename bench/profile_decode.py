"""Where a decode step's time goes: GPU time of the captured forward vs host time, by phase.

    python -m bench.profile_decode --shape llama-3.2-1b [--batch 1 8 64] --out profile.json

For each batch size: engine.step() wall time per step in steady decode, the GPU time of one
graph replay (CUDA events), the weight-streaming limit, and the host time of each phase
(schedule, prepare inputs, forward launch + sampling sync, scheduler update, detokenize/output).
Then the GPU kernels of one eager decode forward at batch 1, by total time (torch.profiler).
Prints tables and writes JSON. Imports no service packages.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.bench_throughput import copy_bandwidth
from bench.shapes import streamed_bytes_per_token, write_random_llama
from llm_core import LLM, SamplingParams
from llm_core.multi_step import PendingTokens

_wait = PendingTokens.wait


def sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(table: dict, name: str, fn, device: torch.device | None = None):
    """fn wrapped to add its wall time to table[name]; with a device, synchronized before and
    after, so that the call owns its GPU time."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        sync(device)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sync(device)
            table[name] += time.perf_counter() - start
    return wrapper


def profile_batch(llm: LLM, batch: int, num_steps: int) -> dict:
    engine = llm.engine
    params = SamplingParams(max_tokens=10_000, temperature=0.0, ignore_eos=True)
    for i in range(batch):
        engine.add_request([5 + i] * 64, params)
    while any(r.num_computed_tokens < 64 for r in engine.scheduler.running) or engine.scheduler.waiting:
        engine.step()  # prefill
    for _ in range(5):
        engine.step()
    phases: dict[str, float] = collections.defaultdict(float)
    runner, scheduler = engine.runner, engine.scheduler
    originals = {}
    for obj, name, label in [(scheduler, "schedule", "schedule"), (runner, "prepare_inputs", "prepare inputs"),
                             (runner, "forward_inputs", "forward launch"), (runner, "execute", "execute (all)"),
                             (runner, "launch_multi_step", "multi-step launch"),
                             (scheduler, "update_from_output", "scheduler update"),
                             (engine.output_processor, "process", "detokenize + outputs")]:
        originals[(obj, name)] = getattr(obj, name)
        setattr(obj, name, timed(phases, label, getattr(obj, name)))
    # With async output processing the multi-step path waits here for its tokens (the GPU's time
    # less what the host overlapped with it).
    PendingTokens.wait = timed(phases, "wait for tokens", _wait)
    tokens_before = sum(r.num_output_tokens for r in scheduler.running)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(num_steps):
        engine.step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / num_steps
    tokens_per_step = (sum(r.num_output_tokens for r in scheduler.running) - tokens_before) / num_steps / batch
    for (obj, name) in originals:
        delattr(obj, name)  # back to the class's method
    PendingTokens.wait = _wait
    graph_ms = float("nan")
    graph_kernels: list[dict] = []
    graphs = runner.graphs
    if graphs is not None and batch <= graphs.max_batch_size:
        size = next(s for s in graphs.sizes if s >= batch)
        graph = graphs._graphs[size]
        for _ in range(3):
            graph.replay()
        start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start_ev.record()
        for _ in range(50):
            graph.replay()
        end_ev.record()
        torch.cuda.synchronize()
        graph_ms = start_ev.elapsed_time(end_ev) / 50
        graph_kernels = kernel_table(lambda: graph.replay(), 10)
    gaps = gpu_gaps(engine, min(num_steps, 40))
    engine.abort_request([r.request_id for r in list(scheduler.running) + list(scheduler.waiting)])
    while engine.has_unfinished_requests():
        engine.step()
    result = {"batch": batch, "step_ms": wall * 1e3, "graph_replay_ms": graph_ms,
              "tokens_per_step": tokens_per_step, "ms_per_token_step": wall * 1e3 / tokens_per_step,
              "host_ms": {k: v / num_steps * 1e3 for k, v in phases.items()}, "graph_kernels": graph_kernels,
              "gpu_gaps": gaps}
    return result


def gpu_gaps(engine, num_steps: int, top: int = 8) -> dict:
    """Where the GPU idles in steady decode: num_steps engine steps (no syncs added) under
    torch.profiler; the union of kernel and copy intervals is the GPU's busy time, every hole
    in it an idle gap, attributed to the (kernel before, kernel after) pair around it."""
    from torch.profiler import ProfilerActivity, profile
    scheduler = engine.scheduler
    tokens_before = sum(r.num_output_tokens for r in scheduler.running)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(num_steps):
            engine.step()
        torch.cuda.synchronize()
    tokens = sum(r.num_output_tokens for r in scheduler.running) - tokens_before
    path = Path(tempfile.mkdtemp()) / "trace.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), e["name"]) for e in events
                   if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))
    if not spans:
        return {}
    busy, gaps = 0.0, collections.defaultdict(lambda: [0, 0.0])
    start, end, last_name = spans[0][0], spans[0][1], spans[0][2]
    for s, e, name in spans[1:]:
        if s > end:
            busy += end - start
            key = f"{last_name[:40]} -> {name[:40]}"
            gaps[key][0] += 1
            gaps[key][1] += s - end
            start = s
        if e >= end:
            end, last_name = e, name
    busy += end - start
    wall = spans[-1][1] - spans[0][0]
    rows = sorted(({"between": k, "count": c, "us_per_token": t / max(tokens, 1)} for k, (c, t) in gaps.items()),
                  key=lambda r: -r["us_per_token"])
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for s, e, name in spans:
        by_name[name[:60]][0] += 1
        by_name[name[:60]][1] += e - s
    kernels = sorted(({"kernel": k, "calls_per_token": c / max(tokens, 1), "us_per_token": t / max(tokens, 1)}
                      for k, (c, t) in by_name.items()), key=lambda r: -r["us_per_token"])
    return {"tokens": tokens, "gpu_span_us_per_token": wall / max(tokens, 1),
            "busy_us_per_token": busy / max(tokens, 1), "idle_us_per_token": (wall - busy) / max(tokens, 1),
            "top_gaps": rows[:top], "kernels": kernels[:2 * top]}


def kernel_table(fn, reps: int, top: int = 15) -> list[dict]:
    """GPU kernels of reps calls of fn (torch.profiler; inside CUDA graph replays too), by total time."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        if event.device_type.name == "CUDA" and getattr(event, "device_time_total", 0) > 0:
            rows.append({"kernel": event.key[:80], "calls_per_step": event.count / reps,
                         "us_per_step": event.device_time_total / reps})
    rows.sort(key=lambda r: -r["us_per_step"])
    return rows[:top]


def eager_kernel_table(model_dir: Path, dtype: str, skinny_gemv: bool | None = None, top: int = 15) -> list[dict]:
    llm = LLM(str(model_dir), device="cuda", dtype=dtype, max_model_len=2048, max_num_seqs=8, enforce_eager=True,
              num_scheduler_steps=1, skinny_gemv=skinny_gemv)
    engine = llm.engine
    engine.add_request([5] * 64, SamplingParams(max_tokens=10_000, ignore_eos=True))
    for _ in range(8):
        engine.step()
    return kernel_table(engine.step, 10, top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--num-scheduler-steps", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", default="profile_decode.json")
    parser.add_argument("--skinny-gemv", action=argparse.BooleanOptionalAction, default=None,
                        help="the Triton GEMV kernel on or off (the engine's option; default: the engine's choice)")
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="queue the next multi-step step before this one's tokens reach the host "
                             "(the engine's option; default: the engine's choice)")
    parser.add_argument("--disable-async-output-proc", action="store_true",
                        help="detokenize each step before the next (the engine's option)")
    args = parser.parse_args()
    device = torch.device("cuda")
    model_dir = write_random_llama(Path(tempfile.mkdtemp()) / args.shape, args.shape, device="cuda")
    limit = copy_bandwidth(device) / streamed_bytes_per_token(args.shape)
    results = []
    for num_steps in args.num_scheduler_steps:
        llm = LLM(str(model_dir), device="cuda", dtype="bfloat16", max_model_len=2048, max_num_seqs=max(args.batch),
                  num_scheduler_steps=num_steps, disable_async_output_proc=args.disable_async_output_proc,
                  skinny_gemv=args.skinny_gemv, async_scheduling=args.async_scheduling)
        for b in args.batch:
            results.append({"num_scheduler_steps": num_steps, **profile_batch(llm, b, args.steps)})
        del llm
        torch.cuda.empty_cache()
    kernels = eager_kernel_table(model_dir, "bfloat16", args.skinny_gemv)
    Path(args.out).write_text(json.dumps({"shape": args.shape, "device": torch.cuda.get_device_name(),
                                          "async_output_proc": not args.disable_async_output_proc,
                                          "async_scheduling": args.async_scheduling,
                                          "limit_tok_s": limit, "batches": results, "eager_kernels_b1": kernels},
                                         indent=2))
    print(f"{args.shape} on {torch.cuda.get_device_name()}: weight-streaming limit {limit:.0f} tok/s "
          f"({1e3 / limit:.3f} ms per step at batch 1)")
    phase_names = sorted({n for r in results for n in r["host_ms"]})
    print("host phases in ms per engine step; a step makes tok/step tokens per request")
    print(f"{'steps':>5} {'batch':>5} {'tok/step':>8} {'ms/token':>8} {'tok/s':>8} {'step ms':>8} {'graph ms':>9} "
          + " ".join(f"{n[:14]:>14}" for n in phase_names))
    for r in results:
        tok_s = r["batch"] * 1e3 / r["ms_per_token_step"]
        print(f"{r['num_scheduler_steps']:>5} {r['batch']:>5} {r['tokens_per_step']:>8.2f} {r['ms_per_token_step']:>8.3f} "
              f"{tok_s:>8.0f} {r['step_ms']:>8.3f} {r['graph_replay_ms']:>9.3f} "
              + " ".join(f"{r['host_ms'].get(n, 0.0):>14.3f}" for n in phase_names))
    print(f"\neager batch-1 decode kernels (per step):\n{'us':>8} {'calls':>6}  kernel")
    for k in kernels:
        print(f"{k['us_per_step']:>8.1f} {k['calls_per_step']:>6.0f}  {k['kernel']}")
    for r in results:
        if r["graph_kernels"]:
            total = sum(k["us_per_step"] for k in r["graph_kernels"])
            print(f"\nkernels of one graph replay, batch {r['batch']} ({r['num_scheduler_steps']} steps/engine step; "
                  f"replay {r['graph_replay_ms'] * 1e3:.0f} us, top kernels {total:.0f} us):")
            for k in r["graph_kernels"]:
                print(f"{k['us_per_step']:>8.1f} {k['calls_per_step']:>6.0f}  {k['kernel']}")
    for r in results:
        g = r.get("gpu_gaps")
        if g:
            print(f"\nGPU timeline, batch {r['batch']}, {r['num_scheduler_steps']} steps/engine step: "
                  f"{g['gpu_span_us_per_token']:.0f} us per token, busy {g['busy_us_per_token']:.0f}, "
                  f"idle {g['idle_us_per_token']:.0f}; largest idle gaps (us per token, count):")
            for row in g["top_gaps"]:
                print(f"{row['us_per_token']:>8.1f} {row['count']:>5}  {row['between']}")
            print("GPU work per token (us, calls; kernels and copies, those of graph replays included):")
            for row in g.get("kernels", []):
                print(f"{row['us_per_token']:>8.1f} {row['calls_per_token']:>6.2f}  {row['kernel']}")


if __name__ == "__main__":
    main()
