"""Host cost of one engine step's bookkeeping with N running requests, without a model.

    python -m bench.bench_scheduler [--num-requests 256] [--context 1024] [--steps 200] [--tokens-per-step 4] [--out F.json]

Measures, per decode step of N running requests: scheduler.schedule(), update_from_output()
(with prefix-cache bookkeeping) and the runner's input preparation (host arrays from the
persistent block tables, then the step's tensors on the CPU); with --detokenize also the output
processor (incremental detokenization, stop strings, deltas) with a real tokenizer. The sum must stay well under a GPU decode step (a few ms) or the host
starves the GPU. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time
from pathlib import Path

import torch

from cache.kv_cache_manager import KVCacheManager
from llm_core.block_table import BlockTableHost
from llm_core.config import SchedulerConfig
from llm_core.model_runner import ModelRunner
from llm_core.multi_step import PLACEHOLDER_TOKEN_ID
from llm_core.output_processor import OutputProcessor
from llm_core.request import Request
from llm_core.sampling_params import SamplingParams
from llm_core.scheduler import Scheduler
from llm_core.tokenizer import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--detokenize", metavar="MODEL_DIR", nargs="?", const="models/demo/vision",
                        help="also time the output processor (detokenization, deltas) with this checkpoint's "
                             "tokenizer (default: the demo model's)")
    parser.add_argument("--tokens-per-step", type=int, default=1,
                        help="tokens each request gets per step (k > 1: multi-step decoding's k - 1 placeholders)")
    parser.add_argument("--out", default="bench_scheduler.json")
    args = parser.parse_args()
    bs, n, k = args.block_size, args.num_requests, args.tokens_per_step
    num_outputs = args.steps * k
    blocks_per_seq = (args.context + num_outputs) // bs + 2
    kv = KVCacheManager(n * blocks_per_seq + 1, bs, True)
    sched = Scheduler(SchedulerConfig(max_num_seqs=n, max_num_batched_tokens=1 << 20), kv,
                      max_model_len=args.context + num_outputs + 8, block_size=bs)
    rng = random.Random(0)
    for i in range(n):
        prompt = [rng.randrange(1000) for _ in range(args.context)]
        sched.add_request(Request(f"r{i}", prompt, SamplingParams(max_tokens=num_outputs + 4, ignore_eos=True),
                                  block_size=bs))
    plan = sched.schedule()  # the prefill step
    sched.update_from_output(plan, {e.request_id: 1 for e in plan.requests})
    runner = ModelRunner.__new__(ModelRunner)  # input preparation only: no model, no KV tensors
    runner.block_size, runner.device = bs, torch.device("cpu")
    runner.block_table_host = BlockTableHost(2 * n, blocks_per_seq)
    times = {"schedule": [], "update": [], "prepare_inputs": []}
    outputs = None
    if args.detokenize:
        outputs = OutputProcessor(Tokenizer.from_dir(args.detokenize), sched)
        for request in sched.running:
            outputs.add_request(request.request_id, request.prompt_token_ids, request.sampling_params)
        times["detokenize + deltas"] = []
        vocab = min(1000, outputs.tokenizer.vocab_size)
    for step in range(args.steps):
        if k > 1:  # as the engine gives them for multi-step decoding
            for request in sched.running:
                request.spec_token_ids = [PLACEHOLDER_TOKEN_ID] * (k - 1)
        t0 = time.perf_counter()
        plan = sched.schedule()
        t1 = time.perf_counter()
        runner.to_device(runner.prepare_inputs(plan))  # host arrays, then the step's tensors
        t2 = time.perf_counter()
        updates = sched.update_from_output(plan, {e.request_id: [(step * k + j) % 1000 for j in range(k)]
                                                  if k > 1 else step % 1000 for e in plan.requests})
        t3 = time.perf_counter()
        if outputs is not None:
            # ids the tokenizer has (the scheduler took any id)
            updates = [dataclasses.replace(u, new_token_ids=tuple(t % vocab for t in u.new_token_ids)) for u in updates]
            start = time.perf_counter()
            outputs.process(updates)
            times["detokenize + deltas"].append(time.perf_counter() - start)
        assert len(plan.requests) == n
        times["schedule"].append(t1 - t0)
        times["prepare_inputs"].append(t2 - t1)
        times["update"].append(t3 - t2)
    result = {k: {"median_ms": statistics.median(v) * 1e3, "p99_ms": sorted(v)[int(len(v) * 0.99) - 1] * 1e3}
              for k, v in times.items()}
    total = sum(r["median_ms"] for r in result.values())
    result["total_median_ms"] = total
    result["config"] = vars(args)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{n} running requests, context {args.context}, block size {bs}, {k} token(s) per request per step "
          f"(CPU, median of {args.steps} steps)")
    for name in times:
        print(f"  {name:<20} {result[name]['median_ms']:8.3f} ms   p99 {result[name]['p99_ms']:8.3f} ms")
    print(f"  {'total':<20} {total:8.3f} ms")


if __name__ == "__main__":
    main()
