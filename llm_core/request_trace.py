"""What the engine saw of one traced request, and the span records it ships back. Imports no torch.

The engine process does not import OpenTelemetry (the GPU benchmark machine has none): for a
request that arrives with a W3C `traceparent` (the gateway sends one only while it exports
traces), the engine notes plain timestamps (`time.time_ns()`, the wall clock every process on the
host shares) and, when the request finishes, puts their span records on its finished delta. The
gateway turns them into OpenTelemetry spans under that traceparent (service/telemetry.py).

The record, `CompletionDelta.trace` (msgpack-able values only):

    {"traceparent": "00-<trace id>-<parent span id>-<flags>",
     "spans":  [[name, start_ns, end_ns, {attribute: value}, error message or None], ...],
     "events": [[name, time_ns, {attribute: value}], ...]}

Spans: "grammar compile" (constrained requests: until the token-level grammar is ready), "queue
wait" (in the scheduler until first scheduled), "encoder" (media requests: the encoder batch
that encoded or found its items), "prefill" (first scheduled until the first token), "decode"
(first token until the end). Events: "preempted", "resumed" (the gateway adds "first token").
A request aborted in the engine (a cancelled response, a client gone) ships its records on a
finished delta with finish_reason "abort", sent in reply to the abort; the span the abort cut
short carries "tributary.aborted": True.
"""

from __future__ import annotations

from typing import Any

from llm_core.scheduler_output import RequestUpdate

# (start_ns, end_ns, num_items, num_cache_hits) of the encoder batch that covered a request.
EncodeSpan = tuple[int, int, int, int]


class RequestTrace:
    """Timestamps and counts of one traced request, from add to finish."""

    __slots__ = ("traceparent", "priority", "grammar", "t_queued", "t_scheduled", "t_first_token", "is_preempted",
                 "num_prefill_steps", "num_decode_steps", "num_output_tokens", "num_draft_tokens",
                 "num_accepted_draft_tokens", "num_prompt_tokens", "num_cached_tokens", "encode", "events")

    def __init__(self, traceparent: str, now_ns: int, *, is_constrained: bool, priority: int) -> None:
        self.traceparent = traceparent
        self.priority = priority
        self.grammar: list[Any] | None = [now_ns, None, None] if is_constrained else None  # start, end, error
        self.t_queued: int | None = None if is_constrained else now_ns
        self.t_scheduled: int | None = None
        self.t_first_token: int | None = None
        self.is_preempted = False
        self.num_prefill_steps = 0
        self.num_decode_steps = 0
        self.num_output_tokens = 0
        self.num_draft_tokens = 0
        self.num_accepted_draft_tokens = 0
        self.num_prompt_tokens = 0
        self.num_cached_tokens = 0
        self.encode: EncodeSpan | None = None
        self.events: list[list[Any]] = []

    def grammar_done(self, now_ns: int, error: str | None) -> None:
        if self.grammar is not None:
            self.grammar[1:] = [now_ns, error]
        if error is None:
            self.t_queued = now_ns

    def scheduled(self, now_ns: int) -> None:
        if self.t_scheduled is None:
            self.t_scheduled = now_ns
        elif self.is_preempted:
            self.events.append(["resumed", now_ns, {}])
        self.is_preempted = False
        if self.t_first_token is None:
            self.num_prefill_steps += 1
        else:
            self.num_decode_steps += 1

    def preempted(self, now_ns: int) -> None:
        self.is_preempted = True
        self.events.append(["preempted", now_ns, {"tributary.output_tokens": self.num_output_tokens}])

    def add_output(self, update: RequestUpdate, now_ns: int, encode: EncodeSpan | None) -> None:
        if self.t_first_token is None and update.new_token_ids:
            self.t_first_token = now_ns
            self.encode = encode
        self.num_output_tokens += len(update.new_token_ids)
        self.num_draft_tokens += update.num_draft_tokens
        self.num_accepted_draft_tokens += update.num_accepted_draft_tokens
        self.num_prompt_tokens = update.num_prompt_tokens
        self.num_cached_tokens = update.num_cached_tokens

    def records(self, end_ns: int, *, aborted: bool = False) -> dict[str, Any]:
        """The span records of the finished request (see the module docstring); `aborted`: it was
        aborted at end_ns, and the span that ends there carries "tributary.aborted": True."""
        spans: list[list[Any]] = []
        if self.grammar is not None:
            start, end, error = self.grammar
            spans.append(["grammar compile", start, end if end is not None else end_ns, {}, error])
        if self.t_queued is not None:
            spans.append(["queue wait", self.t_queued, self.t_scheduled or end_ns,
                          {"tributary.priority": self.priority}, None])
        if self.encode is not None:
            start, end, num_items, num_hits = self.encode
            spans.append(["encoder", start, end, {"tributary.encoder.items": num_items,
                                                  "tributary.encoder.cache_hits": num_hits,
                                                  "tributary.encoder.cache_hit": num_hits == num_items}, None])
        if self.t_scheduled is not None:
            spans.append(["prefill", self.t_scheduled, self.t_first_token or end_ns,
                          {"tributary.prefill.tokens": self.num_prompt_tokens,
                           "tributary.prefill.cached_tokens": self.num_cached_tokens,
                           "tributary.prefill.steps": self.num_prefill_steps}, None])
        if self.t_first_token is not None:
            attributes: dict[str, Any] = {"tributary.decode.tokens": max(self.num_output_tokens - 1, 0),
                                          "tributary.decode.steps": self.num_decode_steps}
            if self.num_draft_tokens:
                attributes.update({
                    "tributary.spec.draft_tokens": self.num_draft_tokens,
                    "tributary.spec.accepted_tokens": self.num_accepted_draft_tokens,
                    "tributary.spec.acceptance_rate": self.num_accepted_draft_tokens / self.num_draft_tokens})
            spans.append(["decode", self.t_first_token, end_ns, attributes, None])
        if aborted:
            last = max(spans, key=lambda span: span[2], default=None)
            if last is not None:
                last[3]["tributary.aborted"] = True
        return {"traceparent": self.traceparent, "spans": spans, "events": self.events}
