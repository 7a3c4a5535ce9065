"""Deltas per second and added latency of the gateway, against a bare `websockets` server, same run.

    python -m bench.bench_gateway [--connections 1,16,64,256] [--tokens 2000] [--step-ms 2] [--out F.json]

Each server runs in its own process; the load comes from this one (one asyncio loop, msgpack).
- gateway: `service` under uvicorn (as `python -m service` runs it) with its engine in a separate
  process (mode "process"); the engine is a stand-in that emits one token per request per step
  at no cost, so what is measured is the gateway and the engine client, not a model.
- baseline: a bare `websockets` server that answers a request with one msgpack delta frame per
  token, and echoes any other frame.
Throughput: C connections each stream tokens/C tokens; deltas/s are frames received per second,
tokens/s the tokens they carry (the gateway merges a lagging response's tokens into fewer frames).
Latency: one connection, request -> first delta (gateway, max_tokens=1) against an echo round trip.
Last, the cost of one step's outputs message of 256 deltas across the engine pipe (encode, decode).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import msgpack
from websockets.asyncio.client import connect

from bench.loopback import start_process, wait_open
from bench.machine import cpu_name
from llm_core.outputs import CompletionDelta

MESSAGES = [{"role": "user", "content": "go"}]


class PacedEngine:
    """Engine stand-in (a picklable factory with functools.partial): every step gives each request
    one token, `tok`, and takes `step_s` seconds asleep (a GPU step costs the host no CPU)."""

    def __init__(self, config=None, step_s: float = 0.0) -> None:
        self.max_model_len = 1 << 20
        self.step_s = step_s
        self.requests: dict[str, list[int]] = {}  # id -> [max_tokens, generated]

    def add_request(self, prompt, params, *, request_id=None, priority=0, arrival_time=None,
                    traceparent=None) -> str:
        self.requests[request_id] = [params.max_tokens, 0]
        return request_id

    def abort_request(self, request_ids) -> None:
        for request_id in request_ids:
            self.requests.pop(request_id, None)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[CompletionDelta]:
        if self.step_s:
            time.sleep(self.step_s)
        deltas = []
        for request_id, state in list(self.requests.items()):
            state[1] += 1
            finished = state[1] >= state[0]
            if finished:
                del self.requests[request_id]
            deltas.append(CompletionDelta(request_id, (state[1] % 1000,), "tok", finished,
                                          "length" if finished else None, num_prompt_tokens=3))
        return deltas

    def stats(self) -> dict:
        return {"num_running": len(self.requests), "num_waiting": 0}


def run_gateway(port: int, model_dir: str, step_s: float) -> None:
    import uvicorn

    from llm_core.config import EngineConfig
    from llm_core.engine_client import AsyncEngineClient
    from service.app import build_app
    from service.config import ServiceConfig
    from service.server import uvicorn_config

    config = ServiceConfig(model=model_dir, port=port, log_level="warning", max_responses_per_session=64)
    engine = AsyncEngineClient(EngineConfig.from_options(model_dir), mode="process",
                               engine_factory=functools.partial(PacedEngine, step_s=step_s))
    uvicorn.Server(uvicorn_config(config, build_app(config, engine))).run()


def run_baseline(port: int) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws):
        async for frame in ws:
            request = msgpack.unpackb(frame)
            if request.get("type") != "response.create":
                await ws.send(frame)  # echo
                continue
            rid = request["response_id"]
            for i in range(request["max_tokens"]):
                await ws.send(msgpack.packb({"type": "response.delta", "response_id": rid, "delta": "tok",
                                             "token_ids": [i % 1000]}))
            await ws.send(msgpack.packb({"type": "response.done", "response_id": rid, "status": "incomplete"}))

    async def main():
        async with serve(handler, "127.0.0.1", port, compression=None, max_size=None):
            await asyncio.Future()

    asyncio.run(main())


async def stream(url: str, tokens: int, skip_hello: bool) -> tuple[int, int]:
    """One connection, one response of `tokens` tokens: (frames, tokens) received."""
    async with connect(url, compression=None, max_size=None, proxy=None, open_timeout=60) as ws:
        if skip_hello:
            await ws.recv()  # session.created
        await ws.send(msgpack.packb({"type": "response.create", "response_id": "r", "messages": MESSAGES,
                                     "max_tokens": tokens, "ignore_eos": True}))
        frames = received = 0
        while True:
            event = msgpack.unpackb(await ws.recv())
            if event["type"] == "response.delta":
                frames += 1
                received += len(event["token_ids"])
            elif event["type"] == "response.done":
                return frames, received


async def throughput(url: str, connections: int, tokens: int, skip_hello: bool) -> dict:
    start = time.perf_counter()
    results = await asyncio.gather(*(stream(url, tokens, skip_hello) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    frames, received = sum(r[0] for r in results), sum(r[1] for r in results)
    assert received == connections * tokens, "tokens were lost"
    return {"connections": connections, "seconds": elapsed, "deltas_per_s": frames / elapsed,
            "tokens_per_s": received / elapsed, "tokens_per_delta": received / frames}


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of process `pid`'s main thread and of its other threads (Linux /proc)."""
    main = others = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended meanwhile
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        if int(task) == pid:
            main += seconds
        else:
            others += seconds
    return main, others


