"""Sampler: greedy, filters, seeds and logprobs on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch

from llm_core.sampler import Sampler, compute_logprobs, prepare_sampling_batch
from llm_core.sampling_params import SamplingParams

CPU = torch.device("cpu")


def sample(logits: torch.Tensor, params: list[SamplingParams], positions=None, seed: int = 0) -> torch.Tensor:
    positions = positions or [0] * len(params)
    batch = prepare_sampling_batch(params, positions, logits.shape[-1], CPU)
    return Sampler(CPU, seed).sample(logits, batch)


def test_greedy_is_argmax():
    logits = torch.randn(5, 50)
    tokens = sample(logits, [SamplingParams(temperature=0.0)] * 5)
    assert torch.equal(tokens, logits.argmax(-1))


def test_top_k_one_is_greedy_even_at_high_temperature():
    logits = torch.randn(4, 50)
    tokens = sample(logits, [SamplingParams(temperature=5.0, top_k=1)] * 4)
    assert torch.equal(tokens, logits.argmax(-1))


def test_sampling_follows_the_distribution():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 20000
    logits = probs.log().expand(n, 4).contiguous()
    tokens = sample(logits, [SamplingParams(temperature=1.0)] * n, seed=3)
    freq = torch.bincount(tokens, minlength=4).float() / n
    # Chi-square against the target with 3 degrees of freedom; 16.3 is the 0.1% critical value.
    chi2 = (((freq - probs) ** 2) / probs).sum().item() * n
    assert chi2 < 16.3, (freq, chi2)


def test_top_p_and_min_p_cut_the_tail():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = probs.log().expand(4000, 4).contiguous()
    top_p = sample(logits, [SamplingParams(top_p=0.65)] * 4000, seed=1)
    assert set(top_p.tolist()) == {0, 1}  # 0.4 + 0.3 covers 0.65; the rest never
    min_p = sample(logits, [SamplingParams(min_p=0.6)] * 4000, seed=1)
    assert set(min_p.tolist()) == {0, 1}  # 0.3 >= 0.6 * 0.4 = 0.24, 0.2 is below
    top_k = sample(logits, [SamplingParams(top_k=3)] * 4000, seed=1)
    assert set(top_k.tolist()) == {0, 1, 2}


def test_seeded_rows_do_not_depend_on_the_batch():
    torch.manual_seed(0)
    logits = torch.randn(16, 100)
    params = [SamplingParams(seed=1234, temperature=1.0)] + [SamplingParams(temperature=1.0)] * 15
    together = sample(logits, params, positions=[7] * 16, seed=5)
    alone = sample(logits[:1], params[:1], positions=[7], seed=99)
    assert together[0] == alone[0]
    # Different positions draw different noise: over many positions the tokens vary.
    flat = torch.zeros(1, 100)
    tokens = {int(sample(flat, [SamplingParams(seed=1234)], positions=[p])[0]) for p in range(30)}
    assert len(tokens) > 10


def test_logprobs_hold_sampled_and_top():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    tokens = torch.tensor([3])
    rows = compute_logprobs(logits, tokens, 2)
    expected = torch.log_softmax(logits, -1)[0]
    assert set(rows[0]) == {0, 1, 3}
    for token, value in rows[0].items():
        assert math.isclose(value, expected[token].item(), rel_tol=1e-6)


def test_invalid_params_are_named():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="response_format"):
        SamplingParams(response_format={"type": "xml"})
