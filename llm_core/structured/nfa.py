"""Thompson construction: a regex tree (code points) to an NFA over bytes (UTF-8).

Fragments are built in place: `_build(node, start)` adds the states of `node` after `start` and
returns its end state. Invariant: a fragment adds no move *into* the start it was given (loops go
through a fresh state), so alternatives can share one start and a fragment can continue from the
previous one's end without epsilon glue.

A byte set is a 256-bit Python int (bit b set: byte b allowed). `moves[s]` maps target -> byte set.
"""

from __future__ import annotations

from .errors import GrammarTooLargeError
from .regex_ast import Alt, Automaton, CharSet, Concat, Members, Node, Repeat, concat
from .utf8 import utf8_sequences

DEFAULT_MAX_NFA_STATES = 400_000


def byte_range_mask(lo: int, hi: int) -> int:
    return ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)


class Nfa:
    """States 0..num_states-1 with epsilon moves and byte-set moves; one start and one accept state."""

    def __init__(self, max_states: int = DEFAULT_MAX_NFA_STATES):
        self.max_states = max_states
        self.eps: list[list[int]] = []
        self.moves: list[dict[int, int]] = []
        self.start = self.add_state()
        self.accept = -1

    @property
    def num_states(self) -> int:
        return len(self.eps)

    def add_state(self) -> int:
        if len(self.eps) >= self.max_states:
            raise GrammarTooLargeError(
                f"grammar too large: its automaton exceeds {self.max_states} states "
                "(reduce bounded repeats such as maxLength/maxItems/{m,n}, or the schema's size)")
        self.eps.append([])
        self.moves.append({})
        return len(self.eps) - 1

    def add_eps(self, src: int, dst: int) -> None:
        self.eps[src].append(dst)

    def add_move(self, src: int, mask: int, dst: int) -> None:
        moves = self.moves[src]
        moves[dst] = moves.get(dst, 0) | mask


def build_nfa(node: Node, max_states: int = DEFAULT_MAX_NFA_STATES) -> Nfa:
    """The NFA of `node`; GrammarTooLargeError, before any work, when it would exceed max_states."""
    estimate = estimate_states(node, {})
    if estimate > max_states:
        raise GrammarTooLargeError(
            f"grammar too large: its automaton would have about {estimate} states, over the limit of "
            f"{max_states} (reduce bounded repeats such as maxLength/maxItems/{{m,n}}, or the schema)")
    nfa = Nfa(max_states)
    nfa.accept = _build(nfa, node, nfa.start)
    return nfa


def estimate_states(node: Node, memo: dict[int, int]) -> int:
    """An upper bound on the states `_build` adds for `node` (shared subtrees counted per use)."""
    found = memo.get(id(node))
    if found is not None:
        return found
    if isinstance(node, CharSet):
        count = 1 + sum(len(seq) - 1 for lo, hi in node.ranges for seq in utf8_sequences(lo, hi))
    elif isinstance(node, (Concat, Alt)):
        count = 1 + sum(estimate_states(item, memo) for item in node.items)
    elif isinstance(node, Automaton):
        count = node.dfa.num_states + 1
    elif isinstance(node, Members):
        sep = estimate_states(node.sep, memo)
        count = 2 + sum(estimate_states(item, memo) + 2 * sep + 2 for item in node.items)
    else:
        step = estimate_states(node.item, memo) + (estimate_states(node.sep, memo) if node.sep else 0)
        count = 3 + step * (node.max if node.max is not None else max(node.min, 1))
    memo[id(node)] = count
    return count


def _build(nfa: Nfa, node: Node, start: int) -> int:
    if isinstance(node, CharSet):
        return _build_char_set(nfa, node, start)
    if isinstance(node, Concat):
        cur = start
        for item in node.items:
            cur = _build(nfa, item, cur)
        return cur
    if isinstance(node, Alt):
        end = nfa.add_state()
        for item in node.items:
            nfa.add_eps(_build(nfa, item, start), end)
        return end
    if isinstance(node, Members):
        return _build_members(nfa, node, start)
    if isinstance(node, Automaton):
        return _build_automaton(nfa, node, start)
    return _build_repeat(nfa, node, start)


