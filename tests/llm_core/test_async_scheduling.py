"""Async scheduling (llm_core/multi_step.py): the next multi-step step's forwards are queued before
this step's tokens reach the host. Outputs equal single-step decoding whether the queued run is
adopted (the plan was the predicted one, or a part of it; a request that arrived meanwhile waits
one step) or dropped (preemption), and the KV writes of a dropped run corrupt neither the cache
nor prefix hits."""

from __future__ import annotations

import pytest

from llm_core import LLM, SamplingParams
from llm_core.multi_step import predict_next_entries
from llm_core.scheduler_output import ScheduledRequest
from tests.helpers.checkpoints import make_text_checkpoint
from tests.helpers.generation import random_prompts, summary


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(make_text_checkpoint(tmp_path_factory.mktemp("asyncsched"), "llama", seed=7))


@pytest.fixture(scope="module")
def single(checkpoint):
    return LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=1)


def _async_llm(checkpoint, num_steps: int = 4, **options) -> LLM:
    llm = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=num_steps, async_scheduling=True,
              **options)
    assert llm.engine.async_scheduling
    return llm


def test_off_by_default_on_the_cpu_and_with_what_it_cannot_serve(checkpoint):
    assert not LLM(checkpoint, device="cpu", max_model_len=192).engine.async_scheduling
    for options in ({"num_scheduler_steps": 1}, {"disable_async_output_proc": True},
                    {"speculative": {"method": "ngram", "num_tokens": 2}}):
        assert not LLM(checkpoint, device="cpu", max_model_len=192, async_scheduling=True,
                       **{"num_scheduler_steps": 4, **options}).engine.async_scheduling


@pytest.mark.parametrize("num_steps", [2, 4])
def test_mixed_batch_equals_single_step(checkpoint, single, num_steps):
    prompts = random_prompts(8, seed=num_steps + 50)
    probe = single.generate(prompts[2:3], SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))[0]
    stop_token = probe.token_ids[6]  # a token greedy decoding reaches mid-run
    text = single.generate(prompts[:1], SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    params = [SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, stop=[stop] if stop.strip() else None),
              SamplingParams(max_tokens=9, temperature=0.0, ignore_eos=True),  # ends inside a queued run
              SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, stop_token_ids=(stop_token,)),
              SamplingParams(max_tokens=30, temperature=1.0, seed=11, ignore_eos=True),
              SamplingParams(max_tokens=33, temperature=0.8, top_k=20, seed=3, ignore_eos=True),
              SamplingParams(max_tokens=25, temperature=0.0, min_tokens=10),
              SamplingParams(max_tokens=180, temperature=0.0, ignore_eos=True),  # runs into max_model_len
              SamplingParams(max_tokens=14, temperature=0.0, ignore_eos=True)]
    expected = single.generate(prompts, params)
    assert expected[2].finish_reason == "stop" and expected[6].finish_reason == "length"
    llm = _async_llm(checkpoint, num_steps)
    for _ in range(2):  # the second round hits the prefix cache that the first (and its queued runs) filled
        got = llm.generate(prompts, params)
        assert summary(got) == summary(expected)
    runner = llm.engine.runner
    assert runner.num_queued_adopted > 5  # most steps ran on forwards queued a step ahead
    assert runner._queued is None  # the last request ends by length: nothing was queued past it
    assert any(o.num_cached_tokens > 0 for o in got)
    assert llm.engine.kv_cache_manager.num_free_blocks == llm.engine.num_blocks - 1  # every block back
    stats = llm.engine.stats()
    assert (stats["queued_steps_adopted"], stats["queued_steps_dropped"]) == \
        (runner.num_queued_adopted, runner.num_queued_dropped)


def test_a_request_that_ends_leaves_the_queued_run_usable_for_the_others(checkpoint, single):
    """Requests of different lengths end one by one; each following plan is a part of the
    predicted one, so the queued runs are still adopted."""
    prompts = random_prompts(4, seed=3)
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (6, 13, 21, 40)]
    llm = _async_llm(checkpoint)
    assert summary(llm.generate(prompts, params)) == summary(single.generate(prompts, params))
    # 40 tokens, 4 per step after the first: about 10 multi-step steps, each but the first adopted
    assert llm.engine.runner.num_queued_adopted >= 7


def _step_all(engine, received: dict) -> None:
    for d in engine.step():
        received.setdefault(d.request_id, []).extend(d.new_token_ids)


def test_arrival_and_abort_mid_run(checkpoint, single):
    engine = _async_llm(checkpoint).engine
    runner = engine.runner
    prompts = random_prompts(3, seed=17)
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    a, b = (engine.add_request({"prompt_token_ids": p}, params) for p in prompts[:2])
    received: dict[str, list[int]] = {}
    for _ in range(4):  # prefill, then multi-step steps, each queuing the next
        _step_all(engine, received)
    assert runner._queued is not None
    dropped, adopted = runner.num_queued_dropped, runner.num_queued_adopted
    # A request arrives: the step whose forwards are queued runs them for a and b; c is admitted
    # by the step after (nothing was queued for it, since c waited).
    c = engine.add_request({"prompt_token_ids": prompts[2]}, params)
    _step_all(engine, received)
    assert runner.num_queued_adopted == adopted + 1 and runner.num_queued_dropped == dropped
    assert [r.request_id for r in engine.scheduler.waiting] == [c] and runner._queued is None
    _step_all(engine, received)
    assert c in {r.request_id for r in engine.scheduler.running}
    for _ in range(3):
        _step_all(engine, received)
    engine.abort_request([a])
    after_abort = len(received.get(a, []))
    adopted = runner.num_queued_adopted
    while engine.has_unfinished_requests():
        _step_all(engine, received)
    assert runner.num_queued_adopted > adopted  # plans without `a` still adopted the runs queued with it
    assert len(received.get(a, [])) == after_abort
    expected = single.generate(prompts, params)
    assert received[b] == expected[1].token_ids and received[c] == expected[2].token_ids
    assert engine.kv_cache_manager.num_free_blocks == engine.num_blocks - 1


