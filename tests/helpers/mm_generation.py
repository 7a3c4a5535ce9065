"""Running tiny multimodal checkpoints in our engine and in transformers on the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llm_core import LLM
from tests.helpers.checkpoints import hf_cache, hf_cache_kwargs

NUM_LOGPROBS = 20


def make_mm_llm(path: str | Path, **options: Any) -> LLM:
    options.setdefault("max_model_len", 512)
    return LLM(str(path), device="cpu", dtype="float32", attention_backend="torch", **options)


def hf_prompt_ids(path: str | Path, messages: list[dict], run_lengths: list[int], placeholder_id: int) -> list[int]:
    """The prompt as transformers' tokenizer renders it (media parts without their data), each
    media marker token expanded to its run of `placeholder_id`, as the HF processors do."""
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    bare = [{**m, "content": [{"type": p["type"]} if p["type"] != "text" else p for p in m["content"]]}
            if isinstance(m["content"], list) else m for m in messages]
    text = tokenizer.apply_chat_template(bare, add_generation_prompt=True, tokenize=False)
    markers = {tokenizer.convert_tokens_to_ids(t) for t in ("<image>", "<audio>", "<video>")}
    ids, runs = [], iter(run_lengths)
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        ids.extend([placeholder_id] * next(runs) if token in markers else [token])
    assert next(runs, None) is None, "more media runs than markers"
    return ids


def hf_greedy(model, input_ids: list[int], num_new: int, **media: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens and the log-softmax rows [num_new, V] they were chosen from; the media
    inputs (pixel_values, input_features, ...) go with the first forward only."""
    tokens, rows = [], []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([input_ids]), use_cache=True, **media)
        for _ in range(num_new):
            logits = out.logits[0, -1].float()
            rows.append(torch.log_softmax(logits, -1))
            tokens.append(int(logits.argmax()))
            out = model(input_ids=torch.tensor([[tokens[-1]]]), use_cache=True,
                        **hf_cache_kwargs(model, hf_cache(out)))
    return tokens, torch.stack(rows)


def max_logprob_diff(ours: list[dict[int, float]], theirs: torch.Tensor) -> float:
    """Largest |ours - theirs| over every token id that our logprobs report, at every step."""
    assert len(ours) == len(theirs)
    return max(abs(value - theirs[step, token].item()) for step, row in enumerate(ours) for token, value in row.items())
