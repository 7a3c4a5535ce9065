"""Draft-model proposer: a smaller checkpoint with the target's tokenizer drafts k tokens per
request autoregressively, batched across requests, right after the target's step.

KV cache. The draft has its own paged KV tensors (its own layers and head shape) indexed by the
target's block ids: one block table and one slot mapping per request serve both models, so the
scheduler's KVCacheManager (allocation, prefix caching, preemption, freeing) governs both caches
and the draft keeps no block bookkeeping of its own.

Invariant: the draft's cache holds the draft's KV of a request's tokens at every position below
the request's num_computed_tokens, and every block in the prefix cache holds both models' KV.
Each step the draft's first pass runs over exactly the tokens whose target KV the step kept (the
scheduled tokens less the rejected drafts), at the same slots, before any block can change hands
(blocks move only in the next schedule), so prefill chunks, prefix-cache hits, recompute after
preemption and rollback of rejected drafts all carry over from the target's bookkeeping.
Positions at and past num_computed_tokens are scratch: the proposal passes write there and the
next step writes them again. The scheduler allocates `num_lookahead_tokens` slots past each
request's step (when they fit) for those writes; k is cut to the slots there are.

Passes: the first pass also feeds each proposing request's newest token (its first draft comes
from those logits); pass j = 1, 2, ... feeds the j-th draft of the requests with k > j. Each draft is sampled
from the draft's distribution q under the request's own sampling settings (and grammar), and q
is returned for rejection sampling; greedy requests take the argmax and return no q.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from llm_core.model_runner import ModelRunner
from llm_core.multi_step import eager_decode_forward, plan_decode_forwards
from llm_core.sampler import Sampler, prepare_sampling_batch
from llm_core.scheduler_output import RequestUpdate, ScheduledRequest, SchedulerOutput
from llm_core.spec_decode.draft_model import DraftModel
from llm_core.transfer import argmax_rows

# Seeded requests draw the draft's noise from (seed ^ this, position): a stream apart from the
# target's noise and uniforms at the same position, which verification needs independent.
_DRAFT_SEED_MIX = 0x6A09E667F3BCC908


@dataclass(frozen=True)
class Draft:
    token_ids: tuple[int, ...]
    probs: torch.Tensor | None  # [len(token_ids), V] q of each draft token; None for greedy requests


class DraftModelProposer:
    """propose(plan, updates, num_tokens) -> {request_id: Draft}, called once after every step."""

    def __init__(self, draft: DraftModel, *, vocab_size: int, device: torch.device, dtype: torch.dtype,
                 num_blocks: int, block_size: int, max_model_len: int, max_num_seqs: int, seed: int = 0,
                 structured=None, use_cuda_graphs: bool = False, num_tokens: int = 0) -> None:
        # A ModelRunner of its own: the draft's model, its KV tensors, input preparation, CUDA
        # graphs: decode graphs for the chained passes, and (num_tokens = k > 0) graphs of k + 2
        # rows per request for the first pass, which runs the tokens the target kept (the last
        # real token and up to k accepted drafts) and the newest.
        self.runner = ModelRunner(draft.model, draft.arch, device=device, dtype=dtype, num_blocks=num_blocks,
                                  block_size=block_size, seed=seed, max_num_seqs=max_num_seqs,
                                  max_model_len=max_model_len, use_cuda_graphs=use_cuda_graphs,
                                  num_verify_tokens=num_tokens + 1 if num_tokens else 0)
        self.sampler = Sampler(device, seed ^ _DRAFT_SEED_MIX)
        self.device = device
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size  # the target's: drafts and q live in its vocabulary
        self.draft_vocab_size = draft.arch.vocab_size
        self.structured = structured  # StructuredOutputManager: drafts of constrained requests obey their grammar

    @torch.inference_mode()
    def propose(self, plan: SchedulerOutput, updates: Mapping[str, RequestUpdate],
                num_tokens: Mapping[str, int]) -> dict[str, Draft]:
        """plan: the step just run; updates: its results per request id; num_tokens: k per request
        to draft for (running requests that sampled this step). Always runs the first pass."""
        self.runner.block_table_host.release(plan.finished_request_ids + plan.preempted_request_ids)
        first, ks = self._first_pass(plan, updates, num_tokens)
        if not first:
            return {}
        logits = self._logits(SchedulerOutput(tuple(first), sum(e.num_tokens for e in first)))  # [B, V]
        proposing = [e for e in first if e.do_sample]
        if logits is None or not proposing:
            return {}
        return self._draft(proposing, ks, logits)

    def _first_pass(self, plan: SchedulerOutput, updates: Mapping[str, RequestUpdate],
                    num_tokens: Mapping[str, int]) -> tuple[list[ScheduledRequest], list[int]]:
        """Per scheduled request, the tokens whose KV the target kept (+ the newest token where it
        drafts), at the same positions and blocks; and k per drafting entry, cut to its slots."""
        entries, ks = [], []
        for e in plan.requests:
            update = updates.get(e.request_id)
            if e.do_sample and update is None:
                continue  # gone before its tokens were applied
            new = update.new_token_ids if update is not None else ()
            kept = e.token_ids[:e.num_tokens - e.num_draft_tokens] + tuple(new[:-1])
            newest = e.start_position + len(kept)  # position of the newest token
            k = min(num_tokens.get(e.request_id, 0), len(e.block_ids) * self.block_size - newest,
                    self.max_model_len - newest)
            entries.append(ScheduledRequest(
                e.request_id, kept + (tuple(new[-1:]) if k > 0 else ()), e.start_position, e.block_ids,
                do_sample=k > 0, num_output_tokens=e.num_output_tokens + len(new), sampling_params=e.sampling_params))
            if k > 0:
                ks.append(k)
        return entries, ks

    def _draft(self, proposing: list[ScheduledRequest], ks: list[int], logits: torch.Tensor) -> dict[str, Draft]:
        constrained = self.structured is not None and any(self.structured.has_matcher(e.request_id) for e in proposing)
        if not constrained and max(ks) > 1:
            return self._draft_chained(proposing, ks, logits)
        return self._draft_stepwise(proposing, ks, logits)

    def _draft_chained(self, proposing: list[ScheduledRequest], ks: list[int], logits: torch.Tensor) -> dict[str, Draft]:
        """Drafts without a grammar: every pass after the first feeds the tokens the previous pass
        sampled on the device (CUDA graphs when they fit), and the host reads the drafts once at
        the end, as multi-step decoding does (llm_core/multi_step.py). A request with fewer drafts
        than the longest rides along in the later passes, storing nothing; its extra tokens are
        dropped. Pass j of a request sits where the step-by-step loop puts it, so greedy and seeded
        drafts are the same."""
        runner = self.runner
        num_rows, max_k = len(proposing), max(ks)
        # pass j >= 1 of request r feeds its draft j - 1 at its newest position + j
        newest = np.fromiter((e.start_position + e.num_tokens - 1 for e in proposing), dtype=np.int64, count=num_rows)
        positions, slots, seq_lens, block_tables = plan_decode_forwards(runner, proposing, newest + 1,
                                                                        np.asarray(ks, dtype=np.int64) - 1)
        size = runner.graphs.load(positions, slots, seq_lens, block_tables) if runner.graphs is not None else None
        tokens, probs = self._sample(logits, proposing, 0)
        all_tokens, all_probs = [tokens], [probs]
        for j in range(1, max_k):
            if size is not None:
                logits = runner.graphs.replay(size, j - 1, num_rows, tokens)
            else:
                logits = eager_decode_forward(runner, tokens, positions[j - 1], slots[j - 1], seq_lens[j - 1],
                                              block_tables)
            tokens, probs = self._sample(to_vocab(logits, self.vocab_size), proposing, j)
            all_tokens.append(tokens)
            all_probs.append(probs)
        drafts = torch.stack(all_tokens, dim=1).tolist()  # [B][K]: the one host sync
        probs_all = torch.stack(all_probs, dim=1) if all_probs[0] is not None else None  # [B, K, V]
        return {entry.request_id: Draft(tuple(drafts[r][:ks[r]]),
                                        probs_all[r, :ks[r]] if probs_all is not None
                                        and not entry.sampling_params.is_greedy else None)
                for r, entry in enumerate(proposing)}

    def _draft_stepwise(self, proposing: list[ScheduledRequest], ks: list[int], logits: torch.Tensor) -> dict[str, Draft]:
        """Drafts pass by pass with a host round trip each: grammars need each draft on the host."""
        num_rows, max_k = len(proposing), max(ks)
        drafts: list[list[int]] = [[] for _ in proposing]
        probs_all: torch.Tensor | None = None  # [B, max_k, V] when some request samples
        rows = list(range(num_rows))
        constrained = self.structured is not None and any(self.structured.has_matcher(e.request_id) for e in proposing)
        for j in range(max_k):
            if j > 0:
                rows = [r for r in rows if ks[r] > j]
                if not rows:
                    break
                logits = self._logits(SchedulerOutput(tuple(self._next_entry(proposing[r], drafts[r][-1], j)
                                                            for r in rows), len(rows)))
            if constrained:  # drafts of constrained requests follow their grammar; none ends it
                live = self.structured.apply_proposal_masks(
                    logits, [proposing[r].request_id for r in rows], [drafts[r] for r in rows])
                for r, ok in zip(rows, live):
                    if not ok:
                        ks[r] = j  # its grammar allows nothing but its end: no draft from here on
            tokens, probs = self._sample(logits, [proposing[r] for r in rows], j)
            if probs is not None:
                if probs_all is None:
                    probs_all = torch.zeros(num_rows, max_k, self.vocab_size, device=self.device)
                probs_all[torch.tensor(rows, device=self.device), j] = probs
            for r, token in zip(rows, tokens.tolist()):
                drafts[r].append(token)
        out = {}
        for r, entry in enumerate(proposing):
            token_ids = tuple(drafts[r][:ks[r]])
            probs = None
            if probs_all is not None and not entry.sampling_params.is_greedy:
                probs = probs_all[r, :len(token_ids)]
            out[entry.request_id] = Draft(token_ids, probs)
        return out

    @staticmethod
    def _next_entry(first: ScheduledRequest, token_id: int, j: int) -> ScheduledRequest:
        """Pass j of a request: its draft j-1, j positions after its newest token."""
        return dataclasses.replace(first, token_ids=(token_id,),
                                   start_position=first.start_position + first.num_tokens - 1 + j)

    def _logits(self, plan: SchedulerOutput) -> torch.Tensor | None:
        """Forward the draft over `plan`: fp32 logits [R, V] in the target's vocabulary, one row per
        sampling entry (None when no entry samples). Steps of short queries replay the runner's
        CUDA graphs when it has them (ModelRunner.forward_inputs)."""
        runner = self.runner
        inputs = runner.prepare_inputs(plan)
        if self.draft_vocab_size < self.vocab_size:  # ids the draft has no embedding for (padding rows)
            inputs = inputs._replace(input_ids=np.where(inputs.input_ids < self.draft_vocab_size, inputs.input_ids, 0))
        logits = runner.forward_inputs(plan, inputs)  # [R, V_draft]
        return None if logits is None else to_vocab(logits, self.vocab_size)

    def _sample(self, logits: torch.Tensor, entries: Sequence[ScheduledRequest],
                j: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draft j of each row: tokens [R] and q [R, V] (None when every row is greedy). Row i sits
        at output position num_output_tokens + j of its request."""
        batch = prepare_sampling_batch([e.sampling_params for e in entries], [e.num_output_tokens + j for e in entries],
                                       logits.shape[-1], logits.device)
        greedy = argmax_rows(logits)
        if batch.all_greedy:
            return greedy, None
        probs = self.sampler.compute_probs(logits, batch)
        seeded = tuple((row, seed ^ _DRAFT_SEED_MIX) for row, seed in batch.seeded_rows)
        noise = self.sampler.draw_noise(probs, dataclasses.replace(batch, seeded_rows=seeded))
        return torch.where(batch.is_greedy, greedy, argmax_rows(probs / noise)), probs


def to_vocab(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[R, V_draft] -> [R, vocab_size]: rows past the target's vocabulary (padding) dropped, ids
    the draft lacks at -inf (never drafted)."""
    width = logits.shape[-1]
    if width > vocab_size:
        return logits[:, :vocab_size]
    if width < vocab_size:
        return torch.nn.functional.pad(logits, (0, vocab_size - width), value=float("-inf"))
    return logits
