"""Tensor-parallel layers against plain torch layers: at size 1 in this process, at size 2 in two
spawned gloo processes (each rank checks its own shard; the parent collects what failed)."""

from __future__ import annotations

import datetime
import multiprocessing
import queue
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from llm_core.distributed.group import SINGLE, TensorParallelGroup
from llm_core.distributed.layers import (
    ColumnParallelLinear, MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear, VocabParallelEmbedding,
    vocab_parallel_logits,
)
from llm_core.distributed.sharding import check_tensor_parallel, kv_head_start, num_rank_kv_heads, rank_arch
from llm_core.models.arch_config import ArchConfig
from tests.helpers.checkpoints import text_config

HIDDEN, HEAD_DIM, NUM_TOKENS = 32, 8, 5
JOIN_TIMEOUT_S = 120  # a rank that hangs fails the test instead of stalling it


def load(layer: nn.Module, name: str, tensor: torch.Tensor, shard=None) -> None:
    """What the checkpoint loader does: this rank's part of `tensor` into its rows of the parameter."""
    param = getattr(layer, name)
    rows = slice(None) if shard is None else layer.shard_slice(shard)
    param.data[rows].copy_(layer.narrow_checkpoint(name, tensor, shard))


def check_column(tp: TensorParallelGroup, gen: torch.Generator) -> None:
    ref = nn.Linear(HIDDEN, 12, bias=True)
    x = torch.randn(NUM_TOKENS, HIDDEN, generator=gen)
    layer = ColumnParallelLinear(HIDDEN, 12, bias=True, tp=tp)
    load(layer, "weight", ref.weight)
    load(layer, "bias", ref.bias)
    share = 12 // tp.size
    torch.testing.assert_close(layer(x), ref(x)[:, tp.rank * share:(tp.rank + 1) * share])


def check_merged(tp: TensorParallelGroup, gen: torch.Generator) -> None:
    gate, up = nn.Linear(HIDDEN, 16, bias=False), nn.Linear(HIDDEN, 16, bias=False)
    x = torch.randn(NUM_TOKENS, HIDDEN, generator=gen)
    layer = MergedColumnParallelLinear(HIDDEN, [16, 16], bias=False, tp=tp)
    load(layer, "weight", gate.weight, 0)
    load(layer, "weight", up.weight, 1)
    share = 16 // tp.size
    rank_cols = slice(tp.rank * share, (tp.rank + 1) * share)
    got_gate, got_up = layer(x).split([share, share], dim=-1)
    torch.testing.assert_close(got_gate, gate(x)[:, rank_cols])
    torch.testing.assert_close(got_up, up(x)[:, rank_cols])


def check_qkv(tp: TensorParallelGroup, gen: torch.Generator, num_heads: int, num_kv_heads: int) -> None:
    """Each rank's q heads, and the KV heads those q heads read under GQA (split or replicated)."""
    q_ref = nn.Linear(HIDDEN, num_heads * HEAD_DIM)
    k_ref, v_ref = nn.Linear(HIDDEN, num_kv_heads * HEAD_DIM), nn.Linear(HIDDEN, num_kv_heads * HEAD_DIM)
    x = torch.randn(NUM_TOKENS, HIDDEN, generator=gen)
    layer = QKVParallelLinear(HIDDEN, HEAD_DIM, num_heads, num_kv_heads, bias=True, tp=tp)
    for shard, ref in (("q", q_ref), ("k", k_ref), ("v", v_ref)):
        load(layer, "weight", ref.weight, shard)
        load(layer, "bias", ref.bias, shard)
    h, hkv = layer.num_rank_heads, layer.num_rank_kv_heads
    assert hkv == num_rank_kv_heads(num_kv_heads, tp.size)
    q, k, v = layer(x).split([h * HEAD_DIM, hkv * HEAD_DIM, hkv * HEAD_DIM], dim=-1)
    q_heads = q_ref(x).view(NUM_TOKENS, num_heads, HEAD_DIM)
    k_heads = k_ref(x).view(NUM_TOKENS, num_kv_heads, HEAD_DIM)
    v_heads = v_ref(x).view(NUM_TOKENS, num_kv_heads, HEAD_DIM)
    torch.testing.assert_close(q.view(NUM_TOKENS, h, HEAD_DIM), q_heads[:, tp.rank * h:(tp.rank + 1) * h])
    group = num_heads // num_kv_heads
    first_kv = (tp.rank * h) // group  # the KV head that this rank's first q head reads
    assert first_kv == kv_head_start(num_kv_heads, tp.size, tp.rank)
    torch.testing.assert_close(k.view(NUM_TOKENS, hkv, HEAD_DIM), k_heads[:, first_kv:first_kv + hkv])
    torch.testing.assert_close(v.view(NUM_TOKENS, hkv, HEAD_DIM), v_heads[:, first_kv:first_kv + hkv])


def check_row(tp: TensorParallelGroup, gen: torch.Generator) -> None:
    ref = nn.Linear(16, HIDDEN, bias=True)
    x = torch.randn(NUM_TOKENS, 16, generator=gen)
    layer = RowParallelLinear(16, HIDDEN, bias=True, tp=tp)
    load(layer, "weight", ref.weight)
    load(layer, "bias", ref.bias)
    share = 16 // tp.size
    torch.testing.assert_close(layer(x[:, tp.rank * share:(tp.rank + 1) * share]), ref(x))


