"""How a Llama-family model splits over tensor-parallel ranks, and the checks that it can.

- Attention: each rank holds num_heads / tp query heads. KV heads split the same way when
  num_kv_heads is a multiple of tp; when tp is a multiple of num_kv_heads (tp > num_kv_heads)
  each KV head is replicated on tp / num_kv_heads ranks, one KV head per rank (the query heads of
  a rank always read one group's KV head). Other head counts are an error.
- MLP: intermediate_size / tp columns of gate/up, the same rows of down.
- Vocabulary: ceil(vocab_size / tp) rows per rank, the last rank padded with zero rows; the
  driver trims gathered logits back to vocab_size.
"""

from __future__ import annotations

import dataclasses

from llm_core.models.arch_config import ArchConfig


def num_rank_kv_heads(num_kv_heads: int, tp_size: int) -> int:
    """KV heads each rank holds (1 when they are replicated)."""
    return max(1, num_kv_heads // tp_size)


def kv_head_start(num_kv_heads: int, tp_size: int, rank: int) -> int:
    """Index of the first KV head of `rank` in the checkpoint."""
    if num_kv_heads >= tp_size:
        return rank * (num_kv_heads // tp_size)
    return rank // (tp_size // num_kv_heads)


def num_rank_vocab(vocab_size: int, tp_size: int) -> int:
    """Rows of the (padded) vocabulary each rank holds."""
    return -(-vocab_size // tp_size)


def check_tensor_parallel(arch: ArchConfig, tp_size: int) -> None:
    """Raise ValueError naming the first dimension that does not split over tp_size ranks."""
    if tp_size == 1:
        return
    if arch.num_heads % tp_size:
        raise ValueError(f"tensor_parallel_size={tp_size} must divide num_attention_heads={arch.num_heads}")
    if arch.num_kv_heads % tp_size and tp_size % arch.num_kv_heads:
        raise ValueError(f"tensor_parallel_size={tp_size} must divide num_key_value_heads={arch.num_kv_heads} "
                         f"or be a multiple of it")
    if arch.intermediate_size % tp_size:
        raise ValueError(f"tensor_parallel_size={tp_size} must divide intermediate_size={arch.intermediate_size}")


def rank_arch(arch: ArchConfig, tp_size: int) -> ArchConfig:
    """The attention shape one rank holds (its share of the heads, hence of the KV cache): what
    sizes each rank's KV cache. Every other field is the whole model's."""
    if tp_size == 1:
        return arch
    return dataclasses.replace(arch, num_heads=arch.num_heads // tp_size,
                               num_kv_heads=num_rank_kv_heads(arch.num_kv_heads, tp_size))
