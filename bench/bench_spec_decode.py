"""Speculative decoding speed: output tokens/s at batch 1, 8 and 64 with and without speculation,
in one run, with the acceptance length of every configuration; n-gram lookup and a draft model.

    python -m bench.bench_spec_decode --shape llama-3.1-8b --draft-shape llama-3.2-1b   # random weights
    python -m bench.bench_spec_decode --shape llama-3.2-1b --draft-shape llama-3.2-1b --draft-layers 2
    python -m bench.bench_spec_decode --target DIR --draft DIR                           # a trained pair
    python -m bench.bench_spec_decode --device cpu --tiny                                # a smoke run

Greedy decoding, ignore_eos, every request max_tokens long; tokens/s = output tokens / wall time of
one generate() call over the batch (after a warm-up of the same batch size). Without speculation is
an engine without it (as fast as the engine decodes otherwise); prefix caching is off.

Random weights (shape mode) accept drafts only by chance, so each method runs on two weight
states of the same checkpoints, both named in the output:
- "random": the weights as written. The prompts are copy-heavy (each walks a cycle of tokens four
  times), but a random target was not made to copy them: drafts are accepted only where its own
  greedy output happens to repeat (random models often loop; a random draft agrees by chance).
- "copying": the weights changed in place so that the model copies. Every layer's output
  projections (o_proj, down_proj) are zeroed, so the residual stream stays the token's embedding,
  and the LM head becomes the embedding table with its rows permuted by sigma, a permutation of
  disjoint cycles: the model predicts sigma(current token). Every layer still computes as before
  (zero weights cost the same), so speed is that of the shape. Each prompt walks one cycle of sigma,
  so the greedy continuation copies the prompt: n-gram lookup finds it one cycle back, and the
  draft (changed the same way, its own embedding permuted by the same sigma) predicts it too.
  Acceptance is real for this model and near 100%: the speed ceiling.
Both checkpoints are written with untied LM heads (a tied head costs the same to read).
With --target/--draft the weights are the trained ones and the tasks are text: "copy" (a
paragraph, then its first half again: a model continues by copying) and "continue" (its first
sentence). Imports no service packages.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from bench.shapes import write_random_llama
from llm_core import LLM, SamplingParams

WEIGHT_STATES = {
    "random": "random weights as written: not made to copy, so drafts are accepted only where this model's own "
              "greedy output happens to repeat (random models often loop); not a real task",
    "copying": "the same weights made to copy in place (layer outputs zeroed, LM head = embedding permuted by "
               "sigma): the greedy continuation walks the prompt's cycle again, acceptance real and near 100% "
               "(speed ceiling)",
    "trained": "the checkpoints' trained weights",
}

PARAGRAPHS = [
    "The river starts as snow on the northern ridge. In spring it runs fast and cold through the pine valley, "
    "turns the old mill wheel, and slows into a wide brown stream by the time it reaches the harbor town.",
    "To bake the bread, mix the flour with water and salt, knead the dough for ten minutes, and let it rise "
    "for two hours. Shape the loaf, let it rise again, then bake it until the crust is dark and hollow.",
    "The committee met on Tuesday to review the budget. It approved the new library roof, postponed the park "
    "lighting until autumn, and asked the treasurer to report on the bridge repairs at the next meeting.",
    "A streaming server reads media in chunks, decodes them off the event loop, runs the encoders, and feeds "
    "the embeddings with the text into the engine, which sends tokens back while the request still runs.",
    "Every morning the lighthouse keeper climbed the spiral stairs, cleaned the great lens, wound the clock, "
    "and wrote the weather in a leather book: the wind, the waves, and the ships that passed in the night.",
    "The experiment measured how fast the enzyme worked at five temperatures. Activity doubled from ten to "
    "thirty degrees, peaked near thirty seven, and fell sharply above forty five as the protein unfolded.",
    "She packed a map, a compass, two liters of water, a warm jacket and a small stove, checked the forecast "
    "one last time, and set off up the trail before sunrise to reach the pass by noon.",
    "In the first chapter the detective finds a torn ticket in the victim's coat. In the second she learns "
    "the train it belonged to never left the station, and in the third she meets the conductor who lied.",
]


@dataclass
class Row:
    method: str  # ngram | draft
    weights: str  # random | copying | trained
    task: str
    target: str
    draft: str | None
    batch: int
    num_tokens: int  # k
    off_tok_s: float
    on_tok_s: float
    speedup: float
    mean_acceptance_length: float  # tokens per verified step with drafts (accepted + 1)
    acceptance_rate: float  # accepted / proposed draft tokens
    identical_outputs: str  # greedy requests whose tokens equal those without speculation


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _release_memory() -> None:
    """After an engine went out of scope: collect it and give its GPU memory back for the next one."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Tasks
def cycles(vocab_size: int, num_cycles: int, length: int, seed: int = 0) -> list[list[int]]:
    """Disjoint cycles of token ids (ids below 10 are left out: bos, eos, ...)."""
    tokens = random.Random(seed).sample(range(10, vocab_size), num_cycles * length)
    return [tokens[i * length:(i + 1) * length] for i in range(num_cycles)]


