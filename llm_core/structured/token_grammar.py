"""CompiledGrammar: a Grammar bound to a tokenizer, with per-state token bitmasks.

The mask of a DFA state allows token t iff t's bytes take the DFA from that state to a live state,
plus the EOS ids iff the state is accepting. Masks are computed on first use with one vectorized
trie walk (vocab_trie.TrieWalk, built once per CompiledGrammar) and memoized; they depend only on
(grammar, tokenizer), so one CompiledGrammar serves every request with that pair, from any thread
(a race computes a mask twice, with equal results).
Bit layout: token t is bit t % 32 of int32 word t // 32, as `apply_token_bitmask` reads it.
"""

from __future__ import annotations

import hashlib
import itertools
import time

import numpy as np

from .dfa import DEAD
from .grammar import Grammar
from .tokenizer_info import TokenizerInfo
from .vocab_trie import TrieWalk, VocabTrie

_TRIES: dict[str, VocabTrie] = {}


def vocab_trie(tokenizer_info: TokenizerInfo) -> VocabTrie:
    """The trie of a vocabulary, built once per process and vocabulary."""
    trie = _TRIES.get(tokenizer_info.vocab_hash)
    if trie is None:
        trie = _TRIES[tokenizer_info.vocab_hash] = VocabTrie(tokenizer_info.token_bytes)
    return trie


def pack_bits(allowed: np.ndarray, width: int) -> np.ndarray:
    """[n] bool -> [width] int32, bit t % 32 of word t // 32."""
    padded = np.zeros(width * 32, dtype=bool)
    padded[:allowed.size] = allowed
    return np.packbits(padded, bitorder="little").view("<i4").astype(np.int32, copy=False)


def compiled_key(grammar_key: str, tokenizer_info: TokenizerInfo) -> str:
    return hashlib.sha256(f"{grammar_key}:{tokenizer_info.vocab_hash}".encode()).hexdigest()


class CompiledGrammar:
    """Immutable apart from its mask memo; shared by all matchers of one (grammar, tokenizer)."""

    def __init__(self, grammar: Grammar, tokenizer_info: TokenizerInfo,
                 masks: dict[int, np.ndarray] | None = None):
        self.grammar = grammar
        self.dfa = grammar.dfa
        self.tokenizer_info = tokenizer_info
        self.key = compiled_key(grammar.key, tokenizer_info)
        self.bitmask_width = tokenizer_info.bitmask_width
        self._masks: dict[int, np.ndarray] = dict(masks or {})
        eos = np.zeros(tokenizer_info.vocab_size, dtype=bool)
        eos[list(tokenizer_info.eos_token_ids)] = True
        self._eos_allowed = eos
        self.eos_mask = pack_bits(eos, self.bitmask_width)
        self.eos_mask.flags.writeable = False
        self._token_bytes = tokenizer_info.token_bytes
        self._walk: TrieWalk | None = None

    @property
    def num_states(self) -> int:
        return self.dfa.num_states

    @property
    def computed_states(self) -> list[int]:
        return sorted(self._masks)

    def token_mask(self, state: int) -> np.ndarray:
        """[bitmask_width] int32 (read-only) of the tokens allowed next in `state`."""
        mask = self._masks.get(state)
        if mask is None:
            if self._walk is None:
                self._walk = TrieWalk(vocab_trie(self.tokenizer_info), self.dfa)
            allowed = np.zeros(self.tokenizer_info.vocab_size, dtype=bool)
            allowed[:len(self._token_bytes)] = self._walk.allowed_tokens(state)
            if self.dfa.is_accepting(state):
                allowed |= self._eos_allowed
            mask = pack_bits(allowed, self.bitmask_width)
            mask.flags.writeable = False
            self._masks[state] = mask
        return mask

    def precompute(self, max_states: int | None = None, max_seconds: float | None = None) -> int:
        """Compute masks ahead of use, breadth-first from the start state (the states a request
        reaches first come first), until `max_states` masks (default all) or `max_seconds` have
        passed; the start state's mask is always computed. Returns the number of masks held."""
        deadline = None if max_seconds is None else time.perf_counter() + max_seconds
        for state in itertools.islice(self.dfa.breadth_first(), max_states):
            self.token_mask(state)
            if deadline is not None and time.perf_counter() >= deadline:
                break
        return len(self._masks)

    def next_state(self, state: int, token_id: int) -> int:
        """The DFA state after a non-EOS token, or DEAD when the token is not allowed."""
        if not 0 <= token_id < len(self._token_bytes):
            return DEAD
        data = self._token_bytes[token_id]
        return DEAD if data is None else self.dfa.step(state, data)

    def is_eos(self, token_id: int) -> bool:
        return token_id in self.tokenizer_info.eos_token_ids
