"""One step's encoder work, within its own budget. Imports no torch.

A request's media runs (Request.media_spans) whose embeddings are not computed yet
(Request.unencoded_media) must go through their encoder in the step that first schedules one of
their placeholder tokens. Such a step is charged the run's length (its embedding rows) against
`max_num_encoder_input_tokens`; a request whose next run does not fit is scheduled only up to the
start of that run, and gets the rest in a later step. Runs of equal content are charged once per
step (the runner encodes them once). A run larger than the whole budget is taken by a step that
has charged nothing else, so it never waits forever. Runs wholly inside a prefix-cache hit need
no encoder at all.
"""

from __future__ import annotations

from llm_core.request import Request


class EncoderBudget:
    """The encoder inputs of the step being planned: (request_id, index into media_spans)."""

    def __init__(self, max_num_tokens: int) -> None:
        self.max_num_tokens = max_num_tokens
        self.num_tokens = 0  # embedding rows charged so far
        self.inputs: list[tuple[str, int]] = []
        self._content_hashes: set[str] = set()

    def fit(self, request: Request, start: int, num_new: int) -> tuple[int, tuple[int, ...]]:
        """How many of the `num_new` tokens from position `start` on can run this step, and the
        unencoded runs they reach (to pass to take()). Charges nothing."""
        end = start + num_new
        indices: list[int] = []
        num_tokens = self.num_tokens
        hashes: set[str] = set()
        for index in sorted(request.unencoded_media):
            span = request.media_spans[index]
            if span.offset >= end:
                break
            if span.offset + span.length <= start:
                continue  # inside a prefix-cache hit: never fed, never encoded
            if span.content_hash not in self._content_hashes and span.content_hash not in hashes:
                if num_tokens + span.length > self.max_num_tokens and num_tokens > 0:
                    return max(span.offset - start, 0), tuple(indices)
                num_tokens += span.length
                hashes.add(span.content_hash)
            indices.append(index)
        return num_new, tuple(indices)

    def take(self, request: Request, indices: tuple[int, ...]) -> None:
        """Charge the runs that fit() found for a request that is now scheduled; the runner
        encodes them in this step, so the request no longer lists them as unencoded."""
        for index in indices:
            span = request.media_spans[index]
            if span.content_hash not in self._content_hashes:
                self._content_hashes.add(span.content_hash)
                self.num_tokens += span.length
            self.inputs.append((request.request_id, index))
            request.unencoded_media.discard(index)
