"""Trimming and Hopcroft minimization of a DFA table ([num_states, num_classes], -1 = dead).

`minimize` returns an equivalent table where every state is live (can still reach an accepting
state), no two states have the same future, and states are numbered in breadth-first order from the
start (state 0). The dead state stays implicit (-1): it is never split and, since the initial
partition already separates it, never used as a splitter, so no preimage of it is ever built.
"""

from __future__ import annotations

import numpy as np

from .errors import StructuredOutputError


def minimize(table: np.ndarray, accepting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    table, accepting = _trim(table, accepting)
    num_states, num_classes = table.shape
    rows = table.tolist()
    # inv[t]: the (class, source) pairs of moves into t.
    inv: list[list[tuple[int, int]]] = [[] for _ in range(num_states)]
    for s, row in enumerate(rows):
        for c, t in enumerate(row):
            if t >= 0:
                inv[t].append((c, s))
    accepting_list = accepting.tolist()
    blocks = [set(s for s in range(num_states) if accepting_list[s]),
              set(s for s in range(num_states) if not accepting_list[s])]
    blocks = [b for b in blocks if b]
    block_of = [0] * num_states
    for i, b in enumerate(blocks):
        for s in b:
            block_of[s] = i
    work = list(range(len(blocks)))
    in_work = set(work)
    while work:
        splitter = work.pop()
        in_work.discard(splitter)
        preimages: dict[int, set[int]] = {}
        for t in blocks[splitter]:
            for c, s in inv[t]:
                preimages.setdefault(c, set()).add(s)
        for sources in preimages.values():
            touched: dict[int, list[int]] = {}
            for s in sources:
                touched.setdefault(block_of[s], []).append(s)
            for blk, members in touched.items():
                if len(members) == len(blocks[blk]):
                    continue
                moved = set(members)
                blocks[blk] -= moved
                new_id = len(blocks)
                blocks.append(moved)
                for s in members:
                    block_of[s] = new_id
                # Both halves must split others if blk still waits; otherwise the smaller suffices.
                if blk in in_work or len(moved) <= len(blocks[blk]):
                    chosen = new_id
                else:
                    chosen = blk
                work.append(chosen)
                in_work.add(chosen)
    return _quotient(rows, accepting_list, block_of, num_classes)


def _trim(table: np.ndarray, accepting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop states that cannot reach an accepting state; moves into them become -1."""
    num_states = table.shape[0]
    preds: list[list[int]] = [[] for _ in range(num_states)]
    for s, row in enumerate(table.tolist()):
        for t in set(row):
            if t >= 0:
                preds[t].append(s)
    live = accepting.copy()
    stack = np.flatnonzero(accepting).tolist()
    while stack:
        for s in preds[stack.pop()]:
            if not live[s]:
                live[s] = True
                stack.append(s)
    if not live[0]:
        raise StructuredOutputError("the grammar matches no string")
    new_id = np.cumsum(live) - 1
    kept = table[live]
    kept = np.where((kept >= 0) & live[np.maximum(kept, 0)], new_id[np.maximum(kept, 0)], -1)
    return kept.astype(np.int32), accepting[live]


def _quotient(rows, accepting, block_of, num_classes) -> tuple[np.ndarray, np.ndarray]:
    """One state per block, numbered breadth-first from the start's block."""
    representative: dict[int, int] = {}
    for s in range(len(rows)):
        representative.setdefault(block_of[s], s)
    order = {block_of[0]: 0}
    queue = [block_of[0]]
    out_rows = []
    for blk in queue:
        row = []
        for t in rows[representative[blk]]:
            if t < 0:
                row.append(-1)
                continue
            tb = block_of[t]
            if tb not in order:
                order[tb] = len(queue)
                queue.append(tb)
            row.append(order[tb])
        out_rows.append(row)
    table = np.array(out_rows, dtype=np.int32).reshape(len(out_rows), num_classes)
    acc = np.array([accepting[representative[blk]] for blk in queue], dtype=bool)
    return table, acc
