"""CUDA graphs of decode steps: one captured forward (model + LM head) per padded batch size.

A decode step launches a few hundred small kernels; at small batch sizes launching them costs
more host time than the GPU needs to run them. Replaying a graph launches them all at once.
Each graph reads its inputs from static buffers that a replay fills first:

    input_ids, positions, slot_mapping  [G]      (padding rows: token 0, position 0, slot -1)
    seq_lens                            [G]      (padding rows: 0, so attention reads nothing)
    query_start_loc                     [G + 1]  = 0..G (one query row per sequence)
    block_tables                        [G, W]   W = blocks of max_model_len

and writes logits [G, V] fp32. Attention runs with num_splits and max_seq_len fixed for the
longest context (decode_attention then reads no host value of the step's lengths), so one
graph serves every mix of context lengths.

Greedy steps (plain decode, batches up to GREEDY_GRAPH_MAX_BATCH): a second graph per size runs a
whole decode forward of a multi-step run: it takes the forward's inputs from the loaded rows at a
step counter on the device, and after the forward takes each row's argmax (at batch 1 with the
LM head on the Triton GEMV, the GEMV's own argmax epilogue: no logits written, no argmax kernels;
the model's greedy_tokens), feeds it to the next forward's input_ids, records it in the run's token
history and advances the counter. K replays in
a row then run K forwards and their sampling with nothing launched in between (the plain graphs
need three input copies and the sampler's kernels per forward, launched from the host, each a
few microseconds of an otherwise idle GPU at batch 1).
"""

from __future__ import annotations

import bisect
import gc
import logging
import time

import numpy as np
import torch
import triton
import triton.language as tl

from llm_core.attention.metadata import AttentionMetadata
from llm_core.transfer import argmax_rows

logger = logging.getLogger(__name__)

MAX_STEPS_PER_LOAD = 64  # decode forwards one load() may stage (num_scheduler_steps is at most 64)
GREEDY_GRAPH_MAX_BATCH = 64  # greedy-step graphs (module docstring) for batch sizes up to this; 0: none


@triton.jit
def advance_step_kernel(steps_ptr, positions_ptr, slots_ptr, seq_lens_ptr, counter_ptr, padded,
                        BLOCK: tl.constexpr):
    # Forward `counter` of a load (rows [K, 3, padded]: positions, slots, seq_lens) into the static inputs.
    step = tl.load(counter_ptr).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < padded
    row = steps_ptr + step * (3 * padded)
    tl.store(positions_ptr + offs, tl.load(row + offs, mask=ok), mask=ok)
    tl.store(slots_ptr + offs, tl.load(row + padded + offs, mask=ok), mask=ok)
    tl.store(seq_lens_ptr + offs, tl.load(row + 2 * padded + offs, mask=ok).to(tl.int32), mask=ok)


@triton.jit
def commit_tokens_kernel(tokens_ptr, input_ids_ptr, history_ptr, counter_ptr, num_rows, history_stride,
                         BLOCK: tl.constexpr):
    # The forward's tokens become the next forward's input and row `counter` of the history; counter + 1.
    step = tl.load(counter_ptr)
    offs = tl.arange(0, BLOCK)
    ok = offs < num_rows
    tokens = tl.load(tokens_ptr + offs, mask=ok)
    tl.store(input_ids_ptr + offs, tokens, mask=ok)
    tl.store(history_ptr + step.to(tl.int64) * history_stride + offs, tokens, mask=ok)
    tl.debug_barrier()  # every thread has read the counter
    tl.store(counter_ptr, step + 1)


