"""The Llama family's fused decode path (llm_core/models/llama.py: GEMVs with RMSNorm / SiLU-and-mul
prologues and residual epilogues, rotary + KV store in one kernel) against the unfused layers, on
tiny random checkpoints the test saves itself.

Without CUDA the kernels run in the Triton interpreter (tiny shapes; PDL off); on a GPU the same
tests run on CUDA (PDL on Hopper).
"""

from __future__ import annotations

import json
import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from llm_core.attention.backend import get_attention_backend  # noqa: E402
from llm_core.attention.metadata import AttentionMetadata  # noqa: E402
from llm_core.distributed.layers import enable_skinny_kernels  # noqa: E402
from llm_core.models import llama  # noqa: E402
from llm_core.models.arch_config import ArchConfig  # noqa: E402
from llm_core.models.registry import build_model  # noqa: E402
from tests.helpers.checkpoints import make_text_checkpoint  # noqa: E402
from tests.helpers.hopper import ws_decode_runs_here  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BLOCK_SIZE = 16


def make_model(tmp_path, arch: str, dtype: torch.dtype, seed: int, **overrides):
    path = make_text_checkpoint(tmp_path / arch, arch, seed=seed, dtype=dtype, vocab_size=512,
                                num_hidden_layers=2, **overrides)
    cfg = ArchConfig.from_dict(json.loads((path / "config.json").read_text()))
    backend = get_attention_backend("triton", DEVICE)
    model = build_model(str(path), cfg, backend, dtype=dtype, device=DEVICE, max_position=256)
    return model, cfg


def meta_for(query_lens: list[int], seq_lens: list[int], tables: list[list[int]], pad_rows: int = 0):
    """Metadata of a step: sequence i runs its last query_lens[i] of seq_lens[i] positions;
    pad_rows extra rows (a CUDA graph's padding) store nothing and attend to nothing."""
    positions, slots = [], []
    for q, n, table in zip(query_lens, seq_lens, tables):
        for pos in range(n - q, n):
            positions.append(pos)
            slots.append(table[pos // BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE)
    q_lens, s_lens = list(query_lens) + [1] * pad_rows, list(seq_lens) + [0] * pad_rows
    positions += [0] * pad_rows
    slots += [-1] * pad_rows
    width = max(len(t) for t in tables)
    block_tables = [t + [0] * (width - len(t)) for t in tables] + [[0] * width] * pad_rows
    starts = [0]
    for q in q_lens:
        starts.append(starts[-1] + q)
    meta = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=DEVICE),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=DEVICE),
        seq_lens=torch.tensor(s_lens, dtype=torch.int32, device=DEVICE),
        block_tables=torch.tensor(block_tables, dtype=torch.int32, device=DEVICE),
        max_query_len=max(q_lens), max_seq_len=max(s_lens),
        query_start_loc_cpu=tuple(starts), seq_lens_cpu=tuple(s_lens))
    return torch.tensor(positions, dtype=torch.int64, device=DEVICE), meta


def empty_caches(cfg: ArchConfig, num_blocks: int, dtype: torch.dtype):
    shape = (num_blocks, BLOCK_SIZE, cfg.num_kv_heads, cfg.head_dim)
    return [(torch.zeros(shape, dtype=dtype, device=DEVICE), torch.zeros(shape, dtype=dtype, device=DEVICE))
            for _ in range(cfg.num_layers)]


def decode_both_ways(model, cfg, dtype, prompts, pad_rows=0, persistent=False, ws=False):
    """Prefills prompts (unfused), then one decode step of each sequence on the unfused and on the
    fused path (with persistent: the persistent layer kernel) over copies of the same caches:
    (hidden, caches) of each."""
    tables = [[2 * i, 2 * i + 1] for i in range(len(prompts))]
    caches = empty_caches(cfg, 2 * len(prompts), dtype)
    ids = torch.tensor([t for p in prompts for t in p], device=DEVICE)
    positions, meta = meta_for([len(p) for p in prompts], [len(p) for p in prompts], tables)
    model.fused_decode = False
    with torch.inference_mode():
        model(ids, positions, caches, meta)
        next_ids = torch.tensor([p[-1] for p in prompts] + [0] * pad_rows, device=DEVICE)
        positions, meta = meta_for([1] * len(prompts), [len(p) + 1 for p in prompts], tables, pad_rows)
        results = []
        for fused in (False, True):
            step_caches = [(k.clone(), v.clone()) for k, v in caches]
            enable_skinny_kernels(model, fused, fused_decode=fused, persistent_decode=persistent, ws_decode=ws)
            hidden = model(next_ids, positions, step_caches, meta)
            results.append((hidden, step_caches))
        enable_skinny_kernels(model, False)
    return results


