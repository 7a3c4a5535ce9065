"""From a checkpoint directory to a loaded model."""

from __future__ import annotations

import torch

from llm_core.distributed.group import SINGLE, TensorParallelGroup
from llm_core.models.arch_config import ArchConfig
from llm_core.models.llama import LlamaForCausalLM
from llm_core.models.loader import iter_checkpoint, load_weights

MODEL_CLASSES = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "Qwen2ForCausalLM": LlamaForCausalLM,
    "Qwen3ForCausalLM": LlamaForCausalLM,
}

# Prefixes under which checkpoints keep the decoder's weights (plain causal LMs, and the
# language model inside multimodal checkpoints in their old and new transformers layouts).
_DECODER_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
_LM_HEAD_NAMES = ("lm_head.weight", "language_model.lm_head.weight")
# The encoders' weights (loaded by encoders.loader), also found under "model." in transformers 5.
_ENCODER_PREFIXES = ("vision_tower.", "audio_tower.", "multi_modal_projector.")


def _rename(name: str, has_lm_head: bool) -> str | None:
    if name in _LM_HEAD_NAMES:
        return "lm_head.weight" if has_lm_head else None
    for prefix in _DECODER_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return None if rest.startswith(_ENCODER_PREFIXES) else rest
    return None  # another tower's weights (vision, audio, projector)


def build_model(model_dir: str, arch: ArchConfig, backend, *, dtype: torch.dtype, device: torch.device,
                max_position: int, tp: TensorParallelGroup = SINGLE) -> LlamaForCausalLM:
    """Create the model with uninitialized weights on `device` and stream the checkpoint into it
    (with a tensor-parallel group: this rank's shard of it)."""
    cls = MODEL_CLASSES[arch.architecture]
    model = cls(arch, backend, max_position=max_position, dtype=dtype, device="meta", tp=tp)
    model.to_empty(device=device)
    model.rotary.rebuild(device)
    has_lm_head = model.lm_head is not None
    load_weights(model, iter_checkpoint(model_dir, device), rename=lambda n: _rename(n, has_lm_head))
    return model.eval()