def capture_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, every 16 up to 256, every 32 beyond; capped at max_batch_size."""
    sizes = [1, 2, 4] + list(range(8, 65, 8)) + list(range(80, 257, 16)) + list(range(288, 1025, 32))
    capped = [s for s in sizes if s < max_batch_size]
    return capped + [max_batch_size]


class DecodeGraphs:
    """Captures and replays decode forwards of q tokens per sequence: q = 1 for plain decode,
    q = k + 1 to verify k draft tokens per sequence (spec decode; a request with fewer drafts is
    padded with rows that store nothing and whose logits are dropped).

    run() / load() + replay() return logits [B * q, V] (sequence b's rows at b * q ..) for B
    sequences, or None when B is beyond the largest capture (the caller runs eagerly).
    """

    def __init__(self, model, kv_caches, *, max_batch_size: int, max_model_len: int, block_size: int,
                 device: torch.device, tokens_per_seq: int = 1, greedy_steps: bool = True) -> None:
        """greedy_steps: also capture the greedy-step graphs (q == 1; not at tensor-parallel size > 1,
        where the driver's tokens reach the workers between forwards, multi_step.follow_decode_steps)."""
        self.model, self.kv_caches, self.device = model, kv_caches, device
        self.greedy_steps = greedy_steps
        self.max_model_len = max_model_len
        self.q = tokens_per_seq
        self.sizes = capture_sizes(max_batch_size)
        size, q = self.sizes[-1], tokens_per_seq
        width = -(-(max_model_len + q) // block_size)  # padded rows of a verification may run past max_model_len
        self.input_ids = torch.zeros(size * q, dtype=torch.int64, device=device)
        self.positions = torch.zeros(size * q, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((size * q,), -1, dtype=torch.int64, device=device)
        self.seq_lens = torch.zeros(size, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(0, (size + 1) * q, q, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(size, width, dtype=torch.int32, device=device)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._logits: dict[int, torch.Tensor] = {}
        # Greedy steps (module docstring): their graphs, the step counter, the token history [K, G].
        self._greedy_graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._step_counter = torch.zeros(1, dtype=torch.int32, device=device)
        self._history = torch.zeros(MAX_STEPS_PER_LOAD, size, dtype=torch.int64, device=device)
        self.num_greedy_replays = 0
        # Pinned staging of load(): two sets used in turn, each reused only once the copies that
        # read it have run (async scheduling queues a load while the last one's copies may wait).
        self._staging: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.cuda.Event]] = []
        self._turn = 0
        # The loaded rows of up to MAX_STEPS_PER_LOAD forwards (the greedy graphs read them at fixed addresses).
        self._steps_dev = torch.zeros(MAX_STEPS_PER_LOAD * 3 * size * q, dtype=torch.int64, device=device)
        self._loaded: torch.Tensor | None = None  # [K, 3, size * q] on the device: the last load's rows

    @property
    def max_batch_size(self) -> int:
        return self.sizes[-1]

    def _forward(self, size: int) -> torch.Tensor:
        return self.model.compute_logits(self._hidden(size))  # [size * q, V] fp32

    def _hidden(self, size: int) -> torch.Tensor:
        q, longest = self.q, self.max_model_len + self.q
        meta = AttentionMetadata(
            slot_mapping=self.slot_mapping[:size * q], query_start_loc=self.query_start_loc[:size + 1],
            seq_lens=self.seq_lens[:size], block_tables=self.block_tables[:size], max_query_len=q,
            max_seq_len=longest, query_start_loc_cpu=tuple(range(0, (size + 1) * q, q)),
            seq_lens_cpu=(longest,) * size)
        return self.model(self.input_ids[:size * q], self.positions[:size * q], self.kv_caches, meta)

    def _greedy_step(self, size: int) -> None:
        """One greedy step of `size` rows (module docstring; q == 1)."""
        # One block width for every size up to 64: one compile of each kernel (engine start-up).
        block = triton.next_power_of_2(max(size, 64))
        advance_step_kernel[(1,)](self._steps_dev, self.positions, self.slot_mapping, self.seq_lens,
                                  self._step_counter, size, BLOCK=block)
        hidden = self._hidden(size)
        greedy_tokens = getattr(self.model, "greedy_tokens", None)  # the LM head's own argmax, where it has one
        tokens = greedy_tokens(hidden) if greedy_tokens is not None else None
        if tokens is None:
            tokens = argmax_rows(self.model.compute_logits(hidden))
        commit_tokens_kernel[(1,)](tokens, self.input_ids, self._history, self._step_counter, size,
                                   self._history.shape[1], BLOCK=block)

    def has_greedy_steps(self, size: int) -> bool:
        return size in self._greedy_graphs

    @torch.inference_mode()
    def capture(self, pool=None) -> None:
        """Captures every size, largest first, in one memory pool (`pool`, or a new one). The static
        inputs hold padding values meanwhile, so the captures store no key."""
        start = time.perf_counter()
        pool = pool if pool is not None else torch.cuda.graph_pool_handle()
        self.pool = pool
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        # No garbage collection while capturing: collecting an engine dropped earlier in the process
        # destroys its CUDA graphs, which a capture in progress does not allow (the capture fails).
        gc.collect()
        collecting = gc.isenabled()
        gc.disable()
        try:
            self._capture_all(pool, stream)
        finally:
            if collecting:
                gc.enable()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        torch.cuda.synchronize(self.device)
        logger.info("captured %d CUDA graphs of %d token(s) per sequence (batch 1..%d) in %.1fs", len(self.sizes),
                    self.q, self.sizes[-1], time.perf_counter() - start)

    def _capture_all(self, pool, stream) -> None:
        with torch.cuda.stream(stream):
            for size in reversed(self.sizes):
                self._forward(size)  # warm-up: compiles the kernels, lets cuBLAS pick its algorithms
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    self._logits[size] = self._forward(size)
                self._graphs[size] = graph
                if self.greedy_steps and self.q == 1 and size <= GREEDY_GRAPH_MAX_BATCH:
                    # Its warm-up reads loaded rows of padding: positions 0, slots -1, seq_lens 0.
                    self._steps_dev[size:2 * size].fill_(-1)
                    self._step_counter.zero_()
                    self._greedy_step(size)
                    self._step_counter.zero_()
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool, stream=stream):
                        self._greedy_step(size)
                    self._greedy_graphs[size] = graph
                    self._steps_dev[size:2 * size].zero_()
                    self.input_ids.zero_()

    def release(self) -> None:
        """Destroys every captured graph now (not whenever the garbage collector gets to them): a
        graph that captured NCCL collectives holds its communicator, whose teardown waits for it."""
        for graph in [*self._graphs.values(), *self._greedy_graphs.values()]:
            graph.reset()
        self._graphs.clear()
        self._greedy_graphs.clear()
        self._logits.clear()

    def load(self, positions: np.ndarray, slot_mapping: np.ndarray, seq_lens: np.ndarray, block_tables: np.ndarray,
             input_ids: np.ndarray | None = None) -> int | None:
        """Uploads K forwards of B sequences (positions, slot_mapping: host [K, B * q]; seq_lens:
        host [K, B]; block_tables: host [B, n]; input_ids: host [B * q] for the first forward, or
        None when it comes from the device) in one copy per array, through pinned buffers, so
        nothing here waits for the GPU. Returns the padded batch size to replay, or None when B,
        n or K is beyond what was captured (the caller runs eagerly)."""
        q = self.q
        num_steps, num_seqs = seq_lens.shape
        if (num_seqs > self.sizes[-1] or block_tables.shape[1] > self.block_tables.shape[1]
                or num_steps > MAX_STEPS_PER_LOAD):
            return None
        size = self.sizes[bisect.bisect_left(self.sizes, num_seqs)]
        steps_host, tables_host, ids_host, copied = self._next_staging()
        real, padded = num_seqs * q, size * q
        steps = steps_host[:num_steps * 3 * padded].view(num_steps, 3, padded)
        host = steps.numpy()
        host[:, 0, real:] = 0
        host[:, 1, real:] = -1  # padding rows store nothing
        host[:, 2, num_seqs:] = 0 if q == 1 else q  # and attend to nothing (q == 1) or to zeros of block 0
        host[:, 0, :real] = positions
        host[:, 1, :real] = slot_mapping
        host[:, 2, :num_seqs] = seq_lens
        self._steps_dev[:steps.numel()].copy_(steps_host[:steps.numel()], non_blocking=True)
        self._loaded = self._steps_dev[:steps.numel()].view(num_steps, 3, padded)
        width = block_tables.shape[1]
        tables = tables_host[:num_seqs * width].view(num_seqs, width)
        tables.numpy()[:] = block_tables
        self.block_tables[:num_seqs, :width].copy_(tables, non_blocking=True)
        if num_seqs < size:  # padding sequences read block 0
            self.block_tables[num_seqs:size].zero_()
        if input_ids is not None:
            ids = ids_host[:padded]
            ids.numpy()[:real] = input_ids
            ids.numpy()[real:] = 0
            self.input_ids[:padded].copy_(ids, non_blocking=True)
        copied.record()
        return size

    def _next_staging(self):
        """The pinned staging set of this load (made on first use), once the copies that read it last have run."""
        if not self._staging:
            full = self.sizes[-1] * self.q
            for _ in range(2):
                self._staging.append((torch.empty(MAX_STEPS_PER_LOAD * 3 * full, dtype=torch.int64, pin_memory=True),
                                      torch.empty(self.block_tables.numel(), dtype=torch.int32, pin_memory=True),
                                      torch.empty(full, dtype=torch.int64, pin_memory=True), torch.cuda.Event()))
        staging = self._staging[self._turn]
        self._turn ^= 1
        staging[3].synchronize()  # returns at once unless its last copies still wait on the stream
        return staging

    def replay(self, size: int, step: int, num_seqs: int, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Forward `step` of the last load -> logits [num_seqs * q, V]; input_ids: this forward's
        tokens on the device (those the previous forward sampled; q == 1), or None for the loaded ones."""
        q = self.q
        if input_ids is not None:
            self.input_ids[:num_seqs * q].copy_(input_ids)
        loaded = self._loaded[step]
        self.positions[:size * q].copy_(loaded[0])
        self.slot_mapping[:size * q].copy_(loaded[1])
        self.seq_lens[:size].copy_(loaded[2, :size])
        self._graphs[size].replay()
        return self._logits[size][:num_seqs * q]

    def replay_greedy(self, size: int, num_steps: int, num_seqs: int,
                      input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The last load's forwards 0..num_steps-1 with greedy sampling (module docstring) ->
        their tokens [num_steps, num_seqs] on the device (a view of the history, valid until the
        next greedy replay); input_ids: the first forward's tokens on the device, or None for the
        loaded ones. Needs has_greedy_steps(size)."""
        if input_ids is not None:
            self.input_ids[:num_seqs].copy_(input_ids)
        self._step_counter.zero_()
        graph = self._greedy_graphs[size]
        for _ in range(num_steps):
            graph.replay()
        self.num_greedy_replays += num_steps
        return self._history[:num_steps, :num_seqs]

    def run(self, input_ids: np.ndarray, positions: np.ndarray, slot_mapping: np.ndarray, seq_lens: np.ndarray,
            block_tables: np.ndarray) -> torch.Tensor | None:
        """One forward of B sequences (input_ids, positions, slot_mapping: host [B * q]; seq_lens:
        host [B]; block_tables: host [B, n]) -> logits [B * q, V], or None when it does not fit."""
        size = self.load(positions[None], slot_mapping[None], seq_lens[None], block_tables, input_ids)
        if size is None:
            return None
        return self.replay(size, 0, len(seq_lens))
