"""Throughput of the gateway with tracing exporting to a local OTLP receiver, against tracing off,
in one run.

    python -m bench.bench_tracing [--sessions 8] [--tokens 16] [--rounds 8] [--out F.json]
    python -m bench.bench_tracing --device cuda --shape llama-3.2-1b --sessions 64 --tokens 64 --prompt-tokens 256


Two servers run side by side, each in its own process with its engine in another (mode
"process", as `python -m service` runs it), on the tiny demo checkpoint (CPU): one with no OTLP
endpoint (no exporter, and the engine records nothing), one exporting every response's spans over
OTLP/HTTP to a receiver in a third process that decodes each ExportTraceServiceRequest (as a
collector would). The load comes from this process: S WebSocket sessions at once, each running R
responses of T tokens one after another, against both servers at once in each round: the two
compete for the same cores, so the throughput ratio is the inverse ratio of their CPU cost per
request, and whatever else loads a shared machine hits both alike (run one after the other, rounds
on this 2-core machine shared with other jobs varied by more than 2x). With `--device cuda` the
engines run a random checkpoint of a real model's shape (bench/shapes.py) on the GPU, and the two
servers are loaded in turn (off, on, off, ...): at once they would share the GPU, and the cost of
tracing is the host time it adds to each step. The table reports each
mode's median round, the median and range of the rounds' on/off ratios, and the CPU time the
server's processes (gateway and engine) spent per request. A second table measures, in this
process, the gateway's own telemetry work per response.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import msgpack
from websockets.asyncio.client import connect

from bench.loopback import start_process, wait_open
from bench.machine import cpu_name


def cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)

DEMO_DIR = Path(".cache/demo-model")
CPU_ENGINE = {"device": "cpu", "max_model_len": 512}
# A word per token (bench/shapes.py's tokenizer): the template joins the messages' words.
PLAIN_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def run_receiver(port: int, num_spans) -> None:
    """An OTLP/HTTP trace receiver that decodes every export and counts its spans."""
    import uvicorn
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                           ExportTraceServiceResponse)
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def receive(request):
        export = ExportTraceServiceRequest.FromString(await request.body())
        count = sum(len(ss.spans) for rs in export.resource_spans for ss in rs.scope_spans)
        with num_spans.get_lock():
            num_spans.value += count
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    app = Starlette(routes=[Route("/v1/traces", receive, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def run_gateway(port: int, model_dir: str, endpoint: str | None, engine_options: dict) -> None:
    import uvicorn

    from service.app import build_app
    from service.config import ServiceConfig
    from service.server import uvicorn_config

    config = ServiceConfig(model=model_dir, port=port, log_level="warning", engine_options=engine_options,
                           otlp_traces_endpoint=endpoint)
    uvicorn.Server(uvicorn_config(config, build_app(config))).run()


def prompt_text(i: int, prompt_tokens: int) -> str:
    """The i-th request's prompt: a short question, or (prompt_tokens > 0) that many words of the
    random checkpoints' word-per-token vocabulary, different for every request."""
    if prompt_tokens <= 0:
        return f"Tell me about {i}."
    return " ".join(f"t{3 + (i * 7919 + j * 104729) % 100_000}" for j in range(prompt_tokens))


async def session(url: str, deadline: float, tokens: int, prompt_tokens: int = 0, first: int = 0) -> tuple[int, int]:
    """One session running responses one after another until `deadline` (perf_counter);
    returns (responses, tokens) received."""
    received = i = 0
    async with connect(url, compression=None, max_size=None, proxy=None, open_timeout=60) as ws:
        await ws.recv()  # session.created
        while time.perf_counter() < deadline:
            i += 1
            await ws.send(msgpack.packb({"type": "response.create", "response_id": f"r{i}", "max_tokens": tokens,
                                         "ignore_eos": True, "seed": i,
                                         "messages": [{"role": "user",
                                                       "content": prompt_text(first + i, prompt_tokens)}]}))
            while True:
                event = msgpack.unpackb(await ws.recv())
                if event["type"] == "response.delta":
                    received += len(event.get("token_ids") or ())
                elif event["type"] == "response.done":
                    assert event["status"] == "incomplete", event
                    break
    return i, received


