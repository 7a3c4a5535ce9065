"""Tiny random Hugging Face checkpoints that tests build and save themselves."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from tests.helpers.tokenizers import BOS, EOS, IM_END, make_tokenizer_dir

TEXT_ARCHS = ("llama", "qwen2", "qwen3", "mistral")

_BASE = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
             rms_norm_eps=1e-6, initializer_range=0.05)


def text_config(arch: str, **overrides: Any):
    import transformers

    kwargs = dict(_BASE)
    if arch == "llama":
        cls = transformers.LlamaConfig
    elif arch == "qwen2":
        cls = transformers.Qwen2Config
    elif arch == "qwen3":
        cls = transformers.Qwen3Config
        kwargs["head_dim"] = 32  # Qwen3 decouples head_dim from hidden_size / heads
    elif arch == "mistral":
        cls = transformers.MistralConfig
        kwargs["sliding_window"] = None
    else:
        raise ValueError(arch)
    kwargs.update(overrides)
    return cls(**kwargs)


def make_text_checkpoint(path: str | Path, arch: str = "llama", *, seed: int = 0, dtype: torch.dtype = torch.float32,
                         tokenizer_kind: str = "bytelevel", max_shard_size: str | None = None,
                         **config_overrides: Any) -> Path:
    """Save a random `arch` model with a tokenizer under `path`; returns the directory."""
    import transformers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    make_tokenizer_dir(path, kind=tokenizer_kind, vocab_size=config_overrides.get("vocab_size", _BASE["vocab_size"]))
    config_overrides = {**special_token_ids(path, tokenizer_kind), **config_overrides}
    config = text_config(arch, **config_overrides)
    config.architectures = [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                             "mistral": "MistralForCausalLM"}[arch]]
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).to(dtype)
    save_kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **save_kwargs)
    return path


def special_token_ids(path: Path, tokenizer_kind: str) -> dict[str, int | None]:
    """bos/eos ids of the tokenizer in `path`, so the model config agrees with it."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    if tokenizer_kind == "metaspace":
        return {"bos_token_id": tok.token_to_id(BOS), "eos_token_id": tok.token_to_id(EOS)}
    return {"bos_token_id": None, "eos_token_id": tok.token_to_id(IM_END)}


def load_hf_model(path: str | Path):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


def hf_cache(out) -> Any:
    """The KV cache a transformers forward returned: `cache` from transformers 5.24, `past_key_values` before."""
    return out["cache"] if "cache" in out else out["past_key_values"]


def hf_cache_kwargs(model, cache: Any) -> dict[str, Any]:
    """The keyword that hands a forward its KV cache back: `cache` from transformers 5.24 (which
    deprecates `past_key_values`), `past_key_values` before."""
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return {name: cache}


@torch.inference_mode()
def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation with transformers' own KV cache, never stopping at EOS."""
    ids = torch.tensor([prompt_ids])
    out = model(ids, use_cache=True)
    tokens = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        tokens.append(token)
        out = model(torch.tensor([[token]]), use_cache=True, **hf_cache_kwargs(model, hf_cache(out)))
    return tokens
