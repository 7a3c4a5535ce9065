"""The engine's one mutable object per request."""

from __future__ import annotations

import enum
from typing import Sequence

from cache.block_hash import BlockHash, MediaSpan, extend_block_hashes
from llm_core.sampling_params import SamplingParams


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED_STOPPED = 3
    FINISHED_LENGTH = 4
    FINISHED_ABORTED = 5

    @property
    def is_finished(self) -> bool:
        return self >= RequestStatus.FINISHED_STOPPED


FINISH_REASONS = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
}


class Request:
    """All state of one request inside the engine.

    One rule replaces phases: the request knows `num_tokens` (prompt + generated) and
    `num_computed_tokens` (tokens whose KV is in the cache). Each step the scheduler gives it
    some of the difference; when a step computes up to `num_tokens`, one token is sampled and
    appended. Prefix-cache hits, chunked prefill and preemption by recompute
    (num_computed_tokens back to 0) all fall out of this.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        sampling_params: SamplingParams,
        *,
        eos_token_ids: Sequence[int] = (),
        arrival_time: float = 0.0,
        priority: int = 0,
        block_size: int = 16,
        media_spans: Sequence[MediaSpan] = (),
    ) -> None:
        if not prompt_token_ids:
            raise ValueError(f"request {request_id!r}: the prompt is empty")
        self.request_id = request_id
        self.sampling_params = sampling_params
        self.eos_token_ids = frozenset(eos_token_ids)
        self.arrival_time = arrival_time
        self.priority = priority
        self.block_size = block_size
        self.media_spans = tuple(media_spans)
        # Indices into media_spans whose embeddings are not computed yet: the scheduler charges them
        # to a step's encoder budget (llm_core/encoder_budget.py); the embedder drops cache hits.
        self.unencoded_media: set[int] = set(range(len(self.media_spans)))
        self.num_prompt_tokens = len(prompt_token_ids)
        self.all_token_ids: list[int] = list(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = -1  # prompt tokens found in the prefix cache, set when first scheduled
        self.block_hashes: list[BlockHash] = []
        self.status = RequestStatus.WAITING
        self.num_preemptions = 0
        self.stop_reason: int | str | None = None
        # Draft tokens proposed after the last step, consumed by the next schedule (never part
        # of all_token_ids until verified).
        self.spec_token_ids: list[int] = []
        self._update_block_hashes()

    # Counts
    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - self.num_prompt_tokens

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.all_token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[self.num_prompt_tokens:]

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    @property
    def finish_reason(self) -> str | None:
        return FINISH_REASONS.get(self.status)

    def append_output_tokens(self, token_ids: Sequence[int]) -> None:
        self.all_token_ids.extend(token_ids)
        self._update_block_hashes()

    def _update_block_hashes(self) -> None:
        if len(self.all_token_ids) >= (len(self.block_hashes) + 1) * self.block_size:
            extend_block_hashes(self.block_hashes, self.all_token_ids, self.block_size, self.media_spans)

    def __repr__(self) -> str:
        return (f"Request({self.request_id!r}, status={self.status.name}, num_tokens={self.num_tokens}, "
                f"num_computed_tokens={self.num_computed_tokens}, priority={self.priority})")
