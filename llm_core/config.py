"""Frozen configuration of the engine, one section per concern.

Values found at run time (the number of KV blocks, the EOS ids, the model's maximum length)
are returned by the code that finds them and passed on; they are never written back here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from cache.config import CacheConfig

SCHEDULING_POLICIES = ("fcfs", "priority")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class SchedulerConfig:
    """Limits of one engine step and the order in which requests get them."""

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    # Encoder budget: embedding rows (placeholder tokens) of media not encoded yet that one step may
    # send through the vision and audio encoders (vLLM's name). An item larger than this runs alone.
    max_num_encoder_input_tokens: int = 8192
    policy: str = "fcfs"
    # Priority aging: a waiting request gains one priority level per this many seconds
    # waited, so low priority cannot starve forever. None disables aging.
    priority_aging_s: float | None = 30.0
    # Decode forwards per engine step when every running request is decoding and needs nothing
    # from the host between tokens (llm_core/multi_step.py; vLLM's name). None: 4 on CUDA, 1
    # elsewhere. Larger amortizes the host's work per step; a new request waits at most this
    # many forwards to start (twice as many with async_scheduling: the step queued ahead runs first).
    num_scheduler_steps: int | None = None
    # Async output processing (vLLM's name): after a multi-step step, its detokenization, stop
    # strings and deltas wait for the next multi-step step and run on the host while that step's
    # forwards run on the GPU, so the host's output work never leaves the GPU idle. Deltas come
    # one engine step later; a stop string ends its request a step later (the tokens computed
    # past it are dropped, never emitted).
    disable_async_output_proc: bool = False
    # Async scheduling (vLLM's name): with async output processing, a multi-step step's forwards
    # are followed on the device by those of the step predicted to come next, queued before this
    # step's tokens reach the host; the next step uses them when its plan is the predicted one
    # (llm_core/multi_step.py). The GPU then runs on while the host applies tokens and schedules.
    # Each request is given num_scheduler_steps look-ahead KV slots when they fit. Outputs do not
    # change. None: on on CUDA, off elsewhere (where the host and the model share the CPU).
    async_scheduling: bool | None = None

    def __post_init__(self) -> None:
        if self.num_scheduler_steps is not None and (type(self.num_scheduler_steps) is not int
                                                     or not 1 <= self.num_scheduler_steps <= 64):
            raise ValueError("num_scheduler_steps must be an integer in 1..64 (or None: automatic)")
        if self.max_num_seqs < 1:
            raise ValueError("max_num_seqs must be >= 1")
        if self.max_num_batched_tokens < 1:
            raise ValueError("max_num_batched_tokens must be >= 1")
        if self.max_num_encoder_input_tokens < 1:
            raise ValueError("max_num_encoder_input_tokens must be >= 1")
        if self.policy not in SCHEDULING_POLICIES:
            raise ValueError(f"scheduling policy must be one of {SCHEDULING_POLICIES}, not {self.policy!r}")
        if self.priority_aging_s is not None and self.priority_aging_s <= 0:
            raise ValueError("priority_aging_s must be > 0 or None")


@dataclass(frozen=True)
class ModelConfig:
    """Where the weights come from and how they run."""

    model: str
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None  # None: the checkpoint's max_position_embeddings
    seed: int = 0
    attention_backend: str = "auto"  # auto | torch | triton
    enforce_eager: bool = False
    # Linear layers of one input row (batch-1 decode) on the Triton GEMV kernel
    # (llm_core/layers/kernels/gemv.py) instead of cuBLAS: CUDA with Triton attention only.
    # None: on for GPUs of compute capability >= 9 (Hopper, where it was measured faster, with
    # programmatic dependent launch) at tensor-parallel size 1; off elsewhere.
    skinny_gemv: bool | None = None
    # With skinny_gemv: batch-1 decode steps on the fused decode path (llm_core/models/llama.py:
    # SiLU-and-mul inside the gate/up GEMV, rotary + KV store in one kernel; on the H100 equal or
    # slightly faster than the unfused kernels, docs/performance.md). None: on wherever skinny_gemv is.
    fused_decode: bool | None = None
    # With the fused decode path: batch-1 decode steps run every layer in one persistent kernel
    # (llm_core/layers/kernels/persistent_decode.py: grid barriers between the stages, the weight
    # stream crossing them). None: on wherever the fused decode path is.
    persistent_decode: bool | None = None
    # With the persistent kernel on Hopper: its warp-specialized form instead
    # (llm_core/layers/kernels/ws_decode.py: a producer warp streams the weights through a
    # shared-memory ring with TMA, the GEMVs on the tensor cores), where the model's sizes fit it
    # (bf16, no biases or sliding window). None: the engine's default (WS_DECODE_DEFAULT in
    # llm_core/models/llama.py).
    ws_decode: bool | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {self.dtype!r}")
        if self.attention_backend not in ("auto", "torch", "triton"):
            raise ValueError(f"attention_backend must be auto, torch or triton, not {self.attention_backend!r}")
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError("max_model_len must be >= 1")


@dataclass(frozen=True)
class MultiModalConfig:
    """Media inputs of a checkpoint with a vision or audio encoder (ignored by text-only models)."""

    embedding_cache_bytes: int = 1 << 30  # encoder outputs kept by content hash (LRU)
    video_pool_stride: int = 1  # average-pool each frame's patch grid by this (1: no pooling)

    def __post_init__(self) -> None:
        if type(self.embedding_cache_bytes) is not int or self.embedding_cache_bytes < 0:
            raise ValueError("embedding_cache_bytes must be an integer >= 0")
        if type(self.video_pool_stride) is not int or self.video_pool_stride < 1:
            raise ValueError("video_pool_stride must be an integer >= 1")


@dataclass(frozen=True)
class ProfilerConfig:
    """`profile_steps` > 0: write a Chrome trace (torch.profiler) of that many engine steps, from the
    first step that runs, into `profile_dir` (llm_core/profiler.py)."""

    profile_steps: int = 0
    profile_dir: str = ".cache/profiles"

    def __post_init__(self) -> None:
        if type(self.profile_steps) is not int or self.profile_steps < 0:
            raise ValueError("profile_steps must be an integer >= 0")
        if not self.profile_dir:
            raise ValueError("profile_dir must not be empty")


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    multimodal: MultiModalConfig = field(default_factory=MultiModalConfig)
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)
    speculative: dict[str, Any] | None = None
    # Ranks (GPUs, or CPU processes with gloo) that each hold a shard of the model (llm_core/distributed).
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        size = self.tensor_parallel_size
        if type(size) is not int or size < 1:
            raise ValueError(f"tensor_parallel_size must be an integer >= 1, got {size!r}")

    @classmethod
    def from_options(cls, model: str, **options: Any) -> "EngineConfig":
        """Build from flat options named like the CLI flags (max_num_seqs, block_size, ...).

        An unknown option is an error naming it, so a typo never passes silently.
        """
        aliases = {"scheduling_policy": "policy", "kv_cache_bytes": "cpu_kv_cache_bytes"}
        sections: dict[type, dict[str, Any]] = {ModelConfig: {}, CacheConfig: {}, SchedulerConfig: {},
                                                 MultiModalConfig: {}, ProfilerConfig: {}}
        top: dict[str, Any] = {}
        for key, value in options.items():
            name = aliases.get(key, key)
            for section in sections:
                if name in {f.name for f in fields(section)}:
                    sections[section][name] = value
                    break
            else:
                if name in ("speculative", "tensor_parallel_size"):
                    top[name] = value
                else:
                    raise TypeError(f"unknown engine option {key!r}")
        return cls(
            model=ModelConfig(model=model, **sections[ModelConfig]),
            cache=CacheConfig(**sections[CacheConfig]),
            scheduler=SchedulerConfig(**sections[SchedulerConfig]),
            multimodal=MultiModalConfig(**sections[MultiModalConfig]),
            profiler=ProfilerConfig(**sections[ProfilerConfig]),
            **top,
        )
