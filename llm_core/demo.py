"""Offline generation demo: `python -m llm_core.demo [--model DIR]` (what `make serve` runs until
the gateway lands).

Without --model it builds a tiny random Llama checkpoint (config.json, model.safetensors,
tokenizer.json with a chat template) under .cache/demo-model, so the engine runs end to end
with nothing downloaded. Random weights produce gibberish; the point is the machinery:
continuous batching, prefix caching, streaming deltas.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CORPUS = ["The quick brown fox jumps over the lazy dog.", "A red circle sits left of a blue square.",
           '{"shape": "circle", "colour": "red", "count": 3}', "Streaming tokens over one WebSocket."] * 50


def build_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    import torch
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok.train_from_iterator(_CORPUS, trainers.BpeTrainer(vocab_size=384, special_tokens=specials,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "bos_token": None, "chat_template": CHAT_TEMPLATE}))
    hidden, inter, layers, heads, kv_heads, vocab = 64, 128, 2, 4, 2, 384
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
              "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": True, "hidden_act": "silu",
              "eos_token_id": tok.token_to_id("<|im_end|>"), "torch_dtype": "float32"}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    gen = torch.Generator().manual_seed(seed)
    head_dim = hidden // heads

    def rand(*shape):
        return torch.randn(*shape, generator=gen) * 0.08

    tensors = {"model.embed_tokens.weight": rand(vocab, hidden), "model.norm.weight": torch.ones(hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors.update({
            p + "input_layernorm.weight": torch.ones(hidden), p + "post_attention_layernorm.weight": torch.ones(hidden),
            p + "self_attn.q_proj.weight": rand(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": rand(inter, hidden), p + "mlp.up_proj.weight": rand(inter, hidden),
            p + "mlp.down_proj.weight": rand(hidden, inter)})
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_core.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint directory (default: a tiny random Llama built on first use)")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--build-only", metavar="DIR", help="only write the tiny checkpoint to DIR (if missing) and exit")
    args = parser.parse_args(argv)
    if args.build_only:
        target = Path(args.build_only)
        if not (target / "config.json").is_file():
            build_tiny_checkpoint(target)
        print(target)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = args.model or str(build_tiny_checkpoint(Path(".cache/demo-model")))

    from llm_core import LLM, SamplingParams

    llm = LLM(model, device=args.device)
    prompts = [{"messages": [{"role": "user", "content": q}]} for q in
               ("What shape is red?", "Describe the picture.", "Reply in JSON.", "What shape is red?")]
    start = time.perf_counter()
    outputs = llm.generate(prompts, SamplingParams(max_tokens=args.max_tokens, temperature=0.8, seed=1))
    elapsed = time.perf_counter() - start
    for prompt, out in zip(prompts, outputs):
        print(f"> {prompt['messages'][0]['content']}\n  {out.text!r} [{out.finish_reason}, "
              f"{len(out.token_ids)} tokens, {out.num_cached_tokens} cached]")
    total = sum(len(o.token_ids) for o in outputs)
    print(f"{total} tokens in {elapsed:.2f}s ({total / elapsed:.0f} tok/s) on {llm.engine.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