async def load(url: str, sessions: int, seconds: float, tokens: int, server_pid: int | None = None,
               prompt_tokens: int = 0) -> dict:
    """S sessions for `seconds`: throughput, and the CPU time the server (gateway and engine) spent."""
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    start = time.perf_counter()
    results = await asyncio.gather(*(session(url, start + seconds, tokens, prompt_tokens, first=k * 1_000_000)
                                     for k in range(sessions)))
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(server_pid) - cpu_before if server_pid else 0.0
    requests, received = sum(r[0] for r in results), sum(r[1] for r in results)
    assert received == requests * tokens, "tokens were lost"
    return {"seconds": elapsed, "requests": requests, "requests_per_s": requests / elapsed,
            "tokens_per_s": received / elapsed, "server_cpu_ms_per_request": 1e3 * cpu / requests}


async def both(urls: dict[str, str], sessions: int, seconds: float, tokens: int, pids: dict[str, int],
               prompt_tokens: int = 0) -> tuple:
    return tuple(await asyncio.gather(*(load(urls[mode], sessions, seconds, tokens, pids[mode], prompt_tokens)
                                        for mode in ("off", "on"))))


async def in_turn(urls: dict[str, str], sessions: int, seconds: float, tokens: int, pids: dict[str, int],
                  prompt_tokens: int = 0) -> tuple:
    return tuple([await load(urls[mode], sessions, seconds, tokens, pids[mode], prompt_tokens)
                  for mode in ("off", "on")])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants so far (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)  # ppid, cpu
    total, frontier = 0.0, [pid]
    while frontier:
        current = frontier.pop()
        total += stats.get(current, (0, 0.0))[1]
        frontier += [child for child, (ppid, _) in stats.items() if ppid == current]
    return total


