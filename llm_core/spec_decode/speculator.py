"""The engine's side of speculative decoding, between steps.

After a step: record what verification accepted (overall, per draft position, and per request
for adaptive k), then give every request that will speculate its drafts for the next step
(`Request.spec_token_ids`, which the scheduler appends to its next decode). Before a step: hand
the runner q, the draft model's probabilities of the drafts it scheduled, for rejection
sampling (n-gram drafts and greedy requests have none: q is a point mass or not needed).
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from llm_core.request import Request
from llm_core.scheduler_output import RequestUpdate, SchedulerOutput
from llm_core.spec_decode.adaptive import AdaptiveNumTokens
from llm_core.spec_decode.config import SpeculativeConfig
from llm_core.spec_decode.draft_proposer import DraftModelProposer
from llm_core.spec_decode.ngram import NgramProposer


class Speculator:
    def __init__(self, config: SpeculativeConfig, *, structured, max_model_len: int,
                 draft: DraftModelProposer | None = None) -> None:
        if (config.method == "draft") != (draft is not None):
            raise ValueError("a draft-model proposer goes with method 'draft', and only with it")
        self.config = config
        self.structured = structured  # StructuredOutputManager: n-gram drafts are cut where a grammar refuses
        self.max_model_len = max_model_len
        self.ngram = NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max) if draft is None else None
        self.draft = draft
        self.adaptive = AdaptiveNumTokens()
        self._draft_probs: dict[str, tuple[tuple[int, ...], torch.Tensor]] = {}
        self.num_drafts = 0  # verified steps that carried drafts
        self.num_draft_tokens = 0
        self.num_accepted_draft_tokens = 0
        self.num_accepted_per_position: list[int] = []  # [i]: steps whose draft i was accepted

    def take_draft_probs(self, plan: SchedulerOutput) -> dict[str, torch.Tensor] | None:
        """q [num_draft_tokens, V] of each scheduled request whose drafts a sampling draft model
        proposed; every scheduled request's stored q is consumed (its drafts were)."""
        if not self._draft_probs:
            return None
        probs = {}
        for entry in plan.requests:
            stored = self._draft_probs.pop(entry.request_id, None)
            if stored is None or not entry.num_draft_tokens:
                continue
            token_ids, q = stored
            if entry.draft_token_ids != token_ids[:entry.num_draft_tokens]:
                raise RuntimeError(f"request {entry.request_id!r}: scheduled drafts differ from the proposed ones")
            probs[entry.request_id] = q[:entry.num_draft_tokens]
        return probs or None

    def after_step(self, plan: SchedulerOutput, updates: Sequence[RequestUpdate], running: Sequence[Request]) -> None:
        """Record the step's verification, then propose the next drafts of the running requests."""
        running_ids = {request.request_id for request in running}
        for update in updates:
            if update.num_draft_tokens:
                self._record(update, update.request_id in running_ids)
        if self.ngram is not None:
            self._propose_ngram(running)
        else:
            self._propose_draft(plan, updates, running)

    def _record(self, update: RequestUpdate, is_running: bool) -> None:
        accepted = update.num_accepted_draft_tokens
        self.num_drafts += 1
        self.num_draft_tokens += update.num_draft_tokens
        self.num_accepted_draft_tokens += accepted
        if len(self.num_accepted_per_position) < accepted:
            self.num_accepted_per_position.extend([0] * (accepted - len(self.num_accepted_per_position)))
        for i in range(accepted):
            self.num_accepted_per_position[i] += 1
        if is_running:
            self.adaptive.record(update.request_id, update.num_draft_tokens, accepted)

    def num_tokens(self, request: Request) -> int:
        """k for the request's next step: its override or the engine's (adapted to its acceptance),
        0 when it asks for logprobs, and never more drafts than the tokens it may still produce
        less one (the scheduler would cut them)."""
        params = request.sampling_params
        if params.logprobs is not None:
            return 0
        k = self.config.num_tokens_for(params.speculative)
        if k and self.config.is_adaptive_for(params.speculative):
            k = self.adaptive.num_tokens(request.request_id, k)
        num_allowed = min(params.max_tokens - request.num_output_tokens, self.max_model_len - request.num_tokens)
        return max(0, min(k, num_allowed - 1))

    def _propose_ngram(self, running: Iterable[Request]) -> None:
        """Every running request at its last token gets a prompt-lookup draft, cut where its grammar refuses."""
        for request in running:
            if request.num_computed_tokens != request.num_tokens - 1:
                continue
            k = self.num_tokens(request)
            if k == 0:
                continue
            drafts = self.ngram.propose(request.all_token_ids, k)
            request.spec_token_ids = drafts[:self.structured.num_valid_draft_tokens(request.request_id, drafts)]

    def _propose_draft(self, plan: SchedulerOutput, updates: Sequence[RequestUpdate],
                       running: Sequence[Request]) -> None:
        """The draft model runs every step (its KV follows the target's); requests that sampled in
        this step get drafts, the others keep theirs."""
        sampled = {entry.request_id for entry in plan.requests if entry.do_sample}
        num_tokens = {}
        for request in running:
            if request.request_id in sampled:
                k = self.num_tokens(request)
                if k:
                    num_tokens[request.request_id] = k
        drafts = self.draft.propose(plan, {update.request_id: update for update in updates}, num_tokens)
        for request in running:
            draft = drafts.get(request.request_id)
            if draft is None:
                continue
            request.spec_token_ids = list(draft.token_ids)
            if draft.probs is not None and draft.token_ids:
                self._draft_probs[request.request_id] = (draft.token_ids, draft.probs)

    def free(self, request_ids: Iterable[str]) -> None:
        for request_id in request_ids:
            self.adaptive.free(request_id)
            self._draft_probs.pop(request_id, None)

    def metrics(self) -> dict[str, Any]:
        """Overall: verified steps with drafts, tokens proposed and accepted, how often draft i was
        accepted, and the mean acceptance length (tokens per verified step, the bonus included)."""
        n = self.num_drafts
        return {"spec_num_drafts": n, "spec_num_draft_tokens": self.num_draft_tokens,
                "spec_num_accepted_draft_tokens": self.num_accepted_draft_tokens,
                "spec_num_accepted_per_position": list(self.num_accepted_per_position),
                "spec_mean_acceptance_length": (self.num_accepted_draft_tokens + n) / n if n else 0.0}
