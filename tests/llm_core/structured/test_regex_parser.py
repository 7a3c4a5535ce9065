import random
import re

import pytest

from llm_core.structured import RegexError, compile_regex
from llm_core.structured.grammar import grammar_from_tree
from llm_core.structured.regex_parser import parse_regex_search

PATTERNS = [
    r"abc", r"a|b|cd", r"[a-c]+x?", r"(ab)*c", r"(?:a|bc){2,3}", r"a{3}", r"a{2,}b", r"a{,2}b",
    r"[^a-c]{1,2}", r"\d+\.\d*", r"\w+@\w+", r"[\d\-]+", r"[-a]", r"[a-]", r"[]a]", r"x\.y\*\+\?",
    r"\x41\u00e9", r"\t\n", r"a.c", r"(?P<name>ab)+", r"(?<n>a)|b", r"a*?b+?c??", r"[\\\]]", r"^ab$",
    r"^a|b$", r"(a|)+b", r"(a*)*", r"a{0}b", r"[é-ü]+", r"\s\S", r"[^\W\d]", r"\D\w", r"a\/b",
]
ALPHABET = "abcxy.*+?-]\\/@0129 \t\néüAZ_"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_matches_like_python_re(pattern):
    grammar = compile_regex(pattern)
    python_pattern = pattern.replace("(?<n>", "(?P<n>")  # Python 3.11 lacks the ECMAScript spelling
    flags = 0 if r"\s" in pattern.lower() else re.ASCII
    reference = re.compile(python_pattern, flags)
    rng = random.Random(pattern)
    samples = ["", "abc", "ab", "aab", "abcabc", "bcbc", "aaab", "ab@cd", "12.5", "x.y*+?", "Aé", "\t\n"]
    samples += ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6))) for _ in range(300)]
    for text in samples:
        expected = reference.fullmatch(text) is not None
        if pattern.endswith("$") and text.endswith("\n"):
            continue  # Python's $ also matches before a final newline
        assert grammar.matches(text) == expected, (pattern, text)


def test_dot_and_negated_classes_cover_unicode_but_not_newline():
    grammar = compile_regex(r".[^a]")
    assert grammar.matches("😀€") and grammar.matches("a\u0800")
    assert not grammar.matches("\na") and not grammar.matches("ba")


def test_search_semantics_for_json_schema_pattern():
    grammar = grammar_from_tree(parse_regex_search(r"ab+|^x"), "k", "search")
    assert grammar.matches("zzabbb\nq") and grammar.matches("xyz")
    assert not grammar.matches("yx") and not grammar.matches("a")


@pytest.mark.parametrize("pattern,message", [
    (r"(a)\1", "backreference"), (r"(?P<x>a)(?P=x)", "backreference"), (r"\k<x>", "backreference"),
    (r"(?=a)b", "lookahead"), (r"(?!a)b", "negative lookahead"), (r"(?<=a)b", "lookbehind"),
    (r"(?<!a)b", "negative lookbehind"), (r"\bfoo", "word boundary"), (r"a^b", "anchor '^'"),
    (r"a$b", "anchor '$'"), (r"(a$)", "anchor '$'"), (r"(?i)a", "inline flags"), (r"a*+", "possessive"),
    (r"(?>a)", "atomic group"), (r"[[:alpha:]]", "POSIX"), (r"(a", "missing ')'"), (r"a)", "unbalanced ')'"),
    (r"*a", "nothing to repeat"), (r"a**", "multiple repeat"), (r"[z-a]", "bad character range"),
    (r"\p{L}", "Unicode property"), (r"[abc", "unterminated character class"), ("a\\", "trailing backslash"),
    (r"\q", "unknown escape"), (r"\xZZ", "bad escape"), (r"a{3,2}", "min repeat greater"),
    (r"a{1000000}", "repeat count above"),
])
def test_unsupported_or_bad_patterns_raise_clear_errors(pattern, message):
    with pytest.raises(RegexError) as info:
        compile_regex(pattern)
    assert message in str(info.value)
    assert f"in regex {pattern!r}" in str(info.value)
    assert 0 <= info.value.position <= len(pattern)


def test_compile_regex_memoizes_and_checks_its_argument():
    assert compile_regex("a+b") is compile_regex("a+b")
    with pytest.raises(TypeError):
        compile_regex(b"a")
