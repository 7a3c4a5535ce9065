"""JSON arrays and objects as regex trees, from the trees of their parts.

Separators carry the whitespace on both sides (`ws "," ws`), and "[" ws "]" is the empty form, so
two whitespace runs never meet and the bound on whitespace holds between every two tokens.
"""

from __future__ import annotations

from functools import lru_cache

from .json_numbers import NUMBER
from .json_text import json_string, whitespace
from .regex_ast import NOTHING, Node, alt, concat, literal, members, optional, repeat


def separator(ws: Node) -> Node:
    return concat(ws, literal(","), ws)


def _bracketed(open_: str, body: Node, close: str, ws: Node, may_be_empty: bool) -> Node:
    nonempty = concat(literal(open_), ws, body, ws, literal(close))
    empty = concat(literal(open_), ws, literal(close)) if may_be_empty else NOTHING
    return alt(empty, nonempty)


def array_node(prefix: list[Node], item: Node, min_items: int, max_items: int | None, ws: Node) -> Node:
    """`prefix[i]` at position i, then `item` (NOTHING: no more items), min..max items in all."""
    sep = separator(ws)
    if max_items is not None and max_items < len(prefix):
        prefix = prefix[:max_items]
    k = len(prefix)
    rest_min = max(0, min_items - k)
    rest_max = None if max_items is None else max_items - k
    # tail: the items after the prefix, each preceded by a separator.
    tail = concat(sep, repeat(item, max(rest_min, 1), rest_max, sep))
    chain = tail if rest_min > 0 else optional(tail)
    if k == 0:
        body = repeat(item, max(rest_min, 1), rest_max, sep)
    else:
        # chain(i): the items from position i on, given that one came before.
        for i in range(k - 1, 0, -1):
            step = concat(sep, prefix[i], chain)
            chain = step if i < min_items else optional(step)
        body = concat(prefix[0], chain)
    return _bracketed("[", body, "]", ws, may_be_empty=min_items == 0)


def object_node(members_: list[tuple[Node, bool]], extra: Node, ws: Node) -> Node:
    """Members in the given order, each (tree of `"key": value`, required); optional ones may be
    left out. After them come any number of `extra` members (NOTHING: none)."""
    items = [(member, required, False) for member, required in members_]
    items.append((extra, False, True))
    may_be_empty = not any(required for _, required in members_)
    return _bracketed("{", members(items, separator(ws)), "}", ws, may_be_empty)


def member_node(key: Node, value: Node, ws: Node) -> Node:
    return concat(key, ws, literal(":"), ws, value)


SCALARS = alt(json_string(), NUMBER, literal("true"), literal("false"), literal("null"))


@lru_cache(maxsize=64)
def any_value(depth: int, max_whitespace: int) -> Node:
    """Any JSON value whose arrays and objects nest at most `depth` deep."""
    if depth <= 0:
        return SCALARS
    inner, ws = any_value(depth - 1, max_whitespace), whitespace(max_whitespace)
    return alt(SCALARS, array_node([], inner, 0, None, ws),
               object_node([], member_node(json_string(), inner, ws), ws))
