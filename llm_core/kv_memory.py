"""How many KV blocks fit: from free device memory on CUDA, from a byte budget on CPU."""

from __future__ import annotations

import logging

import torch

from cache.config import CacheConfig
from cache.kv_sizing import kv_cache_bytes_per_block, num_blocks_for_budget
from llm_core.models.arch_config import ArchConfig

logger = logging.getLogger(__name__)


def kv_budget_bytes(cache: CacheConfig, device: torch.device, peak_activation_bytes: int = 0) -> int:
    """Bytes the KV cache may take.

    CUDA: gpu_memory_utilization of the device's total memory, less what other processes
    hold and less this process's peak (weights + activations of a profiling step). CPU:
    cpu_kv_cache_bytes.
    """
    if device.type != "cuda":
        return cache.cpu_kv_cache_bytes
    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    used_by_others = total - free - reserved
    budget = int(total * cache.gpu_memory_utilization) - used_by_others - max(peak_activation_bytes, reserved)
    if budget <= 0:
        raise RuntimeError(f"no GPU memory left for the KV cache: {total / 2**30:.1f} GiB total, "
                           f"gpu_memory_utilization={cache.gpu_memory_utilization}, weights and activations "
                           f"{peak_activation_bytes / 2**30:.1f} GiB, other processes {used_by_others / 2**30:.1f} GiB")
    return budget


def plan_num_blocks(arch: ArchConfig, cache: CacheConfig, dtype: torch.dtype, budget_bytes: int, *,
                    max_model_len: int, max_num_seqs: int) -> int:
    """Blocks that fit the budget, capped at what max_num_seqs full-length requests could use."""
    per_block = kv_cache_bytes_per_block(cache.block_size, arch.num_layers, arch.num_kv_heads, arch.head_dim,
                                         torch.empty((), dtype=dtype).element_size())
    num_blocks = num_blocks_for_budget(budget_bytes, per_block)
    blocks_per_seq = -(-max_model_len // cache.block_size)
    num_blocks = min(num_blocks, max_num_seqs * blocks_per_seq + 1)
    if num_blocks - 1 < blocks_per_seq:
        raise ValueError(f"the KV cache holds {(num_blocks - 1) * cache.block_size} tokens, fewer than "
                         f"max_model_len={max_model_len}: give it more memory or lower max_model_len")
    logger.info("KV cache: %d blocks of %d tokens (%.1f MiB)", num_blocks, cache.block_size,
                num_blocks * per_block / 2**20)
    return num_blocks
