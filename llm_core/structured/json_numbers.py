"""JSON integers and numbers, unbounded or within (exclusive) decimal bounds.

Bounded numbers are written without an exponent (`12.5`, not `1.25e1`): with an exponent the bound
would not be a property of the digits read so far. Bounds are `decimal.Decimal`s; any decimal bound
is supported, since whether `I.F` lies above a bound is decided digit by digit. `-0` is never
generated. Fractions may carry trailing zeros (`1.50`).
"""

from __future__ import annotations

from decimal import Decimal

from .digit_ranges import digit_set, natural_range
from .regex_ast import EMPTY, NOTHING, Node, alt, concat, literal, repeat
from .regex_parser import parse_regex

INTEGER = parse_regex(r"0|-?[1-9][0-9]*")
NUMBER = parse_regex(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_DIGIT = digit_set(0, 9)


def integer_range(lo: int | None, hi: int | None) -> Node:
    """Integers in [lo, hi]; None is unbounded."""
    if lo is None and hi is None:
        return INTEGER
    parts = []
    if hi is None or hi >= 0:
        parts.append(natural_range(max(lo, 0) if lo is not None else 0, hi))
    if lo is None or lo < 0:
        mag_lo = 1 if hi is None or hi >= 0 else -hi
        parts.append(concat(literal("-"), natural_range(mag_lo, None if lo is None else -lo)))
    return alt(*parts)


def number_range(lo: Decimal | None, lo_excl: bool, hi: Decimal | None, hi_excl: bool) -> Node:
    """Numbers x with lo <(=) x <(=) hi; None is unbounded."""
    if lo is None and hi is None:
        return NUMBER
    parts = []
    if hi is None or hi > 0 or (hi == 0 and not hi_excl):
        if lo is None or lo < 0:
            parts.append(_magnitude(Decimal(0), False, hi, hi_excl))
        else:
            parts.append(_magnitude(lo, lo_excl, hi, hi_excl))
    if lo is None or lo < 0:
        if hi is not None and hi < 0:
            mag_lo, mag_lo_excl = -hi, hi_excl
        else:
            mag_lo, mag_lo_excl = Decimal(0), True
        mag_hi = None if lo is None else -lo
        parts.append(concat(literal("-"), _magnitude(mag_lo, mag_lo_excl, mag_hi, lo_excl)))
    return alt(*parts)


def _split(value: Decimal) -> tuple[int, str]:
    """Integer part and fraction digits without trailing zeros: 12.50 -> (12, '5')."""
    whole = int(value)
    frac = format(value - whole, "f").partition(".")[2].rstrip("0")
    return whole, frac


def _magnitude(lo: Decimal, lo_excl: bool, hi: Decimal | None, hi_excl: bool) -> Node:
    """Unsigned `I(.F)?` with value in the bounds (lo >= 0)."""
    lo_int, lo_frac = _split(lo)
    if hi is None:
        return alt(concat(natural_range(lo_int, lo_int), _fraction(lo_frac, lo_excl, None, False)),
                   concat(natural_range(lo_int + 1, None), _fraction("", False, None, False)))
    hi_int, hi_frac = _split(hi)
    if lo_int == hi_int:
        return concat(natural_range(lo_int, lo_int), _fraction(lo_frac, lo_excl, hi_frac, hi_excl))
    return alt(concat(natural_range(lo_int, lo_int), _fraction(lo_frac, lo_excl, None, False)),
               concat(natural_range(lo_int + 1, hi_int - 1), _fraction("", False, None, False)),
               concat(natural_range(hi_int, hi_int), _fraction("", False, hi_frac, hi_excl)))


def _fraction(lo: str, lo_excl: bool, hi: str | None, hi_excl: bool) -> Node:
    """`(\\.D+)?` with lo <(=) 0.D <(=) hi, bounds as fraction digits ('' = 0; hi None: below 1)."""
    zero_ok = lo == "" and not lo_excl and (hi is None or hi != "" or not hi_excl)
    digits = _fraction_digits(lo, lo_excl, hi, hi_excl, nonempty=True)
    return alt(EMPTY if zero_ok else NOTHING, concat(literal("."), digits))


def _fraction_digits(lo: str, lo_excl: bool, hi: str | None, hi_excl: bool, nonempty: bool) -> Node:
    lo, hi = lo.rstrip("0"), None if hi is None else hi.rstrip("0")
    if lo == "" and hi is None:
        if lo_excl:  # above zero: some nonzero digit
            return concat(repeat(digit_set(0, 0), 0, None), digit_set(1, 9), repeat(_DIGIT, 0, None))
        return repeat(_DIGIT, 1 if nonempty else 0, None)
    if lo == "" and hi == "":
        return NOTHING if lo_excl or hi_excl else repeat(digit_set(0, 0), 1 if nonempty else 0, None)
    if hi == "":  # lo > 0 here, so nothing is at most 0
        return NOTHING
    zero_ok = lo == "" and not lo_excl  # hi > 0 here, so the empty rest (value 0) is below it
    l1, l_rest = (int(lo[0]), lo[1:]) if lo else (0, "")
    h1, h_rest = (int(hi[0]), hi[1:]) if hi else (10, None)  # hi None: any first digit
    parts = [EMPTY if zero_ok and not nonempty else NOTHING]
    if hi is not None and l1 == h1:
        parts.append(concat(digit_set(l1, l1), _fraction_digits(l_rest, lo_excl, h_rest, hi_excl, False)))
        return alt(*parts)
    parts.append(concat(digit_set(l1, l1), _fraction_digits(l_rest, lo_excl, None, False, False)))
    if l1 + 1 <= h1 - 1:
        parts.append(concat(digit_set(l1 + 1, min(h1 - 1, 9)), repeat(_DIGIT, 0, None)))
    if hi is not None:
        parts.append(concat(digit_set(h1, h1), _fraction_digits("", False, h_rest, hi_excl, False)))
    return alt(*parts)
