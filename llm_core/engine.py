"""The engine core: tokenizer, scheduler, model runner and output processor in one loop.

step() is the whole engine: schedule, run, apply. It runs in-process here; the serving
engine wraps it in its own process.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any

import torch

from cache.kv_cache_manager import KVCacheManager
from llm_core.attention import get_attention_backend
from llm_core.config import EngineConfig
from llm_core.distributed.executor import TensorParallelExecutor
from llm_core.distributed.layers import enable_skinny_kernels
from llm_core.engine_telemetry import EngineTelemetry
from llm_core.kv_memory import kv_budget_bytes, plan_num_blocks
from llm_core.memory_profile import profile_peak_bytes, reset_peak, warm_up_query_lengths
from llm_core.model_runner import MAX_VERIFY_GRAPH_BATCH, ModelRunner
from llm_core.models.arch_config import ArchConfig, read_hf_config
from llm_core.models.registry import build_model
from llm_core.multi_step import PLACEHOLDER_TOKEN_ID, is_multi_step_plan
from llm_core.multimodal import load_multimodal
from llm_core.output_processor import OutputProcessor
from llm_core.profiler import StepProfiler
from llm_core.outputs import CompletionDelta
from llm_core.prompts import Prompt, render_prompt
from llm_core.request import Request, RequestStatus
from llm_core.sampling_params import SamplingParams
from llm_core.scheduler import Scheduler
from llm_core.scheduler_output import RequestUpdate, SchedulerOutput
from llm_core.spec_decode import SpeculativeConfig
from llm_core.spec_decode.draft_model import DraftModel, load_draft_model, target_kv_budget
from llm_core.spec_decode.draft_proposer import DraftModelProposer
from llm_core.spec_decode.speculator import Speculator
from llm_core.structured_output import StructuredOutputManager
from llm_core.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, arch: ArchConfig, device: torch.device) -> torch.dtype:
    """auto: the checkpoint's dtype on CUDA (fp32 checkpoints run in bf16), fp32 on CPU."""
    if dtype != "auto":
        return _DTYPES[dtype]
    if device.type != "cuda":
        return torch.float32
    return {"float16": torch.float16}.get(arch.torch_dtype or "", torch.bfloat16)


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        model_cfg = config.model
        self.device = resolve_device(model_cfg.device)
        torch.manual_seed(model_cfg.seed)
        self.arch = ArchConfig.from_dict(read_hf_config(model_cfg.model), source=f"{model_cfg.model}/config.json")
        self.tokenizer = Tokenizer.from_dir(model_cfg.model)
        self.dtype = resolve_dtype(model_cfg.dtype, self.arch, self.device)
        self.max_model_len = self._resolve_max_model_len()
        self.eos_token_ids = tuple(sorted(set(self.tokenizer.eos_token_ids) | set(self.arch.eos_token_ids)))
        backend = get_attention_backend(model_cfg.attention_backend, self.device)
        # Tensor parallelism (size > 1): the workers of ranks 1.. start now and build their shards beside ours.
        self.tp = TensorParallelExecutor.start(config, self.arch, device=self.device, dtype=self.dtype,
                                               max_model_len=self.max_model_len)
        reset_peak(self.device)  # an engine built before in this process may have left a higher peak
        start = time.perf_counter()
        model = build_model(model_cfg.model, self.arch, backend, dtype=self.dtype, device=self.device,
                            max_position=self.max_model_len, tp=self.tp.group)
        logger.info("loaded %s (%s, %s) in %.1fs", self.arch.architecture, self.dtype, self.device,
                    time.perf_counter() - start)
        skinny = model_cfg.skinny_gemv
        if skinny is None and self.device.type == "cuda":  # auto: PDL devices (Hopper and later), one rank
            from llm_core.layers.kernels.pdl import device_supports_pdl  # imports Triton (the kernels package)
            skinny = config.tensor_parallel_size == 1 and device_supports_pdl(self.device)
        if skinny and self.device.type == "cuda" and backend.name == "triton":
            # before the graphs are captured; fused_decode None: with the GEMV
            enable_skinny_kernels(model, fused_decode=model_cfg.fused_decode is not False,
                                  persistent_decode=model_cfg.persistent_decode is not False,
                                  ws_decode=model_cfg.ws_decode)
        # Media (LLaVA, Qwen2-Audio): the encoders load before the KV budget is planned. None: text only.
        self.multimodal = load_multimodal(model_cfg.model, self.tokenizer, config.multimodal, device=self.device,
                                          dtype=self.dtype)
        # Speculative decoding (None: off). A draft model loads before the KV budget is planned.
        self.speculative = SpeculativeConfig.from_dict(config.speculative)
        draft = self._load_draft_model(backend)
        cache = config.cache
        # One profiling forward of the largest step (Triton attention: the torch backend is a
        # reference that materializes whole score matrices; TP > 1: the workers would have to join).
        profile = self.device.type == "cuda" and backend.name == "triton" and config.tensor_parallel_size == 1
        peak = self._peak_memory() if not profile else max(self._peak_memory(), profile_peak_bytes(
            model, self.tp.rank_arch, device=self.device, dtype=self.dtype, block_size=cache.block_size,
            num_tokens=min(config.scheduler.max_num_batched_tokens, self.max_model_len),
            num_logits=config.scheduler.max_num_seqs))
        if profile:  # the short-query tile shapes compile now, not in the middle of serving
            warm_up_query_lengths(model, self.tp.rank_arch, device=self.device, dtype=self.dtype,
                                  block_size=cache.block_size)
        budget = kv_budget_bytes(cache, self.device, peak + self._graph_memory(config, draft))
        # The smallest over the ranks (this one's at size 1). With a draft model (on this rank only,
        # unsharded) its cache has a block for each of the target's (same block ids): every rank
        # plans the target's share, so that all have as many blocks as this one.
        share = None if draft is None else (
            lambda b: target_kv_budget(b, self.tp.rank_arch, draft.arch, cache.block_size, self.dtype))
        budget = self.tp.agree_kv_budget(budget, share)
        self.num_blocks = plan_num_blocks(self.tp.rank_arch, cache, self.dtype, budget,
                                          max_model_len=self.max_model_len, max_num_seqs=config.scheduler.max_num_seqs)
        self.kv_cache_manager = KVCacheManager(self.num_blocks, cache.block_size, cache.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler, self.kv_cache_manager, max_model_len=self.max_model_len,
                                   block_size=cache.block_size,
                                   num_lookahead_tokens=self.speculative.num_tokens if draft is not None else 0)
        self.structured = StructuredOutputManager(self.tokenizer, self.arch.vocab_size, self.eos_token_ids)
        self._waiting_for_grammar: dict[str, Request] = {}
        self.runner = ModelRunner(model, self.tp.rank_arch, device=self.device, dtype=self.dtype,
                                  num_blocks=self.num_blocks, block_size=cache.block_size,
                                  eos_token_ids=self.eos_token_ids, seed=model_cfg.seed, structured=self.structured,
                                  embedder=self.multimodal.embedder if self.multimodal is not None else None,
                                  max_num_seqs=config.scheduler.max_num_seqs, max_model_len=self.max_model_len,
                                  use_cuda_graphs=not model_cfg.enforce_eager,
                                  num_verify_tokens=self.speculative.num_tokens if self.speculative is not None else 0,
                                  tp=self.tp.group)
        if self.tp.size > 1:
            self.tp.before_leaving(self.runner.release_cuda_graphs)  # DecodeGraphs.release says why
        self.output_processor = OutputProcessor(self.tokenizer, self.scheduler)
        steps = config.scheduler.num_scheduler_steps
        self.num_scheduler_steps = steps if steps is not None else (4 if self.device.type == "cuda" else 1)
        # Updates of the last multi-step step, processed (detokenized) during the next one's
        # forwards (async output processing; SchedulerConfig.disable_async_output_proc).
        self._pending_updates: list[RequestUpdate] = []
        sched = config.scheduler
        wanted = sched.async_scheduling if sched.async_scheduling is not None else self.device.type == "cuda"
        self.async_scheduling = (wanted and self.num_scheduler_steps > 1 and not sched.disable_async_output_proc
                                 and self.speculative is None)
        if self.async_scheduling:  # the slots of the step queued ahead (llm_core/multi_step.py)
            self.scheduler.num_lookahead_tokens = self.num_scheduler_steps
        self.telemetry = EngineTelemetry(self.scheduler, self.kv_cache_manager,
                                         self.multimodal.embedder if self.multimodal is not None else None)
        if config.profiler.profile_steps:  # a Chrome trace of the next N steps (llm_core/profiler.py)
            self.step = StepProfiler(config.profiler, self.device).wrap(self.step)  # type: ignore[method-assign]
        self.speculator = self._build_speculator(draft)  # None: speculation off
        self._ids = itertools.count()

    def _resolve_max_model_len(self) -> int:
        limit = self.arch.max_position_embeddings
        requested = self.config.model.max_model_len
        if requested is not None and requested > limit:
            raise ValueError(f"max_model_len={requested} exceeds the model's max_position_embeddings={limit}")
        return requested or limit

    def _graph_memory(self, config: EngineConfig, draft: DraftModel | None) -> int:
        """A bound on what the CUDA graphs' pools hold: logits and MLP activations of the largest
        batch of each graph set (decode; verification with k + 1 rows per sequence for up to 64
        sequences; the draft model's decode graphs and its first-pass graphs of k + 2 rows)."""
        if self.device.type != "cuda" or config.model.enforce_eager:
            return 0

        def bound(arch: ArchConfig, rows: int) -> int:
            return rows * (arch.vocab_size * 4 * 2 + arch.intermediate_size * 2 * 8)

        max_seqs = config.scheduler.max_num_seqs
        total = bound(self.arch, max_seqs) + (64 << 20)
        if self.speculative is not None:
            total += bound(self.arch, min(max_seqs, MAX_VERIFY_GRAPH_BATCH) * (self.speculative.num_tokens + 1))
        if draft is not None:  # its decode graphs and its first pass's graphs of k + 2 rows per sequence
            total += bound(draft.arch, max_seqs)
            total += bound(draft.arch, min(max_seqs, MAX_VERIFY_GRAPH_BATCH) * (self.speculative.num_tokens + 2))
        return total

    def _load_draft_model(self, backend) -> DraftModel | None:
        if self.speculative is None or self.speculative.method != "draft":
            return None
        # At tensor-parallel size > 1 the draft runs whole on the driver's device; the workers only
        # verify (they run the plan's draft rows like any other).
        return load_draft_model(self.speculative.model, self.tokenizer, backend, dtype=self.dtype, device=self.device,
                                max_model_len=self.max_model_len)

    def _build_speculator(self, draft: DraftModel | None) -> Speculator | None:
        if self.speculative is None:
            return None
        proposer = None
        if draft is not None:
            config = self.config
            proposer = DraftModelProposer(draft, vocab_size=self.arch.vocab_size, device=self.device, dtype=self.dtype,
                                          num_blocks=self.num_blocks, block_size=config.cache.block_size,
                                          max_model_len=self.max_model_len, max_num_seqs=config.scheduler.max_num_seqs,
                                          seed=config.model.seed, structured=self.structured,
                                          use_cuda_graphs=not config.model.enforce_eager,
                                          num_tokens=self.speculative.num_tokens)
        return Speculator(self.speculative, structured=self.structured, max_model_len=self.max_model_len,
                          draft=proposer)

    def _peak_memory(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0

    def shutdown(self) -> None:
        """Stop the tensor-parallel workers (nothing to do at size 1); the engine cannot step afterwards."""
        self.tp.shutdown()

    # Requests
    def add_request(self, prompt: Prompt, params: SamplingParams, *, request_id: str | None = None,
                    priority: int = 0, arrival_time: float | None = None, traceparent: str | None = None) -> str:
        """Tokenize and queue one request; returns its id. Bad prompts raise ValueError. With a W3C
        `traceparent` its finished delta carries span records (llm_core/request_trace.py)."""
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        media = self.multimodal.process(prompt) if self.multimodal is not None else None
        token_ids = render_prompt(prompt, self.tokenizer) if media is None else media.token_ids
        if params.max_tokens and len(token_ids) >= self.max_model_len:
            raise ValueError(f"prompt of {len(token_ids)} tokens does not fit max_model_len={self.max_model_len}")
        request = Request(request_id, token_ids, params, eos_token_ids=self.eos_token_ids,
                          arrival_time=time.monotonic() if arrival_time is None else arrival_time,
                          priority=priority, block_size=self.config.cache.block_size,
                          media_spans=media.media_spans if media is not None else ())
        self._enqueue(request)
        self.telemetry.on_add(request_id, traceparent=traceparent, priority=priority,
                              is_constrained=request_id in self._waiting_for_grammar)
        if media is not None:
            self.multimodal.embedder.add(request, media.inputs)
        self.output_processor.add_request(request_id, token_ids, params)
        return request_id

    def add_media_item(self, item_id: str, modality: str, data: Any, *, final: bool = True) -> int:
        """Append decoded media to an uploaded item; a prompt part {"type": "item", "item_id": ...}
        uses it once committed. Video frames are encoded by the next steps, within the encoder budget
        that their requests leave (step() runs for them while no request runs). Returns the item's
        frames or samples so far."""
        if self.multimodal is None:
            raise ValueError("this model takes no media (it has no vision or audio encoder)")
        return self.multimodal.items.append(item_id, modality, data, final=final)

    def delete_media_item(self, item_id: str) -> bool:
        return self.multimodal is not None and self.multimodal.items.delete(item_id)

    def _enqueue(self, request: Request) -> None:
        """A constrained request waits for its grammar outside the scheduler; others go straight in."""
        if request.request_id in self._waiting_for_grammar:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        if self.structured.submit(request.request_id, request.sampling_params):
            self._waiting_for_grammar[request.request_id] = request
        else:
            self.scheduler.add_request(request)

    def get_request(self, request_id: str) -> Request:
        """A live request (queued, waiting for its grammar, or running)."""
        request = self.scheduler.requests.get(request_id) or self._waiting_for_grammar.get(request_id)
        if request is None:
            raise KeyError(f"no live request {request_id!r}")
        return request

    def abort_request(self, request_ids: list[str]) -> list[CompletionDelta]:
        """Stop the requests now (waiting, running, compiling a grammar; unknown ids are ignored).
        Returns a finished "abort" delta with span records for each traced one (request_trace.py);
        untraced requests end without a delta."""
        if self._pending_updates:
            aborted = set(request_ids)
            self._pending_updates = [u for u in self._pending_updates if u.request_id not in aborted]
        self.scheduler.abort_requests(request_ids)
        deltas = self.telemetry.on_abort(request_ids)
        for request_id in request_ids:
            self._waiting_for_grammar.pop(request_id, None)
            self.output_processor.abort(request_id)
        self._release(request_ids)
        return deltas

    def _release(self, request_ids: list[str]) -> None:
        """Drop the per-request state kept beside the scheduler (grammar matchers, media embeddings)."""
        if self.multimodal is not None:
            self.multimodal.embedder.free(request_ids)
        for request_id in request_ids:
            self.structured.free(request_id)
        if self.speculator is not None:
            self.speculator.free(request_ids)

    def has_unfinished_requests(self) -> bool:
        """Whether step() has work: requests, kept outputs, or uploaded video frames waiting for the encoder."""
        return (self.scheduler.has_unfinished_requests() or bool(self._waiting_for_grammar)
                or bool(self._pending_updates)  # deltas of the last multi-step step not yet returned
                or (self.multimodal is not None and self.multimodal.items.num_pending_frames > 0))

    def step(self) -> list[CompletionDelta]:
        failed = self._admit_compiled()
        # Async scheduling: when forwards were queued for this step (the multi-step step predicted
        # last step), the running requests take them, and requests that arrived since are admitted
        # by the step after: the GPU runs the queued forwards anyway, so nothing waits longer.
        queued = self.runner.has_queued_steps
        multi_step = self._give_multi_step_placeholders(queued)
        # The last multi-step step's outputs first (their stop strings end requests before this plan).
        earlier = self._process_pending_updates() if not multi_step else []
        plan = self.scheduler.schedule(admit=not (queued and (multi_step or self.runner.has_queued_forward)))
        if multi_step:
            for request in self.scheduler.running:  # those the step left out start the next one clean
                request.spec_token_ids = []
        if self.multimodal is not None:  # uploaded frames get the encoder budget the plan left
            self.multimodal.items.encode_pending(self.config.scheduler.max_num_encoder_input_tokens
                                                 - plan.num_encoder_tokens, at_least_one=not plan.num_encoder_tokens)
        if plan.is_empty:
            if self._waiting_for_grammar and not failed:
                time.sleep(0.001)  # nothing else to do while a grammar compiles
            self._release([d.request_id for d in failed])
            return earlier + failed
        self.telemetry.on_schedule(plan)
        multi_step_plan = multi_step and is_multi_step_plan(plan.requests)
        # Async scheduling: the predicted next step's forwards queue behind this step's, unless a
        # request waits (the next step would admit it instead).
        ahead = self.async_scheduling and not self.scheduler.waiting and not self._waiting_for_grammar
        # Tensor-parallel workers run the same plan (no-op at size 1), as the driver runs it below.
        if self.tp.size > 1:
            media_rows = self.multimodal is not None and self.multimodal.embedder.has_media_rows(plan)
            if multi_step_plan:
                async_steps = ahead and not self.config.scheduler.disable_async_output_proc
                adopt, queue_next = self.runner.queued_run_fits(plan), self.num_scheduler_steps if async_steps else 0
            else:
                adopt = self.runner.forward_fits(plan)
                queue_next = int(self.runner.will_queue_forward(plan, ahead and not multi_step))
            self.tp.send_plan(plan, multi_step=multi_step_plan, media_rows=media_rows, adopt=adopt,
                              queue_next=queue_next)
        if multi_step_plan and not self.config.scheduler.disable_async_output_proc:
            self._release([d.request_id for d in failed])
            return failed + self._multi_step_async(plan, ahead)  # (earlier is empty: a multi-step step)
        draft_probs = self.speculator.take_draft_probs(plan) if self.speculator is not None else None
        # Async scheduling of single decode steps (those that need the host between tokens, such as
        # grammars): the predicted next step's forward runs while this step's tokens are processed.
        sampled, logprobs = self.runner.execute(plan, draft_probs, multi_step=multi_step,
                                                queue_next=ahead and not multi_step)
        for request_id, token_ids in sampled.items():
            for token_id in ([token_ids] if isinstance(token_ids, int) else token_ids):
                if not self.structured.accept(request_id, token_id):
                    raise RuntimeError(f"request {request_id!r}: sampled token {token_id} breaks its grammar")
        updates = self.scheduler.update_from_output(plan, sampled, logprobs)
        if multi_step:  # placeholders are not speculation: no draft statistics
            updates = [dataclasses.replace(u, num_draft_tokens=0, num_accepted_draft_tokens=0) for u in updates]
        updates = [self._finish_if_grammar_done(u) for u in updates]
        deltas = self.telemetry.on_outputs(updates, failed + self.output_processor.process(updates))
        self._release([d.request_id for d in deltas if d.finished])
        if self.speculator is not None:  # acceptance statistics, then the next step's drafts
            self.speculator.after_step(plan, updates, self.scheduler.running)
        return earlier + deltas

    def _multi_step_async(self, plan: SchedulerOutput, ahead: bool) -> list[CompletionDelta]:
        """A multi-step plan (no grammar, logprobs or speculation in it) with async output
        processing: queue its forwards (and, `ahead`, the predicted next step's), process the last
        multi-step step's updates while they run, then apply this step's tokens and keep their
        updates for the next step."""
        pending = self.runner.launch_multi_step(plan, queue_next=self.num_scheduler_steps if ahead else 0)
        deltas = self._process_pending_updates()  # on the host while the GPU runs the forwards
        updates = self.scheduler.update_from_output(plan, pending.wait())
        # placeholders are not speculation: no draft statistics
        self._pending_updates = [dataclasses.replace(u, num_draft_tokens=0, num_accepted_draft_tokens=0)
                                 for u in updates]
        return deltas

    def _process_pending_updates(self) -> list[CompletionDelta]:
        """Deltas of the kept updates (detokenized, stop strings applied: a request that a stop
        string ends is finished in the scheduler now, its later tokens never emitted)."""
        if not self._pending_updates:
            return []
        updates, self._pending_updates = self._pending_updates, []
        deltas = self.telemetry.on_outputs(updates, self.output_processor.process(updates))
        self._release([d.request_id for d in deltas if d.finished])
        return deltas

    def _give_multi_step_placeholders(self, queued: bool = False) -> bool:
        """Multi-step decoding for this step (llm_core/multi_step.py): when every running request
        decodes with nothing to do on the host between tokens and nothing waits (or, `queued`, its
        forwards are queued already: waiting requests are then admitted by the next step), each
        gets num_scheduler_steps - 1 placeholder drafts. Returns whether it did."""
        k = self.num_scheduler_steps
        running = self.scheduler.running
        if (k <= 1 or not running or self.speculator is not None
                or (not queued and (self.scheduler.waiting or self._waiting_for_grammar))):
            return False
        for request in running:
            if (request.num_computed_tokens != request.num_tokens - 1 or request.sampling_params.logprobs is not None
                    or self.structured.has_matcher(request.request_id)):
                return False
        for request in running:
            request.spec_token_ids = [PLACEHOLDER_TOKEN_ID] * (k - 1)
        return True

    def _admit_compiled(self) -> list[CompletionDelta]:
        """Move requests whose grammar compiled into the scheduler; fail those whose compile failed."""
        if not self._waiting_for_grammar:
            return []
        ready, failed = self.structured.poll()
        for request_id in ready:
            self.scheduler.add_request(self._waiting_for_grammar.pop(request_id))
            self.telemetry.on_grammar_done(request_id)
        deltas = []
        for request_id, error in failed.items():
            request = self._waiting_for_grammar.pop(request_id)
            self.output_processor.abort(request_id)
            self.telemetry.on_grammar_done(request_id, error)
            deltas.append(CompletionDelta(request_id, (), "", finished=True, finish_reason="error",
                                          num_prompt_tokens=request.num_prompt_tokens, error=error))
        return self.telemetry.on_outputs((), deltas)

    def _finish_if_grammar_done(self, update: RequestUpdate) -> RequestUpdate:
        """A request whose grammar admits nothing more ends even with ignore_eos."""
        if update.finish_reason is None and self.structured.is_terminated(update.request_id):
            self.scheduler.finish_requests([update.request_id], RequestStatus.FINISHED_STOPPED)
            return dataclasses.replace(update, finish_reason="stop")
        return update

    def stats(self) -> dict[str, Any]:
        queries, hits = self.kv_cache_manager.prefix_cache_stats
        return {"num_running": self.scheduler.num_running, "num_waiting": self.scheduler.num_waiting,
                "num_preemptions": self.scheduler.num_preemptions, "kv_usage": self.kv_cache_manager.usage,
                "prefix_cache_queries": queries, "prefix_cache_hits": hits,
                "queued_steps_adopted": self.runner.num_queued_adopted,
                "queued_steps_dropped": self.runner.num_queued_dropped,
                **(self.speculator.metrics() if self.speculator is not None else {}),
                **self.telemetry.stats(), **self._item_metrics()}

    def _item_metrics(self) -> dict[str, Any]:
        """Uploaded media items, their video frames through the vision tower and those waiting for it."""
        if self.multimodal is None:
            return {}
        items = self.multimodal.items
        return {"num_media_items": items.num_items, "num_item_frames_encoded": items.num_frames_encoded,
                "num_item_frames_pending": items.num_pending_frames}
