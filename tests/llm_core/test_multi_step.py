"""Multi-step decoding (num_scheduler_steps > 1) changes no output: greedy and seeded tokens,
stops, lengths and cached-token counts equal single-step decoding, through preemption, and it
stands aside for requests that need the host between tokens."""

from __future__ import annotations

import pytest

from llm_core import LLM, SamplingParams
from tests.helpers.checkpoints import make_text_checkpoint
from tests.helpers.generation import random_prompts, summary


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(make_text_checkpoint(tmp_path_factory.mktemp("multistep"), "llama", seed=7))


@pytest.fixture(scope="module")
def single(checkpoint):
    return LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=1)


def _count_steps(llm: LLM) -> list[int]:
    calls = [0]
    step = llm.engine.step

    def counted():
        calls[0] += 1
        return step()
    llm.engine.step = counted
    return calls


@pytest.mark.parametrize("num_steps", [2, 4, 7])
def test_mixed_batch_equals_single_step(checkpoint, single, num_steps):
    prompts = random_prompts(8, seed=num_steps)
    probe = single.generate(prompts[2:3], SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))[0]
    stop_token = probe.token_ids[5]  # a token greedy decoding reaches mid-run
    params = [SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=9, temperature=0.0, ignore_eos=True),  # ends inside a multi-step run
              SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop_token_ids=(stop_token,)),
              SamplingParams(max_tokens=30, temperature=1.0, seed=11, ignore_eos=True),
              SamplingParams(max_tokens=33, temperature=0.8, top_k=20, seed=3, ignore_eos=True),
              SamplingParams(max_tokens=25, temperature=0.0, min_tokens=10),
              SamplingParams(max_tokens=180, temperature=0.0, ignore_eos=True),  # runs into max_model_len
              SamplingParams(max_tokens=1, temperature=0.0)]
    multi = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=num_steps)
    steps = _count_steps(multi)
    expected = single.generate(prompts, params)
    got = multi.generate(prompts, params)
    assert summary(got) == summary(expected)
    assert expected[2].finish_reason == "stop" and expected[6].finish_reason == "length"
    longest = max(len(o.token_ids) for o in expected)
    assert steps[0] < longest  # several tokens per engine step, so the multi-step path ran


def test_stop_strings_and_prefix_cache_hits_match(checkpoint, single):
    prompts = random_prompts(4, seed=99)
    text = single.generate(prompts[:1], SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, stop=[stop] if stop.strip() else None)
    fresh = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=1)
    multi = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=4)
    for _ in range(2):  # the second round hits the prefix cache
        got = multi.generate(prompts, params)
        assert summary(got, cached=True) == summary(fresh.generate(prompts, params), cached=True)
    assert all(o.num_cached_tokens > 0 for o in got if len(o.prompt_token_ids) > 16)


def test_preemption_under_a_small_kv_pool(checkpoint, single):
    # 12 usable blocks of 16 tokens for four requests growing past 60 tokens each.
    block_bytes = 2 * 2 * 16 * 2 * 16 * 4  # k and v, layers, block_size, kv heads, head_dim, fp32
    multi = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=5, block_size=16,
                cpu_kv_cache_bytes=13 * block_bytes)
    prompts = random_prompts(4, seed=5)
    params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
    assert [o.token_ids for o in multi.generate(prompts, params)] == \
        [o.token_ids for o in single.generate(prompts, params)]
    assert multi.engine.stats()["num_preemptions"] > 0


def test_requests_needing_the_host_between_tokens_run_single_steps(checkpoint, single):
    prompts = random_prompts(3, seed=8)
    params = [SamplingParams(max_tokens=12, temperature=0.0, logprobs=2),
              SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)]
    multi = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=4)
    steps = _count_steps(multi)
    got = multi.generate(prompts, params)
    expected = single.generate(prompts, params)
    assert summary(got) == summary(expected)
    assert got[0].logprobs == expected[0].logprobs
    assert steps[0] >= 12  # one token per step while the logprobs request runs


