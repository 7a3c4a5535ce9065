"""Draft tokens through the scheduler, without tensors: budget, limits, rollback by bookkeeping."""

from __future__ import annotations

from tests.llm_core.test_scheduler import EOS, make_request, make_scheduler


def prefilled(sched, request):
    sched.add_request(request)
    plan = sched.schedule()
    sched.update_from_output(plan, {request.request_id: 7})
    return request  # num_tokens = prompt + 1, num_computed = prompt


def test_drafts_are_scheduled_and_rejected_ones_roll_back():
    sched = make_scheduler()
    request = prefilled(sched, make_request("a", 6, max_tokens=20))
    request.spec_token_ids = [8, 9, 10]
    plan = sched.schedule()
    (entry,) = plan.requests
    assert entry.token_ids == (7, 8, 9, 10) and entry.num_draft_tokens == 3
    assert entry.draft_token_ids == (8, 9, 10) and plan.num_batched_tokens == 4
    assert request.spec_token_ids == []  # consumed
    assert len(entry.block_ids) == 3  # slots for 7 + 4 = 11 tokens in blocks of 4
    (update,) = sched.update_from_output(plan, {"a": [8, 5]})  # first draft accepted, then a correction
    assert update.new_token_ids == (8, 5) and update.num_accepted_draft_tokens == 1
    assert request.output_token_ids == [7, 8, 5]
    assert request.num_computed_tokens == request.num_tokens - 1 == 8  # drafts 9, 10 rolled back


def test_drafts_never_exceed_max_tokens_budget_or_model_len():
    sched = make_scheduler(max_batched=6)
    request = prefilled(sched, make_request("a", 6, max_tokens=20))
    request.spec_token_ids = list(range(8, 16))
    assert sched.schedule().requests[0].num_draft_tokens == 5  # budget 6 = 1 real + 5 drafts

    sched = make_scheduler()
    request = prefilled(sched, make_request("b", 6, max_tokens=3))  # 1 output so far, 2 allowed
    request.spec_token_ids = [8, 9, 10]
    assert sched.schedule().requests[0].num_draft_tokens == 1

    sched = make_scheduler(max_model_len=9)
    request = prefilled(sched, make_request("c", 6, max_tokens=20))  # 7 tokens, 2 more allowed
    request.spec_token_ids = [8, 9, 10]
    assert sched.schedule().requests[0].num_draft_tokens == 1


def test_stop_at_first_finishing_token():
    sched = make_scheduler()
    request = prefilled(sched, make_request("a", 6, max_tokens=20))
    request.spec_token_ids = [8, EOS, 9]
    plan = sched.schedule()
    (update,) = sched.update_from_output(plan, {"a": [8, EOS, 9, 4]})
    assert update.new_token_ids == (8, EOS) and update.finish_reason == "stop"
    assert request.output_token_ids == [7, 8, EOS] and not sched.has_unfinished_requests()
    assert sched.kv.num_free_blocks == 63  # one block stays reserved by the pool


def test_preemption_drops_drafts():
    sched = make_scheduler()
    request = prefilled(sched, make_request("a", 6, max_tokens=20))
    request.spec_token_ids = [8, 9]
    sched._preempt(sched.running.pop(), [])
    assert request.spec_token_ids == [] and request.num_computed_tokens == 0


def test_lookahead_slots_for_a_draft_model_when_they_fit():
    sched = make_scheduler(num_blocks=6)  # 5 usable blocks of 4 tokens
    sched.num_lookahead_tokens = 3
    sched.add_request(make_request("a", 6, max_tokens=20))
    plan = sched.schedule()
    assert len(plan.requests[0].block_ids) == 3  # 6 prompt tokens + 3 ahead: 9 slots
    sched.update_from_output(plan, {"a": 7})
    sched.add_request(make_request("b", 6, max_tokens=20, first_token=40))
    plan = sched.schedule()  # a's decode and its 3 ahead fit its blocks; b gets its 6 slots, not 3 more
    assert [len(e.block_ids) for e in plan.requests] == [3, 2] and sched.num_preemptions == 0
