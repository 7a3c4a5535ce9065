"""The engine's speculation bookkeeping without a model: statistics, q hand-over, merged deltas."""

from __future__ import annotations

import pytest
import torch

from llm_core.engine_client import merge_deltas
from llm_core.outputs import CompletionDelta, RequestOutput
from llm_core.sampling_params import SamplingParams
from llm_core.scheduler_output import RequestUpdate, ScheduledRequest, SchedulerOutput
from llm_core.spec_decode.config import SpeculativeConfig
from llm_core.spec_decode.speculator import Speculator


def speculator(**options) -> Speculator:
    return Speculator(SpeculativeConfig(**options), structured=None, max_model_len=100)


def entry(request_id: str, drafts: tuple[int, ...]) -> ScheduledRequest:
    return ScheduledRequest(request_id, (5,) + drafts, 10, (1,), True, 3, SamplingParams(), len(drafts))


def test_statistics_overall_and_per_position():
    spec = speculator()
    updates = [RequestUpdate("a", (1, 2, 3), num_draft_tokens=4, num_accepted_draft_tokens=2),
               RequestUpdate("b", (1,), num_draft_tokens=4, num_accepted_draft_tokens=0),
               RequestUpdate("c", (1,))]
    for update in updates:
        if update.num_draft_tokens:
            spec._record(update, is_running=True)
    metrics = spec.metrics()
    assert metrics["spec_num_drafts"] == 2 and metrics["spec_num_draft_tokens"] == 8
    assert metrics["spec_num_accepted_draft_tokens"] == 2
    assert metrics["spec_num_accepted_per_position"] == [1, 1]
    assert metrics["spec_mean_acceptance_length"] == 2.0
    assert spec.adaptive.acceptance("b") < 1.0


def test_draft_probs_go_to_the_step_that_schedules_their_drafts():
    spec = speculator()
    q = torch.rand(3, 8)
    spec._draft_probs["a"] = ((4, 6, 2), q)
    spec._draft_probs["b"] = ((1,), torch.rand(1, 8))
    assert spec.take_draft_probs(SchedulerOutput((entry("x", ()),), 1)) is None  # not scheduled: kept
    probs = spec.take_draft_probs(SchedulerOutput((entry("a", (4, 6)), entry("b", ())), 4))
    assert set(probs) == {"a"} and torch.equal(probs["a"], q[:2])  # cut like the drafts were
    assert spec.take_draft_probs(SchedulerOutput((entry("a", (4,)),), 2)) is None  # consumed
    spec._draft_probs["c"] = ((4,), q[:1])
    with pytest.raises(RuntimeError, match="differ"):
        spec.take_draft_probs(SchedulerOutput((entry("c", (9,)),), 2))


def test_per_request_counts_survive_merged_deltas():
    deltas = [CompletionDelta("r", (1, 2), "ab", False, num_draft_tokens=3, num_accepted_draft_tokens=1, num_drafts=1),
              CompletionDelta("r", (3,), "c", False),
              CompletionDelta("r", (4, 5, 6), "def", True, "length", num_draft_tokens=3, num_accepted_draft_tokens=2,
                              num_drafts=1)]
    merged = merge_deltas(deltas)
    assert (merged.num_drafts, merged.num_draft_tokens, merged.num_accepted_draft_tokens) == (2, 6, 3)
    out = RequestOutput("r", None, [0])
    out.add(merged)
    assert out.token_ids == [1, 2, 3, 4, 5, 6] and out.mean_acceptance_length == 2.5