def test_option_is_validated():
    from llm_core.config import SchedulerConfig
    for bad in (0, 65, 2.0):
        with pytest.raises(ValueError, match="num_scheduler_steps"):
            SchedulerConfig(num_scheduler_steps=bad)


# Async output processing: a multi-step step's updates are detokenized during the next one.
def test_outputs_equal_with_async_output_processing_off(checkpoint, single):
    prompts = random_prompts(6, seed=21)
    text = single.generate(prompts[:1], SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    params = [SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, stop=[stop] if stop.strip() else None),
              SamplingParams(max_tokens=7, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=30, temperature=1.0, seed=4, ignore_eos=True),
              SamplingParams(max_tokens=25, temperature=0.0, min_tokens=10),
              SamplingParams(max_tokens=180, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=13, temperature=0.0, ignore_eos=True)]
    expected = summary(single.generate(prompts, params))
    for disabled in (False, True):
        llm = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=4,
                  disable_async_output_proc=disabled)
        assert summary(llm.generate(prompts, params)) == expected
        assert llm.engine.kv_cache_manager.num_free_blocks == llm.engine.num_blocks - 1  # every block back


def _run_engine(engine, prompts, params) -> tuple[list[list], dict[str, list[int]]]:
    """Steps until done; returns the request ids of each step's deltas and each request's tokens."""
    ids = [engine.add_request({"prompt_token_ids": p}, params) for p in prompts]
    per_step, tokens = [], {i: [] for i in ids}
    for _ in range(500):
        if not engine.has_unfinished_requests():
            break
        deltas = engine.step()
        per_step.append([d.request_id for d in deltas])
        for d in deltas:
            tokens[d.request_id] += d.new_token_ids
    assert not engine.has_unfinished_requests()
    return per_step, tokens


def test_deltas_of_a_multi_step_step_come_with_the_next_step(checkpoint):
    params = SamplingParams(max_tokens=21, temperature=0.0, ignore_eos=True)
    prompts = random_prompts(3, seed=31)
    deferred = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=4).engine
    direct = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=4,
                 disable_async_output_proc=True).engine
    steps_deferred, tokens_deferred = _run_engine(deferred, prompts, params)
    steps_direct, tokens_direct = _run_engine(direct, prompts, params)
    assert list(tokens_deferred.values()) == list(tokens_direct.values())
    assert all(len(t) == 21 for t in tokens_deferred.values())
    # The first multi-step step returns nothing (its deltas wait); the last step returns the rest
    # while the scheduler is already empty; one more step in all.
    first_multi = next(i for i, ids in enumerate(steps_direct) if i > 0 and ids)  # after the prefill step
    assert steps_deferred[first_multi] == [] and steps_direct[first_multi]
    assert len(steps_deferred) == len(steps_direct) + 1
    assert [sorted(ids) for ids in steps_deferred[first_multi + 1:]] == \
        [sorted(ids) for ids in steps_direct[first_multi:]]


def test_abort_drops_a_request_s_kept_updates(checkpoint):
    engine = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=4).engine
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    a, b = (engine.add_request({"prompt_token_ids": p}, params) for p in random_prompts(2, seed=41))
    received = {a: [], b: []}
    for _ in range(3):  # prefill, then multi-step steps whose updates are kept
        for d in engine.step():
            received[d.request_id] += d.new_token_ids
    assert engine._pending_updates and {u.request_id for u in engine._pending_updates} == {a, b}
    engine.abort_request([a])
    after_abort = len(received[a])
    while engine.has_unfinished_requests():
        for d in engine.step():
            received[d.request_id] += d.new_token_ids
    assert len(received[a]) == after_abort  # nothing of a after its abort
    assert len(received[b]) == 30
    assert engine.kv_cache_manager.num_free_blocks == engine.num_blocks - 1
