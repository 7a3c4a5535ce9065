import numpy as np
import pytest

from llm_core.structured import CompiledGrammar, TokenizerInfo, compile_json_schema, compile_regex
from llm_core.structured.dfa import DEAD
from llm_core.structured.token_grammar import pack_bits, vocab_trie
from llm_core.structured.vocab_trie import DEFAULT_DENSE_FRACTION, TrieWalk, VocabTrie

from .helpers import allowed_ids


@pytest.fixture(scope="module")
def info(byte_level_tokenizer) -> TokenizerInfo:
    # Logits wider than the vocabulary, as models pad them.
    return TokenizerInfo.from_tokenizers(byte_level_tokenizer, [byte_level_tokenizer.token_to_id("<eos>")],
                                         vocab_size=730)


@pytest.mark.parametrize("grammar", [
    compile_json_schema({"type": "object", "properties": {"a": {"type": "string", "format": "date"},
                                                          "b": {"enum": ["x", "ünï"]}}}),
    compile_regex(r"[a-z]+(\d{2}|é)?\n"),
    compile_json_schema({"type": "array", "items": {"type": "number", "minimum": 0}}),
], ids=["object", "regex", "array"])
def test_masks_agree_with_stepping_each_token(grammar, info):
    compiled = CompiledGrammar(grammar, info)
    eos = info.eos_token_ids[0]
    for state in range(grammar.num_states):
        expected = {t for t, data in enumerate(info.token_bytes)
                    if data is not None and grammar.dfa.step(state, data) != DEAD}
        if grammar.dfa.is_accepting(state):
            expected.add(eos)
        assert set(allowed_ids(compiled.token_mask(state), info.vocab_size).tolist()) == expected
        for t in list(expected)[:20]:
            if t != eos:
                assert compiled.next_state(state, t) == grammar.dfa.step(state, info.token_bytes[t])


def test_masks_are_memoized_read_only_and_cover_padding(info):
    compiled = CompiledGrammar(compile_regex("[ab]+"), info)
    mask = compiled.token_mask(0)
    assert compiled.token_mask(0) is mask and compiled.computed_states == [0]
    assert mask.dtype == np.int32 and mask.shape == (info.bitmask_width,) == (23,)
    assert not mask.flags.writeable
    bits = np.unpackbits(mask.view(np.uint8), bitorder="little")
    assert not bits[len(info.token_bytes):].any()
    compiled.precompute()
    assert compiled.computed_states == list(range(compiled.num_states))


def test_precompute_goes_breadth_first_within_its_limits(info):
    grammar = compile_regex("abcd|x")
    order = list(grammar.dfa.breadth_first())
    assert sorted(order) == list(range(grammar.num_states)) and order[0] == 0
    assert set(order[1:3]) == {grammar.dfa.step(0, b"a"), grammar.dfa.step(0, b"x")}
    compiled = CompiledGrammar(grammar, info)
    assert compiled.precompute(max_states=2) == 2 and compiled.computed_states == sorted(order[:2])
    fresh = CompiledGrammar(grammar, info)
    assert fresh.precompute(max_seconds=0) == 1 and fresh.computed_states == [0]  # the start state at least


def test_pack_bits_layout():
    allowed = np.zeros(70, dtype=bool)
    allowed[[0, 31, 32, 69]] = True
    words = pack_bits(allowed, 3)
    assert words.tolist() == [1 | -(1 << 31), 1, 1 << 5]


def test_trie_shares_prefixes_and_never_allows_byteless_tokens():
    trie = VocabTrie((b"ab", b"a", None, b"abc", b"b", b"ab"))
    assert trie.num_nodes == 5  # "", a, b, ab, abc
    assert trie.token_node[2] == trie.num_nodes
    assert trie.token_node[0] == trie.token_node[5]
    dfa = compile_regex("abc?").dfa
    assert trie.allowed_tokens(dfa, 0).tolist() == [True, True, False, True, False, True]


@pytest.mark.parametrize("grammar", [
    compile_json_schema({"type": "object", "properties": {
        "name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}},
        "when": {"type": "string", "format": "date-time"}, "n": {"type": "number", "minimum": -3.5}},
        "required": ["name"]}),
    compile_json_schema({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                         "additionalProperties": {"type": "integer"}}),
    compile_json_schema(True),
    compile_regex(r"(\w+ ){1,3}[A-Z]{2}-\d{3,5}|ünï(code)?"),
], ids=["object", "free_strings", "any_value", "regex"])
@pytest.mark.parametrize("dense_fraction", [0.0, DEFAULT_DENSE_FRACTION, 2.0],
                         ids=["dense", "mixed", "sparse"])
def test_trie_walk_agrees_with_stepping_each_token_on_random_states(grammar, dense_fraction, info):
    # Reference: each token's bytes stepped through the DFA on their own (no trie, no numpy).
    rng = np.random.default_rng(0)
    walk = TrieWalk(vocab_trie(info), grammar.dfa)
    states = {0, *rng.choice(grammar.num_states, size=min(25, grammar.num_states), replace=False).tolist()}
    for state in sorted(states):
        expected = [data is not None and grammar.dfa.step(state, data) != DEAD for data in info.token_bytes]
        assert walk.allowed_tokens(state, dense_fraction).tolist() == expected, state


def test_trie_walk_handles_duplicate_byteless_and_long_tokens():
    tokens = (b"ab", b"a", None, b"abc", b"b", b"ab", b"x" * 40, b"\xc3", b"\xc3\xa9", b"", b"a" * 40)
    trie = VocabTrie(tokens)
    for pattern in ["abc?", "x*", "[a-z]*", "é?a*", "(ab)+"]:
        dfa = compile_regex(pattern).dfa
        for state in range(dfa.num_states):
            expected = [bool(data) and dfa.step(state, data) != DEAD for data in tokens]
            for dense_fraction in (0.0, DEFAULT_DENSE_FRACTION, 2.0):
                assert TrieWalk(trie, dfa).allowed_tokens(state, dense_fraction).tolist() == expected
