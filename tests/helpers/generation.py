"""Prompts and output summaries shared by the engine tests that compare two ways of decoding."""

from __future__ import annotations

import random


def random_prompts(n: int, seed: int, max_len: int = 50) -> list[list[int]]:
    """n prompts of 1..max_len - 1 random token ids in [3, 400)."""
    rng = random.Random(seed)
    return [[rng.randrange(3, 400) for _ in range(rng.randrange(1, max_len))] for _ in range(n)]


def summary(outputs, cached: bool = False):
    """What must match between two runs: tokens, finish reason, text (and cached-token counts)."""
    return [(o.token_ids, o.finish_reason, o.text) + ((o.num_cached_tokens,) if cached else ()) for o in outputs]