def check_vocab(tp: TensorParallelGroup, gen: torch.Generator) -> None:
    """A vocabulary of 13 (padded to 7 rows a rank at size 2): embedding and gathered logits."""
    ref = nn.Embedding(13, HIDDEN)
    ids = torch.tensor([0, 6, 7, 12, 3, 12, 9])
    layer = VocabParallelEmbedding(13, HIDDEN, tp=tp)
    load(layer, "weight", ref.weight)
    torch.testing.assert_close(layer(ids), ref(ids))
    hidden = torch.randn(NUM_TOKENS, HIDDEN, generator=gen)
    logits = vocab_parallel_logits(hidden, layer.weight, 13, tp)
    if tp.is_driver:
        assert logits.dtype == torch.float32 and logits.shape == (NUM_TOKENS, 13)
        torch.testing.assert_close(logits, F.linear(hidden, ref.weight))
    else:  # the rank's own shard of the padded vocabulary (13..14 are padding rows)
        torch.testing.assert_close(logits[:, :13 - layer.vocab_start],
                                   F.linear(hidden, ref.weight[layer.vocab_start:]))


def check_all(tp: TensorParallelGroup) -> None:
    gen = torch.Generator().manual_seed(1)  # the same inputs on every rank
    torch.manual_seed(0)  # the same reference weights on every rank
    check_column(tp, gen)
    check_merged(tp, gen)
    check_qkv(tp, gen, num_heads=4, num_kv_heads=2)  # KV heads split
    check_qkv(tp, gen, num_heads=4, num_kv_heads=1)  # one KV head, replicated at size 2
    check_row(tp, gen)
    check_vocab(tp, gen)


def _run_rank(rank: int, size: int, port: int, results) -> None:
    """Spawn target: join a gloo group, run every check, report (rank, traceback or None)."""
    try:
        store = dist.TCPStore("127.0.0.1", port, size, is_master=False, timeout=datetime.timedelta(seconds=60))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=size,
                                timeout=datetime.timedelta(seconds=60))
        try:
            check_all(TensorParallelGroup(rank, size))
        finally:
            dist.destroy_process_group()
        results.put((rank, None))
    except BaseException:
        results.put((rank, traceback.format_exc()))


def test_layers_at_size_1_are_plain_torch_layers():
    check_all(SINGLE)
    # The same parameters as nn.Linear / nn.Embedding, and no process group needed.
    layer = QKVParallelLinear(HIDDEN, HEAD_DIM, 4, 2, bias=True)
    assert [(n, tuple(p.shape)) for n, p in layer.named_parameters()] == [("weight", (64, HIDDEN)), ("bias", (64,))]
    assert tuple(RowParallelLinear(16, HIDDEN, bias=False).weight.shape) == (HIDDEN, 16)
    assert not dist.is_initialized()


def test_layers_split_over_two_gloo_ranks():
    size = 2
    store = dist.TCPStore("127.0.0.1", 0, size + 1, is_master=True, timeout=datetime.timedelta(seconds=60),
                          wait_for_workers=False)
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_run_rank, args=(rank, size, store.port, results)) for rank in range(size)]
    for proc in procs:
        proc.start()
    try:
        reports = dict(results.get(timeout=JOIN_TIMEOUT_S) for _ in range(size))
    except queue.Empty:
        reports = {}
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        results.close()
        results.join_thread()
    assert set(reports) == set(range(size)), "a rank did not report within the timeout"
    failures = {rank: error for rank, error in reports.items() if error is not None}
    assert not failures, "\n".join(f"rank {rank}:\n{error}" for rank, error in failures.items())
    assert all(proc.exitcode == 0 for proc in procs)


@pytest.mark.parametrize("size, overrides, message", [
    (3, {}, "num_attention_heads=4"),
    (4, {"num_key_value_heads": 3, "num_attention_heads": 12, "hidden_size": 96}, "num_key_value_heads=3"),
    (2, {"intermediate_size": 129}, "intermediate_size=129"),
])
def test_shapes_that_do_not_split_are_refused(size, overrides, message):
    config = text_config("llama", **overrides).to_dict()
    arch = ArchConfig.from_dict({**config, "architectures": ["LlamaForCausalLM"]})
    with pytest.raises(ValueError, match=message):
        check_tensor_parallel(arch, size)


def test_rank_arch_holds_a_share_of_the_heads():
    config = {**text_config("llama").to_dict(), "architectures": ["LlamaForCausalLM"]}
    arch = ArchConfig.from_dict(config)  # 4 heads, 2 KV heads
    assert rank_arch(arch, 1) is arch
    assert (rank_arch(arch, 2).num_heads, rank_arch(arch, 2).num_kv_heads) == (2, 1)
    assert (rank_arch(arch, 4).num_heads, rank_arch(arch, 4).num_kv_heads) == (1, 1)  # KV heads replicated
    assert [kv_head_start(2, 4, rank) for rank in range(4)] == [0, 0, 1, 1]
