"""End to end: our engine generating with and without JSON-schema constraints, in one run.

A random checkpoint of a Qwen2.5 shape with Qwen's real tokenizer (bench/qwen_vocab.py) and
logits width (151,936). Random weights wander through the grammar (any allowed token is about as
likely as any other), which exercises the masks at every step; outputs end when the grammar is
complete (EOS is then the only choice left) or at max_tokens. To compare like with like, each
constrained run is followed by its unconstrained replay: the same prompts with max_tokens set to
each constrained output's length and ignore_eos, so both decode exactly the same number of tokens
per request and the difference is the cost of the constraints (mask fill, bitmask copy and
application, matcher advance). Schemas are compiled by a warm-up first (compile cost is measured
separately, per schema); the first constrained run still computes most masks on first use, the
second finds those memoized.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch

from llm_core import LLM, SamplingParams
from llm_core.structured import compile_json_schema

from bench.qwen_vocab import ENDOFTEXT_ID, LOGITS_WIDTH, write_tokenizer_files

QWEN_SHAPES = {
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, head_dim=128, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, head_dim=128, tie_word_embeddings=False),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, tie_word_embeddings=False),
}


def write_random_qwen2(path: Path, shape: str, tokenizer, *, dtype: torch.dtype, device: str, seed: int = 0) -> Path:
    """config.json, model.safetensors (random weights, q/k/v biases) and the Qwen tokenizer files."""
    import json

    from safetensors.torch import save_file

    s = QWEN_SHAPES[shape]
    path.mkdir(parents=True, exist_ok=True)
    config = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
              "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
              "use_sliding_window": False, "vocab_size": LOGITS_WIDTH, "bos_token_id": ENDOFTEXT_ID,
              "eos_token_id": ENDOFTEXT_ID, "torch_dtype": str(dtype).removeprefix("torch."), **s}
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer_files(tokenizer, path)
    gen = torch.Generator(device=device).manual_seed(seed)
    h, i, n, kv, d = (s["hidden_size"], s["intermediate_size"], s["num_attention_heads"],
                      s["num_key_value_heads"], s["head_dim"])

    def rand(*shape_):
        return (torch.randn(*shape_, generator=gen, device=device, dtype=torch.float32) * 0.02).to(dtype).cpu()

    def ones(size):
        return torch.ones(size, dtype=dtype)

    tensors = {"model.embed_tokens.weight": rand(LOGITS_WIDTH, h), "model.norm.weight": ones(h)}
    if not s["tie_word_embeddings"]:
        tensors["lm_head.weight"] = rand(LOGITS_WIDTH, h)
    for layer in range(s["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        tensors.update({
            p + "input_layernorm.weight": ones(h), p + "post_attention_layernorm.weight": ones(h),
            p + "self_attn.q_proj.weight": rand(n * d, h), p + "self_attn.q_proj.bias": rand(n * d),
            p + "self_attn.k_proj.weight": rand(kv * d, h), p + "self_attn.k_proj.bias": rand(kv * d),
            p + "self_attn.v_proj.weight": rand(kv * d, h), p + "self_attn.v_proj.bias": rand(kv * d),
            p + "self_attn.o_proj.weight": rand(h, n * d),
            p + "mlp.gate_proj.weight": rand(i, h), p + "mlp.up_proj.weight": rand(i, h),
            p + "mlp.down_proj.weight": rand(h, i)})
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed_generate(llm: LLM, prompts, params) -> tuple[float, list]:
    _sync()
    start = time.perf_counter()
    outputs = llm.generate(prompts, params)
    _sync()
    return time.perf_counter() - start, outputs


def _constrained_and_replay(llm: LLM, prompts, constrained) -> tuple[dict, list]:
    """One constrained run and its unconstrained replay (same prompts, same output lengths)."""
    constrained_s, outputs = _timed_generate(llm, prompts, constrained)
    errors = [o.error for o in outputs if o.error]
    if errors:
        raise RuntimeError(f"{len(errors)} constrained requests failed, e.g.: {errors[0]}")
    lengths = [len(o.token_ids) for o in outputs]
    replay = [SamplingParams(max_tokens=n, temperature=1.0, ignore_eos=True) for n in lengths]
    plain_s, plain = _timed_generate(llm, prompts, replay)
    assert [len(o.token_ids) for o in plain] == lengths, "the replay must decode the same number of tokens"
    total = sum(lengths)
    return {"output_tokens": total, "mean_output_tokens": total / len(prompts),
            "constrained_s": constrained_s, "unconstrained_s": plain_s,
            "constrained_tok_s": total / constrained_s, "unconstrained_tok_s": total / plain_s,
            "overhead": constrained_s / plain_s - 1}, outputs


def run_e2e(model_dir: Path, schemas: list[tuple[str, object, dict]], token_bytes: tuple, *, device: str,
            num_requests: int, prompt_len: int, max_tokens: int, seed: int = 0) -> dict:
    """Two constrained runs, each with its unconstrained replay: "first_use" right after the schemas
    compiled (most masks are computed on first use, on the step loop) and "warm" (the same schemas
    again: the masks the first run reached are memoized). Then what the constrained outputs were."""
    dtype = "bfloat16" if device == "cuda" else "float32"
    llm = LLM(str(model_dir), device=device, dtype=dtype, seed=seed, max_num_seqs=num_requests,
              max_model_len=prompt_len + max_tokens + 16, max_num_batched_tokens=max(8192, 4 * prompt_len))
    rng = random.Random(seed)
    prompts = [[rng.randrange(256, ENDOFTEXT_ID) for _ in range(prompt_len)] for _ in range(num_requests)]
    formats = [{"type": "json_schema", "json_schema": {"name": name, "schema": schema}} for name, schema, _ in schemas]
    constrained = [SamplingParams(max_tokens=max_tokens, temperature=1.0, response_format=formats[k % len(formats)])
                   for k in range(num_requests)]
    warmup_s, _ = _timed_generate(llm, [prompts[k % num_requests] for k in range(len(formats))],  # compiles every schema
                                  [SamplingParams(max_tokens=8, temperature=1.0, response_format=f) for f in formats])
    llm.generate(prompts[:8], SamplingParams(max_tokens=8, temperature=1.0, ignore_eos=True))
    first_use, outputs = _constrained_and_replay(llm, prompts, constrained)
    warm, more = _constrained_and_replay(llm, prompts, constrained)
    del llm
    if device == "cuda":
        torch.cuda.empty_cache()
    finish, valid, invalid_examples = {}, 0, []
    for k, out in enumerate(outputs + more):
        finish[out.finish_reason] = finish.get(out.finish_reason, 0) + 1
        if out.finish_reason == "stop":
            name, schema, _ = schemas[k % num_requests % len(schemas)]
            text = b"".join(token_bytes[t] or b"" for t in out.token_ids if t != ENDOFTEXT_ID)
            # The requests carried the schema alone (response_format has no grammar options), so the
            # check uses the defaults too, not the corpus case's options (e.g. a tighter max_whitespace).
            if compile_json_schema(schema).matches(text):
                valid += 1
            elif len(invalid_examples) < 3:
                invalid_examples.append({"schema": name, "num_tokens": len(out.token_ids),
                                         "last_token_ids": list(out.token_ids[-3:]), "text": repr(text[-400:])})
    return {"num_requests": num_requests, "prompt_len": prompt_len, "max_tokens": max_tokens,
            "schemas": [name for name, _, _ in schemas], "warmup_s": warmup_s, "first_use": first_use, "warm": warm,
            "finish_reasons": finish, "stopped_outputs_valid": valid, "stopped_outputs": finish.get("stop", 0),
            "invalid_examples": invalid_examples}
