"""The fused Triton layer kernels against the torch layers they replace, on fresh random inputs.

Without CUDA they run in the Triton interpreter on CPU tensors (tiny sizes: it is slow).
"""

from __future__ import annotations

import os
import random

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from llm_core.layers.activation import silu_and_mul as silu_and_mul_torch  # noqa: E402
from llm_core.layers.kernels import rms_norm, rotary_embedding, silu_and_mul  # noqa: E402
from llm_core.layers.norm import RMSNorm  # noqa: E402
from llm_core.layers.rotary import RotaryEmbedding  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.bfloat16]


@pytest.fixture
def gen() -> torch.Generator:
    seed = random.randrange(2**31)
    print(f"layer kernel test seed: {seed}")
    return torch.Generator().manual_seed(seed)


def randn(gen, *shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=DEVICE)


def assert_close(actual, expected, dtype):
    # bf16: one rounding step apart at most (the kernel keeps fp32 where torch rounds between ops)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 1.6e-2}
    torch.testing.assert_close(actual, expected, **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden_size", [48, 64])
def test_rms_norm_matches_torch(gen, dtype, hidden_size):
    norm = RMSNorm(hidden_size, 1e-5, dtype=dtype, device=DEVICE)
    norm.weight.copy_(randn(gen, hidden_size, dtype=dtype))
    x = randn(gen, 5, hidden_size, dtype=dtype, scale=3.0)
    residual = randn(gen, 5, hidden_size, dtype=dtype)
    assert_close(rms_norm(x, norm.weight, norm.eps), norm(x), dtype)
    out, new_residual = rms_norm(x, norm.weight, norm.eps, residual)
    expected_out, expected_residual = norm(x, residual)
    if DEVICE == "cuda" or dtype == torch.float32:
        assert torch.equal(new_residual, expected_residual)  # the sum is rounded as torch rounds it
    else:  # the interpreter truncates fp32 -> bf16 where the GPU rounds to nearest
        assert_close(new_residual, expected_residual, dtype)
    assert_close(out, expected_out, dtype)


def test_rms_norm_reads_strided_rows(gen):
    norm = RMSNorm(32, 1e-6, device=DEVICE)
    norm.weight.copy_(randn(gen, 32))
    wide = randn(gen, 4, 80)
    x = wide[:, 8:40]  # rows 80 apart
    assert_close(rms_norm(x, norm.weight, norm.eps), norm(x.contiguous()), torch.float32)


def test_rms_norm_layer_dispatches_to_the_kernel(gen):
    fused = RMSNorm(32, 1e-6, device=DEVICE, use_triton=True)
    plain = RMSNorm(32, 1e-6, device=DEVICE)
    weight = randn(gen, 32)
    fused.weight.copy_(weight)
    plain.weight.copy_(weight)
    x, residual = randn(gen, 3, 32), randn(gen, 3, 32)
    assert_close(fused(x, residual)[0], plain(x, residual)[0], torch.float32)
    x3 = randn(gen, 3, 2, 32)  # per-head norm of a [T, H, D] tensor: the torch path
    assert_close(fused(x3), plain(x3), torch.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("intermediate_size", [40, 64])
def test_silu_and_mul_matches_torch(gen, dtype, intermediate_size):
    gate_up = randn(gen, 6, 2 * intermediate_size, dtype=dtype, scale=4.0)
    assert_close(silu_and_mul(gate_up), silu_and_mul_torch(gate_up), dtype)
    assert_close(silu_and_mul_torch(gate_up, use_triton=True), silu_and_mul_torch(gate_up), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(4, 2, 16), (3, 1, 24)])
def test_rotary_matches_torch_in_place_on_qkv_views(gen, dtype, num_heads, num_kv_heads, head_dim):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    rotary = RotaryEmbedding(head_dim, 256, 10000.0, scaling, device=DEVICE)
    num_tokens = 7
    q_size, kv_size = num_heads * head_dim, num_kv_heads * head_dim
    qkv = randn(gen, num_tokens, q_size + 2 * kv_size, dtype=dtype)  # the merged projection's output
    positions = torch.randint(0, 256, (num_tokens,), generator=gen).to(DEVICE)
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    q = q.view(num_tokens, num_heads, head_dim)
    k = k.view(num_tokens, num_kv_heads, head_dim)
    expected_q, expected_k = rotary(positions, q.clone(), k.clone())
    v_before = v.clone()
    out_q, out_k = rotary_embedding(positions, q, k, rotary.cos_sin)
    assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == k.data_ptr()  # in place
    assert_close(q, expected_q, dtype)
    assert_close(k, expected_k, dtype)
    assert torch.equal(v, v_before)  # v, between k and the next row's q, is untouched


def test_kernels_reject_bad_shapes(gen):
    with pytest.raises(ValueError, match="rms_norm"):
        rms_norm(randn(gen, 2, 3, 4), randn(gen, 4), 1e-6)
    with pytest.raises(ValueError, match="silu_and_mul"):
        silu_and_mul(randn(gen, 2, 5))
    with pytest.raises(ValueError, match="rotary_embedding"):
        rotary_embedding(torch.zeros(2, dtype=torch.int64), randn(gen, 2, 1, 8), randn(gen, 2, 1, 6), randn(gen, 4, 8))
