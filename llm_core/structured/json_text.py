"""The lexical layer of JSON as regex trees: whitespace, strings, literal values, any value.

A character inside a JSON string may be written raw or escaped. `string_char(ranges)` accepts the
forms that `json.dumps` writes with ensure_ascii on or off: printable ASCII raw (quote and backslash
as \\" and \\\\), control characters as short escapes or \\u00XX, every other character raw in UTF-8
or as \\uXXXX (a surrogate pair above U+FFFF), hex digits in either case. Escapes of printable ASCII
(\\u0041, \\/) are not generated.
"""

from __future__ import annotations

import json
from functools import lru_cache

from .dfa import compact
from .digit_ranges import fixed_width_range
from .regex_ast import (
    MAX_CODE_POINT, Node, alt, char_set, concat, intersect_ranges, literal, map_char_sets,
    normalize_ranges, optional, repeat,
)

RAW_OK = normalize_ranges([(0x20, 0x21), (0x23, 0x5B), (0x5D, MAX_CODE_POINT)])
U_ESCAPED = normalize_ranges([(0x00, 0x1F), (0x7F, 0xD7FF), (0xE000, 0xFFFF)])
ASTRAL = ((0x10000, MAX_CODE_POINT),)
SHORT_ESCAPES = {0x08: "b", 0x09: "t", 0x0A: "n", 0x0C: "f", 0x0D: "r", 0x22: '"', 0x5C: "\\"}
ALL_CHARS = ((0, MAX_CODE_POINT),)


@lru_cache(maxsize=16)
def whitespace(max_whitespace: int) -> Node:
    """What may separate two JSON tokens: an optional newline, then up to `max_whitespace` spaces.

    This covers the compact, the default and the indented forms of json.dumps while bounding how
    much whitespace a model can emit in a row.
    """
    return compact(concat(optional(literal("\n")), repeat(literal(" "), 0, max_whitespace)))


@lru_cache(maxsize=4096)
def string_char(ranges: tuple) -> Node:
    """One character out of `ranges`, in the forms it may take inside a JSON string.

    With escapes beyond the short ones, the alternatives are many; they are compacted to a minimal
    DFA once, since a string repeats them at every position."""
    node = _string_char_forms(ranges)
    return compact(node) if intersect_ranges(ranges, U_ESCAPED + ASTRAL) else node


def _string_char_forms(ranges: tuple) -> Node:
    parts = [char_set(intersect_ranges(ranges, RAW_OK))]
    for code, letter in SHORT_ESCAPES.items():
        if intersect_ranges(ranges, ((code, code),)):
            parts.append(literal("\\" + letter))
    for lo, hi in intersect_ranges(ranges, U_ESCAPED):
        parts.append(concat(literal("\\u"), fixed_width_range(lo, hi, 4, 16)))
    for lo, hi in intersect_ranges(ranges, ASTRAL):
        parts.extend(_surrogate_pairs(lo - 0x10000, hi - 0x10000))
    return alt(*parts)


def _surrogate_pairs(lo: int, hi: int) -> list[Node]:
    """\\uD8xx\\uDCxx escapes of the code points 0x10000 + [lo, hi]."""
    def pair(high_lo, high_hi, low_lo, low_hi):
        return concat(literal("\\u"), fixed_width_range(0xD800 + high_lo, 0xD800 + high_hi, 4, 16),
                      literal("\\u"), fixed_width_range(0xDC00 + low_lo, 0xDC00 + low_hi, 4, 16))
    (lo_high, lo_low), (hi_high, hi_low) = divmod(lo, 1024), divmod(hi, 1024)
    if lo_high == hi_high:
        return [pair(lo_high, lo_high, lo_low, hi_low)]
    out = [pair(lo_high, lo_high, lo_low, 1023), pair(hi_high, hi_high, 0, hi_low)]
    if lo_high + 1 <= hi_high - 1:
        out.append(pair(lo_high + 1, hi_high - 1, 0, 1023))
    return out


def encode_string_content(node: Node) -> Node:
    """A tree over characters rewritten to the JSON-string forms of those characters."""
    return map_char_sets(node, lambda cs: string_char(cs.ranges))


ANY_STRING_CHAR = string_char(ALL_CHARS)
QUOTE = literal('"')


def string_literal(text: str) -> Node:
    """The JSON string whose value is `text`."""
    return concat(QUOTE, *(string_char(((ord(c), ord(c)),)) for c in text), QUOTE)


def json_string(min_length: int = 0, max_length: int | None = None) -> Node:
    """A JSON string of min_length..max_length characters (an escape counts as one character)."""
    return concat(QUOTE, repeat(ANY_STRING_CHAR, min_length, max_length), QUOTE)


def value_literal(value, ws: Node) -> Node:
    """The JSON text of one value (enum and const), with the whitespace forms of json.dumps."""
    if value is None or isinstance(value, bool):
        return literal(json.dumps(value))
    if isinstance(value, int):
        return alt(literal(str(value)), literal(f"{value}.0"))
    if isinstance(value, float):
        forms = [literal(json.dumps(value))]
        if value.is_integer():
            forms.append(literal(str(int(value))))
        return alt(*forms)
    if isinstance(value, str):
        return string_literal(value)
    sep = concat(ws, literal(","), ws)
    if isinstance(value, list):
        if not value:
            return concat(literal("["), ws, literal("]"))
        items = [value_literal(v, ws) for v in value]
        body = concat(*[x for i, item in enumerate(items) for x in ((sep, item) if i else (item,))])
        return concat(literal("["), ws, body, ws, literal("]"))
    if isinstance(value, dict):
        if not value:
            return concat(literal("{"), ws, literal("}"))
        members = [concat(string_literal(k), ws, literal(":"), ws, value_literal(v, ws))
                   for k, v in value.items()]
        body = concat(*[x for i, m in enumerate(members) for x in ((sep, m) if i else (m,))])
        return concat(literal("{"), ws, body, ws, literal("}"))
    raise TypeError(f"not a JSON value: {value!r}")

