"""Grammar: a compiled constraint on output text (a byte DFA), and `compile_regex`.

A Grammar does not depend on a tokenizer; token masks come from `compile_for_tokenizer`. Its `key`
(sha256 of the kind, the canonical source and the settings) identifies it in every cache.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from .dfa import DEAD, Dfa, determinize
from .nfa import DEFAULT_MAX_NFA_STATES, build_nfa
from .regex_ast import Node
from .regex_parser import parse_regex

# Bump when compilation changes what a key compiles to, so disk caches built before are not reused.
GRAMMAR_VERSION = 1
DEFAULT_MAX_DFA_STATES = 100_000


class Grammar:
    """A set of allowed output strings, as a minimal DFA over their UTF-8 bytes."""

    def __init__(self, dfa: Dfa, key: str, description: str):
        self.dfa = dfa
        self.key = key
        self.description = description

    @property
    def num_states(self) -> int:
        return self.dfa.num_states

    def matches(self, text: str | bytes) -> bool:
        """Whether the whole of `text` is allowed."""
        return self.dfa.matches(_as_bytes(text))

    def is_prefix(self, text: str | bytes) -> bool:
        """Whether `text` can still be completed to an allowed string."""
        return self.dfa.step(0, _as_bytes(text)) != DEAD

    def __repr__(self) -> str:
        return f"Grammar({self.description}, states={self.num_states}, key={self.key[:12]})"


def _as_bytes(text: str | bytes) -> bytes:
    return text.encode("utf-8") if isinstance(text, str) else bytes(text)


def grammar_key(kind: str, source: str, settings: dict) -> str:
    blob = json.dumps([GRAMMAR_VERSION, kind, source, settings], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def grammar_from_tree(node: Node, key: str, description: str,
                      max_nfa_states: int = DEFAULT_MAX_NFA_STATES,
                      max_dfa_states: int = DEFAULT_MAX_DFA_STATES) -> Grammar:
    nfa = build_nfa(node, max_nfa_states)
    return Grammar(determinize(nfa, max_dfa_states), key, description)


def compile_regex(pattern: str) -> Grammar:
    """A Grammar of the strings that `pattern` matches as a whole (see regex_parser for the subset).

    Raises RegexError for a pattern that does not parse or uses an unsupported construct, and
    GrammarTooLargeError when its automaton would be too large. Results are memoized by pattern.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
    return _compile_regex(pattern)


def regex_key(pattern: str) -> str:
    return grammar_key("regex", pattern, {})


@lru_cache(maxsize=256)
def _compile_regex(pattern: str) -> Grammar:
    return grammar_from_tree(parse_regex(pattern), regex_key(pattern), f"regex {pattern[:40]!r}")
