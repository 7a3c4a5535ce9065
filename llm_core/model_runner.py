"""Runs one scheduler plan on the model: builds the step's tensors, forwards, samples."""

from __future__ import annotations

import itertools
from typing import Mapping, NamedTuple

import numpy as np
import torch

from llm_core.attention.metadata import AttentionMetadata
from llm_core.block_table import BlockTableHost
from llm_core.cuda_graphs import DecodeGraphs
from llm_core.distributed.group import SINGLE, TensorParallelGroup
from llm_core.multi_step import (
    PendingTokens, QueuedForward, QueuedSteps, follow_decode_steps, follow_next_forward, is_multi_step_plan,
    is_single_decode_plan, launch_decode_steps, predict_next_entries, queue_next_forward, queue_next_steps,
)
from llm_core.models.arch_config import ArchConfig
from llm_core.sampler import Sampler, compute_logprobs, prepare_sampling_batch
from llm_core.scheduler_output import SchedulerOutput
from llm_core.spec_decode.sampling import row_positions, sample_with_drafts
from llm_core.transfer import to_device


MAX_VERIFY_GRAPH_BATCH = 64  # verification graphs up to this many sequences; larger batches verify eagerly


class StepInputs(NamedTuple):
    """One step's flattened batch on the host (T tokens of B sequences)."""

    input_ids: np.ndarray  # [T] int64
    positions: np.ndarray  # [T] int64
    slot_mapping: np.ndarray  # [T] int64
    query_start_loc: np.ndarray  # [B + 1] int64
    seq_lens: np.ndarray  # [B] int64: context length after this step's tokens
    rows: np.ndarray  # [B] rows of the block table host
    max_blocks: int
    logits_indices: list[int]  # [S] rows whose logits are sampled
    max_query_len: int


