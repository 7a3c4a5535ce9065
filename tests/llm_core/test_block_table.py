"""BlockTableHost: rows kept across steps, written incrementally, reclaimed when full (no torch)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from llm_core.block_table import BlockTableHost


def test_rows_follow_growing_and_replaced_block_tables():
    host = BlockTableHost(4, 3)
    rows = host.rows_for(["a", "b"], [(5,), (7, 8)])
    assert host.gather(rows, 2)[0, 0] == 5 and host.gather(rows, 2)[1].tolist() == [7, 8]
    rows = host.rows_for(["b", "a"], [(7, 8), (5, 6)])  # order changes, a grows by a block
    assert host.gather(rows, 2).tolist() == [[7, 8], [5, 6]]
    rows = host.rows_for(["a"], [(9, 1)])  # preempted and resumed with other blocks
    assert host.gather(rows, 2).tolist() == [[9, 1]]
    rows = host.rows_for(["a"], [(9, 1, 2, 3, 4)])  # longer than the table was built for
    assert host.gather(rows, 5).tolist() == [[9, 1, 2, 3, 4]]


def test_full_table_reclaims_rows_of_requests_not_in_the_step():
    host = BlockTableHost(2, 2)
    host.rows_for(["a", "b"], [(1,), (2,)])
    rows = host.rows_for(["c", "a"], [(3,), (1, 4)])
    assert host.gather(rows, 1).tolist() == [[3], [1]]  # c took b's row (b is not in the step)
    assert host.gather(rows, 2)[1].tolist() == [1, 4]
    assert rows[0] != rows[1]
    with pytest.raises(RuntimeError, match="more than 2 requests"):
        host.rows_for(["x", "y", "z"], [(1,), (2,), (3,)])


def test_random_steps_match_a_rebuilt_table():
    rng = random.Random(0)
    host = BlockTableHost(6, 4)
    tables: dict[str, tuple[int, ...]] = {}
    for _ in range(300):
        rid = f"r{rng.randrange(10)}"
        action = rng.random()
        if action < 0.5:
            tables[rid] = tables.get(rid, ()) + (rng.randrange(1, 100),)
        elif action < 0.6:
            tables[rid] = tuple(rng.randrange(1, 100) for _ in range(rng.randrange(1, 6)))
        elif action < 0.7:
            tables.pop(rid, None)
            host.release([rid])
        step = rng.sample(sorted(tables), min(len(tables), rng.randrange(1, 4)))
        if not step:
            continue
        rows = host.rows_for(step, [tables[r] for r in step])
        width = max(len(tables[r]) for r in step)
        gathered = host.gather(rows, width)
        assert gathered.dtype == np.int32
        for i, r in enumerate(step):
            assert gathered[i, :len(tables[r])].tolist() == list(tables[r])
