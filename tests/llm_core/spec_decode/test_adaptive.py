"""Adaptive draft length: k shrinks under low acceptance, grows back under high, and never
changes what a request produces."""

from __future__ import annotations

import pytest

from llm_core import LLM, SamplingParams
from llm_core.spec_decode.adaptive import AdaptiveNumTokens
from tests.helpers.checkpoints import make_text_checkpoint
from tests.llm_core.spec_decode.draft_checkpoints import small_draft


def test_k_starts_at_the_maximum_shrinks_and_grows_back():
    adaptive = AdaptiveNumTokens()
    assert adaptive.num_tokens("a", 6) == 6
    ks = []
    for _ in range(6):  # every first draft rejected
        adaptive.record("a", ks[-1] if ks else 6, 0)
        ks.append(adaptive.num_tokens("a", 6))
    assert ks == sorted(ks, reverse=True) and ks[0] < 6 and ks[-1] == 1
    for _ in range(8):  # then every draft accepted
        k = adaptive.num_tokens("a", 6)
        adaptive.record("a", k, k)
    assert adaptive.num_tokens("a", 6) == 6
    assert adaptive.num_tokens("b", 6) == 6  # per request
    adaptive.free("a")
    assert adaptive.num_tokens("a", 6) == 6


def test_k_settles_where_the_last_draft_is_worth_proposing():
    adaptive = AdaptiveNumTokens()
    for _ in range(40):  # the first draft accepted, the second rejected: alpha = 1/2
        adaptive.record("a", 4, 1)
    assert adaptive.acceptance("a") == pytest.approx(0.5, abs=1e-3)
    assert adaptive.num_tokens("a", 8) == 2  # alpha ** 2 >= 0.2 > alpha ** 3
    for _ in range(40):  # three of four accepted: alpha = 3/4
        adaptive.record("a", 4, 3)
    assert adaptive.num_tokens("a", 8) == 5  # 0.75 ** 5 = 0.237
    assert adaptive.num_tokens("a", 3) == 3


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("adaptive")
    target = make_text_checkpoint(root / "target", "llama", seed=4)
    return {"target": str(target), "small": str(small_draft(target, root / "small"))}


@pytest.mark.parametrize("draft", ["small", "target"])
def test_adaptive_k_follows_acceptance_and_keeps_greedy_outputs(checkpoints, draft):
    prompts = ["the cat sat on the mat. the cat", "one two three one two three", "abc abc abc abc"]
    params = [SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)] * 2 + [
        SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True, speculative={"num_tokens": 3})]
    expected = LLM(checkpoints["target"], device="cpu", max_model_len=256).generate(prompts, params)
    llm = LLM(checkpoints["target"], device="cpu", max_model_len=256,
              speculative={"method": "draft", "model": checkpoints[draft], "num_tokens": 6, "adaptive": True})
    got = llm.generate(prompts, params)
    assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    mean_k = [o.num_draft_tokens / o.num_drafts for o in got]
    if draft == "small":  # an unrelated draft: almost nothing accepted, k falls to 1
        assert max(mean_k[:2]) < 1.6
    else:  # the target drafting for itself: everything accepted, k stays at 6 (less the last steps)
        assert min(mean_k[:2]) > 5
    assert mean_k[2] == pytest.approx(3, abs=0.2)  # a request's own num_tokens is not adapted
