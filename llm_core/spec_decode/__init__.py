"""Speculative decoding: proposers and lossless verification."""

from llm_core.spec_decode.config import SpeculativeConfig
from llm_core.spec_decode.ngram import NgramProposer

__all__ = ["NgramProposer", "SpeculativeConfig"]
