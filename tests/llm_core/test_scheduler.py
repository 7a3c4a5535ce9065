"""Scheduler tests without weights or tensors: a block pool and plain token ids."""

from __future__ import annotations

import pytest

from cache.kv_cache_manager import KVCacheManager
from llm_core.config import SchedulerConfig
from llm_core.request import Request, RequestStatus
from llm_core.sampling_params import SamplingParams
from llm_core.scheduler import Scheduler

EOS = 2
BLOCK = 4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_scheduler(*, num_blocks=64, max_num_seqs=8, max_batched=64, policy="fcfs", aging=None,
                   max_model_len=256, caching=True, clock=None) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_batched, policy=policy,
                             priority_aging_s=aging)
    kv = KVCacheManager(num_blocks, BLOCK, caching)
    return Scheduler(config, kv, max_model_len=max_model_len, block_size=BLOCK, clock=clock or Clock())


def make_request(request_id, num_prompt=6, *, max_tokens=4, priority=0, arrival=0.0, first_token=10,
                 prompt=None, **params) -> Request:
    prompt = prompt if prompt is not None else list(range(first_token, first_token + num_prompt))
    return Request(request_id, prompt, SamplingParams(max_tokens=max_tokens, **params), eos_token_ids=(EOS,),
                   arrival_time=arrival, priority=priority, block_size=BLOCK)


def step(sched: Scheduler, token: int = 7):
    plan = sched.schedule()
    sampled = {e.request_id: token for e in plan.requests if e.do_sample}
    return plan, sched.update_from_output(plan, sampled)


def run_to_end(sched: Scheduler, max_steps: int = 1000) -> list:
    finished_order = []
    for _ in range(max_steps):
        if not sched.has_unfinished_requests():
            return finished_order
        _, updates = step(sched)
        finished_order += [u.request_id for u in updates if u.finish_reason]
    raise AssertionError("scheduler did not finish its requests")


def free_blocks(sched: Scheduler) -> int:
    return sched.kv.num_free_blocks


def test_batching_and_blocks_return():
    sched = make_scheduler()
    initial = free_blocks(sched)
    sched.add_request(make_request("a", 6))
    sched.add_request(make_request("b", 9))
    plan, updates = step(sched)
    assert [(e.request_id, e.num_tokens, e.do_sample) for e in plan.requests] == [("a", 6, True), ("b", 9, True)]
    assert len(updates) == 2
    plan, _ = step(sched)
    assert [(e.request_id, e.num_tokens, e.start_position) for e in plan.requests] == [("a", 1, 6), ("b", 1, 9)]
    assert run_to_end(sched) == ["a", "b"]
    assert free_blocks(sched) == initial


def test_chunked_prefill_under_budget():
    sched = make_scheduler(max_batched=5)
    sched.add_request(make_request("a", 12))
    chunks = []
    for _ in range(3):
        plan, updates = step(sched)
        chunks.append((plan.requests[0].num_tokens, plan.requests[0].do_sample, len(updates)))
    assert chunks == [(5, False, 0), (5, False, 0), (2, True, 1)]


def test_budget_shared_running_first_then_waiting():
    sched = make_scheduler(max_batched=8)
    sched.add_request(make_request("a", 6, max_tokens=10))
    step(sched)
    sched.add_request(make_request("b", 20))
    plan, _ = step(sched)
    assert [(e.request_id, e.num_tokens) for e in plan.requests] == [("a", 1), ("b", 7)]
    assert plan.num_batched_tokens == 8


def test_max_num_seqs():
    sched = make_scheduler(max_num_seqs=2)
    for rid in "abc":
        sched.add_request(make_request(rid))
    plan, _ = step(sched)
    assert [e.request_id for e in plan.requests] == ["a", "b"]
    assert sched.num_waiting == 1


