"""Digit strings whose value lies in a range, as regex trees (integer bounds, \\uXXXX escapes).

`fixed_width_range(lo, hi, width, base)` covers numbers written with exactly `width` digits, leading
zeros included (base 16 accepts both letter cases); `natural_range(lo, hi)` covers decimal naturals
written without leading zeros, `hi=None` meaning unbounded.
"""

from __future__ import annotations

from .regex_ast import EMPTY, Node, alt, char_set, concat, repeat


def digit_set(lo: int, hi: int, base: int = 10) -> Node:
    """One digit with value in [lo, hi]."""
    ranges = []
    if lo <= min(hi, 9):
        ranges.append((0x30 + lo, 0x30 + min(hi, 9)))
    if base > 10 and hi >= 10:
        a, b = max(lo, 10) - 10, hi - 10
        ranges += [(ord("a") + a, ord("a") + b), (ord("A") + a, ord("A") + b)]
    return char_set(ranges)


def fixed_width_range(lo: int, hi: int, width: int, base: int = 10) -> Node:
    if lo > hi:
        return alt()
    if width == 0:
        return EMPTY
    place = base ** (width - 1)
    lo_digit, lo_rest = divmod(lo, place)
    hi_digit, hi_rest = divmod(hi, place)
    if lo_digit == hi_digit:
        return concat(digit_set(lo_digit, lo_digit, base),
                      fixed_width_range(lo_rest, hi_rest, width - 1, base))
    full = place - 1
    parts = []
    first, last = lo_digit, hi_digit
    if lo_rest != 0:
        parts.append(concat(digit_set(lo_digit, lo_digit, base),
                            fixed_width_range(lo_rest, full, width - 1, base)))
        first += 1
    if hi_rest != full:
        parts.append(concat(digit_set(hi_digit, hi_digit, base),
                            fixed_width_range(0, hi_rest, width - 1, base)))
        last -= 1
    if first <= last:
        any_digit = digit_set(0, base - 1, base)
        parts.append(concat(digit_set(first, last, base), repeat(any_digit, width - 1, width - 1)))
    return alt(*parts)


def natural_range(lo: int, hi: int | None) -> Node:
    """Decimal naturals in [lo, hi] without leading zeros (hi=None: no upper bound)."""
    lo = max(lo, 0)
    if hi is not None and hi < lo:
        return alt()
    parts = []
    lo_width = len(str(lo))
    last_width = len(str(hi)) if hi is not None else lo_width
    for width in range(lo_width, last_width + 1):
        width_lo = max(lo, 10 ** (width - 1) if width > 1 else 0)
        width_hi = 10 ** width - 1 if hi is None else min(hi, 10 ** width - 1)
        if width_lo <= width_hi:
            parts.append(fixed_width_range(width_lo, width_hi, width))
    if hi is None:
        # Every longer number: a nonzero digit and at least lo_width more digits.
        parts.append(concat(digit_set(1, 9), repeat(digit_set(0, 9), lo_width, None)))
    return alt(*parts)
