"""The vocabulary's byte strings as a trie in flat arrays, walked against a DFA with numpy.

Nodes are the distinct prefixes of token byte strings sorted by (length, bytes): breadth-first, and
the children of one node are contiguous (`child_start[n]:child_end[n]`). `token_node[t]` is the node
of token t's bytes, or `num_nodes` (a slot that is never live) for a token without bytes.
"""

from __future__ import annotations

import numpy as np

from .dfa import Dfa


class VocabTrie:
    def __init__(self, token_bytes: tuple[bytes | None, ...]):
        prefixes = {b""}
        for data in token_bytes:
            if data:
                prefixes.update(data[:i] for i in range(1, len(data) + 1))
        nodes = sorted(prefixes, key=lambda p: (len(p), p))
        index = {p: i for i, p in enumerate(nodes)}
        self.num_nodes = len(nodes)
        parent = np.array([index[p[:-1]] for p in nodes[1:]], dtype=np.int64)   # [num_nodes - 1]
        self.node_byte = np.zeros(self.num_nodes, dtype=np.int64)               # [num_nodes]
        self.node_byte[1:] = [p[-1] for p in nodes[1:]]
        # Children of node n are nodes 1 + [searchsorted(parent, n), searchsorted(parent, n + 1)).
        ids = np.arange(self.num_nodes)
        self.child_start = 1 + np.searchsorted(parent, ids, side="left")
        self.child_end = 1 + np.searchsorted(parent, ids, side="right")
        self.token_node = np.array([index[b] if b else self.num_nodes for b in token_bytes],
                                   dtype=np.int64)                               # [num_tokens]

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
