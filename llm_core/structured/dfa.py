"""A minimal, trimmed DFA over bytes, and its construction from an NFA.

Bytes are grouped into classes that no transition tells apart (`byte_class[b]`), so the table is
[num_states, num_classes] int32. Invariants of a built Dfa:
- state 0 is the start; -1 in the table is the dead state (no completion is possible);
- every state is reachable and live: from each one some accepting state can be reached, so a byte
  sequence that leaves the DFA alive is always a prefix of a string in the language;
- it is minimal (Hopcroft), so equal futures share one state and one token mask.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .dfa_minimize import minimize
from .errors import GrammarTooLargeError
from .nfa import DEFAULT_MAX_NFA_STATES, Nfa, build_nfa
from .regex_ast import Automaton, Node

DEAD = -1


class Dfa:
    """Immutable transition table; `step` and `matches` work on bytes."""

    def __init__(self, byte_class: np.ndarray, table: np.ndarray, accepting: np.ndarray):
        self.byte_class = byte_class.astype(np.int32)      # [256]
        self.table = table.astype(np.int32)                # [num_states, num_classes]
        self.accepting = accepting.astype(bool)            # [num_states]
        self._classes = self.byte_class.tolist()
        self._rows = self.table.tolist()

    @property
    def num_states(self) -> int:
        return self.table.shape[0]

    @property
    def num_classes(self) -> int:
        return self.table.shape[1]

    def step(self, state: int, data: bytes) -> int:
        """The state after `data` from `state`, or DEAD."""
        rows, classes = self._rows, self._classes
        for b in data:
            state = rows[state][classes[b]]
            if state < 0:
                return DEAD
        return state

    def is_accepting(self, state: int) -> bool:
        return state >= 0 and bool(self.accepting[state])

    def matches(self, data: bytes) -> bool:
        return self.is_accepting(self.step(0, data))

    def breadth_first(self) -> Iterator[int]:
        """Every state, nearest the start (fewest bytes from it) first; lazily, so taking the first
        few costs little."""
        order, seen = [0], {0}
        for state in order:
            yield state
            for target in self._rows[state]:
                if target >= 0 and target not in seen:
                    seen.add(target)
                    order.append(target)

    def distance_to_accept(self) -> np.ndarray:
        """[num_states] fewest bytes from each state to an accepting one."""
        dist = np.where(self.accepting, 0, -1)
        frontier = set(np.flatnonzero(self.accepting).tolist())
        preds: dict[int, set[int]] = {}
        for s, row in enumerate(self._rows):
            for t in row:
                if t >= 0:
                    preds.setdefault(t, set()).add(s)
        d = 0
        while frontier:
            d += 1
            nxt = set()
            for t in frontier:
                for s in preds.get(t, ()):
                    if dist[s] < 0:
                        dist[s] = d
                        nxt.add(s)
            frontier = nxt
        return dist


def determinize(nfa: Nfa, max_states: int) -> Dfa:
    """Subset construction over byte classes, then trimming and minimization."""
    byte_class, class_masks = _byte_classes(nfa)
    num_classes = len(class_masks)
    # Per NFA state: its moves as (class, target) pairs.
    moves = []
    for state_moves in nfa.moves:
        pairs = []
        for target, mask in state_moves.items():
            pairs.extend((c, target) for c, cmask in enumerate(class_masks) if cmask & mask)
        moves.append(pairs)
    # A DFA state is the set of *important* NFA states in an epsilon closure: those with byte moves,
    # and the accept state. Sets that differ only in epsilon-only states behave the same, so
    # dropping those states merges them before minimization has to.
    important = [bool(m) or s == nfa.accept for s, m in enumerate(nfa.moves)]
    closure_memo: dict[frozenset, frozenset] = {}

    def closure(states: frozenset) -> frozenset:
        found = closure_memo.get(states)
        if found is None:
            seen, stack = set(states), list(states)
            while stack:
                for t in nfa.eps[stack.pop()]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            found = closure_memo[states] = frozenset(t for t in seen if important[t])
        return found

    start = closure(frozenset((nfa.start,)))
    index = {start: 0}
    sets, rows = [start], []
    while len(rows) < len(sets):
        if len(sets) > max_states:
            raise GrammarTooLargeError(f"grammar too large: its DFA exceeds {max_states} states")
        targets: dict[int, set[int]] = {}
        for s in sets[len(rows)]:
            for c, t in moves[s]:
                targets.setdefault(c, set()).add(t)
        row = [DEAD] * num_classes
        for c, ts in targets.items():
            nxt = closure(frozenset(ts))
            if nxt not in index:
                index[nxt] = len(sets)
                sets.append(nxt)
            row[c] = index[nxt]
        rows.append(row)
    table = np.array(rows, dtype=np.int32).reshape(len(rows), num_classes)
    accepting = np.array([nfa.accept in s for s in sets], dtype=bool)
    table, accepting = minimize(table, accepting)
    return Dfa(byte_class, table, accepting)


def _byte_classes(nfa: Nfa) -> tuple[np.ndarray, list[int]]:
    """byte -> class id, and each class's byte set, so that every NFA mask is a union of classes."""
    signature = [0] * 256
    masks = {mask for state_moves in nfa.moves for mask in state_moves.values()}
    for j, mask in enumerate(masks):
        bit = 1 << j
        for b in range(256):
            if mask >> b & 1:
                signature[b] |= bit
    class_of: dict[int, int] = {}
    byte_class = np.zeros(256, dtype=np.int32)
    class_masks: list[int] = []
    for b in range(256):
        c = class_of.setdefault(signature[b], len(class_of))
        if c == len(class_masks):
            class_masks.append(0)
        class_masks[c] |= 1 << b
        byte_class[b] = c
    return byte_class, class_masks


def compact(node: Node, max_states: int = DEFAULT_MAX_NFA_STATES) -> Automaton:
    """`node` as a minimal DFA, to be embedded where it repeats (each copy then costs its minimal
    number of states instead of its Thompson NFA's)."""
    return Automaton(determinize(build_nfa(node, max_states), max_states))
