"""Sampling a step whose plan carries draft tokens: every draft is verified in the same batch.

Rows: a sampling request with d drafts owns d+1 consecutive logits rows (after its last real
token and after each draft). Row i of a request is sampled as output position
num_output_tokens + i, so a seeded request's draws depend on (seed, position) only and its
tokens do not depend on the batch.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from llm_core.sampler import Sampler, prepare_sampling_batch
from llm_core.scheduler_output import ScheduledRequest
from llm_core.spec_decode.verify import verify_greedy, verify_sampled


def row_positions(sampling: Sequence[ScheduledRequest]) -> list[tuple[ScheduledRequest, int]]:
    """(entry, output position) per logits row, in row order."""
    return [(e, e.num_output_tokens + i) for e in sampling for i in range(e.num_draft_tokens + 1)]


def sample_with_drafts(sampler: Sampler, logits: torch.Tensor, sampling: Sequence[ScheduledRequest],
                       draft_probs: Mapping[str, torch.Tensor] | None = None) -> dict[str, list[int]]:
    """logits: [R, V] masked logits, R = sum(d + 1). draft_probs: q [d, V] per request whose drafts
    a draft model sampled (absent: a point mass, as n-gram drafts are). Returns {request_id: 1..d+1 tokens}."""
    rows = row_positions(sampling)
    batch = prepare_sampling_batch([e.sampling_params for e, _ in rows], [pos for _, pos in rows],
                                   logits.shape[-1], logits.device)
    argmax = logits.argmax(dim=-1).tolist()  # [R]
    if not batch.all_greedy:
        probs = sampler.compute_probs(logits, batch)  # [R, V]
        noise = sampler.draw_noise(probs, batch)  # [R, V]
        uniforms = sampler.draw_uniforms(batch, len(rows))  # [R]
    tokens: dict[str, list[int]] = {}
    start = 0
    for entry in sampling:
        end = start + entry.num_draft_tokens + 1
        drafts = entry.draft_token_ids
        if entry.sampling_params.is_greedy:
            tokens[entry.request_id] = verify_greedy(drafts, argmax[start:end])
        else:
            # The uniform of row i decides draft i (drawn at draft i's own output position).
            q = draft_probs.get(entry.request_id) if draft_probs else None
            tokens[entry.request_id] = verify_sampled(drafts, probs[start:end], uniforms[start:end - 1],
                                                      noise[start:end], q)
        start = end
    return tokens
