"""Multi-step decoding: several decode forwards per engine step, with one host sync at the end.

When every scheduled request is decoding and needs nothing from the host between tokens (no
grammar, no logprobs, no speculation), the engine gives each request num_scheduler_steps - 1
placeholder draft tokens. The scheduler then plans and allocates KV slots for them exactly as
for speculative drafts, and applies the result as drafts that were all accepted: the stop
checks run token by token, so a request that ends early keeps nothing past its end, and the
unused slots are rolled back by bookkeeping. The runner does not verify the placeholders: it
runs one decode forward per token, feeding each forward the token the previous one sampled on
the device, so the host prepares, launches and syncs once for all of them.

Seeded requests sample output position n from (seed, n) as in single steps, so their tokens do
not change with the number of steps.

Async scheduling (SchedulerConfig.async_scheduling): right after a step's forwards are queued,
the runner queues the next step's as well (`queue_next_steps`), predicted from this step's plan:
the same requests, each advanced by this step's tokens and given the placeholders the scheduler
will give it, its first input the token this step samples last (on the device), its slots the
look-ahead blocks the scheduler allocated. The GPU then runs on while the host waits for this
step's tokens, applies them and schedules the next step. When that plan is the predicted one
(or a part of it: requests that finished meanwhile are left out), the queued forwards are its
forwards (`QueuedSteps.adopt`); otherwise they are dropped. A dropped run's KV writes fall on
positions past each request's computed tokens, which no cached block holds and every later step
that computes them writes again, after it in stream order.

Single decode steps (requests that need the host between tokens, e.g. grammars, whose next mask
depends on this token) get the same treatment for their forward alone (`queue_next_forward`,
`QueuedForward`): the predicted next step's forward is queued before this step's tokens reach the
host, and the plan that adopts it masks and samples its logits.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from llm_core.attention.metadata import AttentionMetadata
from llm_core.sampler import prepare_sampling_batch, seeded_rows
from llm_core.scheduler import num_drafts_allowed, num_outputs_allowed
from llm_core.scheduler_output import ScheduledRequest
from llm_core.transfer import to_device

# Placeholder draft token: never fed to the model (the runner feeds sampled tokens instead).
PLACEHOLDER_TOKEN_ID = 0


def is_multi_step_plan(entries: Sequence[ScheduledRequest]) -> bool:
    """Every request decodes (one real token, then its placeholders) and samples."""
    return bool(entries) and all(e.do_sample and e.num_tokens == e.num_draft_tokens + 1 for e in entries)


def plan_decode_forwards(runner, entries: Sequence[ScheduledRequest], first_positions: np.ndarray,
                         num_forwards_each: np.ndarray):
    """Where a run of chained decode forwards reads and writes: request b feeds position
    first_positions[b] + j in forward j < num_forwards_each[b]. Returns positions, slot_mapping
    and seq_lens [K, B] (K = the most forwards) and block_tables [B, n].

    A row past its own forwards re-reads its last position that has keys (the one before its
    first, when it has none) and stores nothing: it reads only keys that exist and indexes no
    block past its allocation; the caller drops its tokens."""
    bs = runner.block_size
    rows = runner.block_table_host.rows_for([e.request_id for e in entries], [e.block_ids for e in entries])
    table = runner.block_table_host.table
    num_forwards = int(num_forwards_each.max())
    forward = np.arange(num_forwards)[:, None]  # [K, 1]
    active = forward < num_forwards_each[None, :]  # [K, B]
    last = first_positions + num_forwards_each - 1  # [B]
    positions = np.where(active, first_positions[None, :] + forward, last[None, :])
    slots = np.where(active, table[rows[None, :], positions // bs].astype(np.int64) * bs + positions % bs, -1)
    block_tables = runner.block_table_host.gather(rows, max(len(e.block_ids) for e in entries))
    return positions, slots, positions + 1, block_tables


class PendingTokens:
    """The tokens of decode forwards queued on the device: wait() -> {request_id: tokens in
    order}. The copy to the host is queued behind the forwards, so the host may do other work
    (the last step's detokenization) until it waits."""

    def __init__(self, entries: Sequence[ScheduledRequest], num_steps_each: np.ndarray, tokens: torch.Tensor) -> None:
        self.entries, self.num_steps_each = entries, num_steps_each
        self.tokens = tokens  # [K, B] on the device
        self.num_seqs = len(entries)
        self._event = None
        if tokens.is_cuda:
            self._host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            self._host.copy_(tokens, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = tokens

    def wait(self) -> dict[str, list[int]]:
        if self._event is not None:
            self._event.synchronize()
        sampled = self._host.tolist()  # [K][B]
        return {e.request_id: [sampled[step][b] for step in range(int(self.num_steps_each[b]))]
                for b, e in enumerate(self.entries)}


def launch_decode_steps(runner, entries: Sequence[ScheduledRequest],
                        first_ids: torch.Tensor | None = None) -> PendingTokens:
    """Queues max(num_draft_tokens) + 1 decode forwards; request b takes part in its first
    num_draft_tokens_b + 1 of them. wait() on the result: {request_id: its sampled tokens in order}.
    first_ids: the first forward's input tokens [B] on the device (a queued next step's: the
    last tokens of the step before, not sampled yet when it is queued); None: each entry's first
    token id."""
    num_seqs = len(entries)
    num_steps_each, positions, slots, seq_lens, block_tables = _plan_forwards(runner, entries)
    num_steps = int(num_steps_each.max())
    if first_ids is not None:  # tensor-parallel workers feed them too (follow_decode_steps)
        first_ids = runner.tp.broadcast_from_driver(first_ids.contiguous())
    host_ids = None if first_ids is not None else _first_tokens(entries)
    params = [e.sampling_params for e in entries]
    outputs = [e.num_output_tokens for e in entries]
    size = runner.graphs.load(positions, slots, seq_lens, block_tables, host_ids) if runner.graphs else None
    if (size is not None and runner.graphs.has_greedy_steps(size)  # (none at tensor-parallel size > 1)
            and all(p.is_greedy and p.logprobs is None and n >= p.min_tokens for p, n in zip(params, outputs))):
        # Every forward and its argmax in graphs, nothing launched between them (cuda_graphs.py);
        # no row bans a token (_mask_early_stop) at these output positions.
        tokens = runner.graphs.replay_greedy(size, num_steps, num_seqs, first_ids)
        return PendingTokens(entries, num_steps_each, tokens.clone())
    # One batch for all forwards (its tensors cross to the device once); only the seeds of
    # seeded rows move with the output position.
    batch = prepare_sampling_batch(params, outputs, runner.arch.vocab_size, runner.device)
    input_ids: np.ndarray | torch.Tensor = first_ids if first_ids is not None else host_ids
    tokens = []
    for step in range(num_steps):
        if size is not None:
            logits = runner.graphs.replay(size, step, num_seqs, input_ids if step or first_ids is not None else None)
        else:
            logits = eager_decode_forward(runner, input_ids, positions[step], slots[step], seq_lens[step], block_tables)
        runner._mask_early_stop(logits, [(e, n + step) for e, n in zip(entries, outputs)])  # [B, V] fp32
        step_batch = batch if step == 0 else dataclasses.replace(
            batch, seeded_rows=seeded_rows(params, [n + step for n in outputs]))
        input_ids = runner.sampler.sample(logits, step_batch)  # [B] on the device: the next forward's input
        if step + 1 < num_steps:  # tensor-parallel workers feed it too (follow_decode_steps)
            input_ids = runner.tp.broadcast_from_driver(input_ids.contiguous())
        tokens.append(input_ids)
    return PendingTokens(entries, num_steps_each, torch.stack(tokens))  # waiting on it: the one host sync


def follow_decode_steps(runner, entries: Sequence[ScheduledRequest], queued: bool = False) -> None:
    """A tensor-parallel worker's launch_decode_steps: the same forwards, and so the same
    collectives, each fed the tokens the driver sampled from the one before (broadcast from the
    driver; the workers sample nothing); `queued`: a run queued ahead, whose first tokens come by
    broadcast too."""
    num_seqs = len(entries)
    num_steps_each, positions, slots, seq_lens, block_tables = _plan_forwards(runner, entries)
    num_steps = int(num_steps_each.max())
    input_ids: np.ndarray | torch.Tensor = _first_tokens(entries)
    if queued:
        input_ids = runner.tp.broadcast_from_driver(torch.empty(num_seqs, dtype=torch.int64, device=runner.device))
    host_ids = None if queued else input_ids
    size = runner.graphs.load(positions, slots, seq_lens, block_tables, host_ids) if runner.graphs else None
    for step in range(num_steps):
        if size is not None:
            runner.graphs.replay(size, step, num_seqs, input_ids if step or queued else None)
        else:
            eager_decode_forward(runner, input_ids, positions[step], slots[step], seq_lens[step], block_tables)
        if step + 1 < num_steps:
            input_ids = runner.tp.broadcast_from_driver(torch.empty(num_seqs, dtype=torch.int64, device=runner.device))


def _plan_forwards(runner, entries: Sequence[ScheduledRequest]):
    """num_steps_each [B] (one forward per token: the real one and each placeholder) and
    plan_decode_forwards' positions, slots, seq_lens and block tables."""
    num_steps_each = np.fromiter((e.num_draft_tokens + 1 for e in entries), dtype=np.int64, count=len(entries))
    starts = np.fromiter((e.start_position for e in entries), dtype=np.int64, count=len(entries))
    return (num_steps_each, *plan_decode_forwards(runner, entries, starts, num_steps_each))


def _first_tokens(entries: Sequence[ScheduledRequest]) -> np.ndarray:
    return np.fromiter((e.token_ids[0] for e in entries), dtype=np.int64, count=len(entries))


@dataclasses.dataclass
class QueuedSteps:
    """A next step's forwards queued before its plan exists (async scheduling, above)."""

    entries: tuple[ScheduledRequest, ...]  # the predicted plan's entries
    pending: PendingTokens | None  # None on a tensor-parallel worker (the driver samples)

    def adopt(self, entries: Sequence[ScheduledRequest]) -> PendingTokens | None:
        """The queued run's tokens for the plan `entries` when every entry is one of the predicted
        (same start, placeholders, output count, sampling settings and blocks), else None. Its
        wait() may also give tokens of predicted requests the plan left out; the caller ignores them."""
        return self.pending if _columns_of(self.entries, entries) is not None else None


@dataclasses.dataclass
class QueuedForward:
    """A single-step decode plan's next forward, queued before that plan exists (async scheduling
    of steps that need the host between tokens, e.g. grammars): only its logits, since the
    sampling waits for what the host computes from this step's tokens (the grammar masks)."""

    entries: tuple[ScheduledRequest, ...]  # the predicted plan's entries
    logits: torch.Tensor | None  # [len(entries), V]; None on a tensor-parallel worker (the driver samples)

    def fits(self, entries: Sequence[ScheduledRequest]) -> bool:
        """Whether the plan `entries` is the predicted one or a part of it (single decode steps)."""
        return is_single_decode_plan(entries) and _columns_of(self.entries, entries) is not None

    def adopt(self, entries: Sequence[ScheduledRequest]) -> torch.Tensor | None:
        """The logits rows of the plan `entries`, in its order, when it fits; else None."""
        columns = _columns_of(self.entries, entries) if is_single_decode_plan(entries) else None
        if columns is None:
            return None
        if columns == list(range(len(self.entries))):
            return self.logits
        return self.logits.index_select(0, to_device(np.asarray(columns, dtype=np.int64), self.logits.device))


def _columns_of(predicted: Sequence[ScheduledRequest], entries: Sequence[ScheduledRequest]) -> list[int] | None:
    """Each entry's index among the predicted entries, or None unless every entry is one of them
    with the same start, placeholders, output count, sampling settings and blocks."""
    index = {e.request_id: (i, e) for i, e in enumerate(predicted)}
    columns = []
    for entry in entries:
        i, p = index.get(entry.request_id, (None, None))
        if (p is None or p.start_position != entry.start_position or p.num_draft_tokens != entry.num_draft_tokens
                or p.num_output_tokens != entry.num_output_tokens or p.sampling_params is not entry.sampling_params
                or entry.block_ids[:len(p.block_ids)] != p.block_ids):
            return None
        columns.append(i)
    return columns


def is_single_decode_plan(entries: Sequence[ScheduledRequest]) -> bool:
    """Every request decodes one token, without drafts, and samples it."""
    return bool(entries) and all(e.do_sample and e.num_tokens == 1 and not e.num_draft_tokens for e in entries)


def queue_next_forward(runner, entries: Sequence[ScheduledRequest], tokens: torch.Tensor,
                       max_model_len: int) -> QueuedForward | None:
    """Queues the forward of the single-step decode plan predicted to follow `entries` (each
    request one token further), fed `tokens` [B] (this step's, on the device, in `entries` order);
    None when it cannot be predicted."""
    predicted = predict_next_entries(entries, 1, max_model_len, runner.block_size)
    if predicted is None:
        return None
    column_of = {e.request_id: b for b, e in enumerate(entries)}
    columns = np.fromiter((column_of[e.request_id] for e in predicted), dtype=np.int64, count=len(predicted))
    first_ids = tokens.index_select(0, to_device(columns, runner.device, torch.int64))
    return QueuedForward(predicted, _single_forward(runner, predicted, runner.tp.broadcast_from_driver(first_ids)))


def follow_next_forward(runner, entries: Sequence[ScheduledRequest], max_model_len: int) -> QueuedForward | None:
    """A tensor-parallel worker's queue_next_forward: the same predicted forward, fed the driver's
    tokens by broadcast (its logits are not kept: the driver samples)."""
    predicted = predict_next_entries(entries, 1, max_model_len, runner.block_size)
    if predicted is None:
        return None
    first_ids = runner.tp.broadcast_from_driver(torch.empty(len(predicted), dtype=torch.int64, device=runner.device))
    _single_forward(runner, predicted, first_ids)
    return QueuedForward(predicted, None)


def _single_forward(runner, entries: Sequence[ScheduledRequest], input_ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, V] of one decode forward of `entries` fed `input_ids` (a graph replay where one fits)."""
    _, positions, slots, seq_lens, block_tables = _plan_forwards(runner, entries)
    size = runner.graphs.load(positions, slots, seq_lens, block_tables) if runner.graphs else None
    if size is not None:
        return runner.graphs.replay(size, 0, len(entries), input_ids)
    return eager_decode_forward(runner, input_ids, positions[0], slots[0], seq_lens[0], block_tables)


def predict_next_entries(entries: Sequence[ScheduledRequest], num_scheduler_steps: int, max_model_len: int,
                         block_size: int) -> tuple[ScheduledRequest, ...] | None:
    """The next multi-step plan if nothing changes: each request advanced by this step's tokens,
    with the placeholders the scheduler will give it (its rules, scheduler.py); a request this
    step finishes by length is left out. None when the next step cannot be predicted: nothing
    would run, or a request lacks slots."""
    predicted = []
    for e in entries:
        steps = e.num_draft_tokens + 1
        num_tokens = e.start_position + 1 + steps  # the request's tokens after this step
        num_outputs = e.num_output_tokens + steps
        room = num_outputs_allowed(e.sampling_params.max_tokens, num_outputs, max_model_len, num_tokens)
        if room <= 0:
            continue  # this step ends it
        num_draft = num_drafts_allowed(num_scheduler_steps - 1, num_scheduler_steps - 1, room)  # (budget: ample)
        start = num_tokens - 1
        if start + num_draft >= len(e.block_ids) * block_size:
            return None  # no look-ahead slots (the scheduler gives them only when they fit)
        predicted.append(dataclasses.replace(
            e, token_ids=(PLACEHOLDER_TOKEN_ID,) * (num_draft + 1), start_position=start,
            num_output_tokens=num_outputs, num_draft_tokens=num_draft))
    return tuple(predicted) if predicted else None


def queue_next_steps(runner, entries: Sequence[ScheduledRequest], pending: PendingTokens,
                     num_scheduler_steps: int, max_model_len: int) -> QueuedSteps | None:
    """Queues the predicted next step's forwards behind `pending`'s (async scheduling, above), fed
    the last token each request samples in `pending`; None when it cannot be predicted."""
    predicted = predict_next_entries(entries, num_scheduler_steps, max_model_len, runner.block_size)
    if predicted is None:
        return None
    # `pending` may be a queued run adopted for a part of its batch: find each request's column there.
    column_of = {e.request_id: b for b, e in enumerate(pending.entries)}
    columns = np.fromiter((column_of[e.request_id] for e in predicted), dtype=np.int64, count=len(predicted))
    last_rows = pending.num_steps_each[columns] - 1
    index = to_device(last_rows * pending.num_seqs + columns, runner.device, torch.int64)
    first_ids = pending.tokens.reshape(-1).index_select(0, index)
    return QueuedSteps(predicted, launch_decode_steps(runner, predicted, first_ids))


def eager_decode_forward(runner, input_ids: np.ndarray | torch.Tensor, positions: np.ndarray, slots: np.ndarray,
                         seq_lens: np.ndarray, block_tables: np.ndarray) -> torch.Tensor:
    """Logits [B, V] of one decode forward without CUDA graphs (CPU, or a batch too large for them)."""
    dev = runner.device
    num_seqs = len(positions)

    def put(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return to_device(array, dev, dtype)

    meta = AttentionMetadata(
        slot_mapping=put(slots, torch.int64), query_start_loc=put(np.arange(num_seqs + 1), torch.int32),
        seq_lens=put(seq_lens, torch.int32), block_tables=put(block_tables, torch.int32),
        max_query_len=1, max_seq_len=int(seq_lens.max()),
        query_start_loc_cpu=tuple(range(num_seqs + 1)), seq_lens_cpu=tuple(seq_lens.tolist()))
    ids = input_ids if isinstance(input_ids, torch.Tensor) else put(input_ids, torch.int64)
    hidden = runner.model(ids, put(positions, torch.int64), runner.kv_caches, meta)
    return runner.model.compute_logits(hidden)
