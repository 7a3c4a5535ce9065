"""Shared fixtures for the attention tests: a device, a seeded generator, a paged-batch builder.

On a machine without CUDA, Triton kernels run in the interpreter on CPU tensors; the variable
must be set before triton is imported, which is why it is set here at import time.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from llm_core.attention.metadata import AttentionMetadata  # noqa: E402


@dataclass
class PagedBatch:
    """One step of a batch: this step's q/k/v, a cache already holding the earlier context, meta.

    contexts_k/v[i] is sequence i's whole context [seq_len, Hkv, D] (this step's keys last),
    for dense references that know nothing of paging.
    """

    q: torch.Tensor  # [T, H, D]
    k: torch.Tensor  # [T, Hkv, D]
    v: torch.Tensor
    k_cache: torch.Tensor  # [num_blocks, block_size, Hkv, D]
    v_cache: torch.Tensor
    meta: AttentionMetadata
    contexts_k: list[torch.Tensor]
    contexts_v: list[torch.Tensor]


def build_paged_batch(specs: list[tuple[int, int]], *, num_heads: int, num_kv_heads: int, head_dim: int,
                      block_size: int, dtype: torch.dtype, device: str, gen: torch.Generator,
                      num_padding_tokens: int = 0) -> PagedBatch:
    """specs: (seq_len, q_len) per sequence. Blocks are a random permutation of 1..num_blocks-1;
    block 0 holds NaN and unused slots hold garbage, so a kernel that reads either fails."""
    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype=dtype, device=device)

    blocks_per_seq = [-(-seq_len // block_size) for seq_len, _ in specs]
    num_blocks = 1 + sum(blocks_per_seq) + 2
    order = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()
    k_cache = randn(num_blocks, block_size, num_kv_heads, head_dim) * 100
    v_cache = randn(num_blocks, block_size, num_kv_heads, head_dim) * 100
    k_cache[0] = float("nan")
    v_cache[0] = float("nan")
    tables, contexts_k, contexts_v, q_rows, k_rows, v_rows, slots = [], [], [], [], [], [], []
    for (seq_len, q_len), num in zip(specs, blocks_per_seq):
        table, order = order[:num], order[num:]
        tables.append(table)
        ctx_k, ctx_v = randn(seq_len, num_kv_heads, head_dim), randn(seq_len, num_kv_heads, head_dim)
        contexts_k.append(ctx_k)
        contexts_v.append(ctx_v)
        seq_slots = [table[p // block_size] * block_size + p % block_size for p in range(seq_len)]
        for p in range(seq_len - q_len):  # earlier context: already cached
            k_cache.view(-1, num_kv_heads, head_dim)[seq_slots[p]] = ctx_k[p]
            v_cache.view(-1, num_kv_heads, head_dim)[seq_slots[p]] = ctx_v[p]
        q_rows.append(randn(q_len, num_heads, head_dim))
        k_rows.append(ctx_k[seq_len - q_len:])
        v_rows.append(ctx_v[seq_len - q_len:])
        slots.extend(seq_slots[seq_len - q_len:])
    q_rows.append(randn(num_padding_tokens, num_heads, head_dim))
    k_rows.append(randn(num_padding_tokens, num_kv_heads, head_dim))
    v_rows.append(randn(num_padding_tokens, num_kv_heads, head_dim))
    slots.extend([-1] * num_padding_tokens)
    max_blocks = max(blocks_per_seq)
    query_start_loc = [0]
    for _, q_len in specs:
        query_start_loc.append(query_start_loc[-1] + q_len)
    seq_lens = [seq_len for seq_len, _ in specs]
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        query_start_loc=torch.tensor(query_start_loc, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device),
        block_tables=torch.tensor([t + [0] * (max_blocks - len(t)) for t in tables], dtype=torch.int32, device=device),
        max_query_len=max(q_len for _, q_len in specs),
        max_seq_len=max(seq_lens),
        query_start_loc_cpu=tuple(query_start_loc),
        seq_lens_cpu=tuple(seq_lens),
    )
    return PagedBatch(torch.cat(q_rows), torch.cat(k_rows), torch.cat(v_rows), k_cache, v_cache, meta,
                      contexts_k, contexts_v)


@pytest.fixture
def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def gen() -> torch.Generator:
    """A generator seeded from a fresh random seed, printed so that a failure can be replayed."""
    seed = random.randrange(2**31)
    print(f"attention test seed: {seed}")
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def make_batch(device, gen):
    def make(specs, **kwargs) -> PagedBatch:
        return build_paged_batch(specs, device=device, gen=gen, **kwargs)
    return make
