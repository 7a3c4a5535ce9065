"""Speculative decoding settings: the engine option `speculative={...}` and per-request overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

SPEC_METHODS = ("ngram",)


@dataclass(frozen=True)
class SpeculativeConfig:
    """method "ngram": prompt lookup with n in [prompt_lookup_min, prompt_lookup_max], up to
    num_tokens draft tokens per step. The draft-model method is not built yet."""

    method: str = "ngram"
    num_tokens: int = 4
    prompt_lookup_min: int = 1
    prompt_lookup_max: int = 3

    def __post_init__(self) -> None:
        if self.method == "draft":
            raise ValueError("speculative method 'draft' (a draft model) is not supported yet; use 'ngram'")
        if self.method not in SPEC_METHODS:
            raise ValueError(f"speculative method must be one of {SPEC_METHODS}, not {self.method!r}")
        if type(self.num_tokens) is not int or self.num_tokens < 1:
            raise ValueError("speculative num_tokens must be an integer >= 1")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError("speculative needs 1 <= prompt_lookup_min <= prompt_lookup_max")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> "SpeculativeConfig | None":
        """None (speculation off) for None; an unknown key is an error naming it."""
        if options is None:
            return None
        known = {"method", "model", "num_tokens", "prompt_lookup_min", "prompt_lookup_max"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown speculative option(s) {sorted(unknown)}; known: {sorted(known)}")
        options = dict(options)
        if options.get("method") == "draft":
            raise ValueError("speculative method 'draft' (a draft model) is not supported yet; use 'ngram'")
        options.pop("model", None)
        return cls(**options)

    def num_tokens_for(self, request_options: Mapping[str, Any] | None) -> int:
        """Draft length for one request: SamplingParams.speculative {"enabled", "num_tokens"}
        overrides the engine's; 0 means no speculation for it."""
        if request_options is None:
            return self.num_tokens
        if not request_options.get("enabled", True):
            return 0
        k = request_options.get("num_tokens", self.num_tokens)
        if type(k) is not int or k < 0:
            raise ValueError("SamplingParams.speculative num_tokens must be an integer >= 0")
        return k
