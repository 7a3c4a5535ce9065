"""Per-request sampling settings (the offline API's and the engine's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_SAMPLING_EPS = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    """How one request's tokens are chosen and when it stops.

    temperature 0 means greedy. A request with a `seed` samples the same tokens whatever else
    runs in the batch (its random draws depend only on the seed and the output position).
    `logprobs=N` returns, per generated token, the sampled token's logprob and the N most
    likely. `response_format` is {"type": "json_schema", "json_schema": {"schema": {...}}} or
    {"type": "regex", "pattern": "..."}.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None
    skip_special_tokens: bool = True
    response_format: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    speculative: dict[str, Any] | None = field(default=None, hash=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop or ()))
        if not isinstance(self.stop_token_ids, tuple):
            object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids or ()))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        _check(isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens", "must be an integer >= 1")
        _check(self.temperature >= 0.0, "temperature", "must be >= 0")
        _check(0.0 < self.top_p <= 1.0, "top_p", "must be in (0, 1]")
        _check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "must be an integer >= 0 (or -1)")
        _check(0.0 <= self.min_p <= 1.0, "min_p", "must be in [0, 1]")
        _check(self.min_tokens >= 0, "min_tokens", "must be >= 0")
        _check(self.logprobs is None or (isinstance(self.logprobs, int) and 0 <= self.logprobs <= 20),
               "logprobs", "must be an integer in [0, 20]")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", "must be non-empty strings")
        _check(self.seed is None or isinstance(self.seed, int), "seed", "must be an integer")
        if self.response_format is not None:
            kind = self.response_format.get("type") if isinstance(self.response_format, dict) else None
            _check(kind in ("json_schema", "json_object", "regex", "text"), "response_format",
                   "type must be one of json_schema, json_object, regex, text")

    @property
    def is_greedy(self) -> bool:
        return self.temperature < _SAMPLING_EPS

    @property
    def has_constraint(self) -> bool:
        return self.response_format is not None and self.response_format.get("type") != "text"


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams.{name} {message}")