def step_message_cost(num_deltas: int = 256, repeats: int = 500) -> dict:
    """Microseconds to encode (engine process) and decode (gateway's reader thread) one step's
    outputs message of `num_deltas` one-token deltas, the median of `repeats` timings each."""
    from llm_core.engine_protocol import StepOutputs, decode_message, encode_message

    deltas = tuple(CompletionDelta(f"sess_{i:016x}:r:{i}", (i % 1000,), "tok", False, num_prompt_tokens=3)
                   for i in range(num_deltas))
    payload, _ = encode_message(StepOutputs(deltas))
    assert decode_message(payload).deltas == deltas

    def median_us(fn) -> float:
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        return 1e6 * statistics.median(samples)

    return {"num_deltas": num_deltas, "bytes": len(payload),
            "encode_us": median_us(lambda: encode_message(StepOutputs(deltas))),
            "decode_us": median_us(lambda: decode_message(payload))}


async def latency(url: str, pings: int, gateway: bool) -> dict:
    samples = []
    async with connect(url, compression=None, max_size=None, proxy=None, open_timeout=60) as ws:
        if gateway:
            await ws.recv()
        for i in range(pings):
            message = {"type": "response.create", "response_id": f"l{i}", "messages": MESSAGES, "max_tokens": 1}
            start = time.perf_counter()
            await ws.send(msgpack.packb(message if gateway else {"type": "echo", "pad": "x" * 60}))
            while True:
                event = msgpack.unpackb(await ws.recv())
                if not gateway or event["type"] == "response.delta":
                    break
            samples.append(time.perf_counter() - start)
            if gateway:
                while msgpack.unpackb(await ws.recv())["type"] != "response.done":
                    pass
    samples.sort()
    return {"p50_ms": 1e3 * statistics.median(samples), "p99_ms": 1e3 * samples[int(0.99 * (len(samples) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", default="1,16,64,256")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens streamed per connection")
    parser.add_argument("--step-ms", type=float, default=2.0, help="the stand-in engine's step time")
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--out", default="bench_gateway.json")
    args = parser.parse_args()
    model_dir = tempfile.mkdtemp(prefix="bench-gateway-")
    Path(model_dir, "config.json").write_text(json.dumps({"model_type": "llama"}))
    connections = [int(c) for c in args.connections.split(",")]
    result = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
              "tokens_per_connection": args.tokens, "step_ms": args.step_ms, "throughput": {}, "latency": {}}
    runs = [("baseline", run_baseline, (18931,), "ws://127.0.0.1:18931", True, True),
            ("gateway", run_gateway, (18932, model_dir, args.step_ms / 1e3), "ws://127.0.0.1:18932/v1/stream",
             True, False),
            ("gateway", run_gateway, (18933, model_dir, 0.0), "ws://127.0.0.1:18933/v1/stream", False, True)]
    for name, target, target_args, url, measure_throughput, measure_latency in runs:
        process = start_process(target, *target_args)
        gateway = name == "gateway"
        try:
            asyncio.run(wait_open(url))
            asyncio.run(throughput(url, 4, 100, gateway))  # warm-up
            if measure_throughput:
                runs_ = []
                for c in connections:
                    before = thread_cpu_s(process.pid)
                    run = asyncio.run(throughput(url, c, args.tokens, gateway))
                    after = thread_cpu_s(process.pid)
                    run["server_main_thread_cpu_s"] = after[0] - before[0]
                    run["server_other_threads_cpu_s"] = after[1] - before[1]
                    runs_.append(run)
                result["throughput"][name] = runs_
            if measure_latency:
                result["latency"][name] = asyncio.run(latency(url, args.pings, gateway))
        finally:
            process.kill()
            process.join(10)
    result["step_message"] = step_message_cost()
    print_table(result)
    Path(args.out).write_text(json.dumps(result, indent=2))


def print_table(result: dict) -> None:
    step_s = result["step_ms"] / 1e3
    print(f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
          f"{result['tokens_per_connection']} tokens per connection; engine step {result['step_ms']} ms")
    print("| connections | baseline deltas/s | gateway: offered tokens/s | deltas/s | tokens/s | tokens per delta "
          "| gateway CPU s: main thread / other threads (of s) |")
    print("|---|---|---|---|---|---|---|")
    for base, gate in zip(result["throughput"]["baseline"], result["throughput"]["gateway"]):
        print(f"| {base['connections']} | {base['deltas_per_s']:,.0f} | {gate['connections'] / step_s:,.0f} | "
              f"{gate['deltas_per_s']:,.0f} | {gate['tokens_per_s']:,.0f} | {gate['tokens_per_delta']:.2f} | "
              f"{gate['server_main_thread_cpu_s']:.2f} / {gate['server_other_threads_cpu_s']:.2f} "
              f"({gate['seconds']:.2f}) |")
    base, gate = result["latency"]["baseline"], result["latency"]["gateway"]
    print()
    print("| latency, one connection | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| baseline: echo round trip | {base['p50_ms']:.3f} | {base['p99_ms']:.3f} |")
    print(f"| gateway: response.create -> first delta (engine step 0 ms) | {gate['p50_ms']:.3f} | "
          f"{gate['p99_ms']:.3f} |")
    print(f"| added by the gateway and engine client | {gate['p50_ms'] - base['p50_ms']:.3f} | "
          f"{gate['p99_ms'] - base['p99_ms']:.3f} |")
    message = result["step_message"]
    print()
    print(f"one step's outputs message, {message['num_deltas']} deltas ({message['bytes']:,} bytes): "
          f"encode {message['encode_us']:.0f} us, decode {message['decode_us']:.0f} us")


if __name__ == "__main__":
    main()
