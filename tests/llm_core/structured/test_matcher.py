import json

import numpy as np
import pytest
import torch

from llm_core.structured import (
    GrammarMatcher, MatcherState, TokenizerInfo, compile_for_tokenizer, compile_json_schema, compile_regex,
)

from .corpus import CASES
from .helpers import allowed_ids, random_walk, validator


@pytest.fixture(scope="module")
def info(byte_level_tokenizer) -> TokenizerInfo:
    return TokenizerInfo.from_tokenizers(byte_level_tokenizer, [byte_level_tokenizer.token_to_id("<eos>")])


def walk_text(info, ids) -> str:
    return b"".join(info.token_bytes[i] for i in ids if i not in info.eos_token_ids).decode("utf-8")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_random_walks_end_in_valid_instances(case, info, byte_level_tokenizer):
    grammar = compile_json_schema(case["schema"], **case.get("options", {}))
    matcher = GrammarMatcher(compile_for_tokenizer(grammar, info))
    check = validator(case.get("validate_with", case["schema"]))
    for seed in range(8):
        rng = np.random.default_rng(seed)
        matcher.reset()
        ids = random_walk(matcher, rng, budget=int(rng.integers(5, 60)))
        assert ids[-1] in info.eos_token_ids
        text = walk_text(info, ids)
        assert byte_level_tokenizer.decode(ids[:-1]) == text
        assert grammar.matches(text)
        value = json.loads(text)
        assert check.is_valid(value), (text, list(check.iter_errors(value))[:1])


def test_regex_walks_match_the_pattern(info):
    grammar = compile_regex(r"(\d{3}-)?[a-zé]{2,8}( [A-Z]+)*!")
    matcher = GrammarMatcher(compile_for_tokenizer(grammar, info))
    for seed in range(10):
        matcher.reset()
        text = walk_text(info, random_walk(matcher, np.random.default_rng(seed), budget=12))
        assert grammar.matches(text) and text.endswith("!")


def test_walks_with_a_metaspace_byte_fallback_vocabulary(metaspace_tokenizer):
    info = TokenizerInfo.from_tokenizers(metaspace_tokenizer, eos_token_ids=[2])
    schema = CASES[-1]["schema"]
    grammar = compile_json_schema(schema, max_whitespace=16)
    matcher = GrammarMatcher(compile_for_tokenizer(grammar, info))
    for seed in range(6):
        matcher.reset()
        text = walk_text(info, random_walk(matcher, np.random.default_rng(seed), budget=50))
        assert grammar.matches(text) and validator(schema).is_valid(json.loads(text))


@pytest.mark.parametrize("name", ["person", "format_ipv6", "realistic_order", "enum_mixed", "any_value",
                                  "recursive_tree"])
def test_no_state_has_an_empty_mask(name, info):
    case = next(c for c in CASES if c["name"] == name)
    compiled = compile_for_tokenizer(compile_json_schema(case["schema"], **case.get("options", {})), info)
    compiled.precompute()
    eos = info.eos_token_ids[0]
    for state in range(compiled.num_states):
        allowed = allowed_ids(compiled.token_mask(state), info.vocab_size)
        assert allowed.size > 0
        assert (eos in allowed) == compiled.dfa.is_accepting(state)


@pytest.fixture
def person(info):
    return compile_for_tokenizer(compile_json_schema(CASES[0]["schema"]), info)


def encode(tokenizer, text):
    return tokenizer.encode(text).ids


def test_eos_only_where_complete_and_nothing_after(person, info, byte_level_tokenizer):
    matcher = GrammarMatcher(person)
    eos = info.eos_token_ids[0]
    ids = encode(byte_level_tokenizer, '{"name": "x"}')
    assert not matcher.accept_token(eos)
    assert matcher.accept_tokens(ids[:-1]) == len(ids) - 1
    assert not matcher.is_completed() and not matcher.accept_token(eos)
    assert matcher.accept_token(ids[-1]) and matcher.is_completed()
    assert matcher.accept_token(eos) and matcher.is_terminated()
    assert not matcher.accept_token(ids[0]) and not matcher.accept_token(eos)
    assert allowed_ids(matcher.next_token_mask(), info.vocab_size).tolist() == [eos]


