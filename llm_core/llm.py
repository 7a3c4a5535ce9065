"""The offline API: LLM(model_dir).generate(prompts, SamplingParams(...))."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from llm_core.config import EngineConfig
from llm_core.engine import LLMEngine
from llm_core.outputs import RequestOutput
from llm_core.prompts import Prompt
from llm_core.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class LLM:
    """Generate for a list of prompts with continuous batching, as vLLM's LLM does.

    Engine options carry the CLI flags' names: max_num_seqs, max_num_batched_tokens,
    max_model_len, block_size, enable_prefix_caching, gpu_memory_utilization,
    cpu_kv_cache_bytes, dtype, seed, scheduling_policy, attention_backend, ...
    """

    def __init__(self, model: str, device: str = "auto", **engine_options: Any) -> None:
        self.engine = LLMEngine(EngineConfig.from_options(model, device=device, **engine_options))

    def get_tokenizer(self):
        return self.engine.tokenizer

    def generate(
        self,
        prompts: Prompt | Sequence[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        priorities: Sequence[int] | None = None,
    ) -> list[RequestOutput]:
        """One RequestOutput per prompt, in the order given."""
        if isinstance(prompts, (str, dict)) or (isinstance(prompts, list) and prompts and
                                                 all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = SamplingParams()
        params = [sampling_params] * len(prompts) if isinstance(sampling_params, SamplingParams) else list(sampling_params)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} SamplingParams for {len(prompts)} prompts")
        if priorities is not None and len(priorities) != len(prompts):
            raise ValueError(f"{len(priorities)} priorities for {len(prompts)} prompts")
        for p in params:  # an impossible or unsupported schema is an error before anything runs
            self.engine.structured.validate(p)
        outputs: dict[str, RequestOutput] = {}
        order = []
        try:
            for i, (prompt, p) in enumerate(zip(prompts, params)):
                request_id = self.engine.add_request(prompt, p, priority=priorities[i] if priorities else 0)
                req = self.engine.get_request(request_id)
                outputs[request_id] = RequestOutput(request_id, prompt if isinstance(prompt, str) else None,
                                                    req.prompt_token_ids)
                order.append(request_id)
            while self.engine.has_unfinished_requests():
                for delta in self.engine.step():
                    outputs[delta.request_id].add(delta)
        except BaseException:
            self.engine.abort_request([r for r in order if not outputs[r].finished])
            raise
        return [outputs[r] for r in order]
