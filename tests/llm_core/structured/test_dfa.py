import random

import numpy as np
import pytest

from llm_core.structured import GrammarTooLargeError, StructuredOutputError, compile_regex
from llm_core.structured.dfa import DEAD
from llm_core.structured.grammar import grammar_from_tree
from llm_core.structured.nfa import build_nfa
from llm_core.structured.regex_ast import NOTHING, char_set, concat, literal
from llm_core.structured.regex_parser import parse_regex
from llm_core.structured.utf8 import utf8_sequences


def test_utf8_sequences_encode_exactly_the_range():
    rng = random.Random(0)
    for _ in range(200):
        lo = rng.choice([0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000]) + rng.randint(0, 300)
        hi = min(0x10FFFF, lo + rng.choice([0, 5, 100, 5000, 70000]))
        seqs = utf8_sequences(lo, hi)
        for cp in [lo, hi, rng.randint(lo, hi), lo - 1, hi + 1, rng.randint(0, 0x10FFFF)]:
            if not 0 <= cp <= 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                continue
            data = chr(cp).encode()
            hit = any(len(s) == len(data) and all(a <= b <= c for (a, c), b in zip(s, data)) for s in seqs)
            assert hit == (lo <= cp <= hi), (hex(lo), hex(hi), hex(cp))


def test_classic_dfa_is_minimal():
    assert compile_regex("(a|b)*abb").num_states == 4
    assert compile_regex("a*a*a*").num_states == 1
    assert compile_regex("(ab|ab)(c|c)").num_states == 4


def test_every_state_is_reachable_and_live():
    dfa = compile_regex(r"(\d{1,3}\.){3}\d{1,3}|[a-z]+(-[a-z]+)*").dfa
    dist = dfa.distance_to_accept()
    assert (dist >= 0).all()
    seen, stack = {0}, [0]
    while stack:
        for t in dfa.table[stack.pop()]:
            if t >= 0 and t not in seen:
                seen.add(int(t))
                stack.append(int(t))
    assert seen == set(range(dfa.num_states))


def test_step_reports_dead_as_soon_as_no_completion_exists():
    dfa = compile_regex("ab|ac").dfa
    assert dfa.step(0, b"a") != DEAD and dfa.step(0, b"ad") == DEAD and dfa.step(0, b"abx") == DEAD
    assert dfa.matches(b"ac") and not dfa.matches(b"a")
    assert not compile_regex("é").matches(b"\xc3") and compile_regex("é").is_prefix(b"\xc3")


def test_invalid_utf8_never_matches_dot():
    dfa = compile_regex(".+").dfa
    for data in [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]:
        assert dfa.step(0, data) == DEAD, data


def test_byte_classes_compress_the_alphabet():
    dfa = compile_regex("[a-z]+[0-9]").dfa
    assert dfa.num_classes == 3
    assert dfa.byte_class[ord("a")] == dfa.byte_class[ord("q")] != dfa.byte_class[ord("5")]


def test_empty_language_and_size_limits_raise():
    with pytest.raises(StructuredOutputError, match="matches no string"):
        grammar_from_tree(NOTHING, "k", "nothing")
    with pytest.raises(StructuredOutputError, match="matches no string"):
        grammar_from_tree(concat(literal("a"), char_set([(5, 4)])), "k", "a then an empty set")
    with pytest.raises(GrammarTooLargeError):
        build_nfa(parse_regex("[a-z]{2000}"), max_states=1000)
    with pytest.raises(GrammarTooLargeError):
        grammar_from_tree(parse_regex("[ab]*a[ab]{8}"), "k", "exp", max_dfa_states=100)


def test_random_regexes_agree_with_brute_force_enumeration():
    # Differential check of minimization: equivalent formulations give identical state counts, and
    # the language agrees with Python's re on every string over a small alphabet up to length 5.
    import itertools
    import re
    for pattern in ["(a|b)*a(a|b)", "a(b|c)*|b+", "(ab?)*c?", "((a|b)(a|b))*", "a{1,3}b{0,2}"]:
        grammar = compile_regex(pattern)
        for n in range(6):
            for letters in itertools.product("abc", repeat=n):
                text = "".join(letters)
                assert grammar.matches(text) == (re.fullmatch(pattern, text) is not None)
    assert compile_regex("((a|b)(a|b))*").num_states == 2
    assert np.array_equal(compile_regex("(a|b)*").dfa.table, compile_regex("[ab]*").dfa.table)
