"""Code point ranges as UTF-8 byte-range sequences.

`utf8_sequences(lo, hi)` splits [lo, hi] into pieces that each encode as one fixed-length sequence of
byte ranges: [(0xC3, 0xC3), (0x80, 0xBF)] matches exactly the two-byte encodings of U+00C0..U+00FF.
Surrogates (U+D800..U+DFFF) have no UTF-8 encoding and are skipped.
"""

from __future__ import annotations

ByteRanges = list[tuple[int, int]]

# First code point of each encoded length, and the last.
_LENGTH_BOUNDS = ((0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF))
_SURROGATES = (0xD800, 0xDFFF)


def utf8_sequences(lo: int, hi: int) -> list[ByteRanges]:
    out: list[ByteRanges] = []
    for length_lo, length_hi in _LENGTH_BOUNDS:
        a, b = max(lo, length_lo), min(hi, length_hi)
        if a > b:
            continue
        for piece_lo, piece_hi in _without_surrogates(a, b):
            _split(piece_lo, piece_hi, out)
    return out


def _without_surrogates(lo: int, hi: int) -> list[tuple[int, int]]:
    s_lo, s_hi = _SURROGATES
    if hi < s_lo or lo > s_hi:
        return [(lo, hi)]
    return [(a, b) for a, b in ((lo, s_lo - 1), (s_hi + 1, hi)) if a <= b]


def _split(lo: int, hi: int, out: list[ByteRanges]) -> None:
    # lo and hi have the same encoded length. Where they differ in a leading byte, the trailing
    # bytes of lo must start at their minimum and those of hi end at their maximum for the ranges of
    # each position to be independent; otherwise cut the range at that boundary and recurse.
    n = len(chr(lo).encode())
    for i in range(1, n):
        mask = (1 << (6 * i)) - 1
        if lo & ~mask != hi & ~mask:
            if lo & mask:
                _split(lo, lo | mask, out)
                _split((lo | mask) + 1, hi, out)
                return
            if hi & mask != mask:
                _split(lo, (hi & ~mask) - 1, out)
                _split(hi & ~mask, hi, out)
                return
    out.append(list(zip(chr(lo).encode(), chr(hi).encode())))
