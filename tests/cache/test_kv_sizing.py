"""Tests of cache/kv_sizing.py and cache/config.py."""

import pytest

from cache.config import CacheConfig
from cache.kv_sizing import kv_cache_bytes_per_block, kv_dtype_bytes, num_blocks_for_budget


def test_bytes_per_block_counts_k_and_v_over_all_layers():
    # Llama-3.2-1B shape: 16 layers, 8 KV heads, head_dim 64, bf16.
    assert kv_cache_bytes_per_block(16, 16, 8, 64, 2) == 2 * 16 * 16 * 8 * 64 * 2
    with pytest.raises(ValueError, match="num_kv_heads"):
        kv_cache_bytes_per_block(16, 16, 0, 64, 2)


def test_num_blocks_for_budget_rounds_down_and_needs_two_blocks():
    assert num_blocks_for_budget(1000, 100) == 10
    assert num_blocks_for_budget(299, 100) == 2
    with pytest.raises(ValueError, match="at least 2"):
        num_blocks_for_budget(199, 100)
    with pytest.raises(ValueError, match="at least 2"):
        num_blocks_for_budget(-5, 100)


def test_kv_dtype_bytes_resolves_auto():
    assert kv_dtype_bytes("auto", "bfloat16") == 2
    assert kv_dtype_bytes("auto", "torch.float32") == 4
    assert kv_dtype_bytes("float16", "float32") == 2
    with pytest.raises(ValueError, match="unsupported KV cache dtype"):
        kv_dtype_bytes("auto", "int8")


def test_cache_config_defaults_and_validation():
    config = CacheConfig()
    assert (config.block_size, config.enable_prefix_caching) == (16, True)
    for kwargs, message in [
        ({"block_size": 0}, "block_size"),
        ({"block_size": 24}, "power of two"),
        ({"block_size": 512}, "block_size"),
        ({"gpu_memory_utilization": 0.0}, "gpu_memory_utilization"),
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"cpu_kv_cache_bytes": 0}, "cpu_kv_cache_bytes"),
        ({"kv_cache_dtype": "int4"}, "kv_cache_dtype"),
        ({"enable_prefix_caching": 1}, "enable_prefix_caching"),
    ]:
        with pytest.raises(ValueError, match=message):
            CacheConfig(**kwargs)
    assert CacheConfig(block_size=1, gpu_memory_utilization=1).block_size == 1
