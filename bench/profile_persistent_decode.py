"""Where the persistent decode kernel's time goes (llm_core/layers/kernels/persistent_decode.py).

    python -m bench.profile_persistent_decode --shape llama-3.2-1b --out persistent_decode.json

Builds a model shape's decoder layers (random bf16 weights, one sequence of --seq-len keys in the
cache) and, for each launch configuration (warps per program, programs, tile columns, tiles in
flight), times one launch over every layer in a CUDA graph (median of 5 x 20 replays) and replays
the TIMING build once: every program's global-timer stamps at the kernel's TIMING_POINTS. Prints,
per configuration, the microseconds since a layer began at which the first, the median and the
last program passed each point (of those that pass it: the attention chain's points are passed by
the programs with an attention task; medians over the middle half of the layers), in the order of
the median, and writes JSON.
The weight-streaming time of one layer at the copy bandwidth is printed for scale.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.bench_decode_forward import replay_us
from bench.bench_throughput import copy_bandwidth
from bench.shapes import SHAPES
from llm_core.layers.kernels import persistent_decode as pd


def build(shape: str, seq_len: int, device: str = "cuda", dtype: torch.dtype = torch.bfloat16, block_size: int = 16):
    s = SHAPES[shape]
    h, inter, nh, nkv, d = (s["hidden_size"], s["intermediate_size"], s["num_attention_heads"],
                            s["num_key_value_heads"], s["head_dim"])
    gen = torch.Generator(device=device).manual_seed(0)

    def rnd(*shape_, scale=0.02):
        return (torch.randn(*shape_, generator=gen, device=device) * scale).to(dtype)

    num_blocks = seq_len // block_size + 4
    layers = [dict(ln1=1 + rnd(h), ln2=1 + rnd(h), qkv=rnd((nh + 2 * nkv) * d, h), o=rnd(h, nh * d),
                   gate_up=rnd(2 * inter, h), down=rnd(h, inter), qkv_bias=None, o_bias=None, gate_up_bias=None,
                   down_bias=None, k_cache=rnd(num_blocks, block_size, nkv, d, scale=1.0),
                   v_cache=rnd(num_blocks, block_size, nkv, d, scale=1.0))
              for _ in range(s["num_hidden_layers"])]
    angles = torch.rand(seq_len + 8, d // 2, generator=gen, device=device)
    step = dict(positions=torch.tensor([seq_len - 1], device=device),
                slot_mapping=torch.tensor([seq_len - 1], device=device),
                block_table=torch.arange(num_blocks, dtype=torch.int32, device=device),
                seq_lens=torch.tensor([seq_len], dtype=torch.int32, device=device),
                cos_sin=torch.cat([angles.cos(), angles.sin()], -1), scale=d ** -0.5, eps=1e-5)
    layer_bytes = sum(t.numel() * t.element_size() for k, t in layers[0].items()
                      if t is not None and not k.endswith("cache"))
    return pd.DecodeLayers(layers, nh), step, rnd(h, scale=1.0), layer_bytes


def graph_us(fn, runs: int = 5, reps: int = 20) -> tuple[float, torch.cuda.CUDAGraph]:
    """fn captured in a CUDA graph (after one eager call): (median us per replay, the graph)."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return replay_us(graph, runs, reps), graph