def test_preemption_under_a_small_kv_pool(checkpoint, single):
    block_bytes = 2 * 2 * 16 * 2 * 16 * 4  # k and v, layers, block_size, kv heads, head_dim, fp32
    llm = _async_llm(checkpoint, num_steps=5, block_size=16, cpu_kv_cache_bytes=13 * block_bytes)
    prompts = random_prompts(4, seed=5)
    params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
    assert [o.token_ids for o in llm.generate(prompts, params)] == \
        [o.token_ids for o in single.generate(prompts, params)]
    assert llm.engine.stats()["num_preemptions"] > 0


def _entry(request_id: str, start: int, num_draft: int, num_outputs: int, max_tokens: int, num_blocks: int):
    return ScheduledRequest(request_id=request_id, token_ids=(1,) * (num_draft + 1), start_position=start,
                            block_ids=tuple(range(num_blocks)), do_sample=True, num_output_tokens=num_outputs,
                            sampling_params=SamplingParams(max_tokens=max_tokens), num_draft_tokens=num_draft)


def test_prediction_follows_the_scheduler_s_rules():
    # start 20, 4 tokens this step -> 25 tokens, next start 24, placeholders capped by max_tokens and max_model_len
    entries = [_entry("a", 20, 3, 5, 100, 3),  # plenty of room: 3 placeholders
               _entry("b", 20, 3, 5, 11, 3),  # 9 outputs after, 2 left: 1 placeholder
               _entry("c", 20, 3, 5, 9, 3),  # 9 outputs after: finished, left out
               _entry("d", 40, 3, 5, 100, 3)]  # 45 tokens after, max_model_len 46: 0 placeholders
    predicted = predict_next_entries(entries, 4, max_model_len=46, block_size=16)
    assert [(e.request_id, e.start_position, e.num_draft_tokens, e.num_output_tokens) for e in predicted] == \
        [("a", 24, 3, 9), ("b", 24, 1, 9), ("d", 44, 0, 9)]
    assert all(e.token_ids == (0,) * (e.num_draft_tokens + 1) for e in predicted)
    # a request whose next positions have no slot yet: no prediction
    assert predict_next_entries([_entry("a", 28, 3, 5, 100, 2)], 4, max_model_len=192, block_size=16) is None
    assert predict_next_entries([_entry("a", 28, 3, 5, 100, 3)], 4, max_model_len=192, block_size=16) is not None
    assert predict_next_entries([entries[2]], 4, max_model_len=192, block_size=16) is None


def test_constrained_steps_sample_forwards_queued_before_their_masks(checkpoint):
    """Grammar-constrained requests decode one token a step (their masks need the host between
    tokens); with async scheduling the next step's forward is queued before this step's tokens
    reach the host, and the plan that follows samples its logits under the new masks. Tokens equal
    the run without it, for greedy and seeded sampled requests, with a logprobs request (never
    queued ahead) and requests that end at different steps (parts of the predicted plan)."""
    import json

    import jsonschema

    from tests.helpers.spec_prompts import SCHEMA

    schema = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    regex = {"type": "regex", "pattern": "[a-c]{2,9}x"}
    params = [SamplingParams(max_tokens=60, temperature=0.0, response_format=schema),
              SamplingParams(max_tokens=60, temperature=1.0, seed=5, response_format=schema),
              SamplingParams(max_tokens=20, temperature=0.9, top_k=30, seed=9, response_format=regex),
              SamplingParams(max_tokens=60, temperature=1.0, seed=2, response_format=schema),
              SamplingParams(max_tokens=25, temperature=0.0, ignore_eos=True),
              SamplingParams(max_tokens=7, temperature=0.0, response_format=regex)]
    prompts = [f"json {i} json {i}" for i in range(len(params))]
    plain = LLM(checkpoint, device="cpu", max_model_len=192, num_scheduler_steps=4, async_scheduling=False)
    expected = plain.generate(prompts, params)
    llm = _async_llm(checkpoint)
    runner = llm.engine.runner
    before = runner.num_queued_adopted
    got = llm.generate(prompts, params)
    assert summary(got) == summary(expected)
    assert all(o.error is None for o in got)
    for out, p in zip(got, params):
        if out.finish_reason == "stop" and p.response_format is schema:
            jsonschema.validate(json.loads(out.text), SCHEMA)
    assert runner.num_queued_adopted - before > 10  # the constrained steps ran on forwards queued ahead
    assert runner._queued is None
    # With logprobs in the batch nothing is queued (their computation reads the logits on the host).
    with_logprobs = [SamplingParams(max_tokens=12, temperature=0.0, response_format=regex, logprobs=2)]
    assert summary(llm.generate(prompts[:1], with_logprobs)) == summary(plain.generate(prompts[:1], with_logprobs))
