import random
from decimal import Decimal

import pytest

from llm_core.structured.grammar import grammar_from_tree
from llm_core.structured.json_numbers import NUMBER, integer_range, number_range


def grammar(tree):
    return grammar_from_tree(tree, "k", "numbers")


def random_bound(rng: random.Random, digits: int):
    return None if rng.random() < 0.2 else rng.randint(-10 ** digits, 10 ** digits)


@pytest.mark.parametrize("seed", range(6))
def test_integer_range_matches_exactly_the_integers_in_bounds(seed):
    rng = random.Random(seed)
    for _ in range(15):
        lo, hi = random_bound(rng, rng.randint(1, 4)), random_bound(rng, rng.randint(1, 4))
        if lo is not None and hi is not None and lo > hi:
            continue
        g = grammar(integer_range(lo, hi))
        probes = {0, 1, -1, 10 ** 6, -10 ** 6} | {rng.randint(-20000, 20000) for _ in range(60)}
        probes |= {b + d for b in (lo, hi) if b is not None for d in (-11, -10, -1, 0, 1, 9, 10)}
        for v in probes:
            expected = (lo is None or v >= lo) and (hi is None or v <= hi)
            assert g.matches(str(v)) == expected, (lo, hi, v)
        assert not g.matches("-0") and not g.matches("007") and not g.matches("1.0")


def decimal_text(rng: random.Random) -> str:
    whole = str(rng.choice([0, rng.randint(0, 9), rng.randint(0, 120), rng.randint(0, 5000)]))
    sign = "-" if rng.random() < 0.4 else ""
    frac = "".join(rng.choice("0123456789") for _ in range(rng.choice([0, 0, 1, 2, 3, 4])))
    return sign + whole + ("." + frac if frac else "")


@pytest.mark.parametrize("seed", range(6))
def test_number_range_matches_exactly_the_decimals_in_bounds(seed):
    rng = random.Random(100 + seed)
    for _ in range(15):
        lo = None if rng.random() < 0.25 else Decimal(decimal_text(rng))
        hi = None if rng.random() < 0.25 else Decimal(decimal_text(rng))
        lo_excl, hi_excl = rng.random() < 0.5, rng.random() < 0.5
        if (lo, hi) == (None, None) or (lo is not None and hi is not None and lo >= hi):
            continue
        g = grammar(number_range(lo, lo_excl, hi, hi_excl))
        probes = [decimal_text(rng) for _ in range(150)]
        for bound in (lo, hi):
            if bound is not None:
                probes += [str(bound), str(bound) + ("0" if "." in str(bound) else ".0"), str(bound + Decimal("0.001")),
                           str(bound - Decimal("0.001")), str(bound + 1), str(bound - 1)]
        for text in probes:
            v = Decimal(text)
            if v == 0 and text.startswith("-"):
                continue  # -0 is never generated; either answer is fine
            expected = (lo is None or (v > lo if lo_excl else v >= lo)) and \
                       (hi is None or (v < hi if hi_excl else v <= hi))
            assert g.matches(text) == expected, (lo, lo_excl, hi, hi_excl, text)
        assert not g.matches("1e2") and not g.matches("01.5") and not g.matches("1.")


def test_unbounded_number_is_json_number():
    g = grammar(NUMBER)
    for text in ["0", "-0", "12", "1.5", "-1.5e-07", "1e+300", "2E5"]:
        assert g.matches(text), text
    for text in ["01", "1.", ".5", "+1", "1e", "NaN", "Infinity", "0x10"]:
        assert not g.matches(text), text
