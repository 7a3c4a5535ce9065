"""Drafts under a grammar: they follow it and never end it (no token could follow the end, not
even the target's bonus token)."""

from __future__ import annotations

import time

import torch

from llm_core.sampling_params import SamplingParams
from llm_core.structured_output import StructuredOutputManager
from llm_core.tokenizer import Tokenizer
from tests.helpers.tokenizers import IM_END, make_tokenizer_dir


def test_drafts_follow_the_grammar_and_stop_before_its_end(tmp_path):
    tokenizer = Tokenizer.from_dir(make_tokenizer_dir(tmp_path))
    eos = tokenizer.token_to_id(IM_END)
    manager = StructuredOutputManager(tokenizer, 512, (eos,))
    assert manager.submit("r", SamplingParams(response_format={"type": "regex", "pattern": "ab"}))
    for _ in range(500):
        if manager.poll()[0]:
            break
        time.sleep(0.01)
    (a,), (b,) = tokenizer.encode("a", add_special_tokens=False), tokenizer.encode("b", add_special_tokens=False)
    assert manager.num_valid_draft_tokens("r", [a, b, eos, a]) == 2  # the ending EOS is cut
    assert manager.num_valid_draft_tokens("r", [b]) == 0
    assert manager.num_valid_draft_tokens("free", [b, eos]) == 2  # no grammar: nothing cut

    logits = torch.zeros(2, 512)
    assert manager.apply_proposal_masks(logits, ["r", "free"], [[a], [b]]) == [True, True]
    assert logits[0, b] == 0 and logits[0, a] == float("-inf") and logits[0, eos] == float("-inf")
    assert bool((logits[1] == 0).all())  # unconstrained row untouched
    done = torch.zeros(1, 512)
    assert manager.apply_proposal_masks(done, ["r"], [[a, b]]) == [False]  # only the end is left
    assert bool((done == 0).all())
    assert manager.accept("r", a)  # the matcher itself never moved
    manager.shutdown()
