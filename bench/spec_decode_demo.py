"""Speculative decoding on the shipped demo models (issue 10): the draft against each target on
the tasks they were trained for, with and without speculation, in one run.

    python -m bench.bench_spec_decode --demo models/demo [--device cpu] [--num-tokens 4]

Fresh synthetic media (tools/demo_data.py) with the trained questions; greedy; the same requests
with the draft (k = --num-tokens), with n-gram lookup, and without speculation. Reports output
tokens/s, mean acceptance length (accepted drafts + 1 per verification step) and whether the
outputs are identical. Prints a table; the caller writes the JSON.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from llm_core import LLM, SamplingParams

TARGETS = {"vision": ("image", "video"), "audio": ("audio",)}


def demo_prompts(kinds: tuple[str, ...], num_per_kind: int, seed: int) -> list[dict]:
    from tools import demo_prompts as questions
    from tools.eval_demo_model import _make, _part

    rng = np.random.default_rng(seed)
    prompts = []
    for kind in kinds:
        tasks = list(questions.QUESTIONS[kind].items())
        for index in range(num_per_kind):
            sample = _make(kind, rng)
            task_questions = tasks[index % len(tasks)][1]
            parts = [_part(sample, index), {"type": "text", "text": task_questions[index % len(task_questions)]}]
            prompts.append({"messages": [{"role": "user", "content": parts}]})
    return prompts


def _run(model_dir: Path, prompts, device: str, batch: int, speculative: dict | None):
    llm = LLM(str(model_dir), device=device, dtype="float32", max_model_len=512, max_num_seqs=max(batch, 1),
              speculative=speculative)
    params = SamplingParams(max_tokens=48, temperature=0.0)
    llm.generate(prompts[:batch], params)  # warm-up (and the embedding cache of these prompts)
    start = time.perf_counter()
    outputs = []
    for i in range(0, len(prompts), batch):
        outputs += llm.generate(prompts[i:i + batch], params)
    elapsed = time.perf_counter() - start
    stats = llm.engine.stats()
    return outputs, sum(len(o.token_ids) for o in outputs) / elapsed, stats.get("spec_mean_acceptance_length", 0.0)


def run_demo(root: str, *, device: str, num_tokens: int, batch_sizes: list[int], num_per_kind: int = 16,
             seed: int = 7) -> list[dict]:
    root_dir = Path(root)
    rows = []
    for target, kinds in TARGETS.items():
        prompts = demo_prompts(kinds, num_per_kind, seed)
        for batch in batch_sizes:
            base, base_tok_s, _ = _run(root_dir / target, prompts, device, batch, None)
            for method, spec in (("draft", {"method": "draft", "model": str(root_dir / "draft"), "num_tokens": num_tokens}),
                                 ("ngram", {"method": "ngram", "num_tokens": num_tokens})):
                outs, tok_s, acceptance = _run(root_dir / target, prompts, device, batch, spec)
                rows.append({"target": target, "tasks": "+".join(kinds), "method": method, "batch": batch,
                             "k": num_tokens, "off_tok_s": base_tok_s, "on_tok_s": tok_s, "speedup": tok_s / base_tok_s,
                             "mean_acceptance_length": acceptance,
                             "same_outputs": sum(a.token_ids == b.token_ids for a, b in zip(outs, base)),
                             "num_requests": len(prompts)})
    print(f"\nspeculative decoding on the demo models ({root}), greedy, k={num_tokens}, on {device}")
    print(f"{'target':<7} {'tasks':<12} {'method':<6} {'batch':>5} {'off tok/s':>10} {'on tok/s':>9} {'speedup':>8} "
          f"{'acc.len':>8} {'same out':>9}")
    for r in rows:
        print(f"{r['target']:<7} {r['tasks']:<12} {r['method']:<6} {r['batch']:>5} {r['off_tok_s']:>10.0f} "
              f"{r['on_tok_s']:>9.0f} {r['speedup']:>7.2f}x {r['mean_acceptance_length']:>8.2f} "
              f"{r['same_outputs']:>4}/{r['num_requests']}")
    return rows
