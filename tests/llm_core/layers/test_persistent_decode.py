"""The persistent decode layer kernel (llm_core/layers/kernels/persistent_decode.py) against a torch
reference of one Llama decoder layer for one token, on fresh random weights, caches and positions.

Without CUDA the kernel runs in the Triton interpreter with a grid of one program (the interpreter
runs programs one after another, so a grid barrier could never be passed by two); on a GPU with one
program per SM, at tiny and at Llama-3.2-1B sizes.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from llm_core.layers.kernels.persistent_decode import (  # noqa: E402
    DecodeWorkspace, chunk_columns, layer_counters, persistent_decode_layer, persistent_decode_supported,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# The interpreter multiplies bfloat16 bit patterns in tl.dot (see tests/llm_core/attention/test_triton_kernels.py).
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                                                             reason="the Triton interpreter has no bfloat16 tl.dot"))


def rms_norm_ref(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    hf = h.float()
    normed = (hf * torch.rsqrt(hf.pow(2).mean() + eps)).to(h.dtype)
    return (normed.float() * weight.float()).to(h.dtype)


def linear_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    y = weight.double() @ x.double()
    if bias is not None:
        y = y + bias.double()
    return y.to(x.dtype)


def rotate_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [heads, D], rotate-half (the GPT-NeoX layout), each half rounded
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([(x1 * cos - x2 * sin).to(x.dtype), (x2 * cos + x1 * sin).to(x.dtype)], dim=-1)


def reference_layer(case: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(new h, k cache, v cache) of one decoder layer on case's tensors (which are not changed)."""
    h, w = case["h"], case["weights"]
    nh, d = case["num_heads"], case["head_dim"]
    k_cache, v_cache = case["k_cache"].clone(), case["v_cache"].clone()
    nkv, block_size = k_cache.shape[2], k_cache.shape[1]
    pos, slot, seq_len = case["pos"], case["slot"], case["seq_len"]
    qkv = linear_ref(rms_norm_ref(h, w["ln1"], case["eps"]), w["qkv"], w.get("qkv_b"))
    q, k, v = qkv.split([nh * d, nkv * d, nkv * d])
    cos, sin = case["cos_sin"][pos].chunk(2)
    q = rotate_ref(q.view(nh, d), cos, sin)
    k = rotate_ref(k.view(nkv, d), cos, sin)
    k_cache.view(-1, nkv, d)[slot] = k
    v_cache.view(-1, nkv, d)[slot] = v.view(nkv, d)
    slots = torch.tensor([int(case["block_table"][p // block_size]) * block_size + p % block_size
                          for p in range(seq_len)])
    keys = k_cache.view(-1, nkv, d)[slots].double()  # [S, NKV, D]
    values = v_cache.view(-1, nkv, d)[slots].double()
    group = nh // nkv
    keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)  # [S, NH, D]
    scores = torch.einsum("hd,shd->hs", q.double(), keys) * d ** -0.5
    window = case.get("window")
    if window is not None:
        hidden = torch.arange(seq_len) <= pos - window
        scores[:, hidden] = float("-inf")
    attn = torch.einsum("hs,shd->hd", scores.softmax(dim=-1), values).reshape(-1).to(h.dtype)
    h1 = (h.float() + linear_ref(attn, w["o"], w.get("o_b")).float()).to(h.dtype)
    gate_up = linear_ref(rms_norm_ref(h1, w["ln2"], case["eps"]), w["gate_up"], w.get("gate_up_b"))
    gate, up = gate_up.float().chunk(2)
    act = (torch.nn.functional.silu(gate).to(h.dtype).float() * up).to(h.dtype)
    h2 = (h1.float() + linear_ref(act, w["down"], w.get("down_b")).float()).to(h.dtype)
    return h2, k_cache, v_cache


def make_case(gen: torch.Generator, *, hidden: int, num_heads: int, num_kv_heads: int, head_dim: int,
              intermediate: int, seq_len: int, dtype: torch.dtype, bias: bool = False, window: int | None = None,
              block_size: int = 16, device: str = DEVICE) -> dict:
    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=device)

    weights = {
        "ln1": 1 + randn(hidden, scale=0.1), "ln2": 1 + randn(hidden, scale=0.1),
        "qkv": randn((num_heads + 2 * num_kv_heads) * head_dim, hidden, scale=hidden ** -0.5),
        "o": randn(hidden, num_heads * head_dim, scale=(num_heads * head_dim) ** -0.5),
        "gate_up": randn(2 * intermediate, hidden, scale=hidden ** -0.5),
        "down": randn(hidden, intermediate, scale=intermediate ** -0.5),
    }
    if bias:
        weights.update({"qkv_b": randn((num_heads + 2 * num_kv_heads) * head_dim, scale=0.1),
                        "o_b": randn(hidden, scale=0.1), "gate_up_b": randn(2 * intermediate, scale=0.1),
                        "down_b": randn(hidden, scale=0.1)})
    num_blocks = seq_len // block_size + 4
    # The sequence's blocks in a shuffled order, so a wrong block lookup shows.
    block_table = torch.randperm(num_blocks, generator=gen)[: (seq_len + block_size - 1) // block_size + 1]
    pos = seq_len - 1
    max_position = seq_len + 8
    angles = torch.rand(max_position, head_dim // 2, generator=gen) * 6.28
    return {
        "h": randn(hidden), "weights": weights, "num_heads": num_heads, "head_dim": head_dim, "eps": 1e-5,
        "k_cache": randn(num_blocks, block_size, num_kv_heads, head_dim),
        "v_cache": randn(num_blocks, block_size, num_kv_heads, head_dim),
        "block_table": block_table.to(torch.int32), "pos": pos, "seq_len": seq_len,
        "slot": int(block_table[pos // block_size]) * block_size + pos % block_size,
        "cos_sin": torch.cat([angles.cos(), angles.sin()], dim=-1).to(device), "window": window,
    }


def run_kernel(case: dict, **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w, device = case["weights"], case["h"].device
    h = case["h"].clone()
    k_cache, v_cache = case["k_cache"].clone(), case["v_cache"].clone()
    persistent_decode_layer(
        h, ln1=w["ln1"], qkv_weight=w["qkv"], o_weight=w["o"], ln2=w["ln2"], gate_up_weight=w["gate_up"],
        down_weight=w["down"], eps=case["eps"], num_heads=case["num_heads"], k_cache=k_cache, v_cache=v_cache,
        positions=torch.tensor([case["pos"]], device=device), slot_mapping=torch.tensor([case["slot"]], device=device),
        block_table=case["block_table"].to(device), seq_lens=torch.tensor([case["seq_len"]], dtype=torch.int32,
                                                                          device=device),
        cos_sin=case["cos_sin"], scale=case["head_dim"] ** -0.5, qkv_bias=w.get("qkv_b"), o_bias=w.get("o_b"),
        gate_up_bias=w.get("gate_up_b"), down_bias=w.get("down_b"), sliding_window=case["window"], **kwargs)
    return h, k_cache, v_cache


def check(case: dict, got, dtype) -> None:
    expected = reference_layer({**case, "h": case["h"].cpu(), "k_cache": case["k_cache"].cpu(),
                                "v_cache": case["v_cache"].cpu(), "cos_sin": case["cos_sin"].cpu(),
                                "weights": {k: v.cpu() for k, v in case["weights"].items()}})
    h, k_cache, v_cache = (t.cpu() for t in got)
    # 16-bit: a rounding or two apart (the kernel sums in fp32, the interpreter truncates to bf16)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 5e-2, "rtol": 3e-2}
    torch.testing.assert_close(h, expected[0], **tol)
    torch.testing.assert_close(k_cache, expected[1], **tol)
    torch.testing.assert_close(v_cache, expected[2], **tol)
    # Only the token's slot changed in the caches.
    changed = (k_cache != case["k_cache"].cpu()).any(dim=(2, 3)).flatten().nonzero().flatten().tolist()
    assert set(changed) <= {case["slot"]}, changed
    assert (v_cache.view(-1, *v_cache.shape[2:])[case["slot"]] != case["v_cache"].cpu().view(
        -1, *v_cache.shape[2:])[case["slot"]]).any()
    assert int(layer_counters(case["h"].device).abs().sum()) == 0  # left at zero for the next launch


@pytest.fixture
def gen() -> torch.Generator:
    seed = random.randrange(2**31)
    print(f"persistent decode test seed: {seed}")
    return torch.Generator().manual_seed(seed)


TINY = {"hidden": 64, "num_heads": 4, "num_kv_heads": 2, "head_dim": 16, "intermediate": 96}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, BF16])
@pytest.mark.parametrize("splits", [1, 3])
def test_layer_matches_reference(gen, dtype, splits):
    # K chunks of 32: two per q/k/v and gate/up row, three per down row (chunk_columns(64, 64, 96)).
    assert chunk_columns(64, 64, 96) == 32
    case = make_case(gen, **TINY, seq_len=int(torch.randint(20, 150, (1,), generator=gen)), dtype=dtype)
    ws = DecodeWorkspace(TINY["num_heads"], TINY["head_dim"], TINY["intermediate"], splits, dtype, DEVICE)
    check(case, run_kernel(case, workspace=ws), dtype)


def test_biases_and_sliding_window(gen):
    case = make_case(gen, **TINY, seq_len=130, dtype=torch.float32, bias=True, window=40)
    ws = DecodeWorkspace(TINY["num_heads"], TINY["head_dim"], TINY["intermediate"], 2, torch.float32, DEVICE)
    check(case, run_kernel(case, workspace=ws), torch.float32)


def test_first_token_and_grouping(gen):
    # A context of one token (the one being decoded), four q heads per kv head, one chunk per row.
    case = make_case(gen, hidden=32, num_heads=4, num_kv_heads=1, head_dim=8, intermediate=32, seq_len=1,
                     dtype=torch.float32)
    check(case, run_kernel(case), torch.float32)


def test_unsupported_sizes_are_refused(gen):
    assert not persistent_decode_supported(60, 4, 2, 16, 96)  # hidden not a multiple of 8
    assert not persistent_decode_supported(64, 4, 2, 12, 96)  # head_dim not a multiple of 8
    assert not persistent_decode_supported(64, 4, 3, 16, 96)  # heads not a multiple of kv heads
    case = make_case(gen, **TINY, seq_len=5, dtype=torch.float32)
    case["weights"]["o"] = case["weights"]["o"][:, :32].contiguous()
    with pytest.raises(ValueError, match="o_weight"):
        run_kernel(case)


@needs_cuda
@pytest.mark.parametrize("seq_len", [1, 300, 5000])
def test_llama_1b_sizes_on_gpu(gen, seq_len):
    # One program per SM, grid barriers for real; Llama-3.2-1B's layer sizes.
    case = make_case(gen, hidden=2048, num_heads=32, num_kv_heads=8, head_dim=64, intermediate=8192,
                     seq_len=seq_len, dtype=torch.bfloat16)
    check(case, run_kernel(case), torch.bfloat16)


@needs_cuda
def test_repeated_launches_in_a_cuda_graph(gen):
    # The counters reset themselves: replaying a graph of several launches gives the eager result.
    case = make_case(gen, **TINY, seq_len=70, dtype=torch.bfloat16)
    h, k_cache, v_cache = run_kernel(case)  # eager, also compiles and allocates the counters
    static = {"h": case["h"].clone(), "k": case["k_cache"].clone(), "v": case["v_cache"].clone()}
    w = case["weights"]
    args = dict(ln1=w["ln1"], qkv_weight=w["qkv"], o_weight=w["o"], ln2=w["ln2"], gate_up_weight=w["gate_up"],
                down_weight=w["down"], eps=case["eps"], num_heads=case["num_heads"], k_cache=static["k"],
                v_cache=static["v"], positions=torch.tensor([case["pos"]], device=DEVICE),
                slot_mapping=torch.tensor([case["slot"]], device=DEVICE), block_table=case["block_table"].to(DEVICE),
                seq_lens=torch.tensor([case["seq_len"]], dtype=torch.int32, device=DEVICE), cos_sin=case["cos_sin"],
                scale=case["head_dim"] ** -0.5)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        persistent_decode_layer(static["h"], **args)
    for _ in range(5):
        static["h"].copy_(case["h"])
        static["k"].copy_(case["k_cache"])
        static["v"].copy_(case["v_cache"])
        graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static["h"], h, atol=0, rtol=0)
    torch.testing.assert_close(static["k"], k_cache, atol=0, rtol=0)
    assert int(layer_counters(case["h"].device).abs().sum()) == 0
