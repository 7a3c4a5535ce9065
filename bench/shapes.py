"""Random checkpoints of real models' shapes, written to disk in HF format (speed does not depend on weights)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SHAPES = {
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, vocab_size=512, tie_word_embeddings=False),
    "tiny-draft": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=16, vocab_size=512, tie_word_embeddings=False),
}


def write_random_llama(path: str | Path, shape: str, *, dtype: torch.dtype = torch.bfloat16, device: str = "cpu",
                       seed: int = 0, **overrides) -> Path:
    """config.json, model.safetensors and a word-level tokenizer.json covering the whole vocabulary.
    `overrides` replace entries of the shape (e.g. tie_word_embeddings=False)."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    s = {**SHAPES[shape], **overrides}
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
              "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
              "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": str(dtype).removeprefix("torch."), **s}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    vocab = {f"t{i}": i for i in range(s["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t2"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                            "bos_token": "t0", "eos_token": "t1"}))
    gen = torch.Generator(device=device).manual_seed(seed)
    h, i, n, kv, d, v = (s["hidden_size"], s["intermediate_size"], s["num_attention_heads"],
                         s["num_key_value_heads"], s["head_dim"], s["vocab_size"])

    def rand(*shape_):
        return (torch.randn(*shape_, generator=gen, device=device, dtype=torch.float32) * 0.02).to(dtype)

    tensors = {"model.embed_tokens.weight": rand(v, h), "model.norm.weight": torch.ones(h, dtype=dtype, device=device)}
    if not s["tie_word_embeddings"]:
        tensors["lm_head.weight"] = rand(v, h)
    for layer in range(s["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        tensors.update({
            p + "input_layernorm.weight": torch.ones(h, dtype=dtype, device=device),
            p + "post_attention_layernorm.weight": torch.ones(h, dtype=dtype, device=device),
            p + "self_attn.q_proj.weight": rand(n * d, h), p + "self_attn.k_proj.weight": rand(kv * d, h),
            p + "self_attn.v_proj.weight": rand(kv * d, h), p + "self_attn.o_proj.weight": rand(h, n * d),
            p + "mlp.gate_proj.weight": rand(i, h), p + "mlp.up_proj.weight": rand(i, h),
            p + "mlp.down_proj.weight": rand(h, i)})
    save_file({k: t.contiguous().cpu() for k, t in tensors.items()}, str(path / "model.safetensors"),
              metadata={"format": "pt"})
    return path


def streamed_bytes_per_token(shape: str, dtype_bytes: int = 2) -> int:
    """Weight bytes one decode step must read: every layer, the final norm and the LM head (not the embedding table)."""
    s = SHAPES[shape]
    h, i, n, kv, d, v = (s["hidden_size"], s["intermediate_size"], s["num_attention_heads"],
                         s["num_key_value_heads"], s["head_dim"], s["vocab_size"])
    per_layer = h * (n * d) * 2 + h * (kv * d) * 2 + 3 * h * i + 2 * h
    return dtype_bytes * (s["num_hidden_layers"] * per_layer + v * h + h)
