"""Where a speculative decoding step's time goes, by phase, and its top kernels and host ops.

    python -m bench.profile_spec --shape llama-3.2-1b --draft-layers 2 [--method draft|ngram] [--batch 1 8]

A random target of a real model's shape and a draft of the same shape with fewer layers
(bench/shapes.py), greedy requests with ignore_eos. For each batch size: engine.step() wall time
per step in steady decode, then the same steps with a device synchronize after each phase
(schedule, the target's forward + verification, the draft's first pass, its chained passes,
the rest), so each phase owns its GPU time; then torch.profiler's top CUDA kernels and host ops
over a few steps. Prints tables and writes JSON. Imports no service packages.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import torch

from bench.profile_decode import sync, timed
from bench.shapes import write_random_llama
from llm_core import LLM, SamplingParams


def _steps(llm: LLM, prompts: list[list[int]], num_steps: int, max_tokens: int) -> tuple[int, int]:
    """Adds the requests, runs `num_steps` engine steps; returns (steps run, tokens out)."""
    engine = llm.engine
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    for prompt in prompts:
        engine.add_request({"prompt_token_ids": prompt}, params)
    while any(r.num_computed_tokens < r.num_prompt_tokens for r in engine.scheduler.running) \
            or engine.scheduler.waiting:
        engine.step()  # prefill
    tokens = steps = 0
    for _ in range(num_steps):
        if not engine.has_unfinished_requests():
            break
        tokens += sum(len(d.new_token_ids) for d in engine.step())
        steps += 1
    engine.abort_request([r.request_id for r in list(engine.scheduler.running) + list(engine.scheduler.waiting)])
    while engine.has_unfinished_requests():
        engine.step()
    return steps, tokens


def profile_batch(llm: LLM, batch: int, num_steps: int, prompt_len: int) -> dict:
    engine = llm.engine
    device = engine.device
    prompts = [[(7 * i + j) % 1000 + 3 for j in range(prompt_len)] for i in range(batch)]
    max_tokens = num_steps * 8 + 64
    _steps(llm, prompts, 4, max_tokens)  # warm-up
    sync(device)
    start = time.perf_counter()
    steps, tokens = _steps(llm, prompts, num_steps, max_tokens)
    sync(device)
    wall = time.perf_counter() - start  # includes the prefill steps
    # Phases, each followed by a device synchronize.
    phases: dict[str, float] = collections.defaultdict(float)
    originals = []

    def wrap(obj, attr, name):
        originals.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, timed(phases, name, getattr(obj, attr), device))

    wrap(engine, "step", "step (total)")
    wrap(engine.scheduler, "schedule", "schedule")
    wrap(engine.runner, "execute", "target forward + verification")
    if engine.speculator is not None:
        wrap(engine.speculator, "after_step", "speculator.after_step (proposals)")
        draft = engine.speculator.draft
        if draft is not None:
            wrap(draft, "_first_pass", "  draft: first-pass entries (host)")
            wrap(draft, "_logits", "  draft: first pass forward")
            wrap(draft, "_draft_chained", "  draft: chained passes")
            wrap(draft, "_draft_stepwise", "  draft: step-by-step passes")
    try:
        synced_steps, _ = _steps(llm, prompts, num_steps, max_tokens)
    finally:
        for obj, attr, fn in reversed(originals):
            if attr in vars(obj):
                delattr(obj, attr)
            else:
                setattr(obj, attr, fn)
    per_step = {name: 1e3 * value / max(1, synced_steps) for name, value in phases.items()}
    # torch.profiler over a few steps.
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        prof_steps, _ = _steps(llm, prompts, min(num_steps, 12), max_tokens)
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    top_device = sorted(events, key=lambda e: getattr(e, attr, 0), reverse=True)[:15]
    top_host = sorted(events, key=lambda e: e.cpu_time_total, reverse=True)[:20]
    return {"batch": batch, "steps": steps, "tokens": tokens, "tok_per_s": tokens / wall,
            "ms_per_step_with_prefill": 1e3 * wall / max(1, steps),
            "phases_ms_per_step_synced": per_step, "profiled_steps": prof_steps,
            "top_device": [{"name": e.key, "count": e.count, "self_us": getattr(e, attr, 0)} for e in top_device],
            "top_host": [{"name": e.key, "count": e.count, "cpu_total_us": e.cpu_time_total} for e in top_host]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--draft-layers", type=int, default=2)
    parser.add_argument("--method", default="draft", choices=("draft", "ngram", "none"))
    parser.add_argument("--num-tokens", type=int, default=4, help="k")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", default="profile_spec.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        # A draft needs a LM head of its own (its layers are cut); the target's untied alike.
        untied = {"tie_word_embeddings": False} if args.method == "draft" else {}
        target = write_random_llama(Path(tmp) / "target", args.shape, **untied)
        speculative = None
        if args.method == "draft":
            speculative = {"method": "draft", "model": str(write_random_llama(
                Path(tmp) / "draft", args.shape, num_hidden_layers=args.draft_layers, tie_word_embeddings=False)),
                "num_tokens": args.num_tokens}
        elif args.method == "ngram":
            speculative = {"method": "ngram", "num_tokens": args.num_tokens, "prompt_lookup_max": 3}
        llm = LLM(str(target), device=args.device, dtype=args.dtype, max_model_len=2048,
                  max_num_seqs=max(args.batch), enable_prefix_caching=False, speculative=speculative)
        results = [profile_batch(llm, b, args.steps, args.prompt_len) for b in args.batch]
        llm.engine.shutdown()
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    out = {"gpu": name, "shape": args.shape, "method": args.method, "draft_layers": args.draft_layers,
           "k": args.num_tokens, "results": results}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"{args.shape}, speculation {args.method} (k={args.num_tokens}"
          + (f", draft {args.draft_layers} layers" if args.method == "draft" else "") + f") on {name}")
    for r in results:
        print(f"\nbatch {r['batch']}: {r['tok_per_s']:.0f} tok/s, {r['ms_per_step_with_prefill']:.2f} ms per step "
              f"({r['steps']} steps, {r['tokens']} tokens)")
        print("| phase (device synced after each) | ms per step |\n|---|---|")
        for phase, ms in r["phases_ms_per_step_synced"].items():
            print(f"| {phase} | {ms:.3f} |")
        print(f"| top device kernels over {r['profiled_steps']} steps | calls | self us |\n|---|---|---|")
        for e in r["top_device"]:
            print(f"| {e['name'][:90]} | {e['count']} | {e['self_us']:.0f} |")
        print("| top host ops | calls | cpu total us |\n|---|---|---|")
        for e in r["top_host"]:
            print(f"| {e['name'][:90]} | {e['count']} | {e['cpu_total_us']:.0f} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
