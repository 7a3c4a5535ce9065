"""What the engine hands back: per-step deltas and the offline API's final outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CompletionDelta:
    """New output of one request in one step (what streams to a client)."""

    request_id: str
    new_token_ids: tuple[int, ...]
    text_delta: str
    finished: bool
    finish_reason: str | None = None  # stop | length | abort
    stop_reason: int | str | None = None  # the stop string or stop token id that ended it
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0
    logprobs: tuple[dict[int, float], ...] | None = None
    error: str | None = None  # set with finish_reason "error" (e.g. a grammar that failed to compile)
    num_draft_tokens: int = 0  # speculation: draft tokens verified in this step
    num_accepted_draft_tokens: int = 0  # of which accepted
    num_drafts: int = 0  # steps with drafts verified (1 per step; more in a merged delta)
    # Span records of a traced request, on its finished delta only (llm_core/request_trace.py).
    trace: dict[str, Any] | None = None


@dataclass
class RequestOutput:
    """The whole result of one prompt (offline API), as vLLM shapes it minus the nesting."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_cached_tokens: int = 0
    logprobs: list[dict[int, float]] | None = None
    error: str | None = None
    num_draft_tokens: int = 0  # speculation: draft tokens verified over the request
    num_accepted_draft_tokens: int = 0
    num_drafts: int = 0  # steps that verified drafts

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens per verified step with drafts (accepted drafts + the target's token); 0 without drafts."""
        return (self.num_accepted_draft_tokens + self.num_drafts) / self.num_drafts if self.num_drafts else 0.0

    def add(self, delta: CompletionDelta) -> None:
        self.text += delta.text_delta
        self.token_ids.extend(delta.new_token_ids)
        self.num_cached_tokens = delta.num_cached_tokens
        self.num_draft_tokens += delta.num_draft_tokens
        self.num_accepted_draft_tokens += delta.num_accepted_draft_tokens
        self.num_drafts += delta.num_drafts
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + list(delta.logprobs)
        if delta.finished:
            self.finish_reason = delta.finish_reason
            self.stop_reason = delta.stop_reason
            self.error = delta.error
