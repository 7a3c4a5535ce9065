"""The vocabulary's byte strings as a trie in flat arrays, walked against a DFA with numpy.

Nodes are the distinct prefixes of token byte strings, numbered breadth-first so that the nodes of
one depth are contiguous (`level_start[d]:level_start[d + 1]`) and so are the children of one node
(`child_start[n]`, `child_count[n]` of them). `token_node[t]` is the node of token t's bytes, or
`num_nodes` (a slot that is never live) for a token without bytes.

A walk from a DFA state gives every node the state its bytes lead to, one numpy step per depth,
in one of two ways chosen per depth:
- sparse: expand the live nodes' children only (dead subtrees are pruned); cheap while few nodes
  are live, e.g. where the grammar expects a keyword or a digit;
- dense: step every node of the depth from its parent's state, the dead state included, with four
  array operations and no pruning; cheaper once most of the depth is live, e.g. inside a free
  JSON string, where nearly every node of the vocabulary is live.
Both give the same states; the choice only changes the cost.
"""

from __future__ import annotations

import numpy as np

from .dfa import Dfa

# A depth is stepped densely when at least this fraction of the one above it is live.
DEFAULT_DENSE_FRACTION = 0.25


class VocabTrie:
    def __init__(self, token_bytes: tuple[bytes | None, ...]):
        # Built level by level with numpy: a node at depth d+1 is a distinct (parent, byte) pair of
        # the tokens longer than d; np.unique numbers them in (parent, byte) order, which makes the
        # numbering breadth-first with each node's children contiguous.
        lengths = np.array([len(b) if b else 0 for b in token_bytes], dtype=np.int64)  # [num_tokens]
        data = np.frombuffer(b"".join(b for b in token_bytes if b), dtype=np.uint8)
        starts = np.cumsum(lengths) - lengths
        node_of = np.zeros(len(token_bytes), dtype=np.int64)
        parents, node_bytes = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
        level_start = [0, 1]
        for depth in range(int(lengths.max(initial=0))):
            longer = np.flatnonzero(lengths > depth)
            keys = node_of[longer] * 256 + data[starts[longer] + depth]
            unique, inverse = np.unique(keys, return_inverse=True)
            node_of[longer] = level_start[-1] + inverse
            parents.append(unique // 256)
            node_bytes.append(unique % 256)
            level_start.append(level_start[-1] + unique.size)
        self.num_nodes = num_nodes = level_start[-1]
        self.level_start = level_start                                              # [depths + 1]
        parent = np.concatenate(parents)                                            # [num_nodes]
        self.node_byte = np.concatenate(node_bytes).astype(np.uint8)                # [num_nodes]
        # Children of node n are nodes [searchsorted(parent, n), searchsorted(parent, n + 1)) past the root.
        ids = np.arange(num_nodes)
        self.child_start = 1 + np.searchsorted(parent[1:], ids, side="left")
        self.child_count = 1 + np.searchsorted(parent[1:], ids, side="right") - self.child_start
        # For dense steps: each node's parent as an index into the level above.
        depth_of = np.repeat(np.arange(len(level_start) - 1), np.diff(level_start))
        level_above = np.asarray(level_start)[np.maximum(depth_of - 1, 0)]
        self.parent_in_level = (parent - level_above).astype(np.int32)              # [num_nodes]
        self.token_node = np.where(lengths > 0, node_of, num_nodes).astype(np.int32)  # [num_tokens]
        # The tokens of node n (several tokens may have the same bytes) are
        # node_tokens[node_token_start[n]:node_token_start[n + 1]].
        self.node_tokens = np.argsort(self.token_node, kind="stable")
        self.node_token_start = np.searchsorted(self.token_node[self.node_tokens], np.arange(num_nodes + 2))

    def allowed_tokens(self, dfa: Dfa, state: int) -> np.ndarray:
        """[num_tokens] bool: tokens whose bytes lead from `state` to a live DFA state."""
        return TrieWalk(self, dfa).allowed_tokens(state)


class TrieWalk:
    """A VocabTrie bound to a Dfa: the arrays its walks need, built once (about 1 ms for 150k
    tokens), then one walk per state. Read-only after construction, so threads may share it."""

    def __init__(self, trie: VocabTrie, dfa: Dfa):
        self.trie = trie
        self.num_states, self.num_classes = dfa.num_states, dfa.num_classes
        dead = self.num_states
        # The table flattened (state * num_classes + class), with the dead state as a last row
        # that stays dead, so a dense step needs no test for it.
        table = np.where(dfa.table < 0, dead, dfa.table).astype(np.int32)
        self.table = np.concatenate([table, np.full((1, self.num_classes), dead, np.int32)]).reshape(-1)
        self.node_class = dfa.byte_class.astype(np.int32)[trie.node_byte]          # [num_nodes]

    def allowed_tokens(self, state: int, dense_fraction: float = DEFAULT_DENSE_FRACTION) -> np.ndarray:
        """[num_tokens] bool: tokens whose bytes lead from `state` to a live DFA state.

        `dense_fraction` only changes the cost (0: every depth dense; above 1: every depth sparse)."""
        trie, dead = self.trie, self.num_states
        node_state = np.full(trie.num_nodes + 1, dead, dtype=np.int32)              # [num_nodes + 1]
        node_state[0] = state
        # The live nodes of the depth above: `nodes` after a sparse step, `live` (bool over the
        # depth) after a dense one; `num_live` either way.
        num_live, nodes, live = 1, np.zeros(1, dtype=np.int64), None
        live_by_depth, total_live = [], 0          # (first node, live nodes or bool over the depth)
        level_start = trie.level_start
        for depth in range(1, len(level_start) - 1):
            above, begin, end = level_start[depth - 1], level_start[depth], level_start[depth + 1]
            if num_live >= dense_fraction * (begin - above):
                live = self._step_dense(above, begin, end, node_state)
                num_live = int(np.count_nonzero(live))
                live_by_depth.append((begin, live))
            else:
                if live is not None:
                    nodes, live = above + np.flatnonzero(live), None
                nodes = self._step_sparse(nodes, node_state)
                num_live = nodes.size
                live_by_depth.append((0, nodes))
            total_live += num_live
            if num_live == 0:
                break
        num_tokens = trie.token_node.size
        if total_live * 8 >= num_tokens:
            return node_state.take(trie.token_node) != dead
        # Few live nodes: their tokens through node_tokens, without reading every token's node.
        allowed = np.zeros(num_tokens, dtype=bool)
        live_nodes = np.concatenate([first + np.flatnonzero(x) if x.dtype == bool else x
                                     for first, x in live_by_depth])
        starts = trie.node_token_start[live_nodes]
        counts = trie.node_token_start[live_nodes + 1] - starts
        positions = np.repeat(starts + counts - np.cumsum(counts), counts) + np.arange(int(counts.sum()))
        allowed[trie.node_tokens[positions]] = True
        return allowed

    def _step_dense(self, above: int, begin: int, end: int, node_state: np.ndarray) -> np.ndarray:
        """Write the states of the nodes begin:end (one depth) into `node_state`; which are live."""
        # node_state[n] = table[node_state[parent of n], node_class[n]], the dead row included
        flat = node_state[above:begin].take(self.trie.parent_in_level[begin:end])
        flat *= self.num_classes
        flat += self.node_class[begin:end]
        level = self.table.take(flat)
        node_state[begin:end] = level
        return level != self.num_states

    def _step_sparse(self, nodes: np.ndarray, node_state: np.ndarray) -> np.ndarray:
        """Write the states of the children of `nodes` (live, one depth) into `node_state`
        (the others stay dead) and return the live children."""
        trie = self.trie
        starts = trie.child_start[nodes]
        counts = trie.child_count[nodes]
        total = int(counts.sum())
        if total == 0:
            return nodes[:0]
        # children: starts[i], starts[i] + 1, ... counts[i] of them for each i, concatenated
        children = np.repeat(starts + counts - np.cumsum(counts), counts) + np.arange(total)
        flat = np.repeat(node_state[nodes] * self.num_classes, counts)
        flat += self.node_class[children]
        next_states = self.table.take(flat)
        node_state[children] = next_states
        return children[next_states != self.num_states]
