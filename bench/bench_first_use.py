"""First-use stalls: how long the first step of a new kind of batch takes against the same batch
again, and which Triton kernels compiled for it (a compile holds up every request in the engine).

    python -m bench.bench_first_use --shape llama-3.2-1b --out first_use.json

The engine starts on a fresh Triton cache directory (so nothing compiled by an earlier process is
reused), generates once to warm up, then runs batches whose prompt lengths and counts give the
attention kernels new query lengths, sequence counts and block-table widths. For each: wall time
of the first generate and of the same shapes again, and the kernels compiled in between (counted
in the cache directory). Prints a table and writes JSON. Imports no service packages.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

CASES = [  # name, sequences, prompt tokens
    ("1 seq x 5 tokens (1 block)", 1, 5),
    ("1 seq x 250 tokens (16 blocks)", 1, 250),
    ("3 seqs x 300 tokens", 3, 300),
    ("16 seqs x 100 tokens", 16, 100),
    ("2 seqs x 500 tokens (32 blocks)", 2, 500),
    ("5 seqs x 700 tokens", 5, 700),
]


def compiled_kernels(cache_dir: str) -> collections.Counter:
    """Kernels in a Triton cache directory, by name (one metadata file per compiled variant)."""
    return collections.Counter(p.stem for p in Path(cache_dir).rglob("*.json") if not p.name.startswith("__grp__"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--out", default="first_use.json")
    args = parser.parse_args()
    cache_dir = tempfile.mkdtemp()
    os.environ["TRITON_CACHE_DIR"] = cache_dir  # before Triton compiles anything in this process
    import torch

    from bench.shapes import write_random_llama
    from llm_core import LLM, SamplingParams

    def sync_time(fn) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    model_dir = write_random_llama(Path(tempfile.mkdtemp()) / args.shape, args.shape, device="cuda")
    start = time.perf_counter()
    llm = LLM(str(model_dir), device="cuda", dtype="bfloat16", max_model_len=2048, max_num_seqs=64)
    start_s = time.perf_counter() - start
    params = SamplingParams(max_tokens=4, ignore_eos=True)
    llm.generate([[5] * 64] * 8, params)
    after_warm_up = compiled_kernels(cache_dir)
    seen = after_warm_up
    rows = []
    for name, num_seqs, length in CASES:
        first = sync_time(lambda: llm.generate([[7 + i] * length for i in range(num_seqs)], params))
        again = sync_time(lambda: llm.generate([[9 + i] * length for i in range(num_seqs)], params))
        now = compiled_kernels(cache_dir)
        rows.append({"case": name, "first_ms": first * 1e3, "again_ms": again * 1e3,
                     "compiled": {k: v - seen.get(k, 0) for k, v in now.items() if v != seen.get(k, 0)}})
        seen = now
    result = {"shape": args.shape, "device": torch.cuda.get_device_name(), "engine_start_s": start_s,
              "kernels_after_warm_up": dict(after_warm_up), "cases": rows}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{args.shape} on {result['device']}: engine start {start_s:.1f} s (fresh Triton cache)")
    print(f"{'batch':34} {'first ms':>9} {'again ms':>9}  compiled on first use")
    for r in rows:
        print(f"{r['case']:34} {r['first_ms']:>9.1f} {r['again_ms']:>9.1f}  {r['compiled'] or '-'}")


if __name__ == "__main__":
    main()
