"""Sampling with a draft model is lossless, end to end: over many seeds, the tokens that
speculative decoding emits follow the target's exact distribution (computed with transformers),
by a chi-square test that a sampler fed the wrong q fails."""

from __future__ import annotations

import pytest
import torch

from llm_core import LLM, SamplingParams
from llm_core.spec_decode import sampling as spec_sampling
from llm_core.spec_decode.verify import verify_sampled
from tests.helpers.checkpoints import load_hf_model
from tests.llm_core.spec_decode.draft_checkpoints import word_level_pair
from tests.llm_core.spec_decode.test_verify import biased_verify

V = 8
PROMPT = [3, 5, 2, 6]
TEMPERATURE, TOP_K = 0.8, 6  # the draft's q and the target's p both under these
NUM_SAMPLES = 3000
# Chi-square critical values at alpha = 0.001 by degrees of freedom.
CHI2_CRITICAL = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """(statistic, degrees of freedom), cells expecting fewer than 5 merged into one."""
    expected = probs * counts.sum()
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().reshape(1)]) if small.any() else counts
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)]) if small.any() else expected
    return float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return word_level_pair(tmp_path_factory.mktemp("tiny_vocab"), V)


@pytest.fixture(scope="module")
def target_marginals(pair):
    """Exact P(x2) and P(x3) of the target under the sampling settings (x1 comes from the prefill
    step, x2 and x3 from verifying two drafts)."""
    model = load_hf_model(pair[0])

    @torch.inference_mode()
    def next_probs(ids):
        logits = model(torch.tensor([ids])).logits[0, -1].double() / TEMPERATURE
        kth = logits.topk(TOP_K).values[-1]
        return torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)

    p2, p3 = torch.zeros(V, dtype=torch.float64), torch.zeros(V, dtype=torch.float64)
    p1 = next_probs(PROMPT)
    for x1 in range(V):
        q2 = next_probs(PROMPT + [x1])
        p2 += p1[x1] * q2
        for x2 in range(V):
            p3 += p1[x1] * q2[x2] * next_probs(PROMPT + [x1, x2])
    return p2, p3


def sample_counts(pair) -> tuple[torch.Tensor, torch.Tensor, dict]:
    target, draft = pair
    llm = LLM(str(target), device="cpu", max_model_len=32, max_num_seqs=256,
              speculative={"method": "draft", "model": str(draft), "num_tokens": 2})
    params = [SamplingParams(max_tokens=4, temperature=TEMPERATURE, top_k=TOP_K, seed=seed, ignore_eos=True)
              for seed in range(NUM_SAMPLES)]
    outputs = llm.generate([PROMPT] * NUM_SAMPLES, params)
    second, third = torch.zeros(V, dtype=torch.float64), torch.zeros(V, dtype=torch.float64)
    for out in outputs:
        assert len(out.token_ids) == 4
        second[out.token_ids[1]] += 1
        third[out.token_ids[2]] += 1
    return second, third, llm.engine.stats()


def test_draft_model_sampling_matches_the_target(pair, target_marginals):
    second, third, stats = sample_counts(pair)
    # Rejection sampling is exercised: the draft differs from the target, drafts go both ways.
    assert stats["spec_num_drafts"] >= NUM_SAMPLES
    assert 0.1 < stats["spec_num_accepted_draft_tokens"] / stats["spec_num_draft_tokens"] < 0.9
    for counts, probs in zip((second, third), target_marginals):
        statistic, df = chi_square(counts, probs)
        assert statistic < CHI2_CRITICAL[df], (statistic, df)


def residual_from_p(drafts, target_probs, uniforms, noise, draft_probs=None):
    """A classic bug: on rejection resample from p instead of max(p - q, 0)."""
    return biased_verify(drafts, target_probs, uniforms, noise, draft_probs)


def q_of_the_wrong_position(drafts, target_probs, uniforms, noise, draft_probs=None):
    """A plumbing bug: each draft verified against the q of another draft position."""
    shifted = draft_probs.roll(1, dims=0) if draft_probs is not None and len(draft_probs) > 1 else draft_probs
    return verify_sampled(drafts, target_probs, uniforms, noise, shifted)


@pytest.mark.parametrize("biased", [residual_from_p, q_of_the_wrong_position])
def test_chi_square_catches_a_biased_sampler(pair, target_marginals, monkeypatch, biased):
    monkeypatch.setattr(spec_sampling, "verify_sampled", biased)
    counts = sample_counts(pair)[:2]
    statistics = [chi_square(c, p) for c, p in zip(counts, target_marginals)]
    assert max(stat / CHI2_CRITICAL[df] for stat, df in statistics) > 2, statistics


def test_exact_marginals_are_proper(target_marginals):
    for probs in target_marginals:
        assert abs(float(probs.sum()) - 1.0) < 1e-9
        assert float(probs.max()) < 0.9  # not degenerate: the test can tell distributions apart
