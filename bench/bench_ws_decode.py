"""The warp-specialized decode kernel (llm_core/layers/kernels/ws_decode.py) against the persistent
decode kernel it would replace, on one model shape's decoder layers.

    python -m bench.bench_ws_decode --out ws_decode.json

Builds the layers as bench.profile_persistent_decode does (random bf16 weights, one sequence of
--seq-len keys), checks the warp-specialized kernel against the persistent one over 1 layer (the
step's k and v must be equal, h within 2e-3 relative, with the persistent kernel's 64-key attention
tiles so that the splits and the rounding of p agree) and reports the difference over every layer,
then times both (median of 5 x 20 CUDA-graph replays; the persistent kernel before and after the
others) for each configuration (ring slots, attention tile, when the first attention tile loads, registers;
--rounds alternates them) and takes each configuration's timeline (TIMING_POINTS, us since the layer began:
first / median / last program, medians over the middle layers). Prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.bench_throughput import copy_bandwidth
from bench.profile_persistent_decode import build, graph_us, timeline_points
from llm_core.layers.kernels import persistent_decode as pd
from llm_core.layers.kernels import ws_decode as wd


def cache_rows(layers: pd.DecodeLayers, slot: int) -> list[torch.Tensor]:
    return [torch.stack([t[name].flatten(0, 1)[slot].clone() for name in ("k_cache", "v_cache")])
            for t in layers.tensors]


def agreement(layers: pd.DecodeLayers, step: dict, h0: torch.Tensor, num_layers: int, **options) -> dict:
    """Relative differences of h and of the step's k/v between the two kernels over the first layers."""
    sub = pd.DecodeLayers(layers.tensors[:num_layers], layers.num_heads)
    slot = int(step["slot_mapping"].item())
    h_ws = h0.clone()
    wd.ws_decode(h_ws, sub, **step, **options)
    kv_ws = cache_rows(sub, slot)
    h_pd = h0.clone()
    pd.persistent_decode(h_pd, sub, **step)
    kv_pd = cache_rows(sub, slot)

    def rel(a, b):
        return ((a.float() - b.float()).norm() / b.float().norm()).item()

    return {"h": rel(h_ws, h_pd), "kv": max(rel(a, b) for a, b in zip(kv_ws, kv_pd))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--seq-len", type=int, default=300)
    parser.add_argument("--configs", nargs="+", default=["6,32,3", "6,32,2", "6,32,0", "5,32,3"],
                        help="ring slots,attention tile,first attention tile (0: loaded after barrier A, 1: during "
                             "its wait, 2: at the layer's beginning, 3: then as vectors, converted during barrier A's "
                             "wait)[,consumer registers (maxnreg)]")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every configuration this many times, alternating (each row: the median)")
    parser.add_argument("--out", default="ws_decode.json")
    args = parser.parse_args()
    layers, step, h0, layer_bytes = build(args.shape, args.seq_len)
    bandwidth = copy_bandwidth(torch.device("cuda"))
    floor_us = layer_bytes * layers.num_layers / bandwidth * 1e6
    configs = []
    for spec in args.configs:
        given = list(map(int, spec.split(",")))
        slots, tile, prefetch, maxnreg = given + [wd.MAX_SLOTS, wd.ATTENTION_TILE, wd.PREFETCH_KV,
                                                  wd.MAXNREG][len(given):]
        configs.append((spec, dict(num_slots=slots, tile_n=tile, prefetch_kv=prefetch, maxnreg=maxnreg)))
    # The persistent kernel's attention tiles (64 keys) split the keys alike, so p rounds alike.
    same_splits = dict(configs[0][1], tile_n=pd.ATTENTION_TILE_N)
    one = agreement(layers, step, h0, 1, **same_splits)
    if one["kv"] != 0.0 or not one["h"] < 2e-3:
        raise SystemExit(f"one layer: the kernels differ (h {one['h']:.2e}, k/v {one['kv']:.2e})")
    every = agreement(layers, step, h0, layers.num_layers, **same_splits)
    workspace = pd.DecodeWorkspace(layers.num_heads, layers.head_dim, layers.intermediate,
                                   pd.attention_splits(layers.num_kv_heads,
                                                       torch.cuda.get_device_properties(0).multi_processor_count),
                                   h0.dtype, h0.device)
    # Every configuration against the first over every layer (the same arithmetic where the attention's
    # tiles agree; else the rounding differences grow layer by layer, as against the persistent kernel).
    results = {}
    for spec, options in configs:
        out_h = h0.clone()
        wd.ws_decode(out_h, layers, **step, workspace=workspace, **options)
        results[spec] = out_h
    first = results[configs[0][0]].float()
    vs_first = {spec: ((r.float() - first).norm() / first.norm()).item() for spec, r in results.items()}
    for spec, options in configs:
        if options["tile_n"] == configs[0][1]["tile_n"] and vs_first[spec] > 1e-3:
            raise SystemExit(f"{spec}: h differs from {configs[0][0]}'s by {vs_first[spec]:.2e} (relative)")
    h = h0.clone()
    rows = [{"kernel": "persistent_decode", "us": graph_us(lambda: pd.persistent_decode(h, layers, **step,
                                                                                         workspace=workspace))[0]}]
    rounds = {spec: [] for spec, _ in configs}
    for _ in range(args.rounds):
        for spec, options in configs:
            rounds[spec].append(graph_us(lambda: wd.ws_decode(h, layers, **step, workspace=workspace, **options))[0])
    for spec, options in configs:
        us = sorted(rounds[spec])[len(rounds[spec]) // 2]
        rows.append({"kernel": f"ws_decode {spec}", **options, "us": us, "rounds_us": rounds[spec],
                     "h_vs_first": vs_first[spec]})
    rows.append({"kernel": "persistent_decode (again)",
                 "us": graph_us(lambda: pd.persistent_decode(h, layers, **step, workspace=workspace))[0]})
    timelines = {}
    for spec, options in configs:
        timing = torch.zeros(layers.num_layers, pd.default_num_programs(h.device), 16, dtype=torch.int64,
                             device="cuda")
        wd.ws_decode(h, layers, **step, workspace=workspace, timing=timing, **options)
        torch.cuda.synchronize()
        timelines[spec] = timeline_points(timing, wd.TIMING_POINTS)
    timeline = timelines[configs[0][0]]
    out = {"shape": args.shape, "seq_len": args.seq_len, "device": torch.cuda.get_device_name(),
           "copy_bandwidth_gbs": bandwidth / 1e9, "floor_us": floor_us, "agreement_1_layer": one,
           "agreement_every_layer": every, "rows": rows, "timeline_config": configs[0][0], "timeline": timeline,
           "timelines": timelines}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"{args.shape} on {out['device']}, {args.seq_len} keys: {layers.num_layers} layers' weights stream in "
          f"{floor_us:.1f} us at the copy bandwidth ({bandwidth / 1e9:.0f} GB/s)")
    print(f"ws vs persistent: 1 layer h {one['h']:.1e}, k/v {one['kv']:.1e}; {layers.num_layers} layers h "
          f"{every['h']:.1e}, k/v {every['kv']:.1e} (relative)")
    print(f"{'kernel':<34}{'us':>9}{'floor/t':>9}  rounds (us)")
    for r in rows:
        each = " ".join(f"{u:.1f}" for u in r.get("rounds_us", []))
        print(f"{r['kernel']:<34}{r['us']:>9.1f}{floor_us / r['us']:>9.1%}  {each}")
    print(f"\nws_decode {configs[0][0]}: us since the layer began (first / median / last program)")
    for p in timeline:
        print(f"  {p['point']:<20}{p['first_us']:8.2f}{p['median_us']:8.2f}{p['last_us']:8.2f}")
    print("\nevery configuration: us since the layer began (median / last program)")
    print(f"  {'point':<20}" + "".join(f"{spec:>16}" for spec in timelines))
    for name in wd.TIMING_POINTS:
        cells = []
        for points in timelines.values():
            p = next((p for p in points if p["point"] == name), None)
            cells.append(f"{p['median_us']:7.2f} /{p['last_us']:6.2f}" if p else f"{'-':>16}")
        print(f"  {name:<20}" + "".join(f"{c:>16}" for c in cells))


if __name__ == "__main__":
    main()
