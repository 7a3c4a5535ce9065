import pytest

from llm_core.spec_decode import NgramProposer, SpeculativeConfig
from llm_core.spec_decode.ngram import find_latest_match


def test_proposes_continuation_of_latest_match():
    proposer = NgramProposer(1, 3)
    # suffix [1, 2] occurs at 0 and 4; the latest (4) is followed by 9, 9
    assert proposer.propose([1, 2, 3, 4, 1, 2, 9, 9, 1, 2], 3) == [9, 9, 1]


def test_longest_n_wins_over_shorter_and_k_cuts():
    proposer = NgramProposer(1, 3)
    # last 3 [5, 6, 7] occurs at 0 (followed by 8); last 1 [7] also occurs at 4 (followed by 0)
    tokens = [5, 6, 7, 8, 7, 0, 5, 6, 7]
    assert proposer.propose(tokens, 1) == [8]
    assert NgramProposer(1, 1).propose(tokens, 2) == [0, 5]


def test_no_match_or_too_short():
    assert NgramProposer(1, 3).propose([1, 2, 3, 4], 4) == []
    assert NgramProposer(2, 3).propose([1, 2, 1], 4) == []  # [2, 1] never occurred before
    assert NgramProposer(1, 3).propose([7], 4) == []
    assert NgramProposer(1, 3).propose([1, 1], 0) == []


def test_continuation_stops_at_known_tokens():
    assert NgramProposer(1, 1).propose([3, 4, 3], 5) == [4, 3]
    assert find_latest_match([3, 4, 3], 1) == 0
    assert find_latest_match([3, 4, 5], 1) is None


def test_config_validation_and_overrides():
    config = SpeculativeConfig.from_dict({"method": "ngram", "num_tokens": 3})
    assert SpeculativeConfig.from_dict(None) is None
    assert config.num_tokens_for(None) == 3
    assert config.num_tokens_for({"enabled": False}) == 0
    assert config.num_tokens_for({"enabled": True, "num_tokens": 5}) == 5
    with pytest.raises(ValueError, match="model"):
        SpeculativeConfig.from_dict({"method": "draft"})
    with pytest.raises(ValueError, match="model"):
        SpeculativeConfig.from_dict({"method": "ngram", "model": "x"})
    draft = SpeculativeConfig.from_dict({"method": "draft", "model": "x", "num_tokens": "auto"})
    assert draft.adaptive and draft.num_tokens == 8
    assert draft.is_adaptive_for(None) and not draft.is_adaptive_for({"num_tokens": 2})
    with pytest.raises(ValueError, match="auto"):
        SpeculativeConfig.from_dict({"method": "ngram", "num_tokens": "auto", "adaptive": False})
    with pytest.raises(ValueError, match="bogus"):
        SpeculativeConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError):
        SpeculativeConfig(prompt_lookup_min=3, prompt_lookup_max=2)
