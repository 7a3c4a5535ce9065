"""Regular languages as an immutable tree over Unicode code points.

Everything that constrains output (a regex, a JSON Schema, a `format`) is first lowered to this tree,
then to one byte automaton (nfa.py, dfa.py). Code points become UTF-8 only in nfa.py, so a tree can be
re-encoded first (json_text.py writes every character of a JSON string as raw UTF-8 or as an escape).

Always build trees through the constructors below (`concat`, `alt`, `repeat`, `char_set`, ...): they
keep two invariants the rest of the package relies on:
- `NOTHING` (the empty language) never hides inside a Concat or an Alt: a concatenation with it is
  NOTHING, an alternation drops it, so an impossible branch (a recursion cut off at its depth limit)
  disappears instead of leaving dead states behind;
- the character sets of one alternation are merged into one CharSet.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_CODE_POINT = 0x10FFFF

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent, inclusive code point ranges


@dataclass(frozen=True)
class CharSet:
    """One character out of `ranges` (never empty: the empty set is NOTHING)."""

    ranges: Ranges


@dataclass(frozen=True, eq=False)
class Concat:
    """The items one after another; `Concat(())` is EMPTY, the language of the empty string."""

    items: tuple[Node, ...]


@dataclass(frozen=True, eq=False)
class Alt:
    """One of the items; `Alt(())` is NOTHING, the empty language."""

    items: tuple[Node, ...]


@dataclass(frozen=True, eq=False)
class Repeat:
    """`item` between `min` and `max` times (`max=None`: unbounded), with `sep` between two items.

    The separator form lets a list like `value ("," value)*` use one copy of `value` in the automaton.
    """

    item: Node
    min: int
    max: int | None
    sep: Node | None = None


@dataclass(frozen=True, eq=False)
class Members:
    """A nonempty run of `items` in order, `sep` between two of them: item i may be left out unless
    `required[i]`, and may occur several times in a row if `repeatable[i]`.

    This is a JSON object's members (or any separated list with optional parts). As a plain regex
    it needs a copy of the later items for each optional item before the first present one; the
    NFA builder makes it with one copy of each item.
    """

    items: tuple[Node, ...]
    required: tuple[bool, ...]
    repeatable: tuple[bool, ...]
    sep: Node


@dataclass(frozen=True, eq=False)
class Automaton:
    """A sub-language already compiled to a minimal byte DFA (dfa.compact): the NFA builder embeds
    its states as they are. Over bytes, not characters: map_char_sets leaves it alone."""

    dfa: object


Node = CharSet | Concat | Alt | Repeat | Members | Automaton

EMPTY = Concat(())
NOTHING = Alt(())


def is_nothing(node: Node) -> bool:
    return isinstance(node, Alt) and not node.items


def normalize_ranges(ranges) -> Ranges:
    """Sort, clip to valid code points and merge overlapping or adjacent ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted((max(0, lo), min(MAX_CODE_POINT, hi)) for lo, hi in ranges):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def negate_ranges(ranges: Ranges) -> Ranges:
    out, start = [], 0
    for lo, hi in normalize_ranges(ranges):
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE_POINT:
        out.append((start, MAX_CODE_POINT))
    return tuple(out)


def intersect_ranges(a: Ranges, b: Ranges) -> Ranges:
    out = []
    for alo, ahi in a:
        for blo, bhi in b:
            lo, hi = max(alo, blo), min(ahi, bhi)
            if lo <= hi:
                out.append((lo, hi))
    return normalize_ranges(out)


def char_set(ranges) -> Node:
    """A CharSet of the given ranges, or NOTHING when they hold no character."""
    ranges = normalize_ranges(ranges)
    return CharSet(ranges) if ranges else NOTHING


def chars(text: str) -> Node:
    """One character out of those in `text`."""
    return char_set((ord(c), ord(c)) for c in text)


def literal(text: str) -> Node:
    return concat(*(CharSet(((ord(c), ord(c)),)) for c in text))


def concat(*nodes: Node) -> Node:
    items: list[Node] = []
    for node in nodes:
        if is_nothing(node):
            return NOTHING
        items.extend(node.items if isinstance(node, Concat) else (node,))
    if not items:
        return EMPTY
    return items[0] if len(items) == 1 else Concat(tuple(items))


def alt(*nodes: Node) -> Node:
    items: list[Node] = []
    ranges: list[tuple[int, int]] = []
    seen: set[int] = set()
    for node in nodes:
        for item in node.items if isinstance(node, Alt) else (node,):
            if isinstance(item, CharSet):
                ranges.extend(item.ranges)
            elif id(item) not in seen:
                seen.add(id(item))
                items.append(item)
    if ranges:
        items.insert(0, CharSet(normalize_ranges(ranges)))
    return items[0] if len(items) == 1 else Alt(tuple(items))


def repeat(item: Node, min_count: int, max_count: int | None, sep: Node | None = None) -> Node:
    if max_count is not None and max_count < min_count:
        return NOTHING
    if max_count == 0 or item is EMPTY:
        return EMPTY
    if is_nothing(item):
        return EMPTY if min_count == 0 else NOTHING
    if max_count == 1:
        return item if min_count == 1 else optional(item)
    if sep is not None and is_nothing(sep):
        return repeat(item, min_count, 1)
    if sep is EMPTY:
        sep = None
    return Repeat(item, min_count, max_count, sep)


def members(items: list[tuple[Node, bool, bool]], sep: Node) -> Node:
    """Members from (item, required, repeatable) triples; impossible optional items are dropped."""
    kept = []
    for item, required, repeatable in items:
        if is_nothing(item):
            if required:
                return NOTHING
            continue
        kept.append((item, required, repeatable))
    if not kept:
        return NOTHING
    items_, required_, repeatable_ = zip(*kept)
    return Members(tuple(items_), tuple(required_), tuple(repeatable_), sep)


def optional(item: Node) -> Node:
    if is_nothing(item):
        return EMPTY
    return Alt((item, EMPTY)) if item is not EMPTY else EMPTY


def map_char_sets(node: Node, fn) -> Node:
    """The tree with every CharSet replaced by `fn(charset)` (a Node), rebuilt with the constructors."""
    if isinstance(node, CharSet):
        return fn(node)
    if isinstance(node, Automaton):
        return node
    if isinstance(node, Concat):
        return concat(*(map_char_sets(item, fn) for item in node.items))
    if isinstance(node, Alt):
        return alt(*(map_char_sets(item, fn) for item in node.items))
    if isinstance(node, Members):
        return members([(map_char_sets(item, fn), r, k) for item, r, k in
                        zip(node.items, node.required, node.repeatable)], map_char_sets(node.sep, fn))
    sep = None if node.sep is None else map_char_sets(node.sep, fn)
    return repeat(map_char_sets(node.item, fn), node.min, node.max, sep)
