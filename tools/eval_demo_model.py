"""Evaluate the demo checkpoints through our own engine on freshly generated media.

    .venv/bin/python -m tools.eval_demo_model --model models/demo --samples 20 --seed 1000

For every kind of item and task, `samples` fresh items get the task's questions in turn; the
answer (greedy unless --temperature) must equal the templated one exactly. Prints and returns the
accuracy per kind and task.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from tools import demo_data, demo_prompts


def _part(sample: demo_data.Sample, index: int) -> dict:
    if sample.kind == "image":
        return {"type": "image", "image": sample.media}
    if sample.kind == "video":
        return {"type": "video", "video": demo_data.video_bytes(sample, "webm" if index % 2 else "mp4")}
    return {"type": "audio", "audio": (sample.media, demo_data.SAMPLE_RATE)}


def _make(kind: str, rng: np.random.Generator) -> demo_data.Sample:
    return {"image": demo_data.make_image, "video": demo_data.make_video, "audio": demo_data.make_audio}[kind](rng)


def evaluate(model_root: str | Path, samples: int = 20, seed: int = 1000, temperature: float = 0.0) -> dict:
    from llm_core import LLM, SamplingParams

    rng = np.random.default_rng(seed)
    params = SamplingParams(max_tokens=48, temperature=temperature, seed=seed)
    results: dict = {}
    for name, kinds in (("vision", ("image", "video")), ("audio", ("audio",))):
        llm = LLM(str(Path(model_root) / name), device="cpu", dtype="float32", max_model_len=512)
        for kind in kinds:
            prompts, expected = [], []
            for task, questions in demo_prompts.QUESTIONS[kind].items():
                for index in range(samples):
                    sample = _make(kind, rng)
                    parts = [_part(sample, index), {"type": "text", "text": questions[index % len(questions)]}]
                    prompts.append({"messages": [{"role": "user", "content": parts}]})
                    expected.append((task, demo_prompts.answer(kind, task, sample.meta)))
            outputs = llm.generate(prompts, params)
            for (task, answer), output in zip(expected, outputs):
                key = f"{kind}/{task}"
                hits, total = results.get(key, (0, 0))
                results[key] = (hits + (output.text == answer), total + 1)
                if output.text != answer and total - hits < 3:  # show a few mistakes of each task
                    print(f"  {key}: expected {answer!r}, got {output.text!r}")
        del llm
    return {key: round(hits / total, 3) for key, (hits, total) in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.eval_demo_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/demo")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--temperature", type=float, default=0.0)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate(args.model, args.samples, args.seed, args.temperature), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