def span_work(endpoint: str | None, num_responses: int = 300, reps: int = 7) -> dict:
    """The gateway's own telemetry work per response, in this process: a root span, a media and
    three engine spans from records, a first-token event, 16 deltas' latencies, the end; and with
    tracing, the export of those spans (force_flush: protobuf encoding and the POST). Best of `reps`."""
    from llm_core.engine_client import CompletionDelta
    from protocol import GenerationOptions, Usage
    from service.config import ServiceConfig
    from service.telemetry import Telemetry

    class Item:  # what ResponseWatch.media reads of a decoded item
        item_id, modality, mime, num_bytes, cached, num_tokens = "img", "image", "image/png", 50_000, False, 576
        started_ns = ended_ns = time.time_ns()

    telemetry = Telemetry(ServiceConfig(model="demo", otlp_traces_endpoint=endpoint), lambda: 0)
    options = GenerationOptions(max_tokens=16).resolved()
    delta = CompletionDelta("r", (1,), "x", False)
    best_work, best_export = float("inf"), float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for i in range(num_responses):
            watch = telemetry.start_response("ws", f"r{i}", options, session_id="s")
            watch.media([Item])
            now = time.time_ns()
            records = {"traceparent": watch.engine_traceparent, "events": [], "spans": [
                ["queue wait", now, now + 10, {"tributary.priority": 0}, None],
                ["prefill", now + 10, now + 20, {"tributary.prefill.tokens": 40, "tributary.prefill.cached_tokens": 0,
                                                 "tributary.prefill.steps": 1}, None],
                ["decode", now + 20, now + 30, {"tributary.decode.tokens": 15, "tributary.decode.steps": 15}, None]]}
            for _ in range(15):
                watch.on_delta(delta)
            watch.on_delta(CompletionDelta("r", (1,), "x", True, "length", trace=records if endpoint else None))
            watch.finish("incomplete", "length", Usage(40, 16, 0))
        work = time.perf_counter() - start
        start = time.perf_counter()
        if telemetry.tracing is not None:
            telemetry.tracing.force_flush()
        best_work, best_export = min(best_work, work), min(best_export, time.perf_counter() - start)
    telemetry.close()
    return {"work_us_per_response": 1e6 * best_work / num_responses,
            "export_us_per_response": 1e6 * best_export / num_responses}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a round")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per response")
    parser.add_argument("--rounds", type=int, default=8, help="measured rounds (both servers loaded in each)")
    parser.add_argument("--port", type=int, default=18941, help="first of three loopback ports")
    parser.add_argument("--out", default="bench/results/tracing_cpu.json")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="cpu: the tiny demo checkpoint, both servers loaded at once; cuda: --shape on the GPU, "
                             "the servers loaded in turn")
    parser.add_argument("--shape", default="llama-3.2-1b", help="(cuda) a shape of bench/shapes.py")
    parser.add_argument("--prompt-tokens", type=int, default=0,
                        help="prompt length in tokens (cuda; 0: a short question)")
    parser.add_argument("--max-num-seqs", type=int, default=128, help="(cuda) the engines' max_num_seqs")
    args = parser.parse_args()
    if args.device == "cuda":
        from bench.shapes import write_random_llama

        model_dir = Path(".cache/bench-tracing") / args.shape
        if not (model_dir / "model.safetensors").is_file():
            write_random_llama(model_dir, args.shape)
        (model_dir / "chat_template.jinja").write_text(PLAIN_TEMPLATE)
        max_len = max(512, args.prompt_tokens + args.tokens + 64)
        # Started one after the other: the second sees the first's memory as another process's.
        engines = [{"device": "cuda", "dtype": "bfloat16", "max_model_len": max_len, "max_num_seqs": args.max_num_seqs,
                    "gpu_memory_utilization": utilization} for utilization in (0.4, 0.8)]
        model_name = f"{args.shape} (random bf16 weights) on {cuda_name()}"
    else:
        model_dir = DEMO_DIR
        if not (DEMO_DIR / "config.json").is_file():
            subprocess.run([sys.executable, "-m", "llm_core.demo", "--build-only", str(DEMO_DIR)], check=True,
                           stdout=subprocess.DEVNULL)
        engines = [CPU_ENGINE, CPU_ENGINE]
        model_name = "demo (tiny random Llama, CPU)"
    num_spans = multiprocessing.get_context("spawn").Value("q", 0)
    receiver_url = f"http://127.0.0.1:{args.port}/v1/traces"
    urls = {"off": f"ws://127.0.0.1:{args.port + 1}/v1/stream", "on": f"ws://127.0.0.1:{args.port + 2}/v1/stream"}
    processes = [start_process(run_receiver, args.port, num_spans),
                 start_process(run_gateway, args.port + 1, str(model_dir), None, engines[0])]
    if args.device == "cuda":
        asyncio.run(wait_open(urls["off"], timeout_s=600))
    processes.append(start_process(run_gateway, args.port + 2, str(model_dir), receiver_url, engines[1]))
    rounds: dict[str, list[dict]] = {"off": [], "on": []}
    run_round = in_turn if args.device == "cuda" else both
    try:
        warm_up = {}
        for mode, url in urls.items():
            asyncio.run(wait_open(url, timeout_s=600))
            warm_up[mode] = asyncio.run(load(url, args.sessions, 1.0 if args.device == "cpu" else 5.0, args.tokens,
                                             prompt_tokens=args.prompt_tokens))
        pids = {"off": processes[1].pid, "on": processes[2].pid}
        receiver_cpu = cpu_seconds(processes[0].pid)
        for _ in range(args.rounds):
            off, on = asyncio.run(run_round(urls, args.sessions, args.seconds, args.tokens, pids, args.prompt_tokens))
            rounds["off"].append(off)
            rounds["on"].append(on)
        # The exporter sends a batch every 5 s: wait until the count holds still for 6 s (at most 60 s).
        deadline, last, still_since = time.monotonic() + 60, -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - still_since < 6:
            if num_spans.value != last:
                last, still_since = num_spans.value, time.monotonic()
            time.sleep(0.2)
        spans = num_spans.value
        receiver_cpu = cpu_seconds(processes[0].pid) - receiver_cpu
        work = {"off": span_work(None), "on": span_work(receiver_url)}
    finally:
        for process in processes:
            process.kill()
            process.join(10)
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
              "model": model_name, "device": args.device, "sessions": args.sessions,
              "seconds_per_round": args.seconds, "tokens_per_request": args.tokens,
              "prompt_tokens": args.prompt_tokens, "rounds": rounds,
              "median": {mode: {key: statistics.median(r[key] for r in runs)
                                for key in ("requests_per_s", "tokens_per_s", "server_cpu_ms_per_request")}
                         for mode, runs in rounds.items()},
              "receiver_cpu_ms_per_request": 1e3 * receiver_cpu / sum(r["requests"] for r in rounds["on"]),
              "gateway_telemetry_work": work,
              # on / off throughput of each round
              "round_ratios": [on["requests_per_s"] / off["requests_per_s"] for on, off in zip(rounds["on"], rounds["off"])],
              # Over every traced response, warm-up included; the sessions' own spans aside.
              "spans_exported_per_request": (spans - args.sessions * (1 + args.rounds))
              / (warm_up["on"]["requests"] + sum(r["requests"] for r in rounds["on"]))}
    print_table(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


def print_table(result: dict) -> None:
    off, on = result["median"]["off"], result["median"]["on"]
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; {result['model']}; "
          f"{result['sessions']} sessions per server, responses of {result['tokens_per_request']} tokens"
          + (f" after {result['prompt_tokens']}-token prompts" if result.get("prompt_tokens") else "") +
          f"; {result['seconds_per_round']:.0f} s rounds; median of {len(result['rounds']['off'])} rounds, "
          + ("the servers loaded in turn" if result.get("device") == "cuda" else "both servers loaded at once"))
    print("| tracing | requests/s | tokens/s | server CPU ms per request | spans exported per request |")
    print("|---|---|---|---|---|")
    print(f"| off (no endpoint) | {off['requests_per_s']:.2f} | {off['tokens_per_s']:.1f} | "
          f"{off['server_cpu_ms_per_request']:.2f} | 0 |")
    print(f"| on, OTLP/HTTP to a local receiver | {on['requests_per_s']:.2f} | {on['tokens_per_s']:.1f} | "
          f"{on['server_cpu_ms_per_request']:.2f} | {result['spans_exported_per_request']:.1f} |")
    ratios = sorted(result["round_ratios"])
    print(f"| on vs off | {100 * (statistics.median(ratios) - 1):+.1f}% (median of the rounds; "
          f"{100 * (ratios[0] - 1):+.0f}% to {100 * (ratios[-1] - 1):+.0f}%) | | "
          f"{100 * (on['server_cpu_ms_per_request'] / off['server_cpu_ms_per_request'] - 1):+.1f}% | |")
    print(f"receiver (decoding the exports, another process): {result['receiver_cpu_ms_per_request']:.2f} CPU ms "
          "per request")
    work = result["gateway_telemetry_work"]
    print()
    print("| the gateway's telemetry work per response (in process, best of 7) | µs on the event loop | "
          "µs exporting (worker thread) |")
    print("|---|---|---|")
    for mode, label in (("off", "tracing off (metrics only)"), ("on", "tracing on: 5 spans, 1 event")):
        print(f"| {label} | {work[mode]['work_us_per_response']:.0f} | {work[mode]['export_us_per_response']:.0f} |")


if __name__ == "__main__":
    main()
