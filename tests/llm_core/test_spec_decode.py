"""Speculative decoding end to end on a tiny checkpoint: greedy outputs are unchanged, seeded
sampling stays batch-invariant, constrained outputs stay valid, preemption composes."""

from __future__ import annotations


import pytest

from llm_core import LLM, SamplingParams
from tests.helpers.checkpoints import make_text_checkpoint
from tests.helpers.spec_prompts import PROMPTS, run_json_schema


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(make_text_checkpoint(tmp_path_factory.mktemp("spec"), "llama", seed=4))


@pytest.fixture(scope="module")
def baseline(checkpoint):
    return LLM(checkpoint, device="cpu", max_model_len=256)


def speculative_llm(checkpoint, k, max_model_len=256, **options):
    return LLM(checkpoint, device="cpu", max_model_len=max_model_len, speculative={
        "method": "ngram", "num_tokens": k, "prompt_lookup_min": 1, "prompt_lookup_max": 3}, **options)


def mixed_greedy_params(stop_token: int):
    return [SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True),
            SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True),  # ends mid-draft at max_tokens
            SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop_token_ids=(stop_token,)),
            SamplingParams(max_tokens=23, temperature=0.0, ignore_eos=True, speculative={"enabled": False})]


@pytest.mark.parametrize("k", [1, 3, 5])
def test_greedy_outputs_identical(checkpoint, baseline, k):
    probe = baseline.generate(PROMPTS[2], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))[0]
    stop_token = probe.token_ids[9]  # a token the greedy run reaches mid-stream
    params = mixed_greedy_params(stop_token)
    expected = baseline.generate(PROMPTS, params)
    llm = speculative_llm(checkpoint, k)
    got = llm.generate(PROMPTS, params)
    for want, out in zip(expected, got):
        assert out.token_ids == want.token_ids and out.text == want.text
        assert out.finish_reason == want.finish_reason
    assert got[1].finish_reason == "length" and len(got[1].token_ids) == 7
    assert got[2].finish_reason == "stop" and got[2].token_ids[-1] == stop_token
    assert got[3].num_draft_tokens == 0  # speculation off for this request
    stats = llm.engine.stats()
    assert stats["spec_num_accepted_draft_tokens"] > 0
    assert stats["spec_mean_acceptance_length"] > 1.0
    assert sum(o.num_accepted_draft_tokens for o in got) > 0


def test_stop_string_mid_draft(checkpoint, baseline):
    probe = baseline.generate(PROMPTS[0], SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True))[0]
    stop = probe.text[len(probe.text) // 2:len(probe.text) // 2 + 2]
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, stop=(stop,))
    want = baseline.generate(PROMPTS[0], params)[0]
    out = speculative_llm(checkpoint, 4).generate(PROMPTS[0], params)[0]
    assert want.finish_reason == "stop"
    assert (out.token_ids, out.text, out.finish_reason) == (want.token_ids, want.text, want.finish_reason)


def test_seeded_sampling_is_batch_invariant(checkpoint):
    llm = speculative_llm(checkpoint, 3)
    params = SamplingParams(max_tokens=30, temperature=0.8, top_k=50, seed=7, ignore_eos=True)
    alone = llm.generate(PROMPTS[1], params)[0]
    others = SamplingParams(max_tokens=30, temperature=1.0, ignore_eos=True)
    batched = llm.generate([PROMPTS[0], PROMPTS[1], PROMPTS[2]], [others, params, others])[1]
    assert batched.token_ids == alone.token_ids
    assert llm.engine.stats()["spec_num_draft_tokens"] > 0


def test_json_schema_with_speculation_is_valid(checkpoint):
    llm = speculative_llm(checkpoint, 4)
    run_json_schema(llm, seeds=8)
    assert llm.engine.stats()["spec_num_draft_tokens"] > 0


def test_preemption_with_speculation_matches_greedy(checkpoint, baseline):
    # 14 usable blocks of 16 tokens: four requests growing to ~100 tokens outgrow the pool.
    small = speculative_llm(checkpoint, 4, max_model_len=200, cpu_kv_cache_bytes=15 * 2 * 16 * 2 * 2 * 16 * 4)
    params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
    prompts = [p + " " + p for p in PROMPTS]
    expected = baseline.generate(prompts, params)
    got = small.generate(prompts, params)
    assert small.engine.stats()["num_preemptions"] > 0
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    assert small.engine.stats()["spec_num_accepted_draft_tokens"] > 0
