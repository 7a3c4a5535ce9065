"""Runs one scheduler plan on the model: builds the step's tensors, forwards, samples."""

from __future__ import annotations

import torch

from llm_core.attention.metadata import AttentionMetadata
from llm_core.models.arch_config import ArchConfig
from llm_core.sampler import Sampler, compute_logprobs, prepare_sampling_batch
from llm_core.scheduler_output import SchedulerOutput
from llm_core.spec_decode.sampling import row_positions, sample_with_drafts


class ModelRunner:
    """Owns the model, its paged KV cache and the sampler.

    execute(plan) returns ({request_id: token_id} for every request that samples this step,
    {request_id: {token_id: logprob}} for those that asked for logprobs). When the plan carries
    draft tokens the first map holds instead {request_id: [1..d+1 verified tokens]} and no
    logprobs (the engine does not speculate for requests that ask for logprobs).
    """

    def __init__(self, model, arch: ArchConfig, *, device: torch.device, dtype: torch.dtype,
                 num_blocks: int, block_size: int, eos_token_ids: tuple[int, ...] = (), seed: int = 0,
                 structured=None, embedder=None) -> None:
        self.model = model
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

    def prepare_inputs(self, plan: SchedulerOutput):
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slot_mapping: list[int] = []
        query_start_loc = [0]
        seq_lens: list[int] = []
        logits_indices: list[int] = []
        for entry in plan.requests:
            start, end = entry.start_position, entry.start_position + entry.num_tokens
            input_ids.extend(entry.token_ids)
            positions.extend(range(start, end))
            blocks = entry.block_ids
            slot_mapping.extend(blocks[p // bs] * bs + p % bs for p in range(start, end))
            query_start_loc.append(query_start_loc[-1] + entry.num_tokens)
            seq_lens.append(end)
            if entry.do_sample:  # the last real token's row, then one per draft token
                last = query_start_loc[-1]
                logits_indices.extend(range(last - 1 - entry.num_draft_tokens, last))
        max_blocks = max(len(e.block_ids) for e in plan.requests)
        block_tables = [list(e.block_ids) + [0] * (max_blocks - len(e.block_ids)) for e in plan.requests]
        dev = self.device
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slot_mapping, dtype=torch.int64, device=dev),
            query_start_loc=torch.tensor(query_start_loc, dtype=torch.int32, device=dev),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
            block_tables=torch.tensor(block_tables, dtype=torch.int32, device=dev),
            max_query_len=max(e.num_tokens for e in plan.requests),
            max_seq_len=max(seq_lens),
            query_start_loc_cpu=tuple(query_start_loc),
            seq_lens_cpu=tuple(seq_lens),
        )
        input_ids_t = torch.tensor(input_ids, dtype=torch.int64, device=dev)  # [T]
        positions_t = torch.tensor(positions, dtype=torch.int64, device=dev)  # [T]
        logits_indices_t = torch.tensor(logits_indices, dtype=torch.int64, device=dev)  # [S]
        return input_ids_t, positions_t, meta, logits_indices_t

    def prepare_inputs_embeds(self, plan: SchedulerOutput, input_ids: torch.Tensor) -> torch.Tensor | None:
        """Input embeddings [T, C] with media rows filled in, or None when no scheduled token is a
        media placeholder (text only: the model embeds input_ids itself, with no extra work)."""
        if self.embedder is None:
            return None
        return self.embedder.prepare_inputs_embeds(plan, input_ids, self.model.embed_tokens)

    @torch.inference_mode()
    def execute(self, plan: SchedulerOutput) -> tuple[dict[str, int], dict[str, dict[int, float]]]:
        input_ids, positions, meta, logits_indices = self.prepare_inputs(plan)
        inputs_embeds = self.prepare_inputs_embeds(plan, input_ids)  # None on text-only steps
        hidden = self.model(input_ids, positions, self.kv_caches, meta, inputs_embeds=inputs_embeds)
        sampling = [e for e in plan.requests if e.do_sample]
        if not sampling:
            return {}, {}
        logits = self.model.compute_logits(hidden.index_select(0, logits_indices))  # [R, V] fp32
        self._mask_early_stop(logits, row_positions(sampling))
        if self.structured is not None:
            self.structured.apply_masks(logits, [e.request_id for e in sampling],
                                        [e.draft_token_ids for e in sampling])
        if any(e.num_draft_tokens for e in sampling):
            return sample_with_drafts(self.sampler, logits, sampling), {}
        params = [e.sampling_params for e in sampling]
        batch = prepare_sampling_batch(params, [e.num_output_tokens for e in sampling], logits.shape[-1], self.device)
        tokens = self.sampler.sample(logits, batch)
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

    def _mask_early_stop(self, logits: torch.Tensor, rows) -> None:
        """Below min_tokens, EOS and stop token ids cannot be sampled. rows: (entry, output position)."""
        for row, (entry, position) in enumerate(rows):
            params = entry.sampling_params
            if position < params.min_tokens:
                banned = list(params.stop_token_ids) + ([] if params.ignore_eos else list(self.eos_token_ids))
                banned = [t for t in banned if t < logits.shape[-1]]
                if banned:
                    logits[row, banned] = float("-inf")
