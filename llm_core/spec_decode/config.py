"""Speculative decoding settings: the engine option `speculative={...}` and per-request overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

SPEC_METHODS = ("ngram", "draft")
# "num_tokens": "auto" means adaptive k up to this many draft tokens.
AUTO_MAX_NUM_TOKENS = 8


@dataclass(frozen=True)
class SpeculativeConfig:
    """method "ngram": prompt lookup with n in [prompt_lookup_min, prompt_lookup_max].
    method "draft": a smaller checkpoint in directory `model` with the target's tokenizer.

    num_tokens is the draft length k per step (its maximum when adaptive). adaptive: each request
    chooses its own k in [1, num_tokens] from its recent acceptance (spec_decode/adaptive.py);
    `"num_tokens": "auto"` is short for adaptive with num_tokens 8.
    """

    method: str = "ngram"
    model: str | None = None
    num_tokens: int = 4
    adaptive: bool = False
    prompt_lookup_min: int = 1
    prompt_lookup_max: int = 3

    def __post_init__(self) -> None:
        if self.method not in SPEC_METHODS:
            raise ValueError(f"speculative method must be one of {SPEC_METHODS}, not {self.method!r}")
        if self.method == "draft" and not (isinstance(self.model, str) and self.model):
            raise ValueError("speculative method 'draft' needs \"model\": the draft checkpoint's directory")
        if self.method != "draft" and self.model is not None:
            raise ValueError("speculative \"model\" is only for method 'draft'")
        if type(self.num_tokens) is not int or self.num_tokens < 1:
            raise ValueError("speculative num_tokens must be an integer >= 1 or \"auto\"")
        if type(self.adaptive) is not bool:
            raise ValueError("speculative adaptive must be true or false")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError("speculative needs 1 <= prompt_lookup_min <= prompt_lookup_max")

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None) -> "SpeculativeConfig | None":
        """None (speculation off) for None; an unknown key is an error naming it."""
        if options is None:
            return None
        known = {"method", "model", "num_tokens", "adaptive", "prompt_lookup_min", "prompt_lookup_max"}
        unknown = set(options) - known
        if unknown:
            raise ValueError(f"unknown speculative option(s) {sorted(unknown)}; known: {sorted(known)}")
        options = dict(options)
        if options.get("num_tokens") == "auto":
            if options.get("adaptive") is False:
                raise ValueError("speculative \"num_tokens\": \"auto\" is adaptive; it contradicts \"adaptive\": false")
            options.update(num_tokens=AUTO_MAX_NUM_TOKENS, adaptive=True)
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

    def is_adaptive_for(self, request_options: Mapping[str, Any] | None) -> bool:
        """A request that fixes its own num_tokens keeps it; others adapt when the engine does."""
        return self.adaptive and not (request_options and "num_tokens" in request_options)