def test_prefix_hit_shares_blocks():
    sched = make_scheduler()
    shared = list(range(100, 112))  # three full blocks
    sched.add_request(make_request("a", prompt=shared + [1, 3], max_tokens=1))
    run_to_end(sched)
    sched.add_request(make_request("b", prompt=shared + [4, 5, 6], max_tokens=1))
    plan, _ = step(sched)
    assert plan.requests[0].start_position == 12
    assert plan.requests[0].num_tokens == 3
    # A prompt identical to a cached one still computes its last token.
    sched2 = make_scheduler()
    sched2.add_request(make_request("a", prompt=shared, max_tokens=1))
    run_to_end(sched2)
    sched2.add_request(make_request("b", prompt=shared, max_tokens=1))
    plan, _ = step(sched2)
    assert plan.requests[0].start_position == 8 and plan.requests[0].num_tokens == 4


def test_prefix_caching_disabled():
    sched = make_scheduler(caching=False)
    sched.add_request(make_request("a", 12, max_tokens=1))
    run_to_end(sched)
    sched.add_request(make_request("b", 12, max_tokens=1))
    plan, _ = step(sched)
    assert plan.requests[0].start_position == 0


def test_preemption_under_kv_pressure_and_resumption():
    # 9 usable blocks of 4 tokens; two requests that each grow to 4 blocks... and then 5.
    sched = make_scheduler(num_blocks=10)
    initial = free_blocks(sched)
    sched.add_request(make_request("early", 8, max_tokens=12, arrival=0.0))
    sched.add_request(make_request("late", 8, max_tokens=12, arrival=1.0))
    preempted = []
    finished = []
    for _ in range(200):
        if not sched.has_unfinished_requests():
            break
        plan, updates = step(sched)
        preempted += plan.preempted_request_ids
        finished += [u.request_id for u in updates if u.finish_reason]
    assert "late" in preempted and "early" not in preempted
    assert finished == ["early", "late"]
    assert sched.num_preemptions == len(preempted)
    assert free_blocks(sched) == initial


def test_resumed_request_recomputes_its_outputs():
    sched = make_scheduler(num_blocks=10, caching=False)
    sched.add_request(make_request("early", 8, max_tokens=12, arrival=0.0))
    late = make_request("late", 8, max_tokens=12, arrival=1.0)
    sched.add_request(late)
    for _ in range(200):
        plan, _ = step(sched)
        if "late" in plan.preempted_request_ids:
            break
    assert late.status == RequestStatus.PREEMPTED and late.num_computed_tokens == 0
    outputs_before = list(late.output_token_ids)
    assert outputs_before  # it had generated some tokens
    while late.status != RequestStatus.RUNNING:
        plan, _ = step(sched)
    entry = next(e for e in plan.requests if e.request_id == "late")
    assert entry.start_position == 0
    assert list(entry.token_ids[8:]) == outputs_before[: len(entry.token_ids) - 8]


def test_priority_orders_waiting_queue():
    sched = make_scheduler(policy="priority", max_num_seqs=1)
    for rid, prio, arrival in [("low", 2, 0.0), ("high", 0, 1.0), ("mid", 1, 2.0), ("high2", 0, 3.0)]:
        sched.add_request(make_request(rid, priority=prio, arrival=arrival, max_tokens=1))
    assert run_to_end(sched) == ["high", "high2", "mid", "low"]


def test_fcfs_ignores_priority():
    sched = make_scheduler(policy="fcfs", max_num_seqs=1)
    for rid, prio, arrival in [("a", 5, 0.0), ("b", 0, 1.0)]:
        sched.add_request(make_request(rid, priority=prio, arrival=arrival, max_tokens=1))
    assert run_to_end(sched) == ["a", "b"]


def test_priority_preempts_when_seats_full():
    sched = make_scheduler(policy="priority", max_num_seqs=1)
    sched.add_request(make_request("low", priority=5, arrival=0.0, max_tokens=8))
    step(sched)
    sched.add_request(make_request("urgent", priority=0, arrival=1.0, max_tokens=2))
    plan, _ = step(sched)
    assert plan.preempted_request_ids == ("low",)
    assert [e.request_id for e in plan.requests] == ["urgent"]
    assert run_to_end(sched) == ["urgent", "low"]
    assert sched.num_preemptions == 1


