"""Adaptive draft length: each request chooses k from its own recent acceptance.

Verification accepts drafts left to right until the first rejection, so a step with d drafts
of which a were accepted observed a successes in a + (a < d) trials of "the next draft is
accepted given the ones before it were". Per request, exponentially weighted moving averages
(weight EWMA_WEIGHT per verified step) of the successes and of the trials estimate that
probability alpha. The k-th draft token is accepted with probability alpha ** k, so k is the
largest value with alpha ** k >= MIN_LAST_DRAFT_ACCEPTANCE, within [1, the maximum]: k shrinks
under low acceptance and grows back to the maximum when drafts are accepted again. A request
starts at the maximum. k never drops to 0, so a request keeps probing and can recover.
"""

from __future__ import annotations

import math

EWMA_WEIGHT = 0.3
MIN_LAST_DRAFT_ACCEPTANCE = 0.2


class AdaptiveNumTokens:
    """Per-request acceptance estimates; only request ids, no engine state."""

    def __init__(self) -> None:
        self._ewma: dict[str, tuple[float, float]] = {}  # request id -> (accepted, trials)

    def acceptance(self, request_id: str) -> float:
        """The estimated alpha; 1.0 before the request's first verified draft."""
        accepted, trials = self._ewma.get(request_id, (1.0, 1.0))
        return accepted / trials if trials > 0 else 1.0

    def num_tokens(self, request_id: str, max_num_tokens: int) -> int:
        alpha = self.acceptance(request_id)
        if alpha >= 1.0:
            return max_num_tokens
        if alpha <= MIN_LAST_DRAFT_ACCEPTANCE:
            return min(1, max_num_tokens)
        k = int(math.log(MIN_LAST_DRAFT_ACCEPTANCE) / math.log(alpha) + 1e-9)
        return max(1, min(k, max_num_tokens))

    def record(self, request_id: str, num_draft_tokens: int, num_accepted: int) -> None:
        """One verified step of the request: num_accepted of its num_draft_tokens drafts kept."""
        if num_draft_tokens <= 0:
            return
        trials = num_accepted + (num_accepted < num_draft_tokens)
        accepted_avg, trials_avg = self._ewma.get(request_id, (1.0, 1.0))
        w = EWMA_WEIGHT
        self._ewma[request_id] = ((1 - w) * accepted_avg + w * num_accepted, (1 - w) * trials_avg + w * trials)

    def free(self, request_id: str) -> None:
        self._ewma.pop(request_id, None)
