"""Per-step attention metadata shared by every layer of one forward pass.

The batch is flattened: all scheduled tokens of all sequences sit in one dimension of
`num_tokens`. Sequence i owns query rows query_start_loc[i]:query_start_loc[i+1]; those are
the *last* q_len_i positions of its context of seq_lens[i] tokens, so query row j of sequence
i sits at position seq_lens[i] - q_len_i + j and attends causally to keys 0..that position.
Keys of earlier positions (prefix-cache hits, earlier prefill chunks, earlier decode steps)
are already in the paged KV cache; this step's keys are stored by the backend before
attending.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [num_tokens] int64: block_id * block_size + offset; -1 = skip store (padding)
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32, cu_seqlens_q
    seq_lens: torch.Tensor  # [num_seqs] int32, context length including this step's tokens
    block_tables: torch.Tensor  # [num_seqs, max_num_blocks_per_seq] int32, padded with 0
    max_query_len: int
    max_seq_len: int
    # Host copies of query_start_loc and seq_lens, so the torch backend and launch-grid
    # computations never read device memory back.
    query_start_loc_cpu: tuple[int, ...]
    seq_lens_cpu: tuple[int, ...]

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def is_decode_only(self) -> bool:
        return self.max_query_len == 1
