"""Triton kernels against the torch reference (in the interpreter on CPU, compiled on CUDA)."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

from llm_core.attention import get_attention_backend, paged_attention_reference  # noqa: E402
from llm_core.attention.kernels import decode_attention, prefill_attention, store_kv  # noqa: E402
from llm_core.attention.torch_backend import store_kv_reference  # noqa: E402
from llm_core.attention.metadata import AttentionMetadata  # noqa: E402

# (seq_len, q_len): pure prefill, two prefix-cache hits (one past two whole tiles), decode row, one-token prompt
MIXED = [(11, 11), (35, 4), (19, 6), (14, 1), (1, 1)]
DECODE = [(37, 1), (5, 1), (70, 1)]
FP32 = dict(atol=1e-4, rtol=1e-4)
# The interpreter multiplies bfloat16 bit patterns in tl.dot (triton-lang/triton#11584, unsupported).
BF16 = pytest.param(torch.bfloat16, 1.6e-2, marks=pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") == "1", reason="the Triton interpreter has no bfloat16 tl.dot"))


def stored(batch):
    """The batch with this step's k/v written by the torch reference (kernels only read)."""
    store_kv_reference(batch.k, batch.v, batch.k_cache, batch.v_cache, batch.meta.slot_mapping)
    return batch


def test_store_kv_matches_reference(make_batch):
    batch = make_batch(MIXED, num_heads=4, num_kv_heads=2, head_dim=32, block_size=4, dtype=torch.float32,
                       num_padding_tokens=3)
    fused = torch.cat([batch.k, batch.v], dim=-1)  # k and v as strided views, as the model slices them
    k, v = fused[..., :32], fused[..., 32:]
    k_ref, v_ref = batch.k_cache.clone(), batch.v_cache.clone()
    store_kv_reference(k, v, k_ref, v_ref, batch.meta.slot_mapping)
    store_kv(k, v, batch.k_cache, batch.v_cache, batch.meta.slot_mapping)
    torch.testing.assert_close(batch.k_cache, k_ref, atol=0, rtol=0, equal_nan=True)
    torch.testing.assert_close(batch.v_cache, v_ref, atol=0, rtol=0, equal_nan=True)


def test_store_kv_rejects_mismatched_dtype(make_batch):
    batch = make_batch([(4, 4)], num_heads=2, num_kv_heads=2, head_dim=32, block_size=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="dtype mismatch"):
        store_kv(batch.k.half(), batch.v.half(), batch.k_cache, batch.v_cache, batch.meta.slot_mapping)


@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 2), (4, 1)])
def test_prefill_kernel_mixed_batch(make_batch, block_size, num_heads, num_kv_heads):
    batch = stored(make_batch(MIXED, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=32,
                              block_size=block_size, dtype=torch.float32))
    expected = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25)
    out = prefill_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25, block_m=16, tile_n=16)
    torch.testing.assert_close(out, expected, **FP32)


@pytest.mark.parametrize("head_dim,num_heads,num_kv_heads", [(64, 4, 4), (80, 3, 1)])
def test_prefill_kernel_head_dims_and_groups(make_batch, head_dim, num_heads, num_kv_heads):
    # 80 pads to 128 lanes; a group of 3 pads to 4 rows per query row
    batch = stored(make_batch([(9, 4), (6, 1)], num_heads=num_heads, num_kv_heads=num_kv_heads,
                              head_dim=head_dim, block_size=8, dtype=torch.float32))
    expected = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1)
    out = prefill_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.1, block_m=16, tile_n=16)
    torch.testing.assert_close(out, expected, **FP32)


@pytest.mark.parametrize("sliding_window", [1, 5])
def test_prefill_kernel_sliding_window(make_batch, sliding_window):
    batch = stored(make_batch(MIXED, num_heads=2, num_kv_heads=1, head_dim=32, block_size=4, dtype=torch.float32))
    expected = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.3, sliding_window)
    out = prefill_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.3, sliding_window=sliding_window,
                            block_m=16, tile_n=16)
    torch.testing.assert_close(out, expected, **FP32)


@pytest.mark.parametrize("num_splits", [1, 3, 5])
@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, 2), (3, 1)])
def test_decode_kernel_splits(make_batch, num_splits, num_heads, num_kv_heads):
    batch = stored(make_batch(DECODE, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=32,
                              block_size=4, dtype=torch.float32))
    expected = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25)
    out = decode_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25, num_splits=num_splits, tile_n=16)
    torch.testing.assert_close(out, expected, **FP32)


