"""Rejection sampling is lossless: emitted tokens follow the target p, checked by chi-square."""

import torch

from llm_core.spec_decode.verify import verify_greedy, verify_sampled

V = 5
CHI2_CRITICAL_DF4 = 18.47  # chi-square, 4 degrees of freedom, alpha = 0.001
P = torch.tensor([0.05, 0.40, 0.10, 0.30, 0.15])
Q = torch.tensor([0.50, 0.05, 0.30, 0.05, 0.10])


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def biased_verify(drafts, target_probs, uniforms, noise, draft_probs=None):
    """A classic bug: on rejection resample from p instead of max(p - q, 0)."""
    for i, x in enumerate(drafts):
        q_x = 1.0 if draft_probs is None else float(draft_probs[i, x])
        if float(uniforms[i]) * q_x >= float(target_probs[i, x]):
            return list(drafts[:i]) + [int((target_probs[i] / noise[i]).argmax())]
    return list(drafts) + [int((target_probs[-1] / noise[-1]).argmax())]


def emitted_counts(verify, point_mass: bool, num_trials: int = 6000, k: int = 2):
    """Counts of the first emitted token, and of the second when the first draft was accepted."""
    gen = torch.Generator().manual_seed(0)
    first, second = torch.zeros(V), torch.zeros(V)
    target = P.expand(k + 1, V)
    for _ in range(num_trials):
        if point_mass:
            drafts, draft_probs = [1, 3], None
        else:
            drafts = torch.multinomial(Q, k, replacement=True, generator=gen).tolist()
            draft_probs = Q.expand(k, V)
        uniforms = torch.rand(k, generator=gen)
        noise = torch.empty(k + 1, V).exponential_(generator=gen)
        tokens = verify(drafts, target, uniforms, noise, draft_probs)
        assert 1 <= len(tokens) <= k + 1 and tokens[:len(tokens) - 1] == drafts[:len(tokens) - 1]
        first[tokens[0]] += 1
        if len(tokens) > 1:
            second[tokens[1]] += 1
    return first, second


def test_draft_model_rejection_sampling_matches_target():
    first, second = emitted_counts(verify_sampled, point_mass=False)
    assert chi_square(first, P) < CHI2_CRITICAL_DF4
    assert chi_square(second, P) < CHI2_CRITICAL_DF4


def test_point_mass_rejection_sampling_matches_target():
    first, second = emitted_counts(verify_sampled, point_mass=True)
    assert chi_square(first, P) < CHI2_CRITICAL_DF4
    assert chi_square(second, P) < CHI2_CRITICAL_DF4


def test_chi_square_catches_a_planted_bias():
    for point_mass in (False, True):
        first, _ = emitted_counts(biased_verify, point_mass=point_mass)
        assert chi_square(first, P) > CHI2_CRITICAL_DF4 * 3


def test_greedy_accepts_matching_prefix_then_corrects():
    assert verify_greedy([4, 2, 7], [4, 2, 1, 9]) == [4, 2, 1]
    assert verify_greedy([4, 2, 7], [4, 2, 7, 9]) == [4, 2, 7, 9]  # bonus token
    assert verify_greedy([4], [3, 9]) == [3]
    assert verify_greedy([], [8]) == [8]
