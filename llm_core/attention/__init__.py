"""Paged attention: per-step metadata, the backend contract, the torch backend.

The Triton backend (llm_core.attention.triton_backend) is imported only through
get_attention_backend, so that importing this package never needs triton.
"""

from llm_core.attention.backend import AttentionBackend, get_attention_backend
from llm_core.attention.metadata import AttentionMetadata
from llm_core.attention.torch_backend import TorchAttentionBackend, paged_attention_reference

__all__ = [
    "AttentionBackend", "AttentionMetadata", "TorchAttentionBackend",
    "get_attention_backend", "paged_attention_reference",
]
