"""Triton kernel that applies token bitmasks to logits in place (see bitmask.py for the layout).

One program per (constrained row, block of BLOCK_SIZE tokens): it reads BLOCK_SIZE / 32 words of
the row's bitmask and stores -inf over disallowed tokens; logits are never read.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton on this platform: bitmask.py falls back to torch
    triton = None


def is_available() -> bool:
    return triton is not None


if triton is not None:
    @triton.jit
    def apply_token_bitmask_kernel(logits_ptr, bitmask_ptr, rows_ptr, vocab_size, num_words,
                                   logits_stride, bitmask_stride,
                                   HAS_ROWS: tl.constexpr, BLOCK_SIZE: tl.constexpr):
        program_row = tl.program_id(0)
        block = tl.program_id(1)
        if HAS_ROWS:
            row = tl.load(rows_ptr + program_row).to(tl.int64)
        else:
            row = program_row.to(tl.int64)
        offsets = block * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
        in_vocab = offsets < vocab_size
        word_index = offsets // 32
        words = tl.load(bitmask_ptr + row * bitmask_stride + word_index,
                        mask=in_vocab & (word_index < num_words), other=0)
        allowed = ((words >> (offsets % 32)) & 1) != 0
        neg_inf = tl.full((BLOCK_SIZE,), float("-inf"), logits_ptr.dtype.element_ty)
        tl.store(logits_ptr + row * logits_stride + offsets, neg_inf, mask=in_vocab & ~allowed)


def apply_token_bitmask_triton(logits: torch.Tensor, bitmask: torch.Tensor,
                               rows: torch.Tensor | list[int] | None = None,
                               block_size: int = 1024) -> None:
    """Launcher of apply_token_bitmask_kernel. logits [B, V] (unit stride in V), bitmask int32 [B, W]."""
    if logits.stride(1) != 1 or bitmask.stride(1) != 1:
        raise ValueError("logits and bitmask need a unit stride in their last dimension")
    batch, vocab_size = logits.shape
    if rows is None:
        num_rows, rows_tensor = batch, bitmask  # rows_ptr unused
    else:
        rows_tensor = torch.as_tensor(rows, device=logits.device, dtype=torch.int32)
        num_rows = rows_tensor.numel()
    if num_rows == 0:
        return
    grid = (num_rows, triton.cdiv(vocab_size, block_size))
    apply_token_bitmask_kernel[grid](logits, bitmask, rows_tensor, vocab_size, bitmask.shape[1],
                                     logits.stride(0), bitmask.stride(0),
                                     HAS_ROWS=rows is not None, BLOCK_SIZE=block_size)