def cycle_prompts(token_cycles: list[list[int]]) -> list[list[int]]:
    """Each prompt walks its cycle four times (the continuation of a copying model goes on walking)."""
    return [cycle * 4 for cycle in token_cycles]


def sigma_inverse(vocab_size: int, token_cycles: list[list[int]]) -> torch.Tensor:
    sigma = torch.arange(vocab_size)
    for cycle in token_cycles:
        sigma[torch.tensor(cycle)] = torch.tensor(cycle[1:] + cycle[:1])
    return torch.argsort(sigma)


@torch.inference_mode()
def make_copying(model, sigma_inv: torch.Tensor) -> None:
    """In place: zero every layer's output projections and make the LM head predict sigma(token)."""
    for name, param in model.named_parameters():
        if {"o_proj", "down_proj"} & set(name.split(".")):
            param.zero_()
    if model.lm_head is None:
        raise ValueError("the copying construction needs an untied LM head")
    embed = model.embed_tokens.weight
    model.lm_head.weight.copy_(embed[sigma_inv.to(embed.device)])


def text_prompts(task: str, batch: int) -> list[str]:
    prompts = []
    for i in range(batch):
        paragraph = PARAGRAPHS[i % len(PARAGRAPHS)]
        tag = f"Note {i + 1}. "
        if task == "copy":
            prompts.append(f"{tag}{paragraph}\n\n{tag}{paragraph[:len(paragraph) // 2]}")
        else:
            prompts.append(f"{tag}{paragraph.split('. ')[0]}.")
    return prompts


