"""Triton kernels for paged attention: KV store, unified varlen attention, split-KV decode."""

from llm_core.attention.kernels.decode_attention import decode_attention, decode_attention_kernel, decode_reduce_kernel
from llm_core.attention.kernels.prefill_attention import prefill_attention, prefill_attention_kernel
from llm_core.attention.kernels.store_kv import store_kv, store_kv_kernel

__all__ = [
    "decode_attention", "decode_attention_kernel", "decode_reduce_kernel",
    "prefill_attention", "prefill_attention_kernel", "store_kv", "store_kv_kernel",
]
