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
from llm_core.kv_memory import kv_budget_bytes, plan_num_blocks
from llm_core.model_runner import ModelRunner
from llm_core.models.arch_config import ArchConfig, read_hf_config
from llm_core.models.registry import build_model
from llm_core.multimodal import load_multimodal
from llm_core.output_processor import OutputProcessor
from llm_core.outputs import CompletionDelta
from llm_core.prompts import Prompt, render_prompt
from llm_core.request import Request, RequestStatus
from llm_core.sampling_params import SamplingParams
from llm_core.scheduler import Scheduler
from llm_core.scheduler_output import RequestUpdate
from llm_core.spec_decode import NgramProposer, SpeculativeConfig
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
        start = time.perf_counter()
        model = build_model(model_cfg.model, self.arch, backend, dtype=self.dtype, device=self.device,
                            max_position=self.max_model_len)
        logger.info("loaded %s (%s, %s) in %.1fs", self.arch.architecture, self.dtype, self.device,
                    time.perf_counter() - start)
        # Media (LLaVA, Qwen2-Audio): the encoders load before the KV budget is planned. None: text only.
        self.multimodal = load_multimodal(model_cfg.model, self.tokenizer, config.multimodal, device=self.device,
                                          dtype=self.dtype)
        cache = config.cache
        budget = kv_budget_bytes(cache, self.device, self._peak_memory())
        self.num_blocks = plan_num_blocks(self.arch, cache, self.dtype, budget, max_model_len=self.max_model_len,
                                          max_num_seqs=config.scheduler.max_num_seqs)
        self.kv_cache_manager = KVCacheManager(self.num_blocks, cache.block_size, cache.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler, self.kv_cache_manager, max_model_len=self.max_model_len,
                                   block_size=cache.block_size)
        self.structured = StructuredOutputManager(self.tokenizer, self.arch.vocab_size, self.eos_token_ids)
        self._waiting_for_grammar: dict[str, Request] = {}
        self.runner = ModelRunner(model, self.arch, device=self.device, dtype=self.dtype, num_blocks=self.num_blocks,
                                  block_size=cache.block_size, eos_token_ids=self.eos_token_ids, seed=model_cfg.seed,
                                  structured=self.structured,
                                  embedder=self.multimodal.embedder if self.multimodal is not None else None)
        self.output_processor = OutputProcessor(self.tokenizer, self.scheduler)
        self.speculative = SpeculativeConfig.from_dict(config.speculative)  # None: off
        self.proposer = (NgramProposer(self.speculative.prompt_lookup_min, self.speculative.prompt_lookup_max)
                         if self.speculative is not None else None)
        self.spec_stats = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_draft_tokens": 0}
        self._ids = itertools.count()

    def _resolve_max_model_len(self) -> int:
        limit = self.arch.max_position_embeddings
        requested = self.config.model.max_model_len
        if requested is not None and requested > limit:
            raise ValueError(f"max_model_len={requested} exceeds the model's max_position_embeddings={limit}")
        return requested or limit

    def _peak_memory(self) -> int:
        return torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda" else 0

    # Requests
    def add_request(self, prompt: Prompt, params: SamplingParams, *, request_id: str | None = None,
                    priority: int = 0, arrival_time: float | None = None) -> str:
        """Tokenize and queue one request; returns its id. Bad prompts raise ValueError."""
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
        if media is not None:
            self.multimodal.embedder.add(request, media.inputs)
        self.output_processor.add_request(request_id, token_ids, params)
        return request_id

    def add_media_item(self, item_id: str, modality: str, data: Any, *, final: bool = True) -> int:
        """Append decoded media to an uploaded item (video frames are encoded at once); a prompt part
        {"type": "item", "item_id": ...} uses it once committed. Returns its frames or samples so far."""
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

    def abort_request(self, request_ids: list[str]) -> None:
        self.scheduler.abort_requests(request_ids)
        for request_id in request_ids:
            self._waiting_for_grammar.pop(request_id, None)
            self.output_processor.abort(request_id)
        self._release(request_ids)

    def _release(self, request_ids: list[str]) -> None:
        """Drop the per-request state kept beside the scheduler (grammar matchers, media embeddings)."""
        if self.multimodal is not None:
            self.multimodal.embedder.free(request_ids)
        for request_id in request_ids:
            self.structured.free(request_id)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests() or bool(self._waiting_for_grammar)

    def step(self) -> list[CompletionDelta]:
        failed = self._admit_compiled()
        plan = self.scheduler.schedule()
        if plan.is_empty:
            if self._waiting_for_grammar and not failed:
                time.sleep(0.001)  # nothing else to do while a grammar compiles
            self._release([d.request_id for d in failed])
            return failed
        sampled, logprobs = self.runner.execute(plan)
        for request_id, token_ids in sampled.items():
            for token_id in ([token_ids] if isinstance(token_ids, int) else token_ids):
                if not self.structured.accept(request_id, token_id):
                    raise RuntimeError(f"request {request_id!r}: sampled token {token_id} breaks its grammar")
        updates = self.scheduler.update_from_output(plan, sampled, logprobs)
        updates = [self._finish_if_grammar_done(u) for u in updates]
        deltas = failed + self.output_processor.process(updates)
        self._release([d.request_id for d in deltas if d.finished])
        self._record_spec_stats(updates)
        self._propose_drafts()
        return deltas

    def _propose_drafts(self) -> None:
        """Give every running request at its last token draft tokens for the next step (n-gram
        lookup), cut where its grammar would refuse one. Requests asking for logprobs don't speculate."""
        if self.proposer is None:
            return
        for request in self.scheduler.running:
            params = request.sampling_params
            k = self.speculative.num_tokens_for(params.speculative)
            if k == 0 or params.logprobs is not None or request.num_computed_tokens != request.num_tokens - 1:
                continue
            drafts = self.proposer.propose(request.all_token_ids, k)
            request.spec_token_ids = drafts[:self.structured.num_valid_draft_tokens(request.request_id, drafts)]

    def _record_spec_stats(self, updates: list[RequestUpdate]) -> None:
        for update in updates:
            if update.num_draft_tokens:
                self.spec_stats["num_drafts"] += 1
                self.spec_stats["num_draft_tokens"] += update.num_draft_tokens
                self.spec_stats["num_accepted_draft_tokens"] += update.num_accepted_draft_tokens

    def _admit_compiled(self) -> list[CompletionDelta]:
        """Move requests whose grammar compiled into the scheduler; fail those whose compile failed."""
        if not self._waiting_for_grammar:
            return []
        ready, failed = self.structured.poll()
        for request_id in ready:
            self.scheduler.add_request(self._waiting_for_grammar.pop(request_id))
        deltas = []
        for request_id, error in failed.items():
            request = self._waiting_for_grammar.pop(request_id)
            self.output_processor.abort(request_id)
            deltas.append(CompletionDelta(request_id, (), "", finished=True, finish_reason="error",
                                          num_prompt_tokens=request.num_prompt_tokens, error=error))
        return deltas

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
                "prefix_cache_queries": queries, "prefix_cache_hits": hits, **self._spec_metrics()}

    def _spec_metrics(self) -> dict[str, Any]:
        """Overall speculation: drafts verified, tokens proposed and accepted, and the mean
        acceptance length (tokens produced per verified draft, the bonus token included)."""
        if self.speculative is None:
            return {}
        stats = self.spec_stats
        num_drafts = stats["num_drafts"]
        mean = (stats["num_accepted_draft_tokens"] + num_drafts) / num_drafts if num_drafts else 0.0
        return {"spec_num_drafts": num_drafts, "spec_num_draft_tokens": stats["num_draft_tokens"],
                "spec_num_accepted_draft_tokens": stats["num_accepted_draft_tokens"],
                "spec_mean_acceptance_length": mean}