def _build_automaton(nfa: Nfa, node: Automaton, start: int) -> int:
    dfa = node.dfa
    class_masks = [0] * dfa.num_classes
    for b, c in enumerate(dfa.byte_class.tolist()):
        class_masks[c] |= 1 << b
    # Fresh states for every DFA state (the DFA's start may be re-entered; `start` must not be).
    states = [nfa.add_state() for _ in range(dfa.num_states)]
    end = nfa.add_state()
    nfa.add_eps(start, states[0])
    for s, row in enumerate(dfa.table.tolist()):
        for c, t in enumerate(row):
            if t >= 0:
                nfa.add_move(states[s], class_masks[c], states[t])
        if dfa.accepting[s]:
            nfa.add_eps(states[s], end)
    return end


def _build_members(nfa: Nfa, node: Members, start: int) -> int:
    # Two threads run along the items: `none` (no item yet: the next one comes without a separator)
    # and `some` (an item came: the next one needs a separator first). Both enter item i through
    # one entry state, so each item is built once.
    none, some = start, None
    for item, required, repeatable in zip(node.items, node.required, node.repeatable):
        entry = nfa.add_state()
        if none is not None:
            nfa.add_eps(none, entry)
        if some is not None:
            nfa.add_eps(_build(nfa, node.sep, some), entry)
        end = _build(nfa, item, entry)
        if repeatable:
            nfa.add_eps(_build(nfa, node.sep, end), entry)
        if required:
            none, some = None, end
        elif some is None:
            some = end
        else:
            merged = nfa.add_state()
            nfa.add_eps(end, merged)
            nfa.add_eps(some, merged)
            some = merged
    return some


def _build_char_set(nfa: Nfa, node: CharSet, start: int) -> int:
    end = nfa.add_state()
    prefix_states: dict[tuple, int] = {}
    for lo, hi in node.ranges:
        for seq in utf8_sequences(lo, hi):
            cur = start
            for i in range(len(seq) - 1):
                key = tuple(seq[:i + 1])
                if key not in prefix_states:
                    prefix_states[key] = nfa.add_state()
                    nfa.add_move(cur, byte_range_mask(*seq[i]), prefix_states[key])
                cur = prefix_states[key]
            nfa.add_move(cur, byte_range_mask(*seq[-1]), end)
    return end


def _build_repeat(nfa: Nfa, node: Repeat, start: int) -> int:
    item, sep = node.item, node.sep
    if node.min == 0:
        # x{0,n} with a separator is (x (sep x){0,n-1})?; without one the loop form below is nullable.
        if sep is not None:
            end = nfa.add_state()
            nfa.add_eps(start, end)
            inner = Repeat(item, 1, node.max, sep)
            nfa.add_eps(_build_repeat(nfa, inner, start), end)
            return end
        if node.max is None:
            loop = nfa.add_state()
            nfa.add_eps(start, loop)
            nfa.add_eps(_build(nfa, item, loop), loop)
            return loop
    step = item if sep is None else concat(sep, item)
    if node.max is None:
        # min-1 plain copies, then the last required copy as a loop `body+` (through a fresh state,
        # so no move enters `start`): one copy of the item for x+ and for x (sep x)*.
        cur = start
        for i in range(node.min - 1):
            cur = _build(nfa, item if i == 0 else step, cur)
        loop = nfa.add_state()
        nfa.add_eps(cur, loop)
        end = _build(nfa, item if node.min == 1 else step, loop)
        if node.min == 1 and sep is not None:
            nfa.add_eps(_build(nfa, sep, end), loop)
        else:
            nfa.add_eps(end, loop)
        return end
    # The first min copies are required (the first one without a separator).
    cur = start
    for i in range(node.min):
        cur = _build(nfa, item if i == 0 else step, cur)
    # Optional copies as a chain, each of whose ends may exit.
    exits = [cur]
    for i in range(node.min, node.max):
        cur = _build(nfa, item if i == 0 else step, cur)
        exits.append(cur)
    end = nfa.add_state()
    for state in exits:
        nfa.add_eps(state, end)
    return end
