"""Engine throughput on a random checkpoint of a real model's shape, against transformers in the same run.

    python -m bench.bench_throughput --shape llama-3.2-1b --out results.json [--num-requests 256]

1. batch-1 decode tokens/s against the weight-streaming limit measured in the same run
   (device-to-device copy bandwidth / weight bytes read per token): 256 tokens over the time from
   submission (prefill included), and the decode phase alone (the tokens after the first over the
   time since the first: 1 / TPOT);
2. the nano-vllm workload (input and output lengths uniform in 100..max_len, ignore_eos,
   temperature 0.6): output tokens/s of our engine, and of transformers' batched generate on
   the first --hf-requests requests (padded; only each request's own tokens count).
Prints a table and writes JSON. Imports no service packages.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from bench.shapes import streamed_bytes_per_token, write_random_llama
from llm_core import LLM, SamplingParams


# Engine features on by default that a flag turns off, to compare: option -> (module, its constant,
# the value that turns the feature off, help).
OFF_SWITCHES = {
    "greedy_step_graphs": ("llm_core.cuda_graphs", "GREEDY_GRAPH_MAX_BATCH", 0,
                           "greedy multi-step forwards with their argmax in CUDA graphs (llm_core/cuda_graphs.py; "
                           "--no-greedy-step-graphs: the plain graphs and the sampler, to compare)"),
    "lm_head_argmax": ("llm_core.models.llama", "GREEDY_TOKENS_FROM_LM_HEAD", False,
                       "batch-1 greedy steps take the token from the LM head GEMV's argmax epilogue "
                       "(llm_core/layers/kernels/gemv.py; --no-lm-head-argmax: the logits' argmax, to compare)"),
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30) -> float:
    """Device-to-device copy, bytes read + written per second (median of 10)."""
    if device.type != "cuda":
        return float("nan")
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    times = []
    for _ in range(12):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        _sync()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * nbytes / sorted(times[2:])[len(times[2:]) // 2]


def workload(num_requests: int, max_len: int, vocab: int, seed: int = 0):
    rng = random.Random(seed)
    prompts = [[rng.randrange(10, vocab) for _ in range(rng.randint(min(100, max_len), max_len))] for _ in range(num_requests)]
    outputs = [rng.randint(min(100, max_len), max_len) for _ in range(num_requests)]
    return prompts, outputs


def run_ours(llm: LLM, prompts, out_lens) -> tuple[float, int]:
    params = [SamplingParams(max_tokens=n, temperature=0.6, ignore_eos=True) for n in out_lens]
    _sync()
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    _sync()
    elapsed = time.perf_counter() - start
    total = sum(len(o.token_ids) for o in outs)
    assert total == sum(out_lens), "ignore_eos requests must produce exactly max_tokens"
    return elapsed, total


def batch1_decode(llm: LLM, num_tokens: int = 256) -> tuple[float, float]:
    """One greedy request of a 32-token prompt through the engine's step loop (as LLM.generate runs
    it): (tokens / time from submission to the last token, the decode phase's tokens / time: the
    tokens after the first output delta (the prefill's token) over the time from that delta to the
    last, i.e. 1 / TPOT)."""
    params = SamplingParams(max_tokens=num_tokens, temperature=0.0, ignore_eos=True)
    llm.generate([[5] * 32], SamplingParams(max_tokens=8, ignore_eos=True))  # warm-up
    engine = llm.engine
    _sync()
    start = time.perf_counter()
    engine.add_request([7] * 32, params)
    first_at, first_tokens, total = None, 0, 0
    while engine.has_unfinished_requests():
        for delta in engine.step():
            if delta.new_token_ids and first_at is None:
                first_at, first_tokens = time.perf_counter(), len(delta.new_token_ids)
            total += len(delta.new_token_ids)
    _sync()
    end = time.perf_counter()
    assert total == num_tokens, "an ignore_eos request must produce exactly max_tokens"
    return num_tokens / (end - start), (total - first_tokens) / (end - first_at)


def run_transformers(model_dir: Path, prompts, out_lens, batch: int, device: torch.device,
                     dtype: torch.dtype) -> tuple[float, int]:
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    prompts, out_lens = prompts[:batch], out_lens[:batch]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    n = max(out_lens)
    _sync()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                       temperature=0.6, top_p=1.0, top_k=0, pad_token_id=0)
    _sync()
    elapsed = time.perf_counter() - start
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return elapsed, sum(out_lens)


def hf_batch1_decode(model_dir: Path, device: torch.device, dtype: torch.dtype, num_tokens: int = 128) -> float:
    """transformers generate (dynamic cache), one sequence, greedy: tokens/s."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    ids = torch.full((1, 32), 7, device=device)
    with torch.inference_mode():
        model.generate(input_ids=ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
        _sync()
        start = time.perf_counter()
        model.generate(input_ids=ids, max_new_tokens=num_tokens, min_new_tokens=num_tokens, do_sample=False,
                       pad_token_id=0)
        _sync()
    elapsed = time.perf_counter() - start
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return num_tokens / elapsed


def greedy_agreement(model_dir: Path, args, dtype: torch.dtype, prompts) -> float:
    """Fraction of greedy tokens equal between CUDA-graph and eager decoding (bf16 GEMMs of a
    padded batch may round differently, so this is reported, not asserted; the fp32 test
    tests/llm_core/test_cuda_graphs.py asserts equality)."""
    outs = {}
    for eager in (False, True):
        llm = make_llm(model_dir, args, dtype, enforce_eager=eager)
        outs[eager] = [o.token_ids for o in llm.generate(prompts, SamplingParams(max_tokens=64, ignore_eos=True))]
        del llm
    same = sum(a == b for x, y in zip(outs[False], outs[True]) for a, b in zip(x, y))
    return same / sum(len(x) for x in outs[True])


def make_llm(model_dir: Path, args, dtype: torch.dtype, **options) -> LLM:
    return LLM(str(model_dir), device=args.device, dtype=str(dtype).removeprefix("torch."),
               max_model_len=2 * args.max_len + 64, max_num_seqs=256, max_num_batched_tokens=args.max_num_batched_tokens,
               num_scheduler_steps=getattr(args, "num_scheduler_steps", None),
               skinny_gemv=getattr(args, "skinny_gemv", None),
               async_scheduling=getattr(args, "async_scheduling", None),
               persistent_decode=getattr(args, "persistent_decode", None), ws_decode=getattr(args, "ws_decode", None),
               **options)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--hf-requests", type=int, default=64)
    parser.add_argument("--max-num-batched-tokens", type=int, default=16384)
    parser.add_argument("--out", default="bench_throughput.json")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip-hf", action="store_true", help="no transformers baselines")
    parser.add_argument("--skip-agreement", action="store_true", help="no graphs-vs-eager token comparison")
    parser.add_argument("--skinny-gemv", action=argparse.BooleanOptionalAction, default=None,
                        help="our engine with (--skinny-gemv) or without (--no-skinny-gemv) the Triton GEMV kernel "
                        "for batch-1 decode (default: the engine's choice)")
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="queue the next multi-step step before this one's tokens reach the host "
                             "(the engine's option; default: the engine's choice)")
    parser.add_argument("--persistent-decode", action=argparse.BooleanOptionalAction, default=None,
                        help="batch-1 decode steps in one persistent kernel (the engine's option; default: the "
                             "engine's choice)")
    parser.add_argument("--ws-decode", action=argparse.BooleanOptionalAction, default=None,
                        help="the persistent kernel's warp-specialized form on Hopper (the engine's option; "
                             "default: the engine's choice)")
    for name, (_, _, _, text) in OFF_SWITCHES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=True,
                            help=text)
    parser.add_argument("--batch1-only", action="store_true",
                        help="only the batch-1 measurements (no eager run, workload or agreement)")
    parser.add_argument("--batch1-repeats", type=int, default=1, help="timed batch-1 runs; the median is reported")
    parser.add_argument("--num-scheduler-steps", type=int, help="our engine's decode forwards per step "
                        "(default: the engine's, 4 on CUDA)")
    args = parser.parse_args()
    for name, (module, constant, off, _) in OFF_SWITCHES.items():
        if not getattr(args, name):
            setattr(importlib.import_module(module), constant, off)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model_dir = write_random_llama(Path(tempfile.mkdtemp()) / args.shape, args.shape, device=args.device, dtype=dtype)
    bandwidth = copy_bandwidth(device)
    limit = bandwidth / streamed_bytes_per_token(args.shape)
    b1_eager = float("nan")
    if not args.batch1_only:
        llm = make_llm(model_dir, args, dtype, enforce_eager=True)
        b1_eager = batch1_decode(llm)[0]
        del llm
    start = time.perf_counter()
    llm = make_llm(model_dir, args, dtype)
    startup_s = time.perf_counter() - start
    both = [batch1_decode(llm) for _ in range(max(1, args.batch1_repeats))]
    b1_runs, phase_runs = [r[0] for r in both], [r[1] for r in both]
    b1 = sorted(b1_runs)[len(b1_runs) // 2]
    phase = sorted(phase_runs)[len(phase_runs) // 2]
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "shape": args.shape, "skinny_gemv": args.skinny_gemv, "num_scheduler_steps": args.num_scheduler_steps,
        "async_scheduling": args.async_scheduling, "persistent_decode": args.persistent_decode,
        "ws_decode": args.ws_decode,
        "greedy_step_graphs": args.greedy_step_graphs, "lm_head_argmax": args.lm_head_argmax,
        "copy_bandwidth_gbs": bandwidth / 1e9, "weight_streaming_limit_tok_s": limit,
        "batch1_tok_s": b1, "batch1_runs_tok_s": b1_runs, "batch1_fraction_of_limit": b1 / limit,
        "batch1_decode_phase_tok_s": phase, "batch1_decode_phase_runs_tok_s": phase_runs,
        "batch1_decode_phase_fraction_of_limit": phase / limit,
        "batch1_eager_tok_s": b1_eager, "engine_startup_s_with_graph_capture": startup_s,
    }
    rows = [("copy bandwidth (GB/s, read+write)", f"{bandwidth / 1e9:.0f}"),
            ("weight-streaming limit (tok/s)", f"{limit:.0f}"),
            ("ours batch-1 decode, CUDA graphs (tok/s)", f"{b1:.0f} ({b1 / limit:.1%} of limit)"
             + (f"; runs {', '.join(f'{r:.0f}' for r in b1_runs)}" if len(b1_runs) > 1 else "")),
            ("  its decode phase, 1 / TPOT (tok/s)", f"{phase:.0f} ({phase / limit:.1%} of limit)"
             + (f"; runs {', '.join(f'{r:.0f}' for r in phase_runs)}" if len(phase_runs) > 1 else "")),
            ("ours batch-1 decode, eager (tok/s)", f"{b1_eager:.0f} ({b1_eager / limit:.0%} of limit)")]
    if not args.batch1_only:
        prompts, out_lens = workload(args.num_requests, args.max_len, llm.engine.arch.vocab_size)
        run_ours(llm, prompts[:8], [16] * 8)  # warm-up: kernels compiled
        ours_s, ours_tokens = run_ours(llm, prompts, out_lens)
        preemptions = llm.engine.scheduler.num_preemptions
    del llm
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if not args.batch1_only:
        agreement = float("nan") if args.skip_agreement else greedy_agreement(model_dir, args, dtype, prompts[:16])
        result.update({
            "graph_vs_eager_greedy_agreement": agreement,
            "workload": {"num_requests": args.num_requests, "max_len": args.max_len},
            "ours_output_tok_s": ours_tokens / ours_s, "ours_seconds": ours_s, "ours_preemptions": preemptions,
        })
        rows += [("greedy tokens equal, graphs vs eager (bf16)", "not run" if args.skip_agreement else f"{agreement:.1%}"),
                 (f"ours {args.num_requests}-request workload (out tok/s)",
                  f"{result['ours_output_tok_s']:.0f} ({preemptions} preemptions)")]
    if not args.skip_hf:
        hf_b1 = hf_batch1_decode(model_dir, device, dtype)
        result["hf_batch1_tok_s"] = hf_b1
        rows.append(("transformers batch-1 decode, dynamic cache (tok/s)", f"{hf_b1:.0f} ({hf_b1 / limit:.0%} of limit)"))
    if not args.skip_hf and not args.batch1_only:
        hf_s, hf_tokens = run_transformers(model_dir, prompts, out_lens, args.hf_requests, device, dtype)
        result.update({"hf_requests": args.hf_requests, "hf_output_tok_s": hf_tokens / hf_s, "hf_seconds": hf_s})
        result["ratio_vs_hf"] = result["ours_output_tok_s"] / result["hf_output_tok_s"]
        rows += [(f"transformers generate, {args.hf_requests} requests (out tok/s)", f"{result['hf_output_tok_s']:.0f}"),
                 ("ratio ours / transformers", f"{result['ratio_vs_hf']:.1f}x")]
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{args.shape} on {result['device']}")
    for name, value in rows:
        print(f"{name:<55} {value}")


if __name__ == "__main__":
    main()