class ModelRunner:
    """Owns the model, its paged KV cache and the sampler.

    execute(plan) returns ({request_id: token_id} for every request that samples this step,
    {request_id: {token_id: logprob}} for those that asked for logprobs). When the plan carries
    draft tokens the first map holds instead {request_id: [1..d+1 verified tokens]} and no
    logprobs (the engine does not speculate for requests that ask for logprobs).
    """

    def __init__(self, model, arch: ArchConfig, *, device: torch.device, dtype: torch.dtype,
                 num_blocks: int, block_size: int, eos_token_ids: tuple[int, ...] = (), seed: int = 0,
                 structured=None, embedder=None, max_num_seqs: int = 256, max_model_len: int | None = None,
                 use_cuda_graphs: bool = False, num_verify_tokens: int = 0,
                 tp: TensorParallelGroup = SINGLE) -> None:
        self.model = model
        self.tp = tp  # the model's tensor-parallel group (multi-step decoding broadcasts tokens over it)
        self.max_model_len = max_model_len
        self.arch = arch
        self.device = device
        self.block_size = block_size
        self.eos_token_ids = eos_token_ids
        self.sampler = Sampler(device, seed)
        self.structured = structured  # StructuredOutputManager: token masks of constrained requests
        self.embedder = embedder  # MultiModalEmbedder: media embeddings of multimodal models (None: text only)
        shape = (num_blocks, block_size, arch.num_kv_heads, arch.head_dim)
        # Zeroed once, so padding lanes that a kernel reads but masks out are never NaN.
        self.kv_caches = [(torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
                          for _ in range(arch.num_layers)]
        max_blocks_per_seq = -(-(max_model_len or block_size) // block_size)
        self.block_table_host = BlockTableHost(2 * max_num_seqs, max_blocks_per_seq)
        self.graphs: DecodeGraphs | None = None
        if use_cuda_graphs and device.type == "cuda" and max_model_len is not None:
            self.graphs = DecodeGraphs(model, self.kv_caches, max_batch_size=max_num_seqs,
                                       max_model_len=max_model_len, block_size=block_size, device=device,
                                       greedy_steps=tp.size == 1)
            self.graphs.capture()
        # Speculative decoding: graphs that verify up to num_verify_tokens drafts per sequence.
        self.verify_graphs: DecodeGraphs | None = None
        if self.graphs is not None and num_verify_tokens > 0:
            self.verify_graphs = DecodeGraphs(model, self.kv_caches, max_batch_size=min(max_num_seqs, MAX_VERIFY_GRAPH_BATCH),
                                              max_model_len=max_model_len, block_size=block_size, device=device,
                                              tokens_per_seq=num_verify_tokens + 1)
            self.verify_graphs.capture(self.graphs.pool)
        # Async scheduling: the next multi-step step's forwards, queued before its plan exists
        # (llm_core/multi_step.py), and how many queued runs were adopted or dropped.
        self._queued: QueuedSteps | QueuedForward | None = None
        self.num_queued_adopted = 0
        self.num_queued_dropped = 0

    def release_cuda_graphs(self) -> None:
        """Destroys the decode and verification graphs; later steps run eagerly. A tensor-parallel rank
        calls this before it leaves its NCCL group (DecodeGraphs.release says why)."""
        if self.graphs is None:
            return
        torch.cuda.synchronize(self.device)
        self._queued = None
        for graphs in (self.graphs, self.verify_graphs):
            if graphs is not None:
                graphs.release()
        self.graphs = self.verify_graphs = None

    def prepare_inputs(self, plan: SchedulerOutput) -> StepInputs:
        """The step's flattened inputs as host arrays (vectorized: no Python loop over tokens)."""
        entries = plan.requests
        num_tokens = np.fromiter((e.num_tokens for e in entries), dtype=np.int64, count=len(entries))
        starts = np.fromiter((e.start_position for e in entries), dtype=np.int64, count=len(entries))
        query_start_loc = np.zeros(len(entries) + 1, dtype=np.int64)
        np.cumsum(num_tokens, out=query_start_loc[1:])
        total = int(query_start_loc[-1])
        seq_of_token = np.repeat(np.arange(len(entries)), num_tokens)  # [T]
        positions = starts[seq_of_token] + (np.arange(total) - query_start_loc[:-1][seq_of_token])  # [T]
        rows = self.block_table_host.rows_for([e.request_id for e in entries], [e.block_ids for e in entries])
        table = self.block_table_host.table
        bs = self.block_size
        slot_mapping = table[rows[seq_of_token], positions // bs].astype(np.int64) * bs + positions % bs  # [T]
        input_ids = np.fromiter(itertools.chain.from_iterable(e.token_ids for e in entries), dtype=np.int64,
                                count=total)
        # The last real token's row, then one per draft token, of each sampling request.
        logits_indices = [i for e, end in zip(entries, query_start_loc[1:].tolist()) if e.do_sample
                          for i in range(end - 1 - e.num_draft_tokens, end)]
        max_blocks = max(len(e.block_ids) for e in entries)
        return StepInputs(input_ids, positions, slot_mapping, query_start_loc, starts + num_tokens, rows,
                          max_blocks, logits_indices, int(num_tokens.max()))

    def to_device(self, inputs: StepInputs):
        dev = self.device

        def put(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return to_device(array, dev, dtype)

        seq_lens = inputs.seq_lens
        meta = AttentionMetadata(
            slot_mapping=put(inputs.slot_mapping, torch.int64),
            query_start_loc=put(inputs.query_start_loc, torch.int32),
            seq_lens=put(seq_lens, torch.int32),
            block_tables=put(self.block_table_host.gather(inputs.rows, inputs.max_blocks), torch.int32),
            max_query_len=inputs.max_query_len,
            max_seq_len=int(seq_lens.max()),
            query_start_loc_cpu=tuple(inputs.query_start_loc.tolist()),
            seq_lens_cpu=tuple(seq_lens.tolist()),
        )
        input_ids = put(inputs.input_ids, torch.int64)  # [T]
        positions = put(inputs.positions, torch.int64)  # [T]
        logits_indices = to_device(inputs.logits_indices, dev, torch.int64)  # [S]
        return input_ids, positions, meta, logits_indices

    def prepare_inputs_embeds(self, plan: SchedulerOutput, input_ids: torch.Tensor) -> torch.Tensor | None:
        """Input embeddings [T, C] with media rows filled in, or None when no scheduled token is a
        media placeholder (text only: the model embeds input_ids itself, with no extra work)."""
        if self.embedder is None:
            return None
        return self.embedder.prepare_inputs_embeds(plan, input_ids, self.model.embed_tokens)

    @torch.inference_mode()
    def execute(self, plan: SchedulerOutput, draft_probs: Mapping[str, torch.Tensor] | None = None,
                multi_step: bool = False, queue_next: bool = False) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
        """draft_probs: a draft model's q [num_draft_tokens, V] per request, for rejection sampling.
        multi_step: the plan's drafts are placeholders (llm_core/multi_step.py): each request gets
        one decode forward per token instead of a verification. queue_next: when the plan is a
        single decode step without logprobs, queue the predicted next step's forward before this
        step's tokens reach the host (async scheduling; QueuedForward); a next call whose plan is
        the predicted one (or a part of it) samples its logits instead of running a forward."""
        if multi_step and is_multi_step_plan(plan.requests):
            return self.launch_multi_step(plan).wait(), {}
        logits = self._adopt_forward(plan)
        if logits is None:
            logits = self.forward_plan(plan)  # [R, V] fp32, R = rows that sample (one per draft too)
        sampling = [e for e in plan.requests if e.do_sample]
        if not sampling:
            return {}, {}
        self._mask_early_stop(logits, row_positions(sampling))
        if self.structured is not None:
            self.structured.apply_masks(logits, [e.request_id for e in sampling],
                                        [e.draft_token_ids for e in sampling])
        if any(e.num_draft_tokens for e in sampling):
            return sample_with_drafts(self.sampler, logits, sampling, draft_probs), {}
        params = [e.sampling_params for e in sampling]
        batch = prepare_sampling_batch(params, [e.num_output_tokens for e in sampling], logits.shape[-1], self.device)
        tokens = self.sampler.sample(logits, batch)
        if self.will_queue_forward(plan, queue_next):
            pending = PendingTokens(plan.requests, np.ones(len(sampling), dtype=np.int64), tokens.unsqueeze(0))
            self._queued = queue_next_forward(self, plan.requests, tokens, self.max_model_len)
            sampled = {request_id: ids[0] for request_id, ids in pending.wait().items()}  # waits for the sampling only
            return sampled, {}
        sampled = dict(zip((e.request_id for e in sampling), tokens.tolist()))
        logprobs: dict[str, dict[int, float]] = {}
        if batch.max_num_logprobs is not None:
            rows = compute_logprobs(logits, tokens, batch.max_num_logprobs)
            for entry, row in zip(sampling, rows):
                n = entry.sampling_params.logprobs
                if n is not None:
                    token = sampled[entry.request_id]
                    kept = dict(list(row.items())[:n]) if n else {}
                    kept[token] = row[token]
                    logprobs[entry.request_id] = kept
        return sampled, logprobs

    def will_queue_forward(self, plan: SchedulerOutput, queue_next: bool) -> bool:
        """Whether execute(plan, queue_next=queue_next) queues the next step's forward: a single
        decode step without logprobs (their computation reads the logits on the host)."""
        return (queue_next and self.max_model_len is not None and is_single_decode_plan(plan.requests)
                and all(e.sampling_params.logprobs is None for e in plan.requests))

    def forward_fits(self, plan: SchedulerOutput) -> bool:
        """Whether execute(plan) takes the forward the last execute queued (QueuedForward): the plan
        is the predicted one or a part of it and needs nothing else this step."""
        return isinstance(self._queued, QueuedForward) and not plan.encoder_inputs and self._queued.fits(plan.requests)

    def _adopt_forward(self, plan: SchedulerOutput) -> torch.Tensor | None:
        """The logits of the forward queued for this plan by the last execute, when forward_fits."""
        queued = self._queued
        if not isinstance(queued, QueuedForward):
            return None
        self._queued = None
        logits = queued.adopt(plan.requests) if not plan.encoder_inputs else None
        if logits is None:
            self.num_queued_dropped += 1
            return None
        self.num_queued_adopted += 1
        self.block_table_host.release(plan.finished_request_ids + plan.preempted_request_ids)
        return logits

    @torch.inference_mode()
    def follow_single_step(self, plan: SchedulerOutput, media_rows: bool, adopt: bool, queue_next: bool) -> None:
        """A tensor-parallel worker's execute of a plan that is not multi-step: the same forward (none
        when the driver takes the forward queued last step for it, `adopt`, which this rank ran
        too), then, `queue_next`, the predicted next step's forward (follow_next_forward)."""
        if adopt:
            self._queued = None
            self.num_queued_adopted += 1
            self.block_table_host.release(plan.finished_request_ids + plan.preempted_request_ids)
        else:
            self.forward_plan(plan, media_rows)
        if queue_next:
            self._queued = follow_next_forward(self, plan.requests, self.max_model_len)

    @torch.inference_mode()
    def launch_multi_step(self, plan: SchedulerOutput, queue_next: int = 0) -> PendingTokens:
        """A multi-step plan's decode forwards queued on the device; wait() on the result gives
        execute()'s first map (and maybe tokens of requests the plan does not hold: ignore them).
        The plan must be one (is_multi_step_plan). When the forwards queued for it by the last
        call are its own (llm_core/multi_step.py, async scheduling) they are used, not run again.
        queue_next > 0: also queue the predicted next step's forwards, with that many decode
        forwards per step (the engine's num_scheduler_steps)."""
        if not is_multi_step_plan(plan.requests):
            raise ValueError("launch_multi_step needs a plan where every request decodes with placeholders")
        self.block_table_host.release(plan.finished_request_ids + plan.preempted_request_ids)
        queued, self._queued = self._queued, None
        pending = queued.adopt(plan.requests) if isinstance(queued, QueuedSteps) else None
        if queued is not None:
            self.num_queued_adopted += pending is not None
            self.num_queued_dropped += pending is None
        if pending is None:
            pending = launch_decode_steps(self, plan.requests)
        if queue_next > 1 and self.max_model_len is not None:
            self._queued = queue_next_steps(self, plan.requests, pending, queue_next, self.max_model_len)
        return pending

    @torch.inference_mode()
    def follow_multi_step(self, plan: SchedulerOutput, adopt: bool = False, queue_next: int = 0) -> None:
        """A tensor-parallel worker's launch_multi_step (llm_core/distributed/worker.py): the same
        host state and forwards, fed the tokens the driver samples (multi_step.follow_decode_steps).
        adopt: the driver takes the run it queued last step for this plan (so this rank ran it
        too); queue_next: the driver queues the predicted next step's forwards, as this rank does."""
        self.block_table_host.release(plan.finished_request_ids + plan.preempted_request_ids)
        queued, self._queued = self._queued, None
        if queued is not None:
            self.num_queued_adopted += adopt
            self.num_queued_dropped += not adopt
        if not adopt:
            follow_decode_steps(self, plan.requests)
        if queue_next > 1 and self.max_model_len is not None:
            predicted = predict_next_entries(plan.requests, queue_next, self.max_model_len, self.block_size)
            if predicted is not None:  # the driver predicts the same (queue_next_steps)
                follow_decode_steps(self, predicted, queued=True)
                self._queued = QueuedSteps(predicted, None)  # tokens stay with the driver

    def queued_run_fits(self, plan: SchedulerOutput) -> bool:
        """Whether launch_multi_step(plan) will take the run queued last step (QueuedSteps.adopt):
        what a tensor-parallel driver tells its workers before the step runs."""
        return isinstance(self._queued, QueuedSteps) and self._queued.adopt(plan.requests) is not None

    @property
    def has_queued_steps(self) -> bool:
        """Whether the last step queued the predicted next step's forwards (a multi-step launch's,
        or a single decode step's next forward: has_queued_forward)."""
        return self._queued is not None

    @property
    def has_queued_forward(self) -> bool:
        return isinstance(self._queued, QueuedForward)

    def drop_queued_steps(self) -> None:
        """Forget the forwards queued for a next multi-step step (this step is not that one).
        They still run; their tokens are never read and their KV writes are redone (multi_step.py)."""
        if self._queued is not None:
            self._queued = None
            self.num_queued_dropped += 1

    @torch.inference_mode()
    def forward_plan(self, plan: SchedulerOutput, media_rows: bool = False) -> torch.Tensor | None:
        """The step's forward up to its logits: host state (block tables), inputs, model. Tensor-
        parallel workers run exactly this (llm_core/distributed/worker.py), so every rank keeps
        the same host state and joins the same collectives; only the driver samples. media_rows:
        on a worker, the plan has media rows (forward_inputs)."""
        self.drop_queued_steps()
        self.block_table_host.release(plan.finished_request_ids + plan.preempted_request_ids)
        return self.forward_inputs(plan, self.prepare_inputs(plan), media_rows)

    def forward_inputs(self, plan: SchedulerOutput, inputs: StepInputs, media_rows: bool = False) -> torch.Tensor | None:
        """Logits [R, V] of the plan's logits rows (inputs.logits_indices), None when there are
        none: a CUDA graph replay for text steps of short queries (decode: one token each;
        verification and other steps of at most q tokens each: the q-row graphs), eager otherwise.
        Tensor parallelism and media: the driver (which alone holds the encoders) broadcasts the
        step's input embeddings; a worker, told the plan has media rows (`media_rows`), joins the
        token embedding's collective as the driver does, then takes the driver's embeddings."""
        inputs_embeds = None
        if self.embedder is not None:  # encodes this step's media; None when no row is a media row
            inputs_embeds = self.prepare_inputs_embeds(plan, torch.from_numpy(inputs.input_ids).to(self.device))
        elif media_rows:
            inputs_embeds = self.model.embed_tokens(torch.from_numpy(inputs.input_ids).to(self.device))
        if inputs_embeds is not None:
            self.tp.broadcast_from_driver(inputs_embeds)
        if self.verify_graphs is not None and inputs_embeds is None and inputs.max_query_len > 1:
            logits = self._short_queries_with_graphs(plan, inputs)
            if logits is not None:
                return logits
        if (self.graphs is not None and inputs_embeds is None and inputs.max_query_len == 1
                and len(inputs.logits_indices) == len(plan.requests)):
            logits = self.graphs.run(inputs.input_ids, inputs.positions, inputs.slot_mapping, inputs.seq_lens,
                                     self.block_table_host.gather(inputs.rows, inputs.max_blocks))
            if logits is not None:
                return logits
        input_ids, positions, meta, logits_indices = self.to_device(inputs)
        hidden = self.model(input_ids, positions, self.kv_caches, meta, inputs_embeds=inputs_embeds)
        if not inputs.logits_indices:
            return None
        return self.model.compute_logits(hidden.index_select(0, logits_indices))

    def _short_queries_with_graphs(self, plan: SchedulerOutput, inputs: StepInputs) -> torch.Tensor | None:
        """Logits of a step where every request runs at most q tokens (a verification: one real
        token + d <= k drafts; a draft model's first pass over the tokens its target kept; a last
        short prefill chunk), from the q-row graphs: each request padded to q rows that store
        nothing, sit at its last real position for the rotary table and are dropped after."""
        entries, graphs = plan.requests, self.verify_graphs
        q = graphs.q
        if not inputs.logits_indices or any(e.num_tokens > q for e in entries):
            return None
        num_seqs, bs = len(entries), self.block_size
        lens = inputs.query_start_loc[1:] - inputs.query_start_loc[:-1]  # [B] real rows each
        offsets = np.arange(q)[None, :]  # [1, q]
        real = offsets < lens[:, None]  # [B, q]
        starts = inputs.seq_lens - lens
        positions = np.where(real, starts[:, None] + offsets, (starts + lens - 1)[:, None])  # [B, q]
        table = self.block_table_host.table
        slots = np.where(real, table[inputs.rows[:, None], positions // bs].astype(np.int64) * bs + positions % bs, -1)
        input_ids = np.zeros((num_seqs, q), dtype=np.int64)
        input_ids[real] = inputs.input_ids
        logits = graphs.run(input_ids.reshape(-1), positions.reshape(-1), slots.reshape(-1), starts + q,
                            self.block_table_host.gather(inputs.rows, inputs.max_blocks))
        if logits is None:
            return None
        padded_row = np.flatnonzero(real.reshape(-1))  # [T] each real token's row in the padded layout
        rows = to_device(padded_row[inputs.logits_indices], self.device)
        return logits.index_select(0, rows)  # [R, V]

    def _mask_early_stop(self, logits: torch.Tensor, rows) -> None:
        """Below min_tokens, EOS and stop token ids cannot be sampled. rows: (entry, output position)."""
        for row, (entry, position) in enumerate(rows):
            params = entry.sampling_params
            if position < params.min_tokens:
                banned = list(params.stop_token_ids) + ([] if params.ignore_eos else list(self.eos_token_ids))
                banned = [t for t in banned if t < logits.shape[-1]]
                if banned:
                    logits[row, banned] = float("-inf")
