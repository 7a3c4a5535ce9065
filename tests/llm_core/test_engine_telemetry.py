"""Engine telemetry: queue and grammar histograms, span records of traced requests, preemption and
resumption events. The hook tests drive a real scheduler and block pool without tensors; the
engine test runs a tiny checkpoint on the CPU."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from llm_core.engine_telemetry import EngineTelemetry
from llm_core.histogram import Histogram
from llm_core.outputs import CompletionDelta
from tests.llm_core.test_scheduler import make_request, make_scheduler

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def telemetry_for(sched) -> EngineTelemetry:
    ticks = itertools.count(1_000, 1_000)  # a clock that moves 1 µs per reading
    return EngineTelemetry(sched, sched.kv, clock=lambda: next(ticks))


def run_step(sched, telemetry, token: int = 7) -> tuple:
    plan = sched.schedule()
    telemetry.on_schedule(plan)
    updates = sched.update_from_output(plan, {e.request_id: token for e in plan.requests if e.do_sample})
    deltas = [CompletionDelta(u.request_id, u.new_token_ids, "", u.finish_reason is not None, u.finish_reason,
                              num_prompt_tokens=u.num_prompt_tokens, num_cached_tokens=u.num_cached_tokens)
              for u in updates]
    return plan, telemetry.on_outputs(updates, deltas)


def add(sched, telemetry, request, traceparent=None) -> None:
    sched.add_request(request)
    telemetry.on_add(request.request_id, traceparent=traceparent, is_constrained=False, priority=request.priority)


def test_histogram_buckets_are_inclusive_upper_bounds():
    histogram = Histogram((0.1, 1.0))
    for value in (0.1, 0.5, 1.0, 3.0):
        histogram.observe(value)
    assert histogram.snapshot() == {"bounds": [0.1, 1.0], "counts": [1, 2, 1], "sum": 4.6, "count": 4}
    with pytest.raises(ValueError):
        Histogram((1.0, 0.5))


def test_preempted_traced_request_records_events_and_spans():
    sched = make_scheduler(num_blocks=10)  # two growing requests cannot both fit: the later is preempted
    telemetry = telemetry_for(sched)
    add(sched, telemetry, make_request("early", 8, max_tokens=12, arrival=0.0))
    add(sched, telemetry, make_request("late", 8, max_tokens=12, arrival=1.0, priority=3), TRACEPARENT)
    finished = {}
    for _ in range(200):
        if not sched.has_unfinished_requests():
            break
        _, deltas = run_step(sched, telemetry)
        finished.update({d.request_id: d for d in deltas if d.finished})
    assert finished["early"].trace is None  # not traced
    trace = finished["late"].trace
    assert trace["traceparent"] == TRACEPARENT
    events = [name for name, _, _ in trace["events"]]
    assert events and events[0] == "preempted" and events.count("preempted") == events.count("resumed")
    assert events == ["preempted", "resumed"] * (len(events) // 2)
    spans = {name: (start, end, attributes, error) for name, start, end, attributes, error in trace["spans"]}
    assert list(spans) == ["queue wait", "prefill", "decode"]
    assert spans["queue wait"][1] == spans["prefill"][0] and spans["prefill"][1] == spans["decode"][0]
    assert spans["queue wait"][2] == {"tributary.priority": 3}
    assert spans["prefill"][2]["tributary.prefill.tokens"] == 8
    assert spans["decode"][2]["tributary.decode.tokens"] == 11
    assert spans["decode"][2]["tributary.decode.steps"] >= 11
    assert all(error is None for *_, error in spans.values())
    assert telemetry.num_traced == 0
    assert telemetry.queue_time.count == 2  # every request, traced or not; a resumption is not a new wait
    assert telemetry.stats()["num_preempted_waiting"] == 0


def test_untraced_requests_leave_deltas_alone():
    sched = make_scheduler()
    telemetry = telemetry_for(sched)
    add(sched, telemetry, make_request("a", max_tokens=2))
    plan = sched.schedule()
    telemetry.on_schedule(plan)
    updates = sched.update_from_output(plan, {"a": 7})
    deltas = [CompletionDelta("a", (7,), "", False)]
    assert telemetry.on_outputs(updates, deltas) is deltas and deltas == [CompletionDelta("a", (7,), "", False)]
    assert telemetry.num_traced == 0 and telemetry.queue_time.count == 1


def test_grammar_compile_span_and_failure():
    sched = make_scheduler()
    telemetry = telemetry_for(sched)
    telemetry.on_add("ok", traceparent=TRACEPARENT, is_constrained=True)
    telemetry.on_add("bad", traceparent=TRACEPARENT, is_constrained=True)
    telemetry.on_grammar_done("bad", "StructuredOutputError: 'not' is not supported")
    failed = telemetry.on_outputs((), [CompletionDelta("bad", (), "", True, "error")])
    [(name, start, end, _, error)] = failed[0].trace["spans"]
    assert (name, error) == ("grammar compile", "StructuredOutputError: 'not' is not supported") and end > start
    telemetry.on_grammar_done("ok")
    sched.add_request(make_request("ok", max_tokens=1))
    _, deltas = run_step(sched, telemetry)
    assert [span[0] for span in deltas[0].trace["spans"]] == ["grammar compile", "queue wait", "prefill", "decode"]
    assert telemetry.grammar_compile_time.count == 2 and telemetry.queue_time.count == 1


def test_an_aborted_traced_request_ships_its_spans_cut_short():
    sched = make_scheduler()
    telemetry = telemetry_for(sched)
    add(sched, telemetry, make_request("queued"), TRACEPARENT)
    add(sched, telemetry, make_request("plain"))
    sched.abort_requests(["queued", "plain"])
    deltas = telemetry.on_abort(["queued", "plain", "unknown"])
    assert telemetry.num_traced == 0
    [delta] = deltas  # the untraced and the unknown request end without one
    assert (delta.request_id, delta.finished, delta.finish_reason) == ("queued", True, "abort")
    assert delta.trace["traceparent"] == TRACEPARENT
    [queue] = delta.trace["spans"]
    assert queue[0] == "queue wait" and queue[3]["tributary.aborted"] is True
    run_step(sched, telemetry)
    assert telemetry.queue_time.count == 0


def test_an_aborted_decoding_request_marks_only_its_decode_span():
    sched = make_scheduler()
    telemetry = telemetry_for(sched)
    add(sched, telemetry, make_request("a"), TRACEPARENT)
    run_step(sched, telemetry)
    run_step(sched, telemetry)
    sched.abort_requests(["a"])
    [delta] = telemetry.on_abort(["a"])
    spans = {span[0]: span for span in delta.trace["spans"]}
    assert list(spans) == ["queue wait", "prefill", "decode"]
    assert spans["decode"][3]["tributary.aborted"] is True
    assert not any("tributary.aborted" in spans[name][3] for name in ("queue wait", "prefill"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from llm_core.config import EngineConfig
    from llm_core.engine import LLMEngine
    from tests.helpers.checkpoints import make_text_checkpoint

    model = make_text_checkpoint(tmp_path_factory.mktemp("telemetry_llama"), "llama", seed=3)
    return LLMEngine(EngineConfig.from_options(str(model), device="cpu", max_model_len=256))


def test_engine_ships_span_records_only_for_traced_requests(engine):
    from llm_core.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=4, ignore_eos=True)
    engine.add_request("Hello there", params, request_id="traced", traceparent=TRACEPARENT)
    engine.add_request("Hello there", params, request_id="plain")
    finished = {}
    while engine.has_unfinished_requests():
        finished.update({d.request_id: d for d in engine.step() if d.finished})
    assert finished["plain"].trace is None
    spans = {span[0]: span for span in finished["traced"].trace["spans"]}
    assert list(spans) == ["queue wait", "prefill", "decode"]
    assert spans["prefill"][3]["tributary.prefill.tokens"] == finished["traced"].num_prompt_tokens
    assert spans["decode"][3]["tributary.decode.tokens"] == 3
    stats = engine.stats()
    assert stats["queue_time_s"]["count"] >= 2 and stats["kv_num_blocks"] >= stats["kv_num_free_blocks"] > 0


def test_engine_abort_returns_the_traced_requests_records(engine):
    from llm_core.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=100, ignore_eos=True)
    engine.add_request("Hello there", params, request_id="traced-abort", traceparent=TRACEPARENT)
    engine.add_request("Hello there", params, request_id="plain-abort")
    for _ in range(3):
        engine.step()
    deltas = engine.abort_request(["traced-abort", "plain-abort"])
    assert [(d.request_id, d.finish_reason) for d in deltas] == [("traced-abort", "abort")]
    spans = {span[0]: span for span in deltas[0].trace["spans"]}
    assert list(spans) == ["queue wait", "prefill", "decode"] and spans["decode"][3]["tributary.aborted"]
    assert not engine.has_unfinished_requests()
    assert engine.abort_request(["traced-abort"]) == []  # gone: nothing twice


def test_engine_imports_without_opentelemetry_or_prometheus():
    # The GPU benchmark machine has neither: the engine records plain span data instead.
    code = ("import sys; sys.modules['opentelemetry'] = sys.modules['prometheus_client'] = None; "
            "import llm_core.engine, llm_core.engine_process, llm_core.engine_telemetry, llm_core.profiler")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
