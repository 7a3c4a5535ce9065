"""Configuration of the paged KV cache.

Values found at run time (the number of KV blocks that fit on the device) are computed by
`cache.kv_sizing` and passed on; they are never written back into this config.
"""

from __future__ import annotations

from dataclasses import dataclass

# Largest block the attention kernels are asked to handle.
MAX_BLOCK_SIZE = 256

# "auto" means: store K and V in the model's own dtype.
KV_CACHE_DTYPES = ("auto", "float16", "bfloat16", "float32")


@dataclass(frozen=True)
class CacheConfig:
    """How the KV cache is laid out and how much memory it may take.

    block_size: tokens per KV block; a power of two in 1..MAX_BLOCK_SIZE.
    enable_prefix_caching: reuse full blocks whose token content (and media) was seen before.
    gpu_memory_utilization: fraction of device memory, in (0, 1], that the engine may use in
        all (weights, activations and KV cache); the KV cache gets what remains.
    cpu_kv_cache_bytes: KV budget in bytes when the engine runs on the CPU.
    kv_cache_dtype: one of KV_CACHE_DTYPES.
    """

    block_size: int = 16
    enable_prefix_caching: bool = True
    gpu_memory_utilization: float = 0.9
    cpu_kv_cache_bytes: int = 4 << 30
    kv_cache_dtype: str = "auto"

    def __post_init__(self) -> None:
        if not _is_int(self.block_size) or not 1 <= self.block_size <= MAX_BLOCK_SIZE:
            raise ValueError(
                f"block_size must be an integer in 1..{MAX_BLOCK_SIZE}, got {self.block_size!r}"
            )
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of two, got {self.block_size}")
        if not isinstance(self.enable_prefix_caching, bool):
            raise ValueError(
                f"enable_prefix_caching must be a bool, got {self.enable_prefix_caching!r}"
            )
        utilization = self.gpu_memory_utilization
        if isinstance(utilization, bool) or not isinstance(utilization, (int, float)):
            raise ValueError(f"gpu_memory_utilization must be a number, got {utilization!r}")
        if not 0.0 < utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {utilization}")
        if not _is_int(self.cpu_kv_cache_bytes) or self.cpu_kv_cache_bytes <= 0:
            raise ValueError(
                f"cpu_kv_cache_bytes must be a positive integer, got {self.cpu_kv_cache_bytes!r}"
            )
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(
                f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}; "
                f"got {self.kv_cache_dtype!r}"
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
