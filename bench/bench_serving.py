"""Online serving through the async engine client: Poisson arrivals at several rates.

    python -m bench.bench_serving --shape llama-3.2-1b --rates 4 16 64 --num-requests 200 --out serving.json

Every request has a --prompt-len token prompt (random ids) and --output-len outputs (ignore_eos,
temperature 0.6). The engine runs in its own process (as behind the gateway), one engine for all
rates. Per rate: TTFT (submit to first token), TPOT ((end - first token) / (outputs - 1)), the gap
between consecutive deltas (ITL, per delta: with multi-step decoding a delta carries several
tokens), and output tokens/s. Prints a table and writes JSON. Imports no service packages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from llm_core.config import EngineConfig
from llm_core.engine_client import AsyncEngineClient, EngineRequest
from llm_core.sampling_params import SamplingParams


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def one_request(client: AsyncEngineClient, request_id: str, prompt: list[int], output_len: int) -> dict:
    params = SamplingParams(max_tokens=output_len, temperature=0.6, ignore_eos=True)
    start = time.perf_counter()
    stamps: list[tuple[float, int]] = []
    async for delta in client.generate(EngineRequest(request_id, prompt, params)):
        if delta.new_token_ids:
            stamps.append((time.perf_counter(), len(delta.new_token_ids)))
    num_tokens = sum(n for _, n in stamps)
    first, last = stamps[0][0], stamps[-1][0]
    return {"ttft_s": first - start, "e2e_s": last - start, "num_tokens": num_tokens,
            "tpot_s": (last - first) / max(num_tokens - 1, 1),
            "itl_s": [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]}


async def run_rate(client: AsyncEngineClient, rate: float, num_requests: int, prompt_len: int, output_len: int,
                   vocab_size: int, seed: int) -> dict:
    rng = random.Random(seed)
    tasks = []
    start = time.perf_counter()
    for i in range(num_requests):
        prompt = [rng.randrange(10, vocab_size) for _ in range(prompt_len)]
        tasks.append(asyncio.create_task(one_request(client, f"r{rate}-{i}", prompt, output_len)))
        await asyncio.sleep(rng.expovariate(rate))
    results = await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    ms = 1e3
    ttft = [r["ttft_s"] * ms for r in results]
    tpot = [r["tpot_s"] * ms for r in results]
    itl = [gap * ms for r in results for gap in r["itl_s"]]
    return {"rate_req_s": rate, "num_requests": num_requests, "seconds": elapsed,
            "output_tok_s": sum(r["num_tokens"] for r in results) / elapsed,
            "ttft_ms_p50": percentile(ttft, 50), "ttft_ms_p99": percentile(ttft, 99),
            "tpot_ms_p50": percentile(tpot, 50), "tpot_ms_p99": percentile(tpot, 99),
            "itl_ms_p50": percentile(itl, 50), "itl_ms_p99": percentile(itl, 99)}


async def main_async(args) -> dict:
    model = args.model
    if model is None:
        from bench.shapes import SHAPES, write_random_llama
        model = str(write_random_llama(Path(tempfile.mkdtemp()) / args.shape, args.shape,
                                       device="cuda" if args.device == "cuda" else "cpu"))
        vocab_size = SHAPES[args.shape]["vocab_size"]
    else:
        vocab_size = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    options = {"device": args.device, "max_model_len": args.prompt_len + args.output_len + 16,
               "max_num_seqs": args.max_num_seqs}
    if args.num_scheduler_steps is not None:
        options["num_scheduler_steps"] = args.num_scheduler_steps
    if args.async_scheduling is not None:
        options["async_scheduling"] = args.async_scheduling
    if args.device == "cpu":
        options["dtype"] = "float32"
    rows = []
    async with AsyncEngineClient(EngineConfig.from_options(model, **options), mode="process") as client:
        await run_rate(client, args.rates[0], min(8, args.num_requests), args.prompt_len, 8, vocab_size, seed=1)
        for rate in args.rates:
            rows.append(await run_rate(client, rate, args.num_requests, args.prompt_len, args.output_len,
                                       vocab_size, seed=int(rate * 1000)))
            stats = await client.stats()
            rows[-1]["engine"] = {k: stats.get(k) for k in ("num_steps", "queued_steps_adopted", "queued_steps_dropped",
                                                            "num_preemptions")}
            print(f"rate {rate:g} req/s done: {rows[-1]['output_tok_s']:.0f} out tok/s; engine counters "
                  f"since start {rows[-1]['engine']}", flush=True)
    return {"model": args.model or f"random {args.shape}", "device": args.device, "prompt_len": args.prompt_len,
            "output_len": args.output_len, "num_scheduler_steps": args.num_scheduler_steps,
            "async_scheduling": args.async_scheduling, "rates": rows}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="a checkpoint directory (default: random weights of --shape)")
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rates", type=float, nargs="+", default=[4, 16, 64])
    parser.add_argument("--num-requests", type=int, default=200)
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--num-scheduler-steps", type=int, default=None)
    parser.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None,
                        help="the engine's option (default: the engine's choice, on on CUDA)")
    parser.add_argument("--out", default="bench_serving.json")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nonline serving, {result['model']} on {args.device}: {args.prompt_len}-token prompts, "
          f"{args.output_len} outputs, Poisson arrivals")
    header = ["rate req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "ITL p50", "ITL p99"]
    print(" ".join(f"{h:>10}" for h in header) + "   (ms)")
    for r in result["rates"]:
        print(" ".join(f"{v:>10.1f}" for v in (r["rate_req_s"], r["output_tok_s"], r["ttft_ms_p50"], r["ttft_ms_p99"],
                                                r["tpot_ms_p50"], r["tpot_ms_p99"], r["itl_ms_p50"], r["itl_ms_p99"])))


if __name__ == "__main__":
    main()
