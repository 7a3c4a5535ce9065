"""The engine's own measurements: timing histograms, resource counts for stats(), and traces.

Imports no torch and no OpenTelemetry. LLMEngine calls the hooks at fixed points of a step:

    on_add(...)          a request was queued (in the scheduler, or waiting for its grammar)
    on_grammar_done(...) its grammar compiled (or failed) and it entered the scheduler
    on_schedule(plan)    after schedule(): queue waits end, preemptions and resumptions
    on_outputs(updates, deltas) -> deltas
                         after a step: first tokens, counts; finished traced requests get their
                         span records on their finished delta (llm_core/request_trace.py)
    forget(request_ids)  aborted requests

Cost: the histograms are always on (a dict entry per queued request, a bisect per observation).
Traces exist only for requests added with a traceparent, and with none of those each hook
returns after one dict check.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from llm_core.histogram import Histogram
from llm_core.outputs import CompletionDelta
from llm_core.request import RequestStatus
from llm_core.request_trace import EncodeSpan, RequestTrace
from llm_core.scheduler_output import RequestUpdate, SchedulerOutput

_NS_PER_S = 1e9


class EngineTelemetry:
    """Measurements of one engine. `scheduler`, `kv_cache_manager` and `embedder` (None for a text
    model) are read, never changed; `clock` gives wall-clock nanoseconds."""

    def __init__(self, scheduler, kv_cache_manager, embedder=None, *,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.scheduler = scheduler
        self.kv = kv_cache_manager
        self.embedder = embedder
        self.clock = clock
        self.queue_time = Histogram()  # seconds in the scheduler before the first schedule
        self.grammar_compile_time = Histogram()  # seconds from add until the grammar is ready
        self._queued: dict[str, int] = {}  # request id -> ns it entered the scheduler, until first scheduled
        self._compiling: dict[str, int] = {}  # request id -> ns its grammar compile started
        self._traces: dict[str, RequestTrace] = {}

    @property
    def num_traced(self) -> int:
        return len(self._traces)

    def on_add(self, request_id: str, *, traceparent: str | None, is_constrained: bool, priority: int = 0) -> None:
        now = self.clock()
        (self._compiling if is_constrained else self._queued)[request_id] = now
        if traceparent is not None:
            self._traces[request_id] = RequestTrace(traceparent, now, is_constrained=is_constrained,
                                                    priority=priority)

    def on_grammar_done(self, request_id: str, error: str | None = None) -> None:
        now = self.clock()
        started = self._compiling.pop(request_id, None)
        if started is not None:
            self.grammar_compile_time.observe((now - started) / _NS_PER_S)
        if error is None:
            self._queued[request_id] = now
        trace = self._traces.get(request_id)
        if trace is not None:
            trace.grammar_done(now, error)

    def on_schedule(self, plan: SchedulerOutput) -> None:
        if not (self._queued or self._traces):
            return
        now = self.clock()
        if self._queued:
            for entry in plan.requests:
                queued = self._queued.pop(entry.request_id, None)
                if queued is not None:
                    self.queue_time.observe((now - queued) / _NS_PER_S)
        if self._traces:
            for request_id in plan.preempted_request_ids:
                if (trace := self._traces.get(request_id)) is not None:
                    trace.preempted(now)
            for entry in plan.requests:
                if (trace := self._traces.get(entry.request_id)) is not None:
                    trace.scheduled(now)

    def on_outputs(self, updates: Sequence[RequestUpdate], deltas: list[CompletionDelta]) -> list[CompletionDelta]:
        """Count the step's outputs of traced requests; a traced request's finished delta comes
        back with its span records in `trace`. Other deltas pass unchanged."""
        if not self._traces:
            return deltas
        now = self.clock()
        for update in updates:
            if (trace := self._traces.get(update.request_id)) is not None:
                encode = self._encode_span(update.request_id) if trace.t_first_token is None else None
                trace.add_output(update, now, encode)
        for i, delta in enumerate(deltas):
            if delta.finished and delta.request_id in self._traces:
                deltas[i] = replace(delta, trace=self._traces.pop(delta.request_id).records(now))
        return deltas

    def on_abort(self, request_ids: Sequence[str]) -> list[CompletionDelta]:
        """Forget the requests; for each traced one, a finished delta (finish_reason "abort") with
        its span records, the span the abort cut short marked (request_trace.py)."""
        now = self.clock() if self._traces else 0
        deltas = []
        for request_id in request_ids:
            self._queued.pop(request_id, None)
            self._compiling.pop(request_id, None)
            trace = self._traces.pop(request_id, None)
            if trace is not None:
                deltas.append(CompletionDelta(request_id, (), "", finished=True, finish_reason="abort",
                                              trace=trace.records(now, aborted=True)))
        return deltas

    def _encode_span(self, request_id: str) -> EncodeSpan | None:
        return self.embedder.encode_span(request_id) if self.embedder is not None else None

    def stats(self) -> dict[str, Any]:
        """What engine.stats() adds for the gateway's /metrics (service/metrics.py)."""
        stats: dict[str, Any] = {
            "num_preempted_waiting": sum(r.status == RequestStatus.PREEMPTED for r in self.scheduler.waiting),
            "kv_num_blocks": self.kv.block_pool.num_usable_blocks,
            "kv_num_free_blocks": self.kv.num_free_blocks,
            "queue_time_s": self.queue_time.snapshot(),
            "grammar_compile_time_s": self.grammar_compile_time.snapshot(),
        }
        if self.embedder is not None:
            cache = self.embedder.cache
            stats.update(embedding_cache_hits=cache.num_hits, embedding_cache_misses=cache.num_misses,
                         num_encoder_forwards=self.embedder.num_encoder_forwards)
        return stats