def timeline_points(timing: torch.Tensor, names, begins: int = 0) -> list[dict]:
    """Global-timer stamps [num_layers, programs, >= len(names)] as, per point, the microseconds since
    the layer began (column `begins`'s earliest stamp) at which the first, the median and the last
    program passed it, of the programs that passed it (a stamp of 0: not passed); medians over the
    middle half of the layers."""
    stamps = timing[:, :, :len(names)].double().cpu()
    num_layers = stamps.shape[0]
    middle = range(num_layers // 4, max(num_layers * 3 // 4, num_layers // 4 + 1))
    points = []
    for k, name in enumerate(names):
        per_layer = []  # (first, median, last, programs) of the programs that passed the point
        for layer in middle:
            reached = stamps[layer, :, k] > 0
            if reached.any():
                since = (stamps[layer, reached, k] - stamps[layer, :, begins].min()) / 1e3
                per_layer.append([since.min().item(), since.median().item(), since.max().item(),
                                  float(reached.sum())])
        if per_layer:
            first, median, last, count = torch.tensor(per_layer).median(0).values.tolist()
            points.append({"point": name, "first_us": first, "median_us": median, "last_us": last,
                           "programs": int(count)})
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="llama-3.2-1b")
    parser.add_argument("--seq-len", type=int, default=300)
    parser.add_argument("--configs", nargs="+", default=["8,sms,2048,2", "8,sms,1024,2", "8,sms,512,4"],
                        help="warps,programs,tile columns,tiles in flight (programs: a number or 'sms')")
    parser.add_argument("--out", default="persistent_decode.json")
    args = parser.parse_args()
    layers, step, h0, layer_bytes = build(args.shape, args.seq_len)
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    bandwidth = copy_bandwidth(torch.device("cuda"))
    layer_floor_us = layer_bytes / bandwidth * 1e6
    results = []
    for spec in args.configs:
        warps, programs, chunk, depth = spec.split(",")
        warps, chunk, depth = int(warps), int(chunk), int(depth)
        programs = num_sms if programs == "sms" else int(programs)
        if programs > num_sms:
            raise SystemExit(f"{spec}: more programs than SMs could deadlock the grid barriers")
        h = h0.clone()
        ws = pd.DecodeWorkspace(layers.num_heads, layers.head_dim, layers.intermediate,
                                pd.attention_splits(layers.num_kv_heads, programs), h.dtype, h.device)
        options = dict(workspace=ws, num_programs=programs, num_warps=warps, max_chunk=chunk, depth=depth)
        us, _ = graph_us(lambda: pd.persistent_decode(h, layers, **step, **options))
        timing = torch.zeros(layers.num_layers, programs, 16, dtype=torch.int64, device="cuda")
        _, graph = graph_us(lambda: pd.persistent_decode(h, layers, **step, **options, timing=timing), runs=1, reps=1)
        timing.zero_()  # a point some programs pass (the attention chain's) keeps no stamp of an earlier launch
        graph.replay()
        torch.cuda.synchronize()
        # (layer 0's launch stamp, "start", is in no middle layer)
        points = [p for p in timeline_points(timing, pd.TIMING_POINTS, begins=1) if p["point"] != "start"]
        points.sort(key=lambda p: p["median_us"])
        results.append({"warps": warps, "programs": programs, "chunk": chunk, "depth": depth,
                        "us_per_launch": us, "us_per_layer": us / layers.num_layers, "timeline": points})
    out = {"shape": args.shape, "seq_len": args.seq_len, "device": torch.cuda.get_device_name(),
           "copy_bandwidth_gbs": bandwidth / 1e9, "layer_weight_bytes": layer_bytes,
           "layer_floor_us": layer_floor_us, "configs": results}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"{args.shape} on {out['device']}, {args.seq_len} keys: one layer's weights ({layer_bytes / 1e6:.1f} MB) "
          f"stream in {layer_floor_us:.1f} us at the copy bandwidth ({bandwidth / 1e9:.0f} GB/s)")
    for r in results:
        print(f"\n{r['warps']} warps x {r['programs']} programs, tiles of {r['chunk']} columns, {r['depth']} in flight: "
              f"{r['us_per_launch']:.1f} us per launch, {r['us_per_layer']:.1f} us per layer")
        print(f"{'point (us since the layer began)':<34}{'first':>8}{'median':>8}{'last':>8}{'programs':>10}")
        for p in r["timeline"]:
            print(f"{p['point']:<34}{p['first_us']:>8.1f}{p['median_us']:>8.1f}{p['last_us']:>8.1f}"
                  f"{p['programs']:>10}")


if __name__ == "__main__":
    main()
