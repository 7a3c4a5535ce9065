"""The table of the service's command-line options: flag, destination, type, default, help.

Pure data: service/config.py turns it into argparse flags and TRIBUTARY_* environment variables.
An option's destination is either a ServiceConfig field ("service") or an engine option passed to
`AsyncEngineClient.from_options` under `name` ("engine"); engine options left unset keep the
engine's own defaults. Engine flags keep vLLM's names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

MiB = 1 << 20


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def parse_json_map(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class Option:
    """One flag. `kind` is "service" (a ServiceConfig field) or "engine" (an engine option)."""

    flag: str
    kind: str
    name: str
    parse: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None
    is_bool: bool = False  # --flag / --no-flag
    metavar: str | None = None

    @property
    def env(self) -> str:
        return "TRIBUTARY_" + self.flag.lstrip("-").replace("-", "_").upper()


def _s(flag, name, parse, help, **kw) -> Option:
    return Option(flag, "service", name, parse, help, **kw)


def _e(flag, name, parse, help, **kw) -> Option:
    return Option(flag, "engine", name, parse, help, **kw)


GROUPS: dict[str, tuple[Option, ...]] = {
    "server": (
        _s("--host", "host", str, "interface to listen on"),
        _s("--port", "port", int, "TCP port"),
        _s("--model", "model", str, "checkpoint directory, or several comma-separated, served side by side "
                                    "(a request goes to the first that takes its media; text to the first); "
                                    "default: the trained demo models in models/demo", metavar="DIR[,DIR]"),
        _s("--served-model-name", "served_model_name", str, "model name reported to clients "
                                                            "(default: the directory's name)"),
        _s("--engine-mode", "engine_mode", str, "run the engine in its own process (default) or in a "
                                                "thread of the server (tests)", choices=("process", "thread")),
        _s("--decode-workers", "decode_workers", int, "threads that decode media"),
        _s("--media-cache-bytes", "media_cache_bytes", int, "decoded media kept by content hash for "
                                                            "input.known (0: off)"),
        _s("--log-level", "log_level", str, "uvicorn log level",
           choices=("critical", "error", "warning", "info", "debug", "trace")),
    ),
    "security": (
        _s("--api-key", "api_key", str, "require this key (Authorization: Bearer KEY, ?token=KEY, or the "
                                        "WebSocket subprotocol bearer.KEY)"),
        _s("--allowed-origins", "allowed_origins", parse_list, "comma-separated Origins that may open "
           "WebSockets ('*': any); default: same origin only. Requests without Origin always pass",
           metavar="LIST"),
    ),
    "limits": (
        _s("--max-message-bytes", "max_message_bytes", int, "largest WebSocket message (over it: close 1009)"),
        _s("--max-item-bytes", "max_item_bytes", int, "largest media item, summed over its chunks"),
        _s("--max-session-media-bytes", "max_session_media_bytes", int, "media bytes one session may hold"),
        _s("--max-items-per-session", "max_items_per_session", int, "media items one session may hold"),
        _s("--max-responses-per-session", "max_responses_per_session", int, "responses in flight per session"),
        _s("--max-sessions", "max_sessions", int, "open sessions per server (over it: close 1013)"),
        _s("--idle-timeout-s", "idle_timeout_s", float, "close a session (1001) that sent nothing and has "
                                                         "nothing in flight for this long"),
        _s("--max-pending-events", "max_pending_events", int, "server events queued for a slow client "
           "(merged deltas aside) before the session stops reading its socket"),
    ),
    "engine": (
        _e("--device", "device", str, "auto, cpu or cuda"),
        _e("--max-num-seqs", "max_num_seqs", int, "requests in one engine step"),
        _e("--max-num-batched-tokens", "max_num_batched_tokens", int, "tokens in one engine step"),
        _e("--max-num-encoder-input-tokens", "max_num_encoder_input_tokens", int, "media embedding rows that "
           "one engine step may encode (the encoder budget)"),
        _e("--max-model-len", "max_model_len", int, "context length (default: the checkpoint's)"),
        _e("--block-size", "block_size", int, "tokens per KV block"),
        _e("--enable-prefix-caching", "enable_prefix_caching", parse_bool, "reuse KV blocks of equal "
                                                                           "prefixes", is_bool=True),
        _e("--gpu-memory-utilization", "gpu_memory_utilization", float, "fraction of GPU memory to use"),
        _e("--kv-cache-bytes", "cpu_kv_cache_bytes", int, "KV cache bytes on the CPU"),
        _e("--dtype", "dtype", str, "weights' dtype", choices=("auto", "float32", "float16", "bfloat16")),
        _e("--seed", "seed", int, "engine seed"),
        _e("--scheduling-policy", "scheduling_policy", str, "request order", choices=("fcfs", "priority")),
        _e("--num-scheduler-steps", "num_scheduler_steps", int, "decode forwards per engine step when every "
           "request just decodes (default: 4 on CUDA, 1 on the CPU)"),
        _e("--enforce-eager", "enforce_eager", parse_bool, "no CUDA graphs", is_bool=True),
        _e("--skinny-gemv", "skinny_gemv", parse_bool, "Triton GEMV kernel for linears of one row, batch-1 "
           "decode (default: on for Hopper GPUs at tensor-parallel size 1)", is_bool=True),
        _e("--fused-decode", "fused_decode", parse_bool, "with the GEMV kernel: SiLU-and-mul fused into it and "
           "rotary + KV store in one kernel for batch-1 decode (default: on with the GEMV kernel)", is_bool=True),
        _e("--persistent-decode", "persistent_decode", parse_bool, "with the fused decode path: every layer of a "
           "batch-1 decode step in one persistent kernel (default: on with the fused decode path)", is_bool=True),
        _e("--ws-decode", "ws_decode", parse_bool, "with the persistent kernel on Hopper: its warp-specialized "
           "form (TMA weight stream, tensor-core GEMVs) where the model fits it (default: the engine's)",
           is_bool=True),
        _e("--disable-async-output-proc", "disable_async_output_proc", parse_bool,
           "detokenize each multi-step step before the next one starts, not while it runs", is_bool=True),
        _e("--async-scheduling", "async_scheduling", parse_bool, "queue the next multi-step step's forwards before "
           "this step's tokens reach the host (default: on on CUDA)", is_bool=True),
        _e("--speculative-config", "speculative", parse_json_map, "speculative decoding as JSON, e.g. "
           '\'{"method": "ngram", "num_tokens": 4}\'', metavar="JSON"),
        _e("--tensor-parallel-size", "tensor_parallel_size", int, "GPUs per model"),
        _e("--attention-backend", "attention_backend", str, "attention kernels",
           choices=("auto", "torch", "triton")),
        _e("--video-pool-stride", "video_pool_stride", int, "average-pool video frame patches by this"),
    ),
    "observability": (
        _s("--otlp-traces-endpoint", "otlp_traces_endpoint", str, "export traces over OTLP/HTTP (protobuf) to "
           "this URL, e.g. http://127.0.0.1:4318/v1/traces (Jaeger); default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
           "else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else no tracing. OTEL_SERVICE_NAME names the "
           "service; OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn tracing off", metavar="URL"),
        _e("--profile-steps", "profile_steps", int, "write a Chrome trace (torch.profiler) of the first N engine "
                                                    "steps to --profile-dir"),
        _e("--profile-dir", "profile_dir", str, "directory of --profile-steps traces (default: .cache/profiles)",
           metavar="DIR"),
    ),
}

OPTIONS: tuple[Option, ...] = tuple(option for group in GROUPS.values() for option in group)
