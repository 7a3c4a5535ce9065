"""Priority scheduling against FCFS under overload (issue 3, acceptance 4): prints a table, writes JSON.

    python bench/bench_priority.py [--model DIR] [--device cpu] [--num-requests 400] [--out OUT.json]

Without --model it builds the tiny random Llama of llm_core.demo. One Poisson trace of requests
(10% high priority, random prompts, fixed output lengths, greedy) arrives at --overload times the
request rate the engine sustains, measured first with a closed batch (or --rate req/s). The same
trace runs through the async engine client (process mode) against a fresh engine per policy.
TTFT counts from the moment a request is submitted to its first token; throughput is output
tokens over the time from the first arrival to the last finish.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_core.config import EngineConfig  # noqa: E402
from llm_core.engine_client import AsyncEngineClient, EngineRequest  # noqa: E402
from llm_core.sampling_params import SamplingParams  # noqa: E402

HIGH, LOW = 0, 1  # priorities: lower runs first


@dataclass(frozen=True)
class TraceItem:
    arrival_s: float
    prompt: list[int]
    max_tokens: int
    priority: int


def make_trace(args, vocab_size: int, rate: float) -> list[TraceItem]:
    rng = random.Random(args.seed)
    items, now = [], 0.0
    for _ in range(args.num_requests):
        now += rng.expovariate(rate)
        prompt = [rng.randrange(3, vocab_size) for _ in range(rng.randint(*args.prompt_len))]
        priority = HIGH if rng.random() < args.high_fraction else LOW
        items.append(TraceItem(now, prompt, args.max_tokens, priority))
    return items


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def run_one(client: AsyncEngineClient, request_id: str, item: TraceItem) -> dict:
    params = SamplingParams(max_tokens=item.max_tokens, temperature=0.0, ignore_eos=True)
    start = time.perf_counter()
    first_token_s, num_tokens = None, 0
    async for delta in client.generate(EngineRequest(request_id, item.prompt, params, priority=item.priority)):
        if delta.new_token_ids and first_token_s is None:
            first_token_s = time.perf_counter() - start
        num_tokens += len(delta.new_token_ids)
    return {"priority": item.priority, "ttft_s": first_token_s, "num_tokens": num_tokens,
            "start": start, "end": time.perf_counter()}


async def closed_batch(client: AsyncEngineClient, tag: str, trace: list[TraceItem]) -> float:
    """Requests per second when all of `trace` is submitted at once."""
    start = time.perf_counter()
    await asyncio.gather(*(run_one(client, f"{tag}{i}", item) for i, item in enumerate(trace)))
    return len(trace) / (time.perf_counter() - start)


async def replay(client: AsyncEngineClient, trace: list[TraceItem]) -> list[dict]:
    t0 = time.perf_counter()
    tasks = []
    for i, item in enumerate(trace):
        await asyncio.sleep(max(0.0, t0 + item.arrival_s - time.perf_counter()))
        tasks.append(asyncio.ensure_future(run_one(client, f"req{i}", item)))
    return list(await asyncio.gather(*tasks))


def summarize(records: list[dict], stats: dict) -> dict:
    out = {}
    for name, priority in (("high", HIGH), ("low", LOW)):
        ttfts = [r["ttft_s"] * 1e3 for r in records if r["priority"] == priority]
        out[name] = {"num_requests": len(ttfts), "ttft_p50_ms": percentile(ttfts, 50),
                     "ttft_p99_ms": percentile(ttfts, 99)}
    duration = max(r["end"] for r in records) - min(r["start"] for r in records)
    out["throughput_tok_s"] = sum(r["num_tokens"] for r in records) / duration
    out["duration_s"] = duration
    out["num_preemptions"] = stats["num_preemptions"]
    return out


async def bench_policy(args, policy: str, warmup: list[TraceItem], calibrate: list[TraceItem] | None,
                       make: callable) -> tuple[dict, float | None]:
    options = dict(device=args.device, scheduling_policy=policy, max_num_seqs=args.max_num_seqs, seed=args.seed)
    async with AsyncEngineClient(EngineConfig.from_options(args.model, **options), mode="process") as client:
        await closed_batch(client, "warm", warmup)  # first steps of a new process run slow (page faults)
        rate = await closed_batch(client, "cal", calibrate) if calibrate else None
        trace = make(rate)
        records = await replay(client, trace)
        before = await client.stats()
        return summarize(records, before), rate


async def main_async(args) -> dict:
    vocab_size = json.loads((Path(args.model) / "config.json").read_text())["vocab_size"]
    warm_rng = random.Random(args.seed + 1)
    warmup = [TraceItem(0.0, [warm_rng.randrange(3, vocab_size) for _ in range(args.prompt_len[1])], args.max_tokens,
                        LOW) for _ in range(4 * args.max_num_seqs)]
    calibrate = None if args.rate else warmup * 2
    state = {"rate": args.rate}

    def make(measured):
        if state["rate"] is None:
            state["rate"] = measured * args.overload
        return make_trace(args, vocab_size, state["rate"])

    results = {}
    for i, policy in enumerate(args.policies):
        results[policy], _ = await bench_policy(args, policy, warmup, calibrate if i == 0 else None, make)
    return {"model": args.model, "device": args.device, "engine_threads": os.environ.get("OMP_NUM_THREADS"),
            "num_requests": args.num_requests,
            "high_fraction": args.high_fraction, "arrival_rate_req_s": state["rate"], "overload": args.overload,
            "max_num_seqs": args.max_num_seqs, "max_tokens": args.max_tokens, "prompt_len": args.prompt_len,
            "results": results}


def print_table(report: dict) -> None:
    print(f"arrival {report['arrival_rate_req_s']:.1f} req/s (overload x{report['overload']}), "
          f"{report['num_requests']} requests, {report['high_fraction']:.0%} high, max_num_seqs "
          f"{report['max_num_seqs']}, {report['max_tokens']} output tokens, device {report['device']}")
    print(f"{'policy':<9} {'class':<5} {'n':>4} {'TTFT p50 ms':>12} {'TTFT p99 ms':>12} {'tok/s':>8} {'preempt':>8}")
    for policy, result in report["results"].items():
        for name in ("high", "low"):
            row = result[name]
            print(f"{policy:<9} {name:<5} {row['num_requests']:>4} {row['ttft_p50_ms']:>12.1f} "
                  f"{row['ttft_p99_ms']:>12.1f} {result['throughput_tok_s']:>8.0f} {result['num_preemptions']:>8}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory (default: the tiny demo Llama)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-requests", type=int, default=1000)
    parser.add_argument("--high-fraction", type=float, default=0.1)
    parser.add_argument("--overload", type=float, default=2.0, help="arrival rate / measured capacity")
    parser.add_argument("--rate", type=float, help="arrival rate in req/s (skips the calibration)")
    parser.add_argument("--prompt-len", type=int, nargs=2, default=(16, 64), metavar=("MIN", "MAX"))
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--policies", nargs="+", choices=("fcfs", "priority"), default=["fcfs", "priority"],
                        help="in this order, each on a fresh engine")
    parser.add_argument("--engine-threads", type=int, default=None,
                        help="OMP_NUM_THREADS of the engine process (default: 1 on cpu, where more threads on a "
                             "small machine slow down erratically beside the client; torch's default elsewhere)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench_priority.json")
    args = parser.parse_args(argv)
    if args.model is None:
        from llm_core.demo import build_tiny_checkpoint

        args.model = str(build_tiny_checkpoint(Path(".cache/demo-model")))
    threads = args.engine_threads if args.engine_threads is not None else (1 if args.device == "cpu" else None)
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the spawned engine process's torch
    report = asyncio.run(main_async(args))
    print_table(report)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
