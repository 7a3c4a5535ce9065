"""Verification of draft tokens against the target model, one request at a time.

Both rules return the accepted draft prefix plus one token from the target (the correction at
the first rejection, or the bonus after the last draft), so a step yields 1..k+1 tokens and the
output distribution is exactly the target's (Leviathan et al. 2023; gpt-fast's speculative_decode).
"""

from __future__ import annotations

from typing import Sequence

import torch


def verify_greedy(draft_token_ids: Sequence[int], target_argmax: Sequence[int]) -> list[int]:
    """target_argmax: [k+1] the target's argmax after each draft prefix. Accept while equal."""
    accepted: list[int] = []
    for draft, target in zip(draft_token_ids, target_argmax):
        if draft != target:
            break
        accepted.append(draft)
    return accepted + [target_argmax[len(accepted)]]


def verify_sampled(draft_token_ids: Sequence[int], target_probs: torch.Tensor, uniforms: torch.Tensor,
                   noise: torch.Tensor, draft_probs: torch.Tensor | None = None) -> list[int]:
    """Rejection sampling.

    target_probs: [k+1, V] p after each draft prefix (temperature, top-k/p, min-p applied)
    uniforms:     [k]      U(0, 1) draws deciding acceptance
    noise:        [k+1, V] Exp(1) draws: argmax(probs / noise) samples from probs
    draft_probs:  [k, V]   q of the proposer, or None for a point mass (n-gram): q(x) = 1

    Draft x is accepted with probability min(1, p(x) / q(x)); on rejection the token comes
    from max(p - q, 0) renormalized; with all accepted the bonus comes from p.
    """
    k = len(draft_token_ids)
    for i, x in enumerate(draft_token_ids):
        p = target_probs[i]
        q_x = 1.0 if draft_probs is None else float(draft_probs[i, x])
        if float(uniforms[i]) * q_x < float(p[x]):
            continue
        if draft_probs is None:
            residual = p.clone()
            residual[x] = 0.0
        else:
            residual = (p - draft_probs[i]).clamp_min(0.0)
        if not float(residual.sum()) > 0.0:  # p == q up to rounding: rejection had probability ~0
            residual = p
        return list(draft_token_ids[:i]) + [int((residual / noise[i]).argmax())]
    return list(draft_token_ids) + [int((target_probs[k] / noise[k]).argmax())]
