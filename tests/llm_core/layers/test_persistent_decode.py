"""The persistent decode kernel (llm_core/layers/kernels/persistent_decode.py) against a torch
reference of Llama decoder layers for one token, on fresh random weights, caches and positions.

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
    DecodeLayers, DecodeWorkspace, chunk_columns, layer_counters, persistent_decode, persistent_decode_supported,
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


def reference_layers(case: dict) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """(new h, k caches, v caches) after every layer of case (whose tensors are not changed)."""
    h, k_caches, v_caches = case["h"], [], []
    for w, k_cache, v_cache in zip(case["weights"], case["k_caches"], case["v_caches"]):
        h, k_cache, v_cache = reference_layer(case, h, w, k_cache.clone(), v_cache.clone())
        k_caches.append(k_cache)
        v_caches.append(v_cache)
    return h, k_caches, v_caches


def reference_layer(case: dict, h: torch.Tensor, w: dict, k_cache: torch.Tensor, v_cache: torch.Tensor):
    nh, d = case["num_heads"], case["head_dim"]
    nkv, block_size = k_cache.shape[2], k_cache.shape[1]
    pos, slot, seq_len = case["pos"], case["slot"], case["seq_len"]
    qkv = linear_ref(rms_norm_ref(h, w["ln1"], case["eps"]), w["qkv"], w.get("qkv_bias"))
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
    h1 = (h.float() + linear_ref(attn, w["o"], w.get("o_bias")).float()).to(h.dtype)
    gate_up = linear_ref(rms_norm_ref(h1, w["ln2"], case["eps"]), w["gate_up"], w.get("gate_up_bias"))
    gate, up = gate_up.float().chunk(2)
    act = (torch.nn.functional.silu(gate).to(h.dtype).float() * up).to(h.dtype)
    h2 = (h1.float() + linear_ref(act, w["down"], w.get("down_bias")).float()).to(h.dtype)
    return h2, k_cache, v_cache


def make_case(gen: torch.Generator, *, hidden: int, num_heads: int, num_kv_heads: int, head_dim: int,
              intermediate: int, seq_len: int, dtype: torch.dtype, bias: bool = False, window: int | None = None,
              block_size: int = 16, num_layers: int = 2, device: str = DEVICE) -> dict:
    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=device)

    def layer_weights():
        weights = {
            "ln1": 1 + randn(hidden, scale=0.1), "ln2": 1 + randn(hidden, scale=0.1),
            "qkv": randn((num_heads + 2 * num_kv_heads) * head_dim, hidden, scale=hidden ** -0.5),
            "o": randn(hidden, num_heads * head_dim, scale=(num_heads * head_dim) ** -0.5),
            "gate_up": randn(2 * intermediate, hidden, scale=hidden ** -0.5),
            "down": randn(hidden, intermediate, scale=intermediate ** -0.5),
        }
        if bias:
            weights.update({"qkv_bias": randn((num_heads + 2 * num_kv_heads) * head_dim, scale=0.1),
                            "o_bias": randn(hidden, scale=0.1), "gate_up_bias": randn(2 * intermediate, scale=0.1),
                            "down_bias": randn(hidden, scale=0.1)})
        return weights

    num_blocks = seq_len // block_size + 4
    # The sequence's blocks in a shuffled order, so a wrong block lookup shows.
    block_table = torch.randperm(num_blocks, generator=gen)[: (seq_len + block_size - 1) // block_size + 1]
    pos = seq_len - 1
    max_position = seq_len + 8
    angles = torch.rand(max_position, head_dim // 2, generator=gen) * 6.28
    return {
        "h": randn(hidden), "weights": [layer_weights() for _ in range(num_layers)], "num_heads": num_heads,
        "head_dim": head_dim, "eps": 1e-5,
        "k_caches": [randn(num_blocks, block_size, num_kv_heads, head_dim) for _ in range(num_layers)],
        "v_caches": [randn(num_blocks, block_size, num_kv_heads, head_dim) for _ in range(num_layers)],
        "block_table": block_table.to(torch.int32), "pos": pos, "seq_len": seq_len,
        "slot": int(block_table[pos // block_size]) * block_size + pos % block_size,
        "cos_sin": torch.cat([angles.cos(), angles.sin()], dim=-1).to(device), "window": window,
    }


def decode_layers(case: dict, k_caches, v_caches) -> DecodeLayers:
    layers = [{"qkv_bias": None, "o_bias": None, "gate_up_bias": None, "down_bias": None, **w,
               "k_cache": k, "v_cache": v} for w, k, v in zip(case["weights"], k_caches, v_caches)]
    return DecodeLayers(layers, case["num_heads"])


def step_inputs(case: dict, device) -> dict:
    return dict(positions=torch.tensor([case["pos"]], device=device),
                slot_mapping=torch.tensor([case["slot"]], device=device),
                block_table=case["block_table"].to(device),
                seq_lens=torch.tensor([case["seq_len"]], dtype=torch.int32, device=device), cos_sin=case["cos_sin"],
                scale=case["head_dim"] ** -0.5, eps=case["eps"], sliding_window=case["window"])


def run_kernel(case: dict, **kwargs) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    h = case["h"].clone()
    k_caches = [k.clone() for k in case["k_caches"]]
    v_caches = [v.clone() for v in case["v_caches"]]
    persistent_decode(h, decode_layers(case, k_caches, v_caches), **step_inputs(case, h.device), **kwargs)
    return h, k_caches, v_caches


def check(case: dict, got, dtype) -> None:
    def cpu(x):
        return [t.cpu() for t in x] if isinstance(x, list) else x.cpu()

    expected = reference_layers({**case, "h": cpu(case["h"]), "k_caches": cpu(case["k_caches"]),
                                 "v_caches": cpu(case["v_caches"]), "cos_sin": cpu(case["cos_sin"]),
                                 "weights": [{k: v.cpu() for k, v in w.items()} for w in case["weights"]]})
    h, k_caches, v_caches = (cpu(t) for t in got)
    # 16-bit: a rounding or two apart (the kernel sums in fp32, the interpreter truncates to bf16)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 5e-2, "rtol": 3e-2}
    torch.testing.assert_close(h, expected[0], **tol)
    for layer, (k, v, k_ref, v_ref, k_before) in enumerate(zip(k_caches, v_caches, expected[1], expected[2],
                                                               cpu(case["k_caches"]))):
        torch.testing.assert_close(k, k_ref, **tol, msg=lambda m: f"layer {layer} k cache: {m}")
        torch.testing.assert_close(v, v_ref, **tol, msg=lambda m: f"layer {layer} v cache: {m}")
        # Only the token's slot changed in the caches.
        changed = (k != k_before).any(dim=(2, 3)).flatten().nonzero().flatten().tolist()
        assert set(changed) <= {case["slot"]}, changed
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


@pytest.mark.parametrize("depth", [2, 4])
def test_biases_and_sliding_window(gen, depth):
    # depth: weight tiles in flight per program (the stage loop unrolled by it)
    case = make_case(gen, **TINY, seq_len=130, dtype=torch.float32, bias=True, window=40)
    ws = DecodeWorkspace(TINY["num_heads"], TINY["head_dim"], TINY["intermediate"], 2, torch.float32, DEVICE)
    check(case, run_kernel(case, workspace=ws, depth=depth), torch.float32)


def test_final_norm(gen):
    # The program that finishes last writes RMSNorm(h) of the last layer's output as well.
    case = make_case(gen, **TINY, seq_len=33, dtype=torch.float32, num_layers=3)
    weight = (1 + 0.1 * torch.randn(TINY["hidden"], generator=gen)).to(DEVICE)
    normed = torch.full((TINY["hidden"],), float("nan"), device=DEVICE)
    got = run_kernel(case, final_norm=(weight, 1e-6), normed=normed)
    check(case, got, torch.float32)
    torch.testing.assert_close(normed.cpu(), rms_norm_ref(got[0].cpu(), weight.cpu(), 1e-6), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="come together"):
        run_kernel(case, final_norm=(weight, 1e-6))
    with pytest.raises(ValueError, match="must be 64 contiguous"):
        run_kernel(case, final_norm=(weight[:32], 1e-6), normed=normed)


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
    case["weights"][1]["o"] = case["weights"][1]["o"][:, :32].contiguous()
    with pytest.raises(ValueError, match="layer 1 o "):
        run_kernel(case)
    case = make_case(gen, **TINY, seq_len=5, dtype=torch.float32, bias=True)
    case["weights"][1]["o_bias"] = None
    with pytest.raises(ValueError, match="layer 1 has no o_bias"):
        run_kernel(case)
    case = make_case(gen, **TINY, seq_len=5, dtype=torch.float32)
    case["weights"][0]["ln1"] = torch.ones(TINY["hidden"] + 1, device=DEVICE)[1:]  # 4 bytes off alignment
    with pytest.raises(ValueError, match="16-byte aligned"):
        run_kernel(case)


@needs_cuda
@pytest.mark.parametrize("seq_len", [1, 300, 5000])
def test_llama_1b_sizes_on_gpu(gen, seq_len):
    # One program per SM, grid barriers for real; Llama-3.2-1B's layer sizes (keys past 1024: splits of
    # several tiles).
    case = make_case(gen, hidden=2048, num_heads=32, num_kv_heads=8, head_dim=64, intermediate=8192,
                     seq_len=seq_len, dtype=torch.bfloat16, num_layers=3)
    check(case, run_kernel(case), torch.bfloat16)


@needs_cuda
@pytest.mark.parametrize("seq_len", [77, 3000])
def test_llama_8b_sizes_on_gpu(gen, seq_len):
    # Llama-3.1-8B's layer sizes: head_dim 128, down rows of 14336 (seven tiles of 2048 columns).
    case = make_case(gen, hidden=4096, num_heads=32, num_kv_heads=8, head_dim=128, intermediate=14336,
                     seq_len=seq_len, dtype=torch.bfloat16, num_layers=2)
    check(case, run_kernel(case), torch.bfloat16)


@needs_cuda
def test_repeated_launches_in_a_cuda_graph(gen):
    # The counters reset themselves: replaying a graph of several launches gives the eager result.
    case = make_case(gen, **TINY, seq_len=70, dtype=torch.bfloat16)
    h, k_caches, v_caches = run_kernel(case)  # eager, also compiles and allocates the counters
    static_h = case["h"].clone()
    static_k = [k.clone() for k in case["k_caches"]]
    static_v = [v.clone() for v in case["v_caches"]]
    layers, inputs = decode_layers(case, static_k, static_v), step_inputs(case, DEVICE)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(3):  # three launches per replay, each starting from case["h"]
            static_h.copy_(case["h"])
            persistent_decode(static_h, layers, **inputs)
    for _ in range(4):
        graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(static_h, h, atol=0, rtol=0)
    for k, k_ref in zip(static_k, k_caches):
        torch.testing.assert_close(k, k_ref, atol=0, rtol=0)
    assert int(layer_counters(case["h"].device).abs().sum()) == 0


def test_grid_size(monkeypatch):
    # One program per SM; under MPS only the client's share (more would never all run at once).
    from llm_core.layers.kernels import persistent_decode as pd

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(pd, "device_num_sms", lambda device: 132)
    pd.default_num_programs.cache_clear()
    try:
        assert pd.default_num_programs(torch.device("cuda", 0)) == 132
        pd.default_num_programs.cache_clear()
        monkeypatch.setenv("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "50")
        assert pd.default_num_programs(torch.device("cuda", 0)) == 66
        assert pd.default_num_programs(torch.device("cpu")) == 1
    finally:
        pd.default_num_programs.cache_clear()
    assert pd.attention_splits(8, 132) == 16 and pd.attention_splits(8, 66) == 8 and pd.attention_splits(8, 1) == 1
