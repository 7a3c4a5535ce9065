"""How fast Triton programs of various shapes stream one weight matrix, against torch.mv and a copy.

    python -m bench.bench_weight_stream --rows 16384 --cols 2048 --out weight_stream.json

The matrix (default: the 1B model's gate/up, 67 MB) is read in [R, KC] tiles by a grid of
(programs per SM) x SMs persistent programs, each streaming a contiguous range of tiles with
`depth` tiles in flight (the loop unrolled by it, as the persistent decode kernel does), multiplied
by a vector and summed (so no load is dropped). Copies of the matrix rotate so that no call finds
it in L2; each figure is a median over 5 replays of a CUDA graph of 20 calls. Prints a table of
read bandwidth (bytes of the matrix per second) and writes JSON. Informs the persistent decode
kernel's tile and depth choices (docs/performance.md).
"""

from __future__ import annotations

import argparse
import itertools
import json

import torch
import triton
import triton.language as tl

from bench.profile_persistent_decode import graph_us


@triton.jit
def _tile(w_ptr, t, ok, R: tl.constexpr, KC: tl.constexpr, K: tl.constexpr):
    num_chunks: tl.constexpr = K // KC
    rows = (t // num_chunks) * R + tl.arange(0, R)
    cols = (t % num_chunks) * KC + tl.arange(0, KC)
    return tl.load(w_ptr + rows.to(tl.int64)[:, None] * K + cols[None, :], mask=ok & (cols < K)[None, :], other=0.0,
                   eviction_policy="evict_first")


@triton.jit
def _mac(acc, w, x, R: tl.constexpr, KC: tl.constexpr):
    return acc + tl.sum(tl.reshape(w.to(tl.float32) * x[None, :], [R, KC // 8, 8]), axis=2)


@triton.jit
def stream_kernel(w_ptr, x_ptr, out_ptr, num_tiles, R: tl.constexpr, KC: tl.constexpr, K: tl.constexpr,
                  DEPTH: tl.constexpr):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    base = num_tiles // num_programs
    extra = num_tiles % num_programs
    first = pid * base + tl.minimum(pid, extra)
    n = base + (pid < extra).to(tl.int32)
    x = tl.load(x_ptr + tl.arange(0, KC)).to(tl.float32)
    acc = tl.zeros([R, KC // 8], dtype=tl.float32)
    w0 = _tile(w_ptr, first, 0 < n, R, KC, K)
    w1 = _tile(w_ptr, first + 1, 1 < n, R, KC, K)
    w2, w3 = w0, w1
    if DEPTH == 4:
        w2 = _tile(w_ptr, first + 2, 2 < n, R, KC, K)
        w3 = _tile(w_ptr, first + 3, 3 < n, R, KC, K)
    for j in range(0, n, DEPTH):
        acc = _mac(acc, w0, x, R, KC)
        w0 = _tile(w_ptr, first + j + DEPTH, j + DEPTH < n, R, KC, K)
        acc = _mac(acc, w1, x, R, KC)
        w1 = _tile(w_ptr, first + j + DEPTH + 1, j + DEPTH + 1 < n, R, KC, K)
        if DEPTH == 4:
            acc = _mac(acc, w2, x, R, KC)
            w2 = _tile(w_ptr, first + j + 6, j + 6 < n, R, KC, K)
            acc = _mac(acc, w3, x, R, KC)
            w3 = _tile(w_ptr, first + j + 7, j + 7 < n, R, KC, K)
    tl.store(out_ptr + pid, tl.sum(tl.sum(acc, 1), 0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--cols", type=int, default=2048)
    parser.add_argument("--out", default="weight_stream.json")
    args = parser.parse_args()
    n, k = args.rows, args.cols
    nbytes = n * k * 2
    copies = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(4)]
    x = torch.randn(k, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(8192, device="cuda")
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    rows = []

    def rotate(call):
        def run():
            for w in copies * 5:
                call(w)
        return run

    for per_sm, warps, (r, kc), depth in itertools.product(
            [1, 2, 4], [4, 8], [(4, 512), (8, 512), (8, 1024), (8, 2048)], [2, 4]):
        if k % kc:
            continue
        grid = per_sm * num_sms
        us, _ = graph_us(rotate(lambda w: stream_kernel[(grid,)](w, x, out, (n // r) * (k // kc), R=r, KC=kc, K=k,
                                                                  DEPTH=depth, num_warps=warps)), reps=1)
        rows.append({"programs_per_sm": per_sm, "warps": warps, "tile": [r, kc], "tile_kib": r * kc * 2 / 1024,
                     "depth": depth, "us": us / 20, "tb_s": nbytes / (us / 20) / 1e6})
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    dst = torch.empty_like(src)
    copy_us, _ = graph_us(rotate(lambda w: dst.copy_(src)), reps=1)
    mv_us, _ = graph_us(rotate(lambda w: torch.mv(w, x)), reps=1)
    result = {"device": torch.cuda.get_device_name(), "shape": [n, k], "bytes": nbytes, "triton": rows,
              "copy_read_write_tb_s": 2 * nbytes / (copy_us / 20) / 1e6, "torch_mv_tb_s": nbytes / (mv_us / 20) / 1e6}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"[{n}, {k}] bf16 ({nbytes / 1e6:.0f} MB) on {result['device']}: copy {result['copy_read_write_tb_s']:.2f} "
          f"TB/s (read + write), torch.mv {result['torch_mv_tb_s']:.2f} TB/s")
    print(f"{'programs/SM':>11} {'warps':>5} {'tile':>9} {'KiB':>4} {'depth':>5} {'us':>7} {'TB/s':>6}")
    for row in sorted(rows, key=lambda r: -r["tb_s"]):
        print(f"{row['programs_per_sm']:>11} {row['warps']:>5} {row['tile'][0]:>3}x{row['tile'][1]:<5} "
              f"{row['tile_kib']:>4.0f} {row['depth']:>5} {row['us']:>7.1f} {row['tb_s']:>6.2f}")


if __name__ == "__main__":
    main()
