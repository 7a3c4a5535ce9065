"""Loading a draft checkpoint for speculative decoding, and the checks that it fits the target."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from cache.kv_sizing import kv_cache_bytes_per_block
from llm_core.models.arch_config import ArchConfig, read_hf_config
from llm_core.models.registry import build_model
from llm_core.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DraftModel:
    """A loaded draft decoder (any architecture the engine runs) and its shape."""

    model: torch.nn.Module
    arch: ArchConfig
    model_dir: str


def load_draft_model(model_dir: str, tokenizer: Tokenizer, backend, *, dtype: torch.dtype, device: torch.device,
                     max_model_len: int) -> DraftModel:
    """Load the draft in the target's dtype and device, after checking that it shares the
    target's tokenizer. Its rotary table covers the target's max_model_len (a draft trained on
    shorter contexts still runs past them; only its acceptance suffers)."""
    arch = ArchConfig.from_dict(read_hf_config(model_dir), source=f"{model_dir}/config.json")
    check_vocab_compatible(model_dir, arch, tokenizer)
    if arch.max_position_embeddings < max_model_len:
        logger.warning("draft model %s was built for %d positions, fewer than max_model_len=%d", model_dir,
                       arch.max_position_embeddings, max_model_len)
    model = build_model(model_dir, arch, backend, dtype=dtype, device=device, max_position=max_model_len)
    logger.info("loaded draft model %s (%s, %d layers)", model_dir, arch.architecture, arch.num_layers)
    return DraftModel(model, arch, model_dir)


def check_vocab_compatible(model_dir: str, arch: ArchConfig, tokenizer: Tokenizer) -> None:
    """A draft must speak the target's tokens: the same vocabulary (token -> id, added tokens
    included) when its directory has a tokenizer, and an embedding table that covers it."""
    target_vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    if (Path(model_dir) / "tokenizer.json").is_file():
        draft_vocab = Tokenizer.from_dir(model_dir).backend.get_vocab(with_added_tokens=True)
        if draft_vocab != target_vocab:
            differing = sorted(set(target_vocab.items()) ^ set(draft_vocab.items()))
            token = differing[0][0]
            raise ValueError(
                f"speculative draft model {model_dir!r} has another tokenizer than the target: token {token!r} has "
                f"id {target_vocab.get(token, 'none')} in the target and {draft_vocab.get(token, 'none')} in the draft "
                f"({len(differing)} differing entries); a draft model must share the target's tokenizer")
    else:
        logger.warning("draft model %s has no tokenizer.json; assuming the target's tokenizer", model_dir)
    if arch.vocab_size < len(target_vocab):
        raise ValueError(f"speculative draft model {model_dir!r} has vocab_size={arch.vocab_size}, fewer than the "
                         f"{len(target_vocab)} tokens of the target's tokenizer")


def target_kv_budget(budget_bytes: int, target: ArchConfig, draft: ArchConfig, block_size: int,
                     dtype: torch.dtype) -> int:
    """The target's share of a KV budget that both caches split: the draft's cache has a block
    for every block of the target's (the same ids), so the budget divides per block."""
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    target_bytes, draft_bytes = (kv_cache_bytes_per_block(block_size, a.num_layers, a.num_kv_heads, a.head_dim,
                                                          dtype_bytes) for a in (target, draft))
    return budget_bytes * target_bytes // (target_bytes + draft_bytes)