# (checkpoint arch, config overrides): q/k/v biases (Qwen2); a sliding window shorter than the prompts (Mistral)
ARCHS = {"llama": ("llama", {}), "qwen2": ("qwen2", {}), "mistral-window-6": ("mistral", {"sliding_window": 6})}


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("num_seqs,pad_rows", [(1, 0), (1, 1), (2, 0)])
def test_fused_decode_equals_unfused_fp32(tmp_path, monkeypatch, arch, num_seqs, pad_rows):
    # The path is right for any number of rows; which steps take it is a speed choice.
    monkeypatch.setattr(llama, "FUSED_DECODE_MAX_ROWS", 2)
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    checkpoint_arch, overrides = ARCHS[arch]
    model, cfg = make_model(tmp_path, checkpoint_arch, torch.float32, seed, **overrides)
    if overrides.get("sliding_window"):
        assert cfg.sliding_window == overrides["sliding_window"]
    rng = random.Random(seed)
    prompts = [[rng.randrange(512) for _ in range(rng.randrange(3, 20))] for _ in range(num_seqs)]
    calls = []
    original = llama.LlamaForCausalLM._fused_decode_forward

    def spy(self, *args):
        calls.append(1)
        return original(self, *args)

    llama.LlamaForCausalLM._fused_decode_forward = spy
    try:
        (ref, ref_caches), (out, out_caches) = decode_both_ways(model, cfg, torch.float32, prompts, pad_rows)
    finally:
        llama.LlamaForCausalLM._fused_decode_forward = original
    assert calls == [1]  # the fused step took the fused path, the unfused one did not
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for (k, v), (k_ref, v_ref) in zip(out_caches, ref_caches):
        torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)
    if pad_rows:
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_persistent_decode_equals_unfused_fp32(tmp_path, arch):
    # One token: each layer as one persistent kernel (one program under the interpreter).
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    checkpoint_arch, overrides = ARCHS[arch]
    model, cfg = make_model(tmp_path, checkpoint_arch, torch.float32, seed, **overrides)
    assert model._persistent_capable
    rng = random.Random(seed)
    prompts = [[rng.randrange(512) for _ in range(rng.randrange(3, 31))]]  # two blocks of 16 hold it
    calls = []
    original = llama.LlamaForCausalLM._persistent_decode_forward

    def spy(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    llama.LlamaForCausalLM._persistent_decode_forward = spy
    try:
        (ref, ref_caches), (out, out_caches) = decode_both_ways(model, cfg, torch.float32, prompts, persistent=True)
    finally:
        llama.LlamaForCausalLM._persistent_decode_forward = original
    assert calls == [1]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for (k, v), (k_ref, v_ref) in zip(out_caches, ref_caches):
        torch.testing.assert_close(k, k_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(v, v_ref, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                    reason="the Triton interpreter has no bfloat16 tl.dot (attention; triton-lang/triton#11584)")
@pytest.mark.parametrize("persistent", [False, True])
def test_fused_decode_bf16_logits_close(tmp_path, persistent):
    seed = random.randrange(2**31)
    print(f"seed {seed}")
    model, cfg = make_model(tmp_path, "llama", torch.bfloat16, seed)
    rng = random.Random(seed)
    prompts = [[rng.randrange(512) for _ in range(12)]]
    (ref, _), (out, _) = decode_both_ways(model, cfg, torch.bfloat16, prompts, persistent=persistent)
    ref_logits, logits = model.compute_logits(ref), model.compute_logits(out)
    err = ((logits - ref_logits).norm() / ref_logits.norm()).item()
    assert err < 2e-2, err


def test_steps_past_the_row_limit_keep_the_unfused_path(tmp_path):
    model, cfg = make_model(tmp_path, "llama", torch.float32, 0)
    called = []
    original = llama.LlamaForCausalLM._fused_decode_forward
    llama.LlamaForCausalLM._fused_decode_forward = lambda self, *a: called.append(1)
    try:
        decode_both_ways(model, cfg, torch.float32, [[5, 6, 7]] * (llama.FUSED_DECODE_MAX_ROWS + 1))
    finally:
        llama.LlamaForCausalLM._fused_decode_forward = original
    assert not called


def test_qwen3_q_k_norms_keep_the_unfused_path(tmp_path):
    model, cfg = make_model(tmp_path, "qwen3", torch.float32, 0)
    enable_skinny_kernels(model, fused_decode=True)
    assert model.fused_decode and not model._fused_capable
    called = []
    original = llama.LlamaForCausalLM._fused_decode_forward
    llama.LlamaForCausalLM._fused_decode_forward = lambda self, *a: called.append(1)
    try:
        (ref, _), (out, _) = decode_both_ways(model, cfg, torch.float32, [[5, 6, 7]])
    finally:
        llama.LlamaForCausalLM._fused_decode_forward = original
    assert not called
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)  # the skinny GEMV alone


def test_one_row_logits_on_the_gemv(tmp_path, monkeypatch):
    # With the skinny kernels on, one row's logits (batch-1 decode) come from the GEMV; two rows keep F.linear.
    from llm_core.layers.kernels import gemv

    model, cfg = make_model(tmp_path, "llama", torch.float32, 0)
    hidden = torch.randn(2, cfg.hidden_size, device=DEVICE)
    with torch.inference_mode():
        ref = model.compute_logits(hidden)
        calls = []
        original = gemv.skinny_linear
        monkeypatch.setattr(gemv, "skinny_linear", lambda *a, **k: calls.append(1) or original(*a, **k))
        enable_skinny_kernels(model)
        assert model.skinny_lm_head
        one = model.compute_logits(hidden[:1])
        assert calls == [1]
        both = model.compute_logits(hidden)
        assert calls == [1]
    assert one.dtype == torch.float32 and one.shape == (1, cfg.vocab_size)
    torch.testing.assert_close(one, ref[:1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both, ref, atol=0, rtol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_greedy_tokens_from_the_lm_head_gemv(tmp_path, monkeypatch, tied):
    # One row with the skinny kernels on: greedy_tokens is the logits' argmax, from the GEMV's argmax
    # epilogue (no logits); two rows, or the kernels off: None (the caller takes the logits' argmax).
    model, cfg = make_model(tmp_path, "llama", torch.float32, 0, tie_word_embeddings=tied)
    assert (model.lm_head is None) == tied
    hidden = torch.randn(2, cfg.hidden_size, device=DEVICE)
    with torch.inference_mode():
        assert model.greedy_tokens(hidden[:1]) is None
        enable_skinny_kernels(model)
        try:
            expected = model.compute_logits(hidden[:1]).argmax(-1)
            got = model.greedy_tokens(hidden[:1])
            assert model.greedy_tokens(hidden) is None
            monkeypatch.setattr(llama, "GREEDY_TOKENS_FROM_LM_HEAD", False)  # bench_throughput --no-lm-head-argmax
            assert model.greedy_tokens(hidden[:1]) is None
        finally:
            enable_skinny_kernels(model, False)
    assert got.dtype == torch.int64 and got.tolist() == expected.tolist()


def test_persistent_decode_leaves_given_embeddings(tmp_path):
    # The persistent step updates the residual stream in place: its own embedding lookup may become
    # it, embeddings passed in (multimodal callers) must not.
    model, cfg = make_model(tmp_path, "llama", torch.float32, random.randrange(2**31))
    prompt = [3, 14, 15, 92, 65]
    caches = empty_caches(cfg, 2, torch.float32)
    positions, meta = meta_for([len(prompt)], [len(prompt)], [[0, 1]])
    model.fused_decode = False
    with torch.inference_mode():
        model(torch.tensor(prompt, device=DEVICE), positions, caches, meta)
        enable_skinny_kernels(model, True, fused_decode=True, persistent_decode=True)
        positions, meta = meta_for([1], [len(prompt) + 1], [[0, 1]])
        ids = torch.tensor([prompt[-1]], device=DEVICE)
        embeds = model.embed_tokens(ids)
        given = embeds.clone()
        from_ids = model(ids, positions, [(k.clone(), v.clone()) for k, v in caches], meta)
        from_embeds = model(ids, positions, [(k.clone(), v.clone()) for k, v in caches], meta, inputs_embeds=embeds)
        enable_skinny_kernels(model, False)
    torch.testing.assert_close(embeds, given, atol=0, rtol=0)
    torch.testing.assert_close(from_embeds, from_ids, atol=0, rtol=0)


# The smallest Llama sizes the warp-specialized kernel's tiles take (ws_decode_supported).
WS_SIZES = {"hidden_size": 2048, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 2048}


@pytest.mark.skipif(not ws_decode_runs_here(), reason="the warp-specialized decode kernel needs a Hopper GPU")
def test_ws_decode_bf16_logits_close(tmp_path, monkeypatch):
    # One token on the warp-specialized kernel (the engine's ws_decode option) against the unfused layers.
    from llm_core.layers.kernels import ws_decode as wd

    seed = random.randrange(2**31)
    print(f"seed {seed}")
    model, cfg = make_model(tmp_path, "llama", torch.bfloat16, seed, **WS_SIZES)
    calls = []
    original = wd.ws_decode
    monkeypatch.setattr(wd, "ws_decode", lambda *a, **k: calls.append(1) or original(*a, **k))
    rng = random.Random(seed)
    prompts = [[rng.randrange(512) for _ in range(24)]]  # two blocks of 16 (decode_both_ways)
    (ref, ref_caches), (out, out_caches) = decode_both_ways(model, cfg, torch.bfloat16, prompts, persistent=True,
                                                            ws=True)
    assert calls == [1]
    ref_logits, logits = model.compute_logits(ref), model.compute_logits(out)
    err = ((logits - ref_logits).norm() / ref_logits.norm()).item()
    assert err < 2e-2, err
    slot = (1, len(prompts[0]) - 16)  # the step's row (position 24: block 1 of the table [0, 1], offset 8)
    for (k, v), (k_ref, v_ref) in zip(out_caches, ref_caches):  # stored alike, up to bf16 rounding
        for new, ref in ((k[slot], k_ref[slot]), (v[slot], v_ref[slot])):
            assert ((new.float() - ref.float()).norm() / ref.float().norm()).item() < 2e-2


@pytest.mark.skipif(not ws_decode_runs_here(), reason="the warp-specialized decode kernel needs a Hopper GPU")
def test_ws_decode_unaddressable_layers_fall_back(tmp_path, monkeypatch):
    # Tensors the kernel cannot address (WsDecodeWeights' ValueError) turn it off for good, with the
    # step on the persistent kernel instead of a failure.
    from llm_core.layers.kernels import ws_decode as wd

    def refuse(layers):
        raise ValueError("ws decode: every norm and cache must start a multiple of 16 bytes after the lowest")

    seed = random.randrange(2**31)
    print(f"seed {seed}")
    model, cfg = make_model(tmp_path, "llama", torch.bfloat16, seed, **WS_SIZES)
    calls = []
    monkeypatch.setattr(wd, "WsDecodeWeights", refuse)
    monkeypatch.setattr(wd, "ws_decode", lambda *a, **k: calls.append(1))
    rng = random.Random(seed)
    prompts = [[rng.randrange(512) for _ in range(24)]]
    (ref, _), (out, _) = decode_both_ways(model, cfg, torch.bfloat16, prompts, persistent=True, ws=True)
    assert calls == [] and model._ws_checked and model._ws_decode_workspace(out.device) is None
    ref_logits, logits = model.compute_logits(ref), model.compute_logits(out)
    assert ((logits - ref_logits).norm() / ref_logits.norm()).item() < 2e-2


def test_ws_decode_alignment_rule():
    # The kernel addresses weights (512 bytes) and norms / caches (16 bytes) as offsets from the lowest.
    from llm_core.layers.kernels.ws_decode import aligned_offsets

    buf = torch.empty(4096, dtype=torch.bfloat16)
    lowest, offsets = aligned_offsets([[buf[256:512], buf[8:16]], [buf[0:8]]], 16, "norm and cache")
    assert lowest.data_ptr() == buf.data_ptr() and offsets == [[512, 16], [0]]
    with pytest.raises(ValueError, match="multiple of 16 bytes"):
        aligned_offsets([[buf[0:8], buf[1:9]]], 16, "norm and cache")
    with pytest.raises(ValueError, match="multiple of 512 bytes"):
        aligned_offsets([[buf[0:8], buf[8:16]]], 512, "weight")


def test_ws_decode_flag_and_fallback(tmp_path):
    # The option reaches the model only with the persistent kernel; where the kernel cannot run (here:
    # fp32 weights, or no Hopper GPU) a one-token step takes the persistent kernel.
    model, _ = make_model(tmp_path, "llama", torch.float32, 0)
    enable_skinny_kernels(model, fused_decode=True, persistent_decode=True, ws_decode=True)
    assert model.ws_decode is True
    enable_skinny_kernels(model, fused_decode=True, persistent_decode=False, ws_decode=True)
    assert model.ws_decode is False
    enable_skinny_kernels(model, fused_decode=True, persistent_decode=True, ws_decode=None)
    assert model.ws_decode is None
    assert model._ws_decode_workspace(DEVICE) is None
    assert model._ws_checked  # decided once


def test_persistent_decode_flag_and_layer_table(tmp_path):
    from llm_core.layers.kernels.persistent_decode import LAYER_FIELDS

    model, cfg = make_model(tmp_path, "llama", torch.float32, 0)
    enable_skinny_kernels(model, fused_decode=True)
    assert model.fused_decode and not model.persistent_decode
    enable_skinny_kernels(model, fused_decode=True, persistent_decode=True)
    assert model.persistent_decode
    enable_skinny_kernels(model, fused_decode=False, persistent_decode=True)
    assert not model.persistent_decode  # only with the fused path
    # The table of layer addresses is built once per set of caches.
    caches = empty_caches(cfg, 4, torch.float32)
    table = model._decode_layers(caches)
    assert model._decode_layers(caches) is table
    assert table.table.shape == (cfg.num_layers, len(LAYER_FIELDS))
    assert int(table.table[1, LAYER_FIELDS.index("k_cache")]) == caches[1][0].data_ptr()
    assert model._decode_layers(empty_caches(cfg, 4, torch.float32)) is not table
