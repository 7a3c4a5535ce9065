"""What the engine hands back: per-step deltas and the offline API's final outputs."""

from __future__ import annotations

from dataclasses import dataclass, field


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

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, delta: CompletionDelta) -> None:
        self.text += delta.text_delta
        self.token_ids.extend(delta.new_token_ids)
        self.num_cached_tokens = delta.num_cached_tokens
        self.num_draft_tokens += delta.num_draft_tokens
        self.num_accepted_draft_tokens += delta.num_accepted_draft_tokens
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + list(delta.logprobs)
        if delta.finished:
            self.finish_reason = delta.finish_reason
            self.stop_reason = delta.stop_reason
            self.error = delta.error
