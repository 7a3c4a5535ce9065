"""Continuous-batching scheduler: one rule, no phases. Imports no torch.

Every step, within a token budget, each running request gets the tokens it still lacks
(num_tokens - num_computed_tokens: a prefill chunk, or one decode token) and then waiting
requests are admitted in urgency order. Urgency is (priority, arrival): lower runs first;
under FCFS every priority counts as 0. When KV blocks run out the least urgent running
request is preempted by recompute (its blocks go back to the pool and stay in the prefix
cache while nothing evicts them). Under the priority policy a more urgent waiting request
also preempts a less urgent running one when the seats (max_num_seqs) or blocks are full.
Media not encoded yet has its own budget per step (EncoderBudget): a request is scheduled only
up to the first run of placeholder tokens whose encoding does not fit.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping, Sequence

from cache.kv_cache_manager import KVCacheManager
from llm_core.config import SchedulerConfig
from llm_core.encoder_budget import EncoderBudget
from llm_core.request import FINISH_REASONS, Request, RequestStatus
from llm_core.scheduler_output import RequestUpdate, ScheduledRequest, SchedulerOutput


def num_outputs_allowed(max_tokens: int, num_output_tokens: int, max_model_len: int, num_tokens: int) -> int:
    """Output tokens a request may still produce: within max_tokens and max_model_len (<= 0: none)."""
    return min(max_tokens - num_output_tokens, max_model_len - num_tokens)


def num_drafts_allowed(num_drafts: int, budget: int, num_allowed_outputs: int) -> int:
    """Drafts that ride along a step: within the token budget left, and never past the outputs
    allowed (a step yields at most num_drafts + 1 tokens, each of which must be allowed)."""
    return max(min(num_drafts, budget, num_allowed_outputs - 1), 0)


class Scheduler:
    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache_manager: KVCacheManager,
        *,
        max_model_len: int,
        block_size: int,
        clock: Callable[[], float] = time.monotonic,
        num_lookahead_tokens: int = 0,
    ) -> None:
        self.config = config
        self.kv = kv_cache_manager
        self.max_model_len = max_model_len
        self.block_size = block_size
        # Slots past each scheduled request's tokens, given when they fit: a draft model writes
        # the KV of its proposals there after the step (spec_decode/draft_proposer.py).
        self.num_lookahead_tokens = num_lookahead_tokens
        self._clock = clock
        self.requests: dict[str, Request] = {}
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self._finished_ids: list[str] = []
        self.num_preemptions = 0

    # Queue management
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        if request.num_tokens >= self.max_model_len:
            raise ValueError(f"request {request.request_id!r}: prompt of {request.num_tokens} tokens "
                             f"does not fit max_model_len={self.max_model_len}")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def abort_requests(self, request_ids: Iterable[str]) -> list[Request]:
        """Finish the given requests as aborted and free their blocks at once; unknown ids are ignored."""
        return self.finish_requests(request_ids, RequestStatus.FINISHED_ABORTED)

    def finish_requests(self, request_ids: Iterable[str], status: RequestStatus,
                        stop_reason: int | str | None = None) -> list[Request]:
        finished = []
        for request_id in request_ids:
            request = self.requests.get(request_id)
            if request is None or request.is_finished:
                continue
            if request.status == RequestStatus.RUNNING:
                self.running.remove(request)
            else:
                self.waiting.remove(request)
            request.stop_reason = stop_reason
            self._free(request, status)
            finished.append(request)
        return finished

    def has_unfinished_requests(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    # Planning
    def schedule(self, admit: bool = True) -> SchedulerOutput:
        """The next step's plan. admit=False: running requests only (no waiting request is admitted
        and none preempts for one), for a step whose work is already queued on the device."""
        now = self._clock()
        key = self._urgency_key(now)
        budget = self.config.max_num_batched_tokens
        self.running.sort(key=key)
        self.waiting.sort(key=key)
        preempted: list[str] = []
        if self.config.policy == "priority" and admit:
            self._preempt_for_urgent_waiting(key, budget, preempted)

        scheduled: list[ScheduledRequest] = []
        encoder = EncoderBudget(self.config.max_num_encoder_input_tokens)
        preempted_for_blocks = False
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            num_new = min(request.num_tokens - request.num_computed_tokens, budget,
                          self.max_model_len - request.num_computed_tokens)
            encoder_indices: tuple[int, ...] = ()
            if num_new > 0 and request.unencoded_media:
                num_new, encoder_indices = encoder.fit(request, request.num_computed_tokens, num_new)
            if num_new <= 0:
                i += 1
                continue
            num_draft = self._num_draft_tokens(request, num_new, budget)
            while not self._allocate(request.request_id, request.num_computed_tokens + num_new + num_draft):
                victim = self.running.pop()  # the least urgent, latest: never one scheduled already
                self._preempt(victim, preempted)
                preempted_for_blocks = True
                if victim is request:
                    break
            else:
                scheduled.append(self._plan_entry(request, num_new, num_draft))
                encoder.take(request, encoder_indices)
                budget -= num_new + num_draft
                i += 1

        if not preempted_for_blocks and admit:
            budget = self._admit_waiting(budget, scheduled, frozenset(preempted), encoder)

        finished, self._finished_ids = tuple(self._finished_ids), []
        return SchedulerOutput(
            requests=tuple(scheduled),
            num_batched_tokens=self.config.max_num_batched_tokens - budget,
            preempted_request_ids=tuple(preempted),
            finished_request_ids=finished,
            encoder_inputs=tuple(encoder.inputs),
            num_encoder_tokens=encoder.num_tokens,
        )

    def _admit_waiting(self, budget: int, scheduled: list[ScheduledRequest], just_preempted: frozenset,
                       encoder: EncoderBudget) -> int:
        num_admitted = 0
        for request in self.waiting:
            # Requests preempted in this step sit at the end; they wait at least one step.
            if budget <= 0 or len(self.running) >= self.config.max_num_seqs or request.request_id in just_preempted:
                break
            hit = self.kv.find_prefix_hit(request.block_hashes, request.num_tokens)
            num_new = min(request.num_tokens - hit.num_cached_tokens, budget)
            encoder_indices: tuple[int, ...] = ()
            if request.unencoded_media:
                num_new, encoder_indices = encoder.fit(request, hit.num_cached_tokens, num_new)
                if num_new <= 0:
                    break  # its media waits for the encoder budget of a later step, and so does the queue
            if not self._allocate(request.request_id, hit.num_cached_tokens + num_new, hit):
                break  # no head-of-line skipping: the most urgent waits for blocks first
            self.kv.find_prefix_hit(request.block_hashes, request.num_tokens, record_stats=True)
            request.num_computed_tokens = hit.num_cached_tokens
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = hit.num_cached_tokens
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            scheduled.append(self._plan_entry(request, num_new))
            encoder.take(request, encoder_indices)
            budget -= num_new
            num_admitted += 1
        del self.waiting[:num_admitted]
        return budget

    def _preempt_for_urgent_waiting(self, key, budget: int, preempted: list[str]) -> None:
        """Make room for the most urgent waiting request by preempting less urgent running ones."""
        if not self.waiting:
            return
        head = self.waiting[0]
        head_key = key(head)
        num_blocks_needed = -(-min(head.num_tokens, budget) // self.block_size)
        while self.running and key(self.running[-1]) > head_key:
            seats_full = len(self.running) >= self.config.max_num_seqs
            blocks_short = self.kv.num_free_blocks < num_blocks_needed
            if not (seats_full or blocks_short):
                break
            self._preempt(self.running.pop(), preempted)

    def _allocate(self, request_id: str, num_tokens: int, hit=None) -> bool:
        """Slots for num_tokens in all, plus num_lookahead_tokens more when those fit too."""
        if self.num_lookahead_tokens and self.kv.allocate_slots(
                request_id, num_tokens + self.num_lookahead_tokens, hit) is not None:
            return True
        return self.kv.allocate_slots(request_id, num_tokens, hit) is not None

    def _urgency_key(self, now: float):
        if self.config.policy == "fcfs":
            return lambda r: (0, r.arrival_time)
        aging = self.config.priority_aging_s
        if aging is None:
            return lambda r: (r.priority, r.arrival_time)
        return lambda r: (r.priority - int((now - r.arrival_time) // aging), r.arrival_time)

    def _num_draft_tokens(self, request: Request, num_new: int, budget: int) -> int:
        """How many of the request's draft tokens ride along this step: only when it reaches its last
        known token, within the budget, and never past max_tokens or max_model_len (a step yields
        at most num_draft + 1 tokens, each of which must be allowed)."""
        if not request.spec_token_ids or request.num_computed_tokens + num_new != request.num_tokens:
            return 0
        return num_drafts_allowed(len(request.spec_token_ids), budget - num_new,
                                  num_outputs_allowed(request.sampling_params.max_tokens, request.num_output_tokens,
                                                      self.max_model_len, request.num_tokens))

    def _plan_entry(self, request: Request, num_new: int, num_draft: int = 0) -> ScheduledRequest:
        start = request.num_computed_tokens
        drafts, request.spec_token_ids = tuple(request.spec_token_ids[:num_draft]), []
        return ScheduledRequest(
            request_id=request.request_id,
            token_ids=tuple(request.all_token_ids[start:start + num_new]) + drafts,
            start_position=start,
            block_ids=tuple(self.kv.get_block_ids(request.request_id)),
            do_sample=start + num_new == request.num_tokens,
            num_output_tokens=request.num_output_tokens,
            sampling_params=request.sampling_params,
            num_draft_tokens=num_draft,
        )

    def _preempt(self, request: Request, preempted: list[str]) -> None:
        self.kv.free(request.request_id)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.spec_token_ids = []
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.append(request)
        preempted.append(request.request_id)

    # Applying a step's results
    def update_from_output(
        self,
        plan: SchedulerOutput,
        sampled_token_ids: Mapping[str, int | Sequence[int]],
        logprobs: Mapping[str, dict[int, float]] | None = None,
    ) -> list[RequestUpdate]:
        """Advance every planned request and append its new tokens; returns one update per sampled request.

        A speculating request gets 1..num_draft+1 tokens: the accepted drafts and one token of the
        target. Their KV is computed already, so num_computed_tokens covers all fed tokens minus
        the rejected drafts (the rejected slots are simply overwritten later, never copied).
        Tokens are appended one by one with the stop checks; the first that finishes ends it.
        """
        updates = []
        for entry in plan.requests:
            request = self.requests.get(entry.request_id)
            if request is None or request.is_finished or request.status != RequestStatus.RUNNING:
                continue  # aborted while the step ran
            request.num_computed_tokens += entry.num_tokens - entry.num_draft_tokens
            if not entry.do_sample:
                self.kv.cache_blocks(request.request_id, request.block_hashes, request.num_computed_tokens)
                continue
            new_token_ids = sampled_token_ids[entry.request_id]
            if isinstance(new_token_ids, int):
                new_token_ids = (new_token_ids,)
            if not 1 <= len(new_token_ids) <= entry.num_draft_tokens + 1:
                raise RuntimeError(f"request {entry.request_id!r}: {len(new_token_ids)} tokens for "
                                   f"{entry.num_draft_tokens} drafts")
            appended, status = self._append_tokens(request, new_token_ids)
            self.kv.cache_blocks(request.request_id, request.block_hashes, request.num_computed_tokens)
            if status is not None:
                self.running.remove(request)
                self._free(request, status)
            updates.append(RequestUpdate(
                request_id=request.request_id,
                new_token_ids=appended,
                finish_reason=FINISH_REASONS.get(status) if status is not None else None,
                stop_reason=request.stop_reason,
                num_cached_tokens=max(request.num_cached_tokens, 0),
                num_prompt_tokens=request.num_prompt_tokens,
                logprobs=(logprobs[entry.request_id],) if logprobs and entry.request_id in logprobs else None,
                num_draft_tokens=entry.num_draft_tokens,
                num_accepted_draft_tokens=min(len(appended), len(new_token_ids) - 1),
            ))
        return updates

    def _append_tokens(self, request: Request, token_ids: Sequence[int]) -> tuple[tuple[int, ...], RequestStatus | None]:
        """Append until one finishes the request (checked token by token, in one pass: the
        length limits give the last token that may come; only requests with stop tokens look
        at each token). Each appended token but the last was an accepted draft whose KV this
        step computed, so it also counts as computed."""
        params = request.sampling_params
        num_outputs = request.num_output_tokens
        end, status = len(token_ids), None
        # token i (0-based) is output number num_outputs + i + 1 and makes num_tokens + i + 1 tokens
        room = min(params.max_tokens - num_outputs, self.max_model_len - request.num_tokens)
        if room <= end:
            end, status = max(room, 1), RequestStatus.FINISHED_LENGTH
        eos = request.eos_token_ids if not params.ignore_eos else ()
        if eos or params.stop_token_ids:
            for i in range(max(params.min_tokens - num_outputs - 1, 0), end):  # below min_tokens: no stop
                token_id = token_ids[i]
                if token_id in eos:
                    end, status = i + 1, RequestStatus.FINISHED_STOPPED
                    break
                if token_id in params.stop_token_ids:
                    request.stop_reason = token_id
                    end, status = i + 1, RequestStatus.FINISHED_STOPPED
                    break
        appended = tuple(token_ids[:end])
        request.num_computed_tokens += end - 1
        request.append_output_tokens(appended)
        return appended, status

    def _free(self, request: Request, status: RequestStatus) -> None:
        request.status = status
        self.kv.free(request.request_id)
        del self.requests[request.request_id]
        self._finished_ids.append(request.request_id)