def test_refused_tokens_leave_the_state_unchanged(person, info, byte_level_tokenizer):
    matcher = GrammarMatcher(person)
    assert matcher.accept_tokens(encode(byte_level_tokenizer, '{"na')) > 0
    before = matcher.snapshot()
    pad = byte_level_tokenizer.token_to_id("<pad>")
    for token in [pad, byte_level_tokenizer.token_to_id("<|tool|>"), info.vocab_size + 5,
                  encode(byte_level_tokenizer, "}")[0]]:
        assert not matcher.accept_token(token)
    assert matcher.snapshot() == before


def test_rollback_is_equivalent_to_never_accepting(person, info):
    rng = np.random.default_rng(3)
    matcher = GrammarMatcher(person)
    ids = random_walk(matcher, rng, budget=40)
    for k in [1, 2, 5, len(ids)]:
        replay = GrammarMatcher(person)
        replay.accept_tokens(ids[:len(ids) - k])
        matcher.rollback(k)
        assert matcher.snapshot() == replay.snapshot()
        assert np.array_equal(matcher.next_token_mask(), replay.next_token_mask())
        assert matcher.is_terminated() == replay.is_terminated() == False  # noqa: E712
        assert matcher.accept_tokens(ids[len(ids) - k:]) == k
        assert matcher.is_terminated()
    with pytest.raises(ValueError, match="cannot roll back"):
        matcher.rollback(len(ids) + 1)


def test_snapshot_survives_preemption(person, info):
    rng = np.random.default_rng(5)
    matcher = GrammarMatcher(person)
    ids = random_walk(matcher, rng, budget=30)[:-1]
    matcher.rollback(1)
    state = matcher.snapshot()
    assert isinstance(state, MatcherState) and state.terminated_at is None
    resumed = GrammarMatcher(person, state)
    replayed = GrammarMatcher(person)
    assert replayed.accept_tokens(ids) == len(ids)
    assert resumed.dfa_state == replayed.dfa_state == matcher.dfa_state
    assert resumed.num_accepted_tokens == len(ids)
    with pytest.raises(ValueError):
        resumed.restore(MatcherState((4,), None))


def test_fill_bitmask_rows_in_numpy_and_torch(person, info, byte_level_tokenizer):
    matcher = GrammarMatcher(person)
    matcher.accept_tokens(encode(byte_level_tokenizer, '{"name": "a"'))
    width = info.bitmask_width
    as_numpy = np.full((3, width), -1, dtype=np.int32)
    as_torch = torch.full((3, width), -1, dtype=torch.int32)
    matcher.fill_next_token_bitmask(as_numpy, 1)
    matcher.fill_next_token_bitmask(as_torch, 1)
    assert np.array_equal(as_numpy[1], matcher.next_token_mask())
    assert np.array_equal(as_torch.numpy(), as_numpy)
    assert (as_numpy[0] == -1).all() and (as_numpy[2] == -1).all()
    with pytest.raises(ValueError, match="int32"):
        matcher.fill_next_token_bitmask(torch.zeros((1, width), dtype=torch.int64))
    with pytest.raises(ValueError, match="width"):
        matcher.fill_next_token_bitmask(np.zeros(width + 1, dtype=np.int32))


def test_draft_masks_are_per_position_and_leave_state_unchanged(person, info, byte_level_tokenizer):
    matcher = GrammarMatcher(person)
    matcher.accept_tokens(encode(byte_level_tokenizer, '{"na'))
    before = matcher.snapshot()
    draft = encode(byte_level_tokenizer, 'me": "b')
    bad = draft[:2] + encode(byte_level_tokenizer, "]")
    masks = np.zeros((len(draft) + 1, info.bitmask_width), dtype=np.int32)
    assert matcher.fill_draft_bitmasks(draft, masks) == len(draft)
    assert matcher.snapshot() == before
    for i in range(len(draft) + 1):
        expected = GrammarMatcher(person, before)
        expected.accept_tokens(draft[:i])
        assert np.array_equal(masks[i], expected.next_token_mask())
    assert matcher.fill_draft_bitmasks(bad, masks) == 2
    assert matcher.snapshot() == before
