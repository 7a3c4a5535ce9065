"""The scheduler's encoder budget (llm_core/encoder_budget.py), without weights or tensors: requests
carry media runs (MediaSpan) and the plan lists which of them the runner must encode."""

from __future__ import annotations

import pytest

from cache.block_hash import MediaSpan
from cache.kv_cache_manager import KVCacheManager
from llm_core.config import SchedulerConfig
from llm_core.request import Request
from llm_core.sampling_params import SamplingParams
from llm_core.scheduler import Scheduler

BLOCK = 4
IMAGE = 10  # placeholder tokens (embedding rows) per image
PLACEHOLDER = 5


def make_scheduler(*, encoder_budget: int, max_batched: int = 256, num_blocks: int = 128) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=max_batched,
                             max_num_encoder_input_tokens=encoder_budget)
    return Scheduler(config, KVCacheManager(num_blocks, BLOCK, True), max_model_len=512, block_size=BLOCK)


def media_request(request_id: str, runs: list[tuple[int, int, str]], num_prompt: int = 40,
                  arrival: float = 0.0) -> Request:
    """A prompt of num_prompt tokens with a run of PLACEHOLDER ids per (offset, length, content)."""
    prompt = [100 + i for i in range(num_prompt)]
    for offset, length, _ in runs:
        prompt[offset:offset + length] = [PLACEHOLDER] * length
    spans = [MediaSpan(offset, length, content) for offset, length, content in runs]
    return Request(request_id, prompt, SamplingParams(max_tokens=2), arrival_time=arrival, block_size=BLOCK,
                   media_spans=spans)


def step(sched: Scheduler):
    """One plan, applied as if the runner sampled token 7 for every sampling request."""
    plan = sched.schedule()
    sched.update_from_output(plan, {e.request_id: 7 for e in plan.requests if e.do_sample})
    return plan


def shares(plan) -> list[tuple[str, int, int]]:
    return [(e.request_id, e.start_position, e.num_tokens) for e in plan.requests]


def test_media_of_several_requests_fits_one_step_and_is_listed_once():
    sched = make_scheduler(encoder_budget=2 * IMAGE)
    sched.add_request(media_request("a", [(3, IMAGE, "img-a")]))
    sched.add_request(media_request("b", [(3, IMAGE, "img-b")]))
    plan = step(sched)
    assert shares(plan) == [("a", 0, 40), ("b", 0, 40)]
    assert plan.encoder_inputs == (("a", 0), ("b", 0))  # one batch for the runner
    assert plan.num_encoder_tokens == 2 * IMAGE
    assert not sched.requests["a"].unencoded_media and not sched.requests["b"].unencoded_media
    assert step(sched).encoder_inputs == ()  # encoded once: decode steps need no encoder


def test_a_request_runs_up_to_the_media_that_does_not_fit():
    sched = make_scheduler(encoder_budget=IMAGE)
    sched.add_request(media_request("a", [(3, IMAGE, "img-a")]))
    sched.add_request(media_request("b", [(5, IMAGE, "img-b")]))
    plan = step(sched)
    # b's text before its image runs now; its image waits for the next step's budget.
    assert shares(plan) == [("a", 0, 40), ("b", 0, 5)]
    assert plan.encoder_inputs == (("a", 0),) and plan.num_encoder_tokens == IMAGE
    plan = step(sched)
    assert shares(plan) == [("a", 40, 1), ("b", 5, 35)]
    assert plan.encoder_inputs == (("b", 0),) and plan.num_encoder_tokens == IMAGE


def test_every_step_stays_within_the_budget_and_every_run_is_encoded_once():
    sched = make_scheduler(encoder_budget=25)
    runs = [(2, IMAGE, "x1"), (14, IMAGE, "x2"), (26, IMAGE, "x3")]
    for i in range(3):
        sched.add_request(media_request(f"r{i}", [(o, n, f"{c}-{i}") for o, n, c in runs], arrival=i))
    encoded = []
    for _ in range(50):
        if not sched.has_unfinished_requests():
            break
        plan = step(sched)
        assert plan.num_encoder_tokens <= 25
        for entry in plan.requests:  # a scheduled run is encoded in this step or before
            request_id, start, end = entry.request_id, entry.start_position, entry.start_position + entry.num_tokens
            for index, (offset, length, _) in enumerate(runs):
                if offset < end and offset + length > start:
                    assert (request_id, index) in encoded or (request_id, index) in plan.encoder_inputs
        encoded += plan.encoder_inputs
    assert not sched.has_unfinished_requests()
    assert sorted(encoded) == sorted((f"r{i}", j) for i in range(3) for j in range(3))


def test_equal_content_is_charged_once_per_step():
    sched = make_scheduler(encoder_budget=IMAGE)
    sched.add_request(media_request("a", [(3, IMAGE, "same")]))
    sched.add_request(media_request("b", [(3, IMAGE, "same")]))
    plan = step(sched)
    assert shares(plan) == [("a", 0, 40), ("b", 0, 40)]
    assert plan.encoder_inputs == (("a", 0), ("b", 0)) and plan.num_encoder_tokens == IMAGE


def test_media_larger_than_the_budget_runs_alone():
    sched = make_scheduler(encoder_budget=IMAGE)
    sched.add_request(media_request("small", [(2, 4, "small")]))
    sched.add_request(media_request("big", [(2, 3 * IMAGE, "big")]))
    plan = step(sched)
    assert shares(plan) == [("small", 0, 40), ("big", 0, 2)]
    plan = step(sched)
    assert plan.encoder_inputs == (("big", 0),) and plan.num_encoder_tokens == 3 * IMAGE
    assert shares(plan) == [("small", 40, 1), ("big", 2, 38)]


def test_chunked_prefill_charges_media_in_the_chunk_that_reaches_it():
    sched = make_scheduler(encoder_budget=IMAGE, max_batched=12)
    sched.add_request(media_request("a", [(20, IMAGE, "late")]))
    plans = [step(sched) for _ in range(4)]
    assert [shares(p)[0][1:] for p in plans] == [(0, 12), (12, 12), (24, 12), (36, 4)]
    assert [p.encoder_inputs for p in plans] == [(), (("a", 0),), (), ()]


def test_cached_embeddings_and_prefix_hits_need_no_encoder():
    sched = make_scheduler(encoder_budget=IMAGE)
    hit = media_request("hit", [(3, IMAGE, "img")])
    hit.unencoded_media.clear()  # the embedder found it in the embedding cache
    sched.add_request(hit)
    sched.add_request(media_request("other", [(3, IMAGE, "img-2")]))
    plan = step(sched)
    assert shares(plan) == [("hit", 0, 40), ("other", 0, 40)]
    assert plan.encoder_inputs == (("other", 0),)
    while sched.has_unfinished_requests():
        step(sched)
    # The same prompt again: its run lies wholly inside the prefix-cache hit, so it is never fed.
    again = media_request("again", [(3, IMAGE, "img-2")])
    sched.add_request(again)
    plan = step(sched)
    assert shares(plan)[0][1] >= 3 + IMAGE
    assert plan.encoder_inputs == () and again.unencoded_media == {0}


def test_the_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_num_encoder_input_tokens"):
        SchedulerConfig(max_num_encoder_input_tokens=0)
