"""Token sampling for a batch: greedy, temperature, top-k, top-p, min-p, per-request seeds.

Random rows use the exponential race (argmax of p / E with E ~ Exp(1)), which samples
exactly from p without a cumulative sum or a host sync. A seeded request draws E from a
generator seeded by (seed, output position) alone, so its tokens do not depend on what else
is in the batch, nor on preemption and recompute.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm_core.sampling_params import SamplingParams
from llm_core.transfer import argmax_rows, to_device

_SEED_MIX = 0x9E3779B97F4A7C15
_UNIFORM_MIX = 0x2545F4914F6CDD1D


@dataclass(frozen=True)
class SamplingBatch:
    """Per-row sampling settings of one step, built by prepare_sampling_batch."""

    temperature: torch.Tensor  # [S] fp32; 1.0 on greedy rows (they take the argmax)
    top_k: torch.Tensor  # [S] int64; vocab size where disabled
    top_p: torch.Tensor  # [S] fp32
    min_p: torch.Tensor  # [S] fp32
    is_greedy: torch.Tensor  # [S] bool
    all_greedy: bool
    use_top_k: bool
    use_top_p: bool
    use_min_p: bool
    seeded_rows: tuple[tuple[int, int], ...]  # (row, generator seed)
    max_num_logprobs: int | None


def prepare_sampling_batch(params: list[SamplingParams], num_output_tokens: list[int], vocab_size: int,
                           device: torch.device) -> SamplingBatch:
    greedy = [p.is_greedy for p in params]
    top_k = [p.top_k if 0 < p.top_k < vocab_size else vocab_size for p in params]
    seeded = seeded_rows(params, num_output_tokens)
    logprobs = [p.logprobs for p in params if p.logprobs is not None]
    # Two host-to-device copies that do not wait for the GPU (pinned staging; a tensor built on
    # the device from a list would synchronize the stream once per field).
    floats = to_device([[1.0 if g else p.temperature for p, g in zip(params, greedy)],
                        [p.top_p for p in params], [p.min_p for p in params]], device, torch.float32)
    ints = to_device([top_k, greedy], device, torch.int64)
    return SamplingBatch(
        temperature=floats[0],
        top_k=ints[0],
        top_p=floats[1],
        min_p=floats[2],
        is_greedy=ints[1].bool(),
        all_greedy=all(greedy),
        use_top_k=any(k < vocab_size for k, g in zip(top_k, greedy) if not g),
        use_top_p=any(p.top_p < 1.0 for p, g in zip(params, greedy) if not g),
        use_min_p=any(p.min_p > 0.0 for p, g in zip(params, greedy) if not g),
        seeded_rows=seeded,
        max_num_logprobs=max(logprobs) if logprobs else None,
    )


def seeded_rows(params: list[SamplingParams], num_output_tokens: list[int]) -> tuple[tuple[int, int], ...]:
    """(row, generator seed) of each seeded random row, its seed drawn from (seed, output position)."""
    return tuple((row, _row_seed(p.seed, n)) for row, (p, n) in enumerate(zip(params, num_output_tokens))
                 if p.seed is not None and not p.is_greedy)


def _row_seed(seed: int, position: int) -> int:
    return ((seed * _SEED_MIX) ^ (position + 1) * 0xBF58476D1CE4E5B9) & 0x7FFFFFFFFFFFFFFF


class Sampler:
    """sample(logits [S, V] fp32, batch) -> token ids [S] int64 (on the logits' device)."""

    def __init__(self, device: torch.device, seed: int = 0) -> None:
        self.device = device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def sample(self, logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        greedy_tokens = argmax_rows(logits)
        if batch.all_greedy:
            return greedy_tokens
        probs = self.compute_probs(logits, batch)
        random_tokens = argmax_rows(probs / self.draw_noise(probs, batch))
        return torch.where(batch.is_greedy, greedy_tokens, random_tokens)

    def compute_probs(self, logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        """[S, V] the distribution each random row samples from (temperature, top-k/p, min-p applied)."""
        x = logits / batch.temperature.unsqueeze(1)
        if batch.use_top_k or batch.use_top_p:
            x = _apply_top_k_top_p(x, batch.top_k if batch.use_top_k else None,
                                   batch.top_p if batch.use_top_p else None)
        probs = torch.softmax(x, dim=-1)
        if batch.use_min_p:
            threshold = probs.amax(dim=-1, keepdim=True) * batch.min_p.unsqueeze(1)
            probs = probs.masked_fill(probs < threshold, 0.0)
        return probs

    def draw_noise(self, probs: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        """[S, V] Exp(1) draws; a seeded row's depend on (seed, output position) only."""
        noise = torch.empty_like(probs).exponential_(generator=self.generator)
        for row, seed in batch.seeded_rows:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
            noise[row].exponential_(generator=gen)
        return noise

    def draw_uniforms(self, batch: SamplingBatch, num_rows: int) -> torch.Tensor:
        """[S] U(0, 1) draws (speculative acceptance), from a stream apart from the noise's."""
        uniforms = torch.rand(num_rows, generator=self.generator, device=self.device)
        for row, seed in batch.seeded_rows:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed ^ _UNIFORM_MIX)
            uniforms[row] = torch.rand(1, generator=gen, device=self.device)[0]
        return uniforms


def _apply_top_k_top_p(x: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    sorted_x, order = x.sort(dim=-1, descending=True)
    rank = torch.arange(x.shape[-1], device=x.device).unsqueeze(0)  # [1, V]
    drop = torch.zeros_like(sorted_x, dtype=torch.bool)
    if top_k is not None:
        drop |= rank >= top_k.unsqueeze(1)
    if top_p is not None:
        probs = torch.softmax(sorted_x.masked_fill(drop, float("-inf")), dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the better-ranked tokens
        drop |= (mass_before >= top_p.unsqueeze(1)) & (rank > 0)
    sorted_x = sorted_x.masked_fill(drop, float("-inf"))
    return torch.empty_like(x).scatter_(-1, order, sorted_x)


def compute_logprobs(logits: torch.Tensor, tokens: torch.Tensor, num_logprobs: int) -> list[dict[int, float]]:
    """Per row {token_id: logprob} for the sampled token and the num_logprobs most likely (raw logits)."""
    logprobs = torch.log_softmax(logits, dim=-1)
    top_values, top_ids = logprobs.topk(num_logprobs, dim=-1) if num_logprobs else (None, None)
    sampled = logprobs.gather(1, tokens.unsqueeze(1)).squeeze(1)
    rows = []
    for i, (token, value) in enumerate(zip(tokens.tolist(), sampled.tolist())):
        entry = {}
        if num_logprobs:
            entry.update(zip(top_ids[i].tolist(), top_values[i].tolist()))
        entry[token] = value
        rows.append(entry)
    return rows
