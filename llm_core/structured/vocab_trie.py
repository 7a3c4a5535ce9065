"""The vocabulary's byte strings as a trie in flat arrays, walked against a DFA with numpy.

Nodes are the distinct prefixes of token byte strings, numbered breadth-first so that the children
of one node are contiguous (`child_start[n]:child_end[n]`). `token_node[t]` is the node
of token t's bytes, or `num_nodes` (a slot that is never live) for a token without bytes.
"""

from __future__ import annotations

import numpy as np

from .dfa import Dfa


class VocabTrie:
    def __init__(self, token_bytes: tuple[bytes | None, ...]):
        # Built level by level with numpy: a node at depth d+1 is a distinct (parent, byte) pair of
        # the tokens longer than d; np.unique numbers them in (parent, byte) order, which makes the
        # numbering breadth-first with each node's children contiguous.
        lengths = np.array([len(b) if b else 0 for b in token_bytes], dtype=np.int64)  # [num_tokens]
        data = np.frombuffer(b"".join(b for b in token_bytes if b), dtype=np.uint8)
        starts = np.cumsum(lengths) - lengths
        node_of = np.zeros(len(token_bytes), dtype=np.int64)
        parents, node_bytes = [np.zeros(0, np.int64)], [np.zeros(1, np.int64)]
        num_nodes = 1
        for depth in range(int(lengths.max(initial=0))):
            longer = np.flatnonzero(lengths > depth)
            keys = node_of[longer] * 256 + data[starts[longer] + depth]
            unique, inverse = np.unique(keys, return_inverse=True)
            node_of[longer] = num_nodes + inverse
            parents.append(unique // 256)
            node_bytes.append(unique % 256)
            num_nodes += unique.size
        self.num_nodes = num_nodes
        parent = np.concatenate(parents)                                            # [num_nodes - 1]
        self.node_byte = np.concatenate(node_bytes)                                 # [num_nodes]
        # Children of node n are nodes 1 + [searchsorted(parent, n), searchsorted(parent, n + 1)).
        ids = np.arange(num_nodes)
        self.child_start = 1 + np.searchsorted(parent, ids, side="left")
        self.child_end = 1 + np.searchsorted(parent, ids, side="right")
        self.token_node = np.where(lengths > 0, node_of, num_nodes)                # [num_tokens]

    def allowed_tokens(self, dfa: Dfa, state: int) -> np.ndarray:
        """[num_tokens] bool: tokens whose bytes lead from `state` to a live DFA state."""
        live = np.zeros(self.num_nodes + 1, dtype=bool)
        nodes = np.zeros(1, dtype=np.int64)
        states = np.full(1, state, dtype=np.int64)
        table, byte_class = dfa.table, dfa.byte_class
        while nodes.size:
            starts = self.child_start[nodes]
            counts = self.child_end[nodes] - starts
            total = int(counts.sum())
            if total == 0:
                break
            owner = np.repeat(np.arange(nodes.size), counts)                      # [total]
            first = np.cumsum(counts) - counts
            children = starts[owner] + (np.arange(total) - first[owner])
            next_states = table[states[owner], byte_class[self.node_byte[children]]]
            keep = next_states >= 0
            nodes, states = children[keep], next_states[keep].astype(np.int64)
            live[nodes] = True
        return live[self.token_node]