@pytest.mark.parametrize("counter_slots,max_self_splits", [(None, None), (2, None), (None, 2)])
def test_decode_splits_combined_in_kernel_or_by_reduce_kernel(make_batch, monkeypatch, counter_slots,
                                                               max_self_splits):
    """The last split of each (sequence, kv head) combines the splits and leaves its arrival
    counter at zero for the next launch; with fewer counter slots than groups (2 slots: 3
    sequences x 2 kv heads) or more splits than SELF_REDUCE_MAX_SPLITS the reduce kernel does it.
    Twice, so a counter left non-zero fails."""
    import importlib
    module = importlib.import_module("llm_core.attention.kernels.decode_attention")
    from llm_core.layers.kernels.counters import arrival_counters
    if counter_slots is not None:
        monkeypatch.setattr(module, "COUNTER_SLOTS", counter_slots)
    if max_self_splits is not None:
        monkeypatch.setattr(module, "SELF_REDUCE_MAX_SPLITS", max_self_splits)
    batch = stored(make_batch(DECODE, num_heads=4, num_kv_heads=2, head_dim=32, block_size=4, dtype=torch.float32))
    expected = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25)
    for _ in range(2):
        out = decode_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25, num_splits=3, tile_n=16)
        torch.testing.assert_close(out, expected, **FP32)
    assert not arrival_counters(batch.q.device).any()


def test_decode_kernel_sliding_window(make_batch):
    batch = stored(make_batch(DECODE, num_heads=2, num_kv_heads=1, head_dim=32, block_size=16, dtype=torch.float32))
    expected = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25, 20)
    out = decode_attention(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25, sliding_window=20,
                           num_splits=4, tile_n=16)
    torch.testing.assert_close(out, expected, **FP32)


@pytest.mark.parametrize("specs", [MIXED, DECODE], ids=["mixed", "decode"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 2e-3), BF16])
def test_triton_backend_matches_torch_backend(make_batch, specs, dtype, tol):
    batch = make_batch(specs, num_heads=4, num_kv_heads=2, head_dim=32, block_size=4, dtype=dtype,
                       num_padding_tokens=0 if specs is DECODE else 2)
    caches = batch.k_cache.clone(), batch.v_cache.clone()
    expected = get_attention_backend("torch", "cpu").forward(batch.q, batch.k, batch.v, *caches, batch.meta, 0.2)
    out = get_attention_backend("triton", batch.q.device).forward(
        batch.q, batch.k, batch.v, batch.k_cache, batch.v_cache, batch.meta, 0.2)
    assert out.dtype == dtype
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)
    torch.testing.assert_close(batch.k_cache, caches[0], atol=0, rtol=0, equal_nan=True)


def test_decode_kernel_as_a_cuda_graph_replays_it(make_batch):
    """A captured decode launch: num_splits and meta.max_seq_len fixed for the longest context a
    replay may see, block tables wider than needed, and padding sequences of length 0 (which
    must come out as zero rows, not NaN, even though block 0 of the cache holds NaN)."""
    batch = stored(make_batch(DECODE, num_heads=4, num_kv_heads=2, head_dim=32, block_size=4, dtype=torch.float32))
    expected = paged_attention_reference(batch.q, batch.k_cache, batch.v_cache, batch.meta, 0.25)
    meta, num_padding = batch.meta, 2
    num_seqs = meta.num_seqs + num_padding
    device = batch.q.device
    block_tables = torch.zeros(num_seqs, meta.block_tables.shape[1] + 3, dtype=torch.int32, device=device)
    block_tables[:meta.num_seqs, :meta.block_tables.shape[1]] = meta.block_tables
    graph_meta = AttentionMetadata(
        slot_mapping=torch.cat([meta.slot_mapping, torch.full((num_padding,), -1, dtype=torch.int64, device=device)]),
        query_start_loc=torch.arange(num_seqs + 1, dtype=torch.int32, device=device),
        seq_lens=torch.cat([meta.seq_lens, torch.zeros(num_padding, dtype=torch.int32, device=device)]),
        block_tables=block_tables, max_query_len=1, max_seq_len=4 * meta.max_seq_len,
        query_start_loc_cpu=tuple(range(num_seqs + 1)), seq_lens_cpu=(4 * meta.max_seq_len,) * num_seqs)
    q = torch.cat([batch.q, torch.randn(num_padding, 4, 32, device=device)])
    for num_splits in (1, 6):
        out = decode_attention(q, batch.k_cache, batch.v_cache, graph_meta, 0.25, num_splits=num_splits, tile_n=16)
        torch.testing.assert_close(out[:meta.num_seqs], expected, **FP32)
        assert torch.equal(out[meta.num_seqs:], torch.zeros_like(out[meta.num_seqs:]))
