"""Our engine against transformers on tiny random checkpoints of each architecture (fp32)."""

from __future__ import annotations

import random

import pytest
import torch

from llm_core import LLM, SamplingParams
from llm_core.scheduler_output import ScheduledRequest, SchedulerOutput
from tests.helpers.checkpoints import TEXT_ARCHS, hf_greedy, load_hf_model, make_text_checkpoint

PROMPT_LENS = (1, 5, 17, 33, 64, 100, 200, 300)
NUM_NEW = 32


def random_prompts(seed: int, vocab: int = 400) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in PROMPT_LENS]


@pytest.fixture(scope="module", params=TEXT_ARCHS)
def checkpoint(request, tmp_path_factory):
    arch = request.param
    path = make_text_checkpoint(tmp_path_factory.mktemp(arch), arch, seed=1)
    return arch, path, load_hf_model(path)


def make_llm(path, **options) -> LLM:
    options.setdefault("max_model_len", 512)
    return LLM(str(path), device="cpu", dtype="float32", attention_backend="torch", **options)


def engine_logits(llm: LLM, ids: list[int], chunk: int) -> torch.Tensor:
    """Logits of every prompt position, fed through the paged runner `chunk` tokens at a time."""
    engine = llm.engine
    kv = engine.kv_cache_manager
    assert kv.allocate_slots("probe", len(ids)) is not None
    blocks = tuple(kv.get_block_ids("probe"))
    pieces = []
    try:
        for start in range(0, len(ids), chunk):
            piece = tuple(ids[start:start + chunk])
            entry = ScheduledRequest("probe", piece, start, blocks, True, 0, SamplingParams())
            runner = engine.runner
            input_ids, positions, meta, _ = runner.to_device(runner.prepare_inputs(SchedulerOutput((entry,), len(piece))))
            with torch.inference_mode():
                hidden = engine.runner.model(input_ids, positions, engine.runner.kv_caches, meta)
                pieces.append(engine.runner.model.compute_logits(hidden))
    finally:
        kv.free("probe")
    return torch.cat(pieces)


def test_prefill_logits_match(checkpoint):
    arch, path, hf = checkpoint
    llm = make_llm(path)
    ids = random_prompts(7)[-1]  # 300 tokens
    with torch.inference_mode():
        expected = hf(torch.tensor([ids])).logits[0].float()
    for chunk in (len(ids), 7):  # whole prompt, then chunks that read earlier keys from the paged cache
        got = engine_logits(llm, ids, chunk)
        diff = (got - expected).abs().max().item()
        assert diff < 1e-4, f"{arch}: max abs logit diff {diff} with chunk {chunk}"


def test_greedy_batch_matches(checkpoint):
    arch, path, hf = checkpoint
    prompts = random_prompts(11)
    expected = [hf_greedy(hf, p, NUM_NEW) for p in prompts]
    params = SamplingParams(max_tokens=NUM_NEW, temperature=0.0, ignore_eos=True)
    llm = make_llm(path)
    outputs = llm.generate(prompts, params)
    for i, (out, want) in enumerate(zip(outputs, expected)):
        assert out.token_ids == want, f"{arch}: prompt {i} ({len(prompts[i])} tokens) diverged"
        assert out.finish_reason == "length"

    # Prefix caching: the same batch again is served partly from the cache, with the same tokens.
    again = llm.generate(prompts, params)
    assert [o.token_ids for o in again] == expected
    assert sum(o.num_cached_tokens for o in again) > 0
    assert all(o.num_cached_tokens < len(p) for o, p in zip(again, prompts))

    # Prefill chunks of 7 tokens (the whole step budget is 7 tokens).
    chunked = make_llm(path, max_num_batched_tokens=7, enable_prefix_caching=False)
    assert [o.token_ids for o in chunked.generate(prompts, params)] == expected

    # A KV pool too small for the whole batch: requests wait for blocks (or get preempted).
    small = make_llm(path, max_model_len=400, cpu_kv_cache_bytes=40 * _bytes_per_block(llm), block_size=16)
    assert small.engine.num_blocks == 40
    assert sum(-(-(len(p) + NUM_NEW) // 16) for p in prompts) > 39  # the batch cannot fit at once
    assert [o.token_ids for o in small.generate(prompts, params)] == expected


def _bytes_per_block(llm: LLM) -> int:
    a = llm.engine.arch
    return 2 * 16 * a.num_layers * a.num_kv_heads * a.head_dim * 4
