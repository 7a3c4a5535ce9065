"""How much device memory the engine needs besides the KV cache, measured by running the worst step.

The KV cache takes what is left, so this must not guess: after the weights load, one forward of
the largest step the scheduler may plan (max_num_batched_tokens tokens in one sequence, logits
for max_num_seqs rows) runs against a two-block cache, and the allocator's peak is the answer.
Peak statistics are reset first, so memory that an engine built earlier in this process held
and gave back does not count against this one.
"""

from __future__ import annotations

import torch

from llm_core.attention.metadata import AttentionMetadata


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


@torch.inference_mode()
def profile_peak_bytes(model, arch, *, device: torch.device, dtype: torch.dtype, num_tokens: int, num_logits: int,
                       block_size: int) -> int:
    """Peak bytes allocated on `device` by the weights (already loaded) plus one forward of
    num_tokens tokens and num_logits logits rows. Off CUDA the forward runs (a check) and this
    returns 0: the CPU budget is explicit."""
    kv_caches = _two_block_cache(arch, device=device, dtype=dtype, block_size=block_size)
    _forward_one_sequence(model, kv_caches, num_tokens=num_tokens, num_logits=num_logits, block_size=block_size,
                          device=device)
    del kv_caches
    if device.type != "cuda":
        return 0
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.empty_cache()
    return peak


@torch.inference_mode()
def warm_up_query_lengths(model, arch, *, device: torch.device, dtype: torch.dtype, block_size: int,
                          max_len: int = 64) -> None:
    """Forwards of one sequence of 1, 2, 4 .. max_len tokens against a two-block cache, so that the
    attention kernels' tile shapes for short queries (chosen from the step's longest query) are
    compiled at start, not by the first step that needs them (a Triton compile takes about a
    second: a serving process would stall every running request that long)."""
    kv_caches = _two_block_cache(arch, device=device, dtype=dtype, block_size=block_size)
    num_tokens = 1
    while num_tokens <= max_len:
        _forward_one_sequence(model, kv_caches, num_tokens=num_tokens, num_logits=1, block_size=block_size,
                              device=device)
        num_tokens *= 2


def _two_block_cache(arch, *, device: torch.device, dtype: torch.dtype, block_size: int):
    shape = (2, block_size, arch.num_kv_heads, arch.head_dim)  # block 0 is read, block 1 never
    return [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
            for _ in range(arch.num_layers)]


def _forward_one_sequence(model, kv_caches, *, num_tokens: int, num_logits: int, block_size: int,
                          device: torch.device) -> None:
    """One sequence of num_tokens tokens that stores nothing and reads block 0 (zeros) for keys."""
    num_blocks = -(-num_tokens // block_size)
    meta = AttentionMetadata(
        slot_mapping=torch.full((num_tokens,), -1, dtype=torch.int64, device=device),  # store nothing
        query_start_loc=torch.tensor([0, num_tokens], dtype=torch.int32, device=device),
        seq_lens=torch.tensor([num_tokens], dtype=torch.int32, device=device),
        block_tables=torch.zeros(1, num_blocks, dtype=torch.int32, device=device),
        max_query_len=num_tokens, max_seq_len=num_tokens,
        query_start_loc_cpu=(0, num_tokens), seq_lens_cpu=(num_tokens,))
    ids = torch.zeros(num_tokens, dtype=torch.int64, device=device)
    positions = torch.arange(num_tokens, dtype=torch.int64, device=device)
    hidden = model(ids, positions, kv_caches, meta)
    logits = model.compute_logits(hidden[-min(num_logits, num_tokens):])
    if not torch.isfinite(logits).all():  # the two-block cache holds zeros: any NaN is a bug
        raise RuntimeError("the profiling forward produced non-finite logits")
