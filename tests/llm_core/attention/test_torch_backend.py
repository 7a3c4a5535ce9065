"""The torch backend (the reference for the Triton kernels) against dense attention without paging."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llm_core.attention import TorchAttentionBackend, get_attention_backend, paged_attention_reference

# (seq_len, q_len): pure prefill, prefix-cache hit / later chunk, two decode rows, one-token prompt
MIXED = [(13, 13), (21, 5), (9, 1), (30, 1), (1, 1)]


def dense_attention(batch, scale: float, sliding_window: int | None = None) -> torch.Tensor:
    """Causal attention per sequence over its contiguous context, in float64: [T_real, H, D]."""
    num_heads, num_kv_heads = batch.q.shape[1], batch.k.shape[1]
    kv_head_of = torch.arange(num_heads) // (num_heads // num_kv_heads)
    starts, outs = batch.meta.query_start_loc_cpu, []
    for i, (ctx_k, ctx_v) in enumerate(zip(batch.contexts_k, batch.contexts_v)):
        q = batch.q[starts[i]:starts[i + 1]].double().cpu().transpose(0, 1)  # [H, L, D]
        k = ctx_k.double().cpu()[:, kv_head_of].transpose(0, 1)  # [H, S, D]
        v = ctx_v.double().cpu()[:, kv_head_of].transpose(0, 1)
        q_len, seq_len = q.shape[1], k.shape[1]
        q_pos = torch.arange(seq_len - q_len, seq_len)[:, None]
        k_pos = torch.arange(seq_len)[None, :]
        mask = k_pos <= q_pos
        if sliding_window is not None:
            mask &= k_pos > q_pos - sliding_window
        outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("block_size", [1, 4, 16])
@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_forward_matches_dense_attention(make_batch, block_size, num_heads, num_kv_heads):
    batch = make_batch(MIXED, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=32,
                       block_size=block_size, dtype=torch.float32, num_padding_tokens=2)
    k_before = batch.k_cache.clone()
    out = TorchAttentionBackend().forward(batch.q, batch.k, batch.v, batch.k_cache, batch.v_cache, batch.meta, 0.3)
    num_real = batch.meta.query_start_loc_cpu[-1]
    assert out.shape == batch.q.shape and out.dtype == batch.q.dtype
    torch.testing.assert_close(out[:num_real].double().cpu(), dense_attention(batch, 0.3), atol=1e-4, rtol=1e-4)
    assert not out[num_real:].any()
    # this step's keys landed at their slots; nothing else changed (padding tokens have slot -1)
    flat_k, flat_before = batch.k_cache.view(-1, num_kv_heads, 32), k_before.view(-1, num_kv_heads, 32)
    slots = batch.meta.slot_mapping[:num_real]
    torch.testing.assert_close(flat_k[slots], batch.k[:num_real])
    untouched = torch.ones(flat_k.shape[0], dtype=torch.bool, device=flat_k.device)
    untouched[slots] = False
    torch.testing.assert_close(flat_k[untouched], flat_before[untouched], equal_nan=True)


@pytest.mark.parametrize("sliding_window", [1, 3, 8])
def test_sliding_window_matches_dense_attention(make_batch, sliding_window):
    batch = make_batch(MIXED, num_heads=4, num_kv_heads=2, head_dim=32, block_size=4, dtype=torch.float32)
    out = TorchAttentionBackend().forward(batch.q, batch.k, batch.v, batch.k_cache, batch.v_cache, batch.meta,
                                          0.2, sliding_window=sliding_window)
    torch.testing.assert_close(out.double().cpu(), dense_attention(batch, 0.2, sliding_window), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_dtype_and_accuracy(make_batch, dtype):
    batch = make_batch(MIXED, num_heads=4, num_kv_heads=2, head_dim=64, block_size=16, dtype=dtype)
    out = TorchAttentionBackend().forward(batch.q, batch.k, batch.v, batch.k_cache, batch.v_cache, batch.meta, 0.125)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double().cpu(), dense_attention(batch, 0.125), atol=2e-2, rtol=2e-2)


def test_reference_only_reads_the_cache(make_batch):
    batch = make_batch([(9, 1), (17, 1)], num_heads=2, num_kv_heads=1, head_dim=32, block_size=4,
                       dtype=torch.float32)
    batch.k_cache.view(-1, 1, 32)[batch.meta.slot_mapping] = batch.k
    batch.v_cache.view(-1, 1, 32)[batch.meta.slot_mapping] = batch.v
    stored = batch.k_cache.clone()
    out = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.5)
    torch.testing.assert_close(out.double().cpu(), dense_attention(batch, 0.5), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.k_cache, stored, equal_nan=True)


def test_get_attention_backend():
    assert get_attention_backend("auto", "cpu").name == "torch"
    assert get_attention_backend("torch", "cpu").name == "torch"
    with pytest.raises(ValueError, match="unknown attention backend"):
        get_attention_backend("flash", "cpu")
