"""Host mirror of the runner's block tables, kept across steps.

The scheduler sends each request's whole block table every step; rebuilding a padded
[num_seqs, max_blocks] table from Python tuples costs milliseconds at a few hundred requests.
Here each request keeps a row of one numpy table; a step writes only blocks that changed (a
new block every block_size tokens; the whole row after preemption) and gathers its rows in
one vectorized copy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class BlockTableHost:
    """Rows of block ids by request id. Rows of requests absent from a step are reclaimed when
    the table is full, so the table never needs to be told that a request finished."""

    def __init__(self, max_num_rows: int, max_blocks_per_seq: int) -> None:
        self.table = np.zeros((max_num_rows, max_blocks_per_seq), dtype=np.int32)
        self._rows: dict[str, int] = {}
        self._written: list[tuple[int, ...]] = [()] * max_num_rows  # what each row holds
        self._free_rows = list(range(max_num_rows - 1, -1, -1))

    def rows_for(self, request_ids: Sequence[str], block_ids: Sequence[tuple[int, ...]]) -> np.ndarray:
        """Brings the rows of these requests up to date; returns their row indices [B] int64."""
        rows = np.empty(len(request_ids), dtype=np.int64)
        for i, (request_id, blocks) in enumerate(zip(request_ids, block_ids)):
            row = self._rows.get(request_id)
            if row is None:
                row = self._assign(request_id, request_ids)
            old = self._written[row]
            if len(blocks) != len(old) or blocks != old:
                self._write(row, old, blocks)
            rows[i] = row
        return rows

    def gather(self, rows: np.ndarray, num_blocks: int) -> np.ndarray:
        """[B, num_blocks] int32: the first num_blocks entries of these rows (entries past a
        request's own blocks are stale and must not be read)."""
        return self.table[rows, :num_blocks]

    def release(self, request_ids: Sequence[str]) -> None:
        for request_id in request_ids:
            row = self._rows.pop(request_id, None)
            if row is not None:
                self._written[row] = ()
                self._free_rows.append(row)

    def _write(self, row: int, old: tuple[int, ...], blocks: tuple[int, ...]) -> None:
        if len(blocks) > self.table.shape[1]:
            self.table = np.pad(self.table, ((0, 0), (0, len(blocks) - self.table.shape[1])))
        n = len(old)
        if len(blocks) > n and blocks[:n] == old:  # grown: write the new tail only
            self.table[row, n:len(blocks)] = blocks[n:]
        else:
            self.table[row, :len(blocks)] = blocks
        self._written[row] = blocks

    def _assign(self, request_id: str, in_use: Sequence[str]) -> int:
        if not self._free_rows:
            keep = set(in_use)
            self.release([r for r in self._rows if r not in keep])
        if not self._free_rows:
            raise RuntimeError(f"more than {self.table.shape[0]} requests in one step")
        row = self._free_rows.pop()
        self._rows[request_id] = row
        return row
