"""The draft-model proposer end to end on tiny checkpoints that share a tokenizer: greedy outputs
never change, the draft's KV follows the target's through preemption, prefix caching and chunked
prefill, constrained outputs stay valid, a foreign tokenizer is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llm_core import LLM, SamplingParams
from llm_core.spec_decode.draft_proposer import to_vocab
from tests.helpers.checkpoints import make_text_checkpoint
from tests.helpers.spec_prompts import PROMPTS, run_json_schema
from tests.llm_core.spec_decode.draft_checkpoints import noisy_copy, small_draft


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("draft")
    target = make_text_checkpoint(root / "target", "llama", seed=4)
    return {"target": str(target),
            "noisy": str(noisy_copy(target, root / "noisy", noise=0.03)),  # accepts about half its drafts
            "small": str(small_draft(target, root / "small", vocab_size=600))}  # another arch, shape and vocab size


@pytest.fixture(scope="module")
def baseline(checkpoints):
    return LLM(checkpoints["target"], device="cpu", max_model_len=256)


def draft_llm(checkpoints, draft: str, k, **options):
    options.setdefault("max_model_len", 256)
    return LLM(checkpoints["target"], device="cpu",
               speculative={"method": "draft", "model": checkpoints[draft], "num_tokens": k}, **options)


def mixed_greedy_params(stop_token: int):
    return [SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True),
            SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True),  # ends mid-draft at max_tokens
            SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop_token_ids=(stop_token,)),
            SamplingParams(max_tokens=23, temperature=0.0, ignore_eos=True, speculative={"enabled": False}),
            SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, speculative={"num_tokens": 2})]


@pytest.mark.parametrize("draft,k", [("noisy", 1), ("noisy", 3), ("noisy", 5), ("small", 4)])
def test_greedy_outputs_identical(checkpoints, baseline, draft, k):
    probe = baseline.generate(PROMPTS[2], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))[0]
    stop_token = probe.token_ids[9]  # a token the greedy run reaches mid-stream
    prompts = PROMPTS + [PROMPTS[0]]
    params = mixed_greedy_params(stop_token)
    expected = baseline.generate(prompts, params)
    llm = draft_llm(checkpoints, draft, k)
    got = llm.generate(prompts, params)
    for want, out in zip(expected, got):
        assert (out.token_ids, out.text, out.finish_reason) == (want.token_ids, want.text, want.finish_reason)
    assert got[1].finish_reason == "length" and len(got[1].token_ids) == 6
    assert got[2].finish_reason == "stop" and got[2].token_ids[-1] == stop_token
    assert got[3].num_drafts == 0  # speculation off for this request
    assert got[4].num_drafts > 0 and got[4].num_draft_tokens <= 2 * got[4].num_drafts  # its own k
    stats = llm.engine.stats()
    assert stats["spec_num_draft_tokens"] == sum(o.num_draft_tokens for o in got) > 0
    assert stats["spec_num_accepted_draft_tokens"] == sum(o.num_accepted_draft_tokens for o in got)
    assert stats["spec_num_drafts"] == sum(o.num_drafts for o in got)
    assert sum(stats["spec_num_accepted_per_position"]) == stats["spec_num_accepted_draft_tokens"]
    assert len(stats["spec_num_accepted_per_position"]) <= max(k, 2)  # request 4 asks for 2
    if draft == "noisy":  # both accepted and rejected drafts
        assert 0 < stats["spec_num_accepted_draft_tokens"] < stats["spec_num_draft_tokens"]
        assert stats["spec_mean_acceptance_length"] > 1.0
        assert got[0].mean_acceptance_length == pytest.approx(
            1 + got[0].num_accepted_draft_tokens / got[0].num_drafts)


def test_stop_string_mid_draft(checkpoints, baseline):
    probe = baseline.generate(PROMPTS[0], SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))[0]
    stop = probe.text[len(probe.text) // 2:len(probe.text) // 2 + 2]
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=(stop,))
    want = baseline.generate(PROMPTS[0], params)[0]
    out = draft_llm(checkpoints, "target", 4).generate(PROMPTS[0], params)[0]
    assert want.finish_reason == "stop"
    assert (out.token_ids, out.text, out.finish_reason) == (want.token_ids, want.text, want.finish_reason)


def test_draft_kv_follows_preemption_prefix_cache_and_chunked_prefill(checkpoints, baseline):
    """The target as its own draft: every draft is accepted unless the draft's KV went wrong, so
    near-full acceptance through preemption, prefix hits and chunked prefill shows it did not."""
    # 16 blocks of 16 tokens for target + draft KV together; prefills in chunks of 24 tokens.
    per_block = 2 * 16 * 2 * 2 * 16 * 4  # K and V, block size, layers, KV heads, head dim, fp32
    llm = draft_llm(checkpoints, "target", 4, max_model_len=200, cpu_kv_cache_bytes=2 * 16 * per_block,
                    max_num_batched_tokens=24)
    params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
    prompts = [p + " " + p for p in PROMPTS]
    expected = baseline.generate(prompts, params)
    got = llm.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    again = llm.generate(prompts[:2], params)  # prefix-cache hits on the first blocks
    assert [o.token_ids for o in again] == [o.token_ids for o in expected[:2]]
    stats = llm.engine.stats()
    assert stats["num_preemptions"] > 0 and stats["prefix_cache_hits"] > 0
    assert stats["spec_num_accepted_draft_tokens"] >= 0.95 * stats["spec_num_draft_tokens"] > 0


def test_json_schema_with_draft_is_valid(checkpoints):
    llm = draft_llm(checkpoints, "noisy", 4)
    run_json_schema(llm, seeds=6)
    stats = llm.engine.stats()
    assert stats["spec_num_accepted_draft_tokens"] > 0


def test_a_draft_with_another_tokenizer_is_refused(checkpoints, tmp_path):
    other = make_text_checkpoint(tmp_path / "other", "llama", seed=6, tokenizer_kind="metaspace")
    with pytest.raises(ValueError, match="another tokenizer than the target"):
        LLM(checkpoints["target"], device="cpu", max_model_len=256,
            speculative={"method": "draft", "model": str(other), "num_tokens": 2})
    with pytest.raises(ValueError, match="vocab_size=400"):
        small = small_draft(Path(checkpoints["target"]), tmp_path / "narrow", vocab_size=400)
        (small / "tokenizer.json").unlink()  # unchecked tokenizer, but the embedding is too small
        LLM(checkpoints["target"], device="cpu", max_model_len=256,
            speculative={"method": "draft", "model": str(small), "num_tokens": 2})


def test_draft_logits_map_onto_the_target_vocabulary():
    logits = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert to_vocab(logits, 2).tolist() == [[0, 1], [3, 4]]
    assert to_vocab(logits, 4)[:, 3].tolist() == [float("-inf")] * 2
    assert to_vocab(logits, 3) is logits