def test_running_only_step_admits_nobody_and_preempts_for_nobody():
    """schedule(admit=False) (a step whose forwards async scheduling queued already): the running
    requests only; waiting ones, urgent or not, are admitted by the next plan."""
    sched = make_scheduler(policy="priority", max_num_seqs=1)
    sched.add_request(make_request("low", priority=5, arrival=0.0, max_tokens=8))
    step(sched)
    sched.add_request(make_request("urgent", priority=0, arrival=1.0, max_tokens=2))
    plan = sched.schedule(admit=False)
    assert [e.request_id for e in plan.requests] == ["low"] and not plan.preempted_request_ids
    sched.update_from_output(plan, {"low": 7})
    assert [r.request_id for r in sched.waiting] == ["urgent"]
    plan, _ = step(sched)
    assert plan.preempted_request_ids == ("low",) and [e.request_id for e in plan.requests] == ["urgent"]


def test_priority_preempts_when_blocks_short():
    sched = make_scheduler(policy="priority", num_blocks=6)  # 5 usable blocks
    sched.add_request(make_request("low", 16, priority=3, arrival=0.0, max_tokens=3))
    step(sched)  # low holds 4 blocks (16 tokens) + grows
    sched.add_request(make_request("urgent", 8, priority=0, arrival=1.0, max_tokens=1))
    plan, _ = step(sched)
    assert "low" in plan.preempted_request_ids
    assert "urgent" in [e.request_id for e in plan.requests]


def test_equal_priority_does_not_preempt():
    sched = make_scheduler(policy="priority", max_num_seqs=1)
    sched.add_request(make_request("first", priority=1, arrival=0.0, max_tokens=4))
    step(sched)
    sched.add_request(make_request("second", priority=1, arrival=1.0, max_tokens=1))
    plan, _ = step(sched)
    assert plan.preempted_request_ids == ()


def test_aging_lets_low_priority_through():
    clock = Clock()
    sched = make_scheduler(policy="priority", max_num_seqs=1, aging=10.0, clock=clock)
    sched.add_request(make_request("blocker", priority=0, arrival=0.0, max_tokens=1))
    sched.add_request(make_request("old_low", priority=3, arrival=0.0, max_tokens=1))
    step(sched)  # blocker runs and finishes
    clock.now = 100.0  # old_low has waited 100 s: effective priority 3 - 10 = -7
    sched.add_request(make_request("new_high", priority=0, arrival=100.0, max_tokens=1))
    assert run_to_end(sched) == ["old_low", "new_high"]
    # Without aging the newer high-priority request goes first.
    sched = make_scheduler(policy="priority", max_num_seqs=1, aging=None, clock=clock)
    sched.add_request(make_request("old_low", priority=3, arrival=0.0, max_tokens=1))
    sched.add_request(make_request("new_high", priority=0, arrival=100.0, max_tokens=1))
    assert run_to_end(sched) == ["new_high", "old_low"]


@pytest.mark.parametrize("state", ["waiting", "running", "preempted"])
def test_abort_returns_blocks(state):
    sched = make_scheduler(num_blocks=10, policy="priority", max_num_seqs=1)
    initial = free_blocks(sched)
    victim = make_request("victim", 8, priority=5, max_tokens=50)
    sched.add_request(victim)
    if state != "waiting":
        step(sched)
    if state == "preempted":
        sched.add_request(make_request("urgent", 4, priority=0, arrival=1.0, max_tokens=50))
        step(sched)
        assert victim.status == RequestStatus.PREEMPTED
    aborted = sched.abort_requests(["victim", "unknown"])
    assert [r.request_id for r in aborted] == ["victim"]
    assert victim.status == RequestStatus.FINISHED_ABORTED
    sched.abort_requests(["urgent"])
    assert free_blocks(sched) == initial
    assert not sched.has_unfinished_requests()


