"""Immutable messages between the scheduler and the model runner."""

from __future__ import annotations

from dataclasses import dataclass

from llm_core.sampling_params import SamplingParams


@dataclass(frozen=True)
class ScheduledRequest:
    """One request's share of a step: feed `token_ids` at positions start_position.. onward."""

    request_id: str
    token_ids: tuple[int, ...]
    start_position: int  # num_computed_tokens before this step
    block_ids: tuple[int, ...]  # the request's whole block table after this step's allocation
    do_sample: bool  # this chunk reaches the last known token, so a token is sampled
    num_output_tokens: int  # output tokens before this step (the seeded sampler's position)
    sampling_params: SamplingParams
    # Speculation: the last num_draft_tokens of token_ids are proposed, not yet accepted; the
    # runner verifies them and returns 1..num_draft_tokens+1 tokens for this request.
    num_draft_tokens: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def draft_token_ids(self) -> tuple[int, ...]:
        return self.token_ids[len(self.token_ids) - self.num_draft_tokens:]


@dataclass(frozen=True)
class SchedulerOutput:
    """The plan of one engine step."""

    requests: tuple[ScheduledRequest, ...]
    num_batched_tokens: int
    preempted_request_ids: tuple[str, ...] = ()
    finished_request_ids: tuple[str, ...] = ()  # finished since the previous plan
    # Media to encode before this step's forward, in one batch per encoder: (request_id, index
    # into the request's media_spans); num_encoder_tokens: their embedding rows (distinct content).
    encoder_inputs: tuple[tuple[str, int], ...] = ()
    num_encoder_tokens: int = 0

    @property
    def is_empty(self) -> bool:
        return not self.requests


@dataclass(frozen=True)
class RequestUpdate:
    """What one step produced for one request (the engine core's output)."""

    request_id: str
    new_token_ids: tuple[int, ...]
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_cached_tokens: int = 0
    num_prompt_tokens: int = 0
    logprobs: tuple[dict[int, float], ...] | None = None
    num_draft_tokens: int = 0  # draft tokens verified this step
    num_accepted_draft_tokens: int = 0  # of which accepted (and kept: none past a stop)