# Measurement
def generate(llm: LLM, prompts, max_tokens: int, repeats: int = 1):
    """Outputs and tokens/s of the fastest of `repeats` runs (after a warm-up at this batch size)."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    # Warm-up long enough for every kernel variant a step meets (Triton compiles on first use)
    llm.generate(prompts, SamplingParams(max_tokens=min(max_tokens, 32), temperature=0.0, ignore_eos=True))
    best = 0.0
    for _ in range(repeats):
        _sync()
        start = time.perf_counter()
        outputs = llm.generate(prompts, params)
        _sync()
        best = max(best, sum(len(o.token_ids) for o in outputs) / (time.perf_counter() - start))
    return outputs, best


def measure(llm: LLM, method: str, weights: str, task: str, prompts, baseline, args,
            names: tuple[str, str | None]) -> list[Row]:
    rows = []
    for batch in args.batch_sizes:
        off_outputs, off_tok_s = baseline[batch]
        outputs, on_tok_s = generate(llm, prompts[:batch], args.max_tokens, args.repeats)
        num_drafts = sum(o.num_drafts for o in outputs)
        proposed = sum(o.num_draft_tokens for o in outputs)
        accepted = sum(o.num_accepted_draft_tokens for o in outputs)
        same = sum(o.token_ids == w.token_ids for o, w in zip(outputs, off_outputs))
        rows.append(Row(method, weights, task, names[0], names[1] if method == "draft" else None, batch,
                        args.num_tokens, off_tok_s, on_tok_s, on_tok_s / off_tok_s,
                        (accepted + num_drafts) / num_drafts if num_drafts else 0.0,
                        accepted / proposed if proposed else 0.0, f"{same}/{batch}"))
        print(_format(rows[-1]), flush=True)
    return rows


def _format(row: Row) -> str:
    return (f"{row.method:<6} {row.weights:<8} {row.task:<11} {row.batch:>5} {row.off_tok_s:>10.0f} "
            f"{row.on_tok_s:>10.0f} {row.speedup:>7.2f}x {row.mean_acceptance_length:>7.2f} "
            f"{row.acceptance_rate:>7.0%} {row.identical_outputs:>9}")


# Scenarios: (weights, task, prompts, change weights in place or None)
def scenarios(args, vocab_size: int):
    if args.target:
        return [("trained", task, text_prompts(task, max(args.batch_sizes)), None) for task in ("copy", "continue")]
    length = min(31, (vocab_size - 10) // max(args.batch_sizes))
    token_cycles = cycles(vocab_size, max(args.batch_sizes), length)
    prompts = cycle_prompts(token_cycles)
    return [("random", "cycle-copy", prompts, None),
            ("copying", "cycle-copy", prompts, sigma_inverse(vocab_size, token_cycles))]


def engine(target: str, args, speculative: dict | None) -> LLM:
    return LLM(target, device=args.device, dtype=args.dtype, max_model_len=args.max_model_len,
               max_num_seqs=max(args.batch_sizes), enable_prefix_caching=False,
               gpu_memory_utilization=args.gpu_memory_utilization, speculative=speculative)


def run(args, target: str, draft: str | None, names: tuple[str, str | None]) -> list[Row]:
    """The baselines on an engine without speculation (so it decodes as fast as it can without:
    multi-step decoding and all), then n-gram and the draft model on engines of their own. Each
    engine lives in its own call, so its memory is free for the next."""
    plans, baselines = run_baselines(args, target)
    _release_memory()
    print(f"{'method':<6} {'weights':<8} {'task':<11} {'batch':>5} {'off tok/s':>10} {'on tok/s':>10} "
          f"{'speedup':>8} {'acc.len':>7} {'acc.%':>7} {'same out':>9}")
    methods = {"ngram": {"method": "ngram", "num_tokens": args.num_tokens, "prompt_lookup_max": 3}}
    if draft is not None:
        methods["draft"] = {"method": "draft", "model": draft, "num_tokens": args.num_tokens}
    rows = []
    for method, speculative in methods.items():
        rows += run_speculative(args, target, method, speculative, plans, baselines, names)
        _release_memory()
    return rows


def run_baselines(args, target: str):
    llm = engine(target, args, None)
    plans = scenarios(args, llm.engine.arch.vocab_size)
    baselines = {}
    for weights, task, prompts, sigma_inv in plans:
        if sigma_inv is not None:
            make_copying(llm.engine.runner.model, sigma_inv)
        baselines[weights, task] = {b: generate(llm, prompts[:b], args.max_tokens, args.repeats)
                                    for b in args.batch_sizes}
    llm.engine.shutdown()
    return plans, baselines


def run_speculative(args, target: str, method: str, speculative: dict, plans, baselines, names) -> list[Row]:
    llm = engine(target, args, speculative)
    rows = []
    for weights, task, prompts, sigma_inv in plans:
        if sigma_inv is not None:
            make_copying(llm.engine.runner.model, sigma_inv)
            if method == "draft":
                make_copying(llm.engine.speculator.draft.runner.model, sigma_inv)
        rows += measure(llm, method, weights, task, prompts, baselines[weights, task], args, names)
    llm.engine.shutdown()
    return rows


def device_tag(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    name = torch.cuda.get_device_name(device)
    return next((tag.lower() for tag in ("H100", "H200", "A100", "L40S") if tag in name), "cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="llama-3.1-8b", help="target shape (random weights)")
    parser.add_argument("--draft-shape", default="llama-3.2-1b", help="draft shape (random weights)")
    parser.add_argument("--draft-layers", type=int, help="override the draft shape's number of layers")
    parser.add_argument("--target", help="a trained target checkpoint directory (instead of --shape)")
    parser.add_argument("--draft", help="its draft checkpoint directory (without it: n-gram only)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and lengths (a CPU smoke run)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", default="1,8,64")
    parser.add_argument("--num-tokens", type=int, default=4, help="k, draft tokens per step")
    parser.add_argument("--max-tokens", type=int, default=128, help="output tokens per request")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per configuration (the fastest counts; one run of 128 tokens is "
                             "dominated by one-time costs such as Triton compiles of variants first met in it)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--out", help="JSON path (default bench/results/spec_decode_<device>.json)")
    parser.add_argument("--demo", metavar="DIR", help="the demo models (models/demo): their draft against each "
                        "target on the trained media tasks (bench/spec_decode_demo.py) instead")
    args = parser.parse_args()
    if args.demo:
        from bench.spec_decode_demo import run_demo
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        rows = run_demo(args.demo, device=args.device, num_tokens=args.num_tokens, batch_sizes=batch_sizes)
        out = Path(args.out or Path(__file__).parent / "results" / f"spec_decode_demo_{args.device}.json")
        out.write_text(json.dumps({"device": args.device, "torch": torch.__version__, "models": args.demo,
                                   "rows": rows}, indent=2))
        return
    if args.draft and not args.target:
        parser.error("--draft goes with --target")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.tiny:
        args.shape, args.draft_shape, args.max_tokens, args.max_model_len = "tiny", "tiny-draft", 32, 256
    device = torch.device(args.device)
    args.dtype = "auto" if args.target else ("bfloat16" if device.type == "cuda" else "float32")
    if args.target:
        target, draft, names = args.target, args.draft, (args.target, args.draft)
    else:
        root = Path(tempfile.mkdtemp())
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        start = time.perf_counter()
        target = str(write_random_llama(root / "target", args.shape, dtype=dtype, device=args.device,
                                        tie_word_embeddings=False))
        layers = {"num_hidden_layers": args.draft_layers} if args.draft_layers else {}
        draft = str(write_random_llama(root / "draft", args.draft_shape, dtype=dtype, device=args.device, seed=1,
                                       tie_word_embeddings=False, **layers))
        draft_name = args.draft_shape + (f" with {args.draft_layers} layers" if args.draft_layers else "")
        names = (f"random {args.shape}", f"random {draft_name}")
        print(f"wrote {names[0]} and {names[1]} checkpoints (untied LM heads) in {time.perf_counter() - start:.0f}s")
    rows = run(args, target, draft, names)
    states = {row.weights: WEIGHT_STATES[row.weights] for row in rows}
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "target": names[0], "draft": names[1], "num_tokens": args.num_tokens,
              "max_tokens": args.max_tokens, "weights": states, "rows": [asdict(r) for r in rows]}
    out = Path(args.out or Path(__file__).parent / "results" / f"spec_decode_{device_tag(device)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"target {names[0]}, draft {names[1]}, k={args.num_tokens}, {args.max_tokens} output tokens per request, "
          f"greedy, on {result['device']}")
    for state, meaning in states.items():
        print(f"  {state}: {meaning}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