def test_stop_conditions():
    sched = make_scheduler(max_model_len=12)
    sched.add_request(make_request("eos", max_tokens=10))
    sched.add_request(make_request("ignore", max_tokens=3, ignore_eos=True))
    sched.add_request(make_request("stop_id", max_tokens=10, stop_token_ids=(5,)))
    sched.add_request(make_request("min", max_tokens=3, min_tokens=2))
    sched.add_request(make_request("long", 10, max_tokens=100))
    plan = sched.schedule()
    updates = sched.update_from_output(plan, {e.request_id: {"long": 7, "stop_id": 5}.get(e.request_id, EOS)
                                              for e in plan.requests})
    reasons = {u.request_id: u.finish_reason for u in updates}
    assert reasons == {"eos": "stop", "ignore": None, "stop_id": "stop", "min": None, "long": None}
    assert {u.request_id: u.stop_reason for u in updates}["stop_id"] == 5
    run_to_end(sched)
    assert sched.kv.num_free_blocks == 63


def test_max_model_len_finishes_with_length():
    sched = make_scheduler(max_model_len=12)
    req = make_request("long", 10, max_tokens=100)
    sched.add_request(req)
    run_to_end(sched)
    assert req.num_tokens == 12 and req.finish_reason == "length"


def test_rejects_prompt_too_long_and_duplicate_ids():
    sched = make_scheduler(max_model_len=8)
    with pytest.raises(ValueError, match="max_model_len"):
        sched.add_request(make_request("a", 8))
    sched.add_request(make_request("b", 4))
    with pytest.raises(ValueError, match="already in use"):
        sched.add_request(make_request("b", 4))


def _reference_append(request: Request, token_ids, max_model_len: int):
    """The stop rules token by token, as documented: after each token, below min_tokens nothing
    stops; EOS (unless ignore_eos), then a stop token id, then max_tokens / max_model_len."""
    params = request.sampling_params
    num_outputs, num_tokens = request.num_output_tokens, request.num_tokens
    for i, token_id in enumerate(token_ids):
        outputs = num_outputs + i + 1
        if outputs >= params.min_tokens:
            if not params.ignore_eos and token_id == EOS:
                return tuple(token_ids[:i + 1]), RequestStatus.FINISHED_STOPPED, None
            if token_id in params.stop_token_ids:
                return tuple(token_ids[:i + 1]), RequestStatus.FINISHED_STOPPED, token_id
        if outputs >= params.max_tokens or num_tokens + i + 1 >= max_model_len:
            return tuple(token_ids[:i + 1]), RequestStatus.FINISHED_LENGTH, None
    return tuple(token_ids), None, None


def test_append_tokens_matches_the_token_by_token_rules():
    """Several tokens at once (accepted drafts, multi-step runs) stop exactly where the
    token-by-token rules stop, on fresh random cases."""
    import random

    rng = random.Random()
    seed = rng.randrange(2**31)
    rng.seed(seed)
    for case in range(400):
        sched = make_scheduler(max_model_len=rng.randrange(8, 24))
        prompt_len = rng.randrange(1, 7)
        request = make_request("r", prompt_len, max_tokens=rng.randrange(1, 12), min_tokens=rng.choice([0, 0, 2, 5]),
                               ignore_eos=rng.random() < 0.3,
                               stop_token_ids=tuple(rng.sample(range(3, 9), rng.randrange(0, 3))))
        request.all_token_ids.extend(rng.randrange(2, 9) for _ in range(rng.randrange(0, 4)))  # earlier outputs
        request.num_computed_tokens = request.num_tokens - 1
        tokens = [rng.randrange(2, 9) for _ in range(rng.randrange(1, 6))]
        expected_tokens, expected_status, expected_reason = _reference_append(request, tokens, sched.max_model_len)
        computed_before, total_before = request.num_computed_tokens, request.num_tokens
        appended, status = sched._append_tokens(request, tokens)
        context = f"seed {seed} case {case}: {request.sampling_params} tokens {tokens}"
        assert (appended, status) == (expected_tokens, expected_status), context
        assert request.stop_reason == expected_reason, context
        assert request.num_tokens == total_before + len(appended), context
        assert request.num_computed_tokens == computed_before + len(appended) - 1, context
