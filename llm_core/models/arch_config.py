"""The decoder's shape, read from a Hugging Face config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Architectures this engine runs, and the flags that tell them apart.
TEXT_ARCHITECTURES = {
    "LlamaForCausalLM": {},
    "MistralForCausalLM": {},
    "Qwen2ForCausalLM": {"attention_bias": True},
    "Qwen3ForCausalLM": {"qk_norm": True},
}

# A multimodal config's text_config names its decoder by model_type.
TEXT_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                    "qwen3": "Qwen3ForCausalLM"}
# transformers writes only non-default values into a nested text_config (llava-1.5 keeps little
# more than the vocabulary size): the LlamaConfig / Qwen2Config defaults fill in the rest.
_TEXT_CONFIG_DEFAULTS = {
    "llama": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, max_position_embeddings=2048, rms_norm_eps=1e-6),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, intermediate_size=22016, num_hidden_layers=32,
                  num_attention_heads=32, max_position_embeddings=32768, rms_norm_eps=1e-6,
                  use_sliding_window=False),
}


@dataclass(frozen=True)
class ArchConfig:
    """A decoder-only transformer of the Llama family (Llama, Mistral, Qwen2, Qwen3)."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict[str, Any] | None
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    torch_dtype: str | None = None
    eos_token_ids: tuple[int, ...] = ()
    hidden_act: str = "silu"

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads={self.num_heads} is not a multiple of "
                             f"num_key_value_heads={self.num_kv_heads}")
        if self.hidden_act != "silu":
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r} (only silu)")

    @classmethod
    def from_dict(cls, config: dict[str, Any], *, source: str = "config.json") -> "ArchConfig":
        architectures = config.get("architectures") or []
        if not architectures:
            raise ValueError(f"{source} names no architecture (the 'architectures' field is missing)")
        arch = architectures[0]
        text_config = config
        if arch not in TEXT_ARCHITECTURES:
            if isinstance(config.get("text_config"), dict):
                # A multimodal checkpoint (LLaVA, Qwen2-Audio): its language model is the decoder.
                text_config = config["text_config"]
                model_type = text_config.get("model_type")
                arch = (text_config.get("architectures") or [TEXT_MODEL_TYPES.get(model_type, "")])[0]
                text_config = {**_TEXT_CONFIG_DEFAULTS.get(model_type, {}),
                               "dtype": config.get("dtype") or config.get("torch_dtype"), **text_config}
            if arch not in TEXT_ARCHITECTURES:
                raise ValueError(f"unsupported architecture {architectures[0]!r} in {source}; supported: "
                                 f"{', '.join(TEXT_ARCHITECTURES)}")
        return cls._from_text_config(arch, text_config)

    @classmethod
    def _from_text_config(cls, arch: str, c: dict[str, Any]) -> "ArchConfig":
        num_heads = c["num_attention_heads"]
        rope = c.get("rope_parameters") or {}
        rope_scaling = c.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        rope_theta = c.get("rope_theta", rope.get("rope_theta", 10000.0))
        sliding_window = c.get("sliding_window")
        if c.get("use_sliding_window") is False:
            sliding_window = None
        eos = c.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
        flags = TEXT_ARCHITECTURES[arch]
        return cls(
            architecture=arch,
            vocab_size=c["vocab_size"],
            hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"],
            num_layers=c["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=c.get("num_key_value_heads") or num_heads,
            head_dim=c.get("head_dim") or c["hidden_size"] // num_heads,
            rms_norm_eps=c.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            rope_scaling=rope_scaling,
            max_position_embeddings=c.get("max_position_embeddings", 4096),
            tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
            attention_bias=bool(c.get("attention_bias", flags.get("attention_bias", False))),
            mlp_bias=bool(c.get("mlp_bias", False)),
            qk_norm=flags.get("qk_norm", False),
            sliding_window=sliding_window,
            torch_dtype=c.get("dtype") or c.get("torch_dtype"),
            eos_token_ids=eos_ids,
            hidden_act=c.get("hidden_act", "silu"),
        )


def read_hf_config(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise FileNotFoundError(f"model directory {str(model_dir)!r} does not exist")
    if not path.is_file():
        raise FileNotFoundError(f"config.json is missing from model directory {str(model_dir)!r}")
    with open(path) as f:
        return json.load(f)
