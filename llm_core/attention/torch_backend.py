"""Paged attention in plain torch: the CPU path and the reference the Triton kernels are tested against.

Clarity over speed: K/V are gathered per sequence from its block table and attention is a
masked softmax in fp32, one sequence at a time.
"""

from __future__ import annotations

import torch

from llm_core.attention.backend import AttentionBackend
from llm_core.attention.metadata import AttentionMetadata


def store_kv_reference(k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       slot_mapping: torch.Tensor) -> None:
    """Writes k[t], v[t] ([T, Hkv, D]) into the cache slot slot_mapping[t]; slot -1 is skipped."""
    num_kv_heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    is_stored = slot_mapping >= 0  # [T]
    slots = slot_mapping[is_stored]
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, k[is_stored].to(k_cache.dtype))
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, v[is_stored].to(v_cache.dtype))


def gather_context(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Returns the first seq_len cached rows of one sequence: [seq_len, Hkv, D]."""
    block_size = cache.shape[1]
    num_blocks = -(-seq_len // block_size)
    blocks = cache.index_select(0, block_table[:num_blocks].long())  # [nb, block_size, Hkv, D]
    return blocks.flatten(0, 1)[:seq_len]


def causal_mask(q_len: int, seq_len: int, sliding_window: int | None, device: torch.device) -> torch.Tensor:
    """[q_len, seq_len] bool, True where query row j (position seq_len - q_len + j) may see a key."""
    q_pos = torch.arange(seq_len - q_len, seq_len, device=device)[:, None]  # [q_len, 1]
    k_pos = torch.arange(seq_len, device=device)[None, :]  # [1, seq_len]
    allowed = k_pos <= q_pos
    if sliding_window is not None:
        allowed &= k_pos > q_pos - sliding_window
    return allowed


def paged_attention_reference(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                              meta: AttentionMetadata, scale: float,
                              sliding_window: int | None = None) -> torch.Tensor:
    """Causal attention of q [T, H, D] over keys already in the paged cache; returns [T, H, D].

    Reads only; this step's keys must already be stored. Rows of q outside every sequence
    (padding past query_start_loc[-1]) are returned as zeros.
    """
    num_heads, num_kv_heads = q.shape[1], k_cache.shape[2]
    group = num_heads // num_kv_heads
    out = torch.zeros_like(q)  # [T, H, D]
    starts = meta.query_start_loc_cpu
    for i, seq_len in enumerate(meta.seq_lens_cpu):
        q_seq = q[starts[i]:starts[i + 1]].float()  # [L, H, D]
        if q_seq.shape[0] == 0:
            continue
        k_seq = gather_context(k_cache, meta.block_tables[i], seq_len).float()  # [S, Hkv, D]
        v_seq = gather_context(v_cache, meta.block_tables[i], seq_len).float()
        k_seq = k_seq.repeat_interleave(group, dim=1)  # [S, H, D]
        v_seq = v_seq.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q_seq, k_seq) * scale  # [H, L, S]
        allowed = causal_mask(q_seq.shape[0], seq_len, sliding_window, q.device)
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[starts[i]:starts[i + 1]] = torch.einsum("hqk,khd->qhd", probs, v_seq).to(q.dtype)
    return out


class TorchAttentionBackend(AttentionBackend):
    """AttentionBackend in plain torch; runs on any device, loops over sequences on the host."""

    name = "torch"

    def forward(self, q, k, v, k_cache, v_cache, meta, scale, sliding_window=None):
        store_kv_reference(k, v, k_cache, v_cache, meta.slot_mapping)
        return paged_attention_reference(q, k_cache, v_cache, meta, scale, sliding_window)
