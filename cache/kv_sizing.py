"""How many KV blocks fit in a byte budget. Pure arithmetic: the runner measures the budget
(free device memory, or CacheConfig.cpu_kv_cache_bytes) and passes the result on."""

from __future__ import annotations

# Bytes per element of each KV cache dtype name (CacheConfig.kv_cache_dtype, or the model's
# dtype when that is "auto").
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}


def kv_dtype_bytes(kv_cache_dtype: str, model_dtype: str) -> int:
    """Element size of the KV cache; "auto" means the model's dtype (e.g. "bfloat16")."""
    name = model_dtype if kv_cache_dtype == "auto" else kv_cache_dtype
    name = name.removeprefix("torch.")
    if name not in _DTYPE_BYTES:
        raise ValueError(
            f"unsupported KV cache dtype {name!r}; expected one of {', '.join(_DTYPE_BYTES)}"
        )
    return _DTYPE_BYTES[name]


def kv_cache_bytes_per_block(
    block_size: int, num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int
) -> int:
    """Bytes one block takes across all layers, K and V together."""
    for name, value in (
        ("block_size", block_size),
        ("num_layers", num_layers),
        ("num_kv_heads", num_kv_heads),
        ("head_dim", head_dim),
        ("dtype_bytes", dtype_bytes),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return 2 * block_size * num_layers * num_kv_heads * head_dim * dtype_bytes


def num_blocks_for_budget(budget_bytes: int, bytes_per_block: int) -> int:
    """Blocks that fit in `budget_bytes`, the null block included. Raises ValueError when
    fewer than 2 fit (the null block and one usable block)."""
    if bytes_per_block <= 0:
        raise ValueError(f"bytes_per_block must be > 0, got {bytes_per_block}")
    num_blocks = max(budget_bytes, 0) // bytes_per_block
    if num_blocks < 2:
        raise ValueError(
            f"the KV cache budget of {budget_bytes} bytes holds {num_blocks} blocks of "
            f"{bytes_per_block} bytes, but at least 2 are needed; free device memory, raise "
            "--gpu-memory-utilization, or lower --block-size / --max-model-len"
        )
    return num_blocks
