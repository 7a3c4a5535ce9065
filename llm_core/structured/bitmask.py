"""Token bitmasks on logits: disallowed tokens get -inf, for the whole batch at once.

Layout: `bitmask` is int32 [B, ceil(V / 32)]; token t of row r is allowed iff bit t % 32 of word
t // 32 is set. Row r of the bitmask belongs to row r of the logits; `rows` (indices) names the
rows that carry a constraint, and every other row is left untouched. Tokens at or past 32 * width
(logits wider than the vocabulary) are disallowed in constrained rows.
"""

from __future__ import annotations

import torch

from . import bitmask_kernel


def allocate_token_bitmask(batch_size: int, vocab_size: int,
                           device: str | torch.device = "cpu") -> torch.Tensor:
    """int32 [batch_size, ceil(vocab_size / 32)], every token allowed."""
    return torch.full((batch_size, (vocab_size + 31) // 32), -1, dtype=torch.int32, device=device)


def _check(logits: torch.Tensor, bitmask: torch.Tensor) -> None:
    if logits.dim() != 2 or bitmask.dim() != 2 or bitmask.shape[0] != logits.shape[0]:
        raise ValueError(f"need logits [B, V] and bitmask [B, W], got {tuple(logits.shape)} and "
                         f"{tuple(bitmask.shape)}")
    if bitmask.dtype != torch.int32:
        raise ValueError(f"bitmask must be int32, got {bitmask.dtype}")
    if bitmask.device != logits.device:
        raise ValueError(f"bitmask on {bitmask.device} but logits on {logits.device}")


def apply_token_bitmask_torch(logits: torch.Tensor, bitmask: torch.Tensor,
                              rows: torch.Tensor | list[int] | None = None) -> None:
    """In place, with torch ops (any device): the reference for the Triton kernel."""
    _check(logits, bitmask)
    vocab_size, width = logits.shape[1], bitmask.shape[1]
    shifts = torch.arange(32, device=bitmask.device, dtype=torch.int32)
    index = None if rows is None else torch.as_tensor(rows, device=logits.device, dtype=torch.long)
    words = bitmask if index is None else bitmask[index]                                    # [R, W]
    allowed = ((words.unsqueeze(-1) >> shifts) & 1).bool().reshape(words.shape[0], width * 32)  # [R, 32W]
    if width * 32 >= vocab_size:
        allowed = allowed[:, :vocab_size]
    else:
        allowed = torch.nn.functional.pad(allowed, (0, vocab_size - width * 32), value=False)
    if index is None:
        logits.masked_fill_(~allowed, float("-inf"))
    else:
        logits.index_put_((index,), logits[index].masked_fill(~allowed, float("-inf")))


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor,
                        rows: torch.Tensor | list[int] | None = None) -> None:
    """Set logits of disallowed tokens to -inf in place: the Triton kernel on CUDA, torch elsewhere."""
    if logits.is_cuda and bitmask_kernel.is_available():
        _check(logits, bitmask)
        bitmask_kernel.apply_token_bitmask_triton(logits, bitmask, rows)
    else:
        apply_token_bitmask_torch(logits, bitmask, rows)
