"""N-gram prompt lookup: propose the tokens that followed the latest earlier occurrence of the
last n tokens of prompt + output. No model, no state; cheap enough to run every step."""

from __future__ import annotations

from typing import Sequence


class NgramProposer:
    """propose(token_ids, k) -> up to k draft tokens (possibly none).

    n is tried from max_n down to min_n; the first n whose suffix occurs earlier wins, and of
    its occurrences the latest one is used (recent text predicts best). The continuation is
    cut at k tokens and at the end of the known tokens.
    """

    def __init__(self, min_n: int = 1, max_n: int = 3) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"n-gram sizes need 1 <= prompt_lookup_min <= prompt_lookup_max, got {min_n}, {max_n}")
        self.min_n = min_n
        self.max_n = max_n

    def propose(self, token_ids: Sequence[int], k: int) -> list[int]:
        num_tokens = len(token_ids)
        if k <= 0:
            return []
        for n in range(min(self.max_n, num_tokens - 1), self.min_n - 1, -1):
            start = find_latest_match(token_ids, n)
            if start is not None:
                return list(token_ids[start + n:start + n + k])
        return []


def find_latest_match(token_ids: Sequence[int], n: int) -> int | None:
    """Start of the latest occurrence of the last n tokens that begins before them, or None."""
    num_tokens = len(token_ids)
    suffix = list(token_ids[num_tokens - n:])
    first = suffix[0]
    for start in range(num_tokens - n - 1, -1, -1):
        if token_ids[start] == first and list(token_ids[start:start + n]) == suffix:
            return start
    return None
