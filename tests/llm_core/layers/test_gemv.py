"""The skinny GEMM kernel (llm_core/layers/kernels/gemv.py) against F.linear on fresh random inputs,
and the linear layers that dispatch to it.

Without CUDA they run in the Triton interpreter on CPU tensors (tiny sizes: it is slow); the tests
marked cuda run real model shapes and a CUDA-graph replay on a GPU.
"""

from __future__ import annotations

import os
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from llm_core.distributed.group import TensorParallelGroup  # noqa: E402
from llm_core.distributed.layers import (  # noqa: E402
    ColumnParallelLinear, QKVParallelLinear, RowParallelLinear, enable_skinny_kernels,
)
from llm_core.layers.kernels import gemv  # noqa: E402
from llm_core.layers.kernels.gemv import (  # noqa: E402
    MAX_SKINNY_ROWS, choose_config, skinny_argmax, skinny_linear,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Forced configurations: one program per column block over all of K (blocks that divide neither
# N = 40 nor K = 72), in one tile or five (the prefetch two tiles ahead), and K split three ways in
# steps of 16 (2, 2 and 1 tiles; the partials summed by the column block's last split; pipelined,
# so that x reaches one or two rows through shared memory rather than per element).
CONFIGS = {"no split": {"block_n": 32, "block_k": 128, "split_k": 1, "num_stages": 1},
           "no split, 5 tiles": {"block_n": 16, "block_k": 16, "split_k": 1, "num_stages": 1},
           "split 3": {"block_n": 16, "block_k": 16, "split_k": 3, "num_stages": 2}}


@pytest.fixture
def gen() -> torch.Generator:
    seed = random.randrange(2**31)
    print(f"gemv test seed: {seed}")
    return torch.Generator().manual_seed(seed)


def randn(gen, *shape, dtype=torch.float32, scale=1.0, device=DEVICE):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype=dtype, device=device)


def assert_close(actual, expected, dtype):
    # bf16: an output rounding apart (the interpreter truncates fp32 -> bf16 where torch rounds)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 1.6e-2}
    torch.testing.assert_close(actual, expected, **tol)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("num_rows", [1, 3, 8])
@pytest.mark.parametrize("n,k", [(40, 72), (64, 128)])
def test_matches_f_linear(gen, dtype, config, num_rows, n, k):
    x = randn(gen, num_rows, k, dtype=dtype)
    weight = randn(gen, n, k, dtype=dtype, scale=k ** -0.5)
    bias = randn(gen, n, dtype=dtype)
    out = skinny_linear(x, weight, config=CONFIGS[config])
    assert out.shape == (num_rows, n) and out.dtype == dtype
    assert_close(out, F.linear(x, weight), dtype)
    assert_close(skinny_linear(x, weight, bias, config=CONFIGS[config]), F.linear(x, weight, bias), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("num_rows", [1, 3])
def test_fused_epilogues_match_the_unfused_layers(gen, dtype, config, num_rows):
    """The residual + RMSNorm epilogue and the SiLU-pairs epilogue (the fused decode path's GEMVs)
    against F.linear followed by the residual add + RMSNorm / silu_and_mul; the arrival counters
    are back at zero after each launch (twice each: a counter left non-zero fails the second)."""
    from llm_core.layers.kernels.counters import arrival_counters
    from llm_core.layers.norm import RMSNorm
    n, k = 48, 72
    cfg = CONFIGS[config]
    weight = randn(gen, n, k, dtype=dtype, scale=k ** -0.5)
    bias = randn(gen, n, dtype=dtype)
    x = randn(gen, num_rows, k, dtype=dtype)
    norm = RMSNorm(n, 1e-5, dtype=dtype, device=DEVICE)
    norm.weight.copy_(randn(gen, n, dtype=dtype).abs() + 0.5)
    residual = randn(gen, num_rows, n, dtype=dtype)
    y = F.linear(x, weight, bias)
    expected_normed, expected_h = norm(y, residual)
    gate, up = y.chunk(2, dim=-1)
    for _ in range(2):
        h, normed = skinny_linear(x, weight, bias, config=cfg, residual=residual,
                                  norm=gemv.NormOutput(norm.weight, norm.eps))
        assert_close(h, expected_h, dtype)
        # bf16: RMSNorm and SiLU-and-mul round twice more (the interpreter truncates), from an h or
        # y that may be an output rounding apart from torch's
        chained_tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 4e-2, "rtol": 3.2e-2}
        torch.testing.assert_close(normed, norm(h), **chained_tol)  # RMSNorm of the h it wrote
        torch.testing.assert_close(normed, expected_normed, **chained_tol)
        act = skinny_linear(x, weight, bias, config=cfg, silu_pairs=True)
        assert act.shape == (num_rows, n // 2)
        torch.testing.assert_close(act, F.silu(gate) * up, **chained_tol)
        assert not arrival_counters(x.device).any()


def test_fused_epilogues_reject_what_does_not_fit(gen):
    weight = randn(gen, 16, 32)
    x = randn(gen, 2, 32)
    norm = gemv.NormOutput(torch.ones(16, device=DEVICE), 1e-6)
    with pytest.raises(ValueError, match="come together"):
        skinny_linear(x, weight, residual=randn(gen, 2, 16))
    with pytest.raises(ValueError, match="do not combine"):
        skinny_linear(x, weight, residual=randn(gen, 2, 16), norm=norm, silu_pairs=True)
    with pytest.raises(ValueError, match="residual"):
        skinny_linear(x, weight, residual=randn(gen, 2, 8), norm=norm)
    with pytest.raises(ValueError, match="norm weight"):
        skinny_linear(x, weight, residual=randn(gen, 2, 16), norm=gemv.NormOutput(torch.ones(8, device=DEVICE), 1e-6))
    with pytest.raises(ValueError, match="even number"):
        skinny_linear(x, randn(gen, 15, 32), silu_pairs=True)


@pytest.mark.parametrize("num_rows", [1, 5])
def test_default_config_matches_f_linear(gen, num_rows):
    x, weight, bias = randn(gen, num_rows, 96), randn(gen, 48, 96, scale=0.1), randn(gen, 48)
    assert_close(skinny_linear(x, weight, bias), F.linear(x, weight, bias), torch.float32)


def test_reads_strided_rows(gen):
    wide = randn(gen, 6, 100)
    weight, bias = randn(gen, 24, 72, scale=0.1), randn(gen, 24)
    for x in (wide[:, 8:80], wide[::2, :72]):  # rows 100 and 200 apart
        assert not x.is_contiguous()
        for config in CONFIGS.values():
            assert_close(skinny_linear(x, weight, bias, config=config), F.linear(x, weight, bias), torch.float32)


def test_rejects_what_it_cannot_do(gen):
    weight = randn(gen, 16, 32)
    with pytest.raises(ValueError, match="at most 8 rows"):
        skinny_linear(randn(gen, MAX_SKINNY_ROWS + 1, 32), weight)
    with pytest.raises(ValueError, match="x \\[M, K\\]"):
        skinny_linear(randn(gen, 2, 16), weight)
    with pytest.raises(ValueError, match="contiguous last dims"):
        skinny_linear(randn(gen, 32, 2).t(), weight)
    with pytest.raises(ValueError, match="needs one of"):
        skinny_linear(randn(gen, 2, 32, dtype=torch.bfloat16), weight)
    with pytest.raises(ValueError, match="bias"):
        skinny_linear(randn(gen, 2, 32), weight, randn(gen, 8))
    assert skinny_linear(randn(gen, 0, 32), weight).shape == (0, 16)


@pytest.mark.parametrize("m,n,k,num_sms", [
    (1, 3072, 2048, 132), (1, 2048, 2048, 132), (1, 2048, 8192, 132), (1, 16384, 2048, 132),
    (1, 128256, 2048, 132), (8, 2048, 8192, 132), (4, 4096, 14336, 132), (3, 40, 72, 8), (1, 8, 16, 132),
])
def test_config_fills_the_device_without_empty_splits(m, n, k, num_sms):
    cfg = choose_config(m, n, k, num_sms)
    block_n, block_k, split_k = cfg["block_n"], cfg["block_k"], cfg["split_k"]
    assert block_n & (block_n - 1) == 0 and block_k & (block_k - 1) == 0
    num_blocks_n, num_steps_k = -(-n // block_n), -(-k // block_k)
    steps_per_split = -(-num_steps_k // split_k)
    assert 1 <= split_k <= gemv.MAX_SPLIT_K and (split_k - 1) * steps_per_split < num_steps_k  # none empty
    if m == 1:  # the H100 sweep's rule
        assert block_n == gemv.ONE_ROW_BLOCK_N
        assert (split_k > 1) == (num_blocks_n < gemv.ONE_ROW_SPLIT_BELOW * num_sms and num_steps_k > 1)
    elif num_blocks_n >= gemv.MIN_PROGRAMS_PER_SM * num_sms:
        assert split_k == 1  # enough columns: no partials, no second kernel
    elif num_steps_k >= gemv.MAX_SPLIT_K:
        assert num_blocks_n * split_k >= gemv.PROGRAMS_PER_SM * num_sms // 2
    assert cfg == choose_config(m, n, k, num_sms)  # a function of its arguments only


@pytest.mark.parametrize("n,k,split_k", [  # the sweep's best split at one row on the H100 (132 SMs)
    (3072, 2048, 4), (2048, 2048, 4), (16384, 2048, 1), (2048, 8192, 4),  # Llama-3.2-1B qkv, o, gate_up, down
    (6144, 4096, 1), (4096, 4096, 4), (28672, 4096, 1), (4096, 14336, 4),  # Llama-3.1-8B
])
def test_one_row_config_is_the_sweep_s_winner(n, k, split_k):
    assert choose_config(1, n, k, 132) == {"block_n": 8, "block_k": 256, "split_k": split_k, "num_warps": 4,
                                           "num_stages": 1}


def spy_on_kernel(monkeypatch) -> list[int]:
    calls = []

    def counting(x, weight, bias=None, **kw):
        calls.append(x.shape[0])
        return skinny_linear(x, weight, bias, **kw)
    monkeypatch.setattr(gemv, "skinny_linear", counting)
    return calls


class DoubleGroup(TensorParallelGroup):
    """Rank 0 of two whose other rank holds the same partial product: all_reduce doubles."""

    def __init__(self) -> None:
        super().__init__(0, 2)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2)


@pytest.mark.parametrize("tp", [TensorParallelGroup(), DoubleGroup()], ids=["tp1", "tp2"])
def test_layers_give_the_same_output_with_the_kernel(gen, monkeypatch, tp):
    calls = spy_on_kernel(monkeypatch)
    monkeypatch.setattr(gemv, "DISPATCH_MAX_ROWS", MAX_SKINNY_ROWS)  # every row count the kernel takes
    column = ColumnParallelLinear(48, 96, bias=True, tp=tp, device=DEVICE)
    row = RowParallelLinear(64, 48, bias=True, tp=tp, device=DEVICE)  # takes a strided part of column's output
    for layer in (column, row):
        assert layer.use_skinny_kernel is False
        for param in layer.parameters():
            param.copy_(randn(gen, *param.shape, scale=0.1))
    for num_rows in (1, 3, 8, 12):
        x = randn(gen, num_rows, 48)
        column.use_skinny_kernel = row.use_skinny_kernel = False
        expected_mid = column(x)
        expected = row(expected_mid[:, :row.in_features])
        column.use_skinny_kernel = row.use_skinny_kernel = True
        mid = column(x)
        assert_close(mid, expected_mid, torch.float32)
        assert_close(row(mid[:, :row.in_features]), expected, torch.float32)
    assert calls == [1, 1, 3, 3, 8, 8]  # 12 rows: F.linear
    monkeypatch.setattr(gemv, "DISPATCH_MAX_ROWS", 1)  # the default: one row only
    calls.clear()
    for num_rows in (1, 2):
        column(randn(gen, num_rows, 48))
    column(randn(gen, 1, 1, 48))  # 3-D input: F.linear
    assert calls == [1]


def test_enable_skinny_kernels_sets_every_parallel_linear():
    model = nn.ModuleDict({
        "qkv": QKVParallelLinear(32, 8, 4, 2, bias=False), "o": RowParallelLinear(32, 32, bias=False),
        "mlp": nn.Sequential(ColumnParallelLinear(32, 64, bias=False), RowParallelLinear(64, 32, bias=False)),
        "plain": nn.Linear(32, 32),
    })
    assert enable_skinny_kernels(model) == 4
    assert model["qkv"].use_skinny_kernel and model["mlp"][1].use_skinny_kernel
    assert enable_skinny_kernels(model, enabled=False) == 4
    assert not any(getattr(m, "use_skinny_kernel", False) for m in model.modules())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_rows", [1, 3])
def test_argmax_epilogue_matches_torch_argmax(gen, dtype, num_rows):
    # Each row's argmax of the logits rounded to the dtype, over the first num_columns, ties to the
    # lowest column, as torch.argmax of skinny_linear's logits in fp32. Row 0's best column is there
    # twice (two equal weight rows); row 2 (of 3) is zeros: every logit ties. Launched twice each
    # (the packed maxima and the counter are left at zero for the next launch).
    n, k = 300, 64
    x = randn(gen, num_rows, k, dtype=dtype)
    weight = randn(gen, n, k, dtype=dtype, scale=0.1)
    best = int(torch.randint(0, n // 2, (1,), generator=gen))
    weight[best] = x[0] * 0.5
    weight[best + n // 2] = weight[best]
    if num_rows == 3:
        x[2] = 0
    for num_columns in (None, n - 7):
        expected = skinny_linear(x, weight).float()[:, :num_columns].argmax(dim=-1)
        for _ in range(2):
            got = skinny_argmax(x, weight, num_columns)
            assert got.dtype == torch.int64 and got.shape == (num_rows,)
            assert got.tolist() == expected.tolist()
    assert skinny_argmax(x, weight)[0].item() == best  # the tie's lower column
    if num_rows == 3:
        assert skinny_argmax(x, weight)[2].item() == 0
    with pytest.raises(ValueError, match="columns"):
        skinny_argmax(x, weight, n + 1)


def test_argmax_epilogue_orders_negative_values(gen):
    # Every logit negative (weight rows are negative multiples of x): the largest is the smallest
    # multiple; and one positive logit above them all wins.
    n, k = 200, 32
    x = randn(gen, 1, k)
    scales = torch.rand(n, 1, generator=gen) + 0.1
    weight = (-scales * x.cpu()).to(DEVICE)
    assert skinny_argmax(x, weight).item() == int(scales.argmin())
    weight[n - 1] = x[0] * 1e-3
    assert skinny_argmax(x, weight).item() == n - 1


@needs_cuda
@pytest.mark.parametrize("num_rows", [1, 4])
@pytest.mark.parametrize("n,k", [(3072, 2048), (2048, 8192), (128256, 2048)])
def test_real_shapes_on_cuda(gen, num_rows, n, k):
    x = randn(gen, num_rows, k, dtype=torch.bfloat16)
    weight = randn(gen, n, k, dtype=torch.bfloat16, scale=0.02)
    bias = randn(gen, n, dtype=torch.bfloat16, scale=0.1)
    assert rel_err(skinny_linear(x, weight), F.linear(x, weight)) < 1e-2
    assert rel_err(skinny_linear(x, weight, bias), F.linear(x, weight, bias)) < 1e-2


@needs_cuda
def test_argmax_epilogue_on_the_llama_lm_head(gen):
    # The 1B LM head's shape: 16032 column blocks fold their maxima into one value per row.
    x = randn(gen, 1, 2048, dtype=torch.bfloat16)
    weight = randn(gen, 128256, 2048, dtype=torch.bfloat16, scale=0.02)
    for _ in range(3):
        x.copy_(randn(gen, 1, 2048, dtype=torch.bfloat16))
        assert skinny_argmax(x, weight).tolist() == skinny_linear(x, weight).float().argmax(-1).tolist()


@needs_cuda
@pytest.mark.parametrize("n,k", [(2048, 2048), (16384, 2048)])  # split K, and not
def test_cuda_graph_replays_with_new_inputs(gen, n, k):
    x = randn(gen, 2, k, dtype=torch.bfloat16)
    weight = randn(gen, n, k, dtype=torch.bfloat16, scale=0.02)
    bias = randn(gen, n, dtype=torch.bfloat16, scale=0.1)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        skinny_linear(x, weight, bias)  # compile outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = skinny_linear(x, weight, bias)
    for _ in range(2):
        x.copy_(randn(gen, 2, k, dtype=torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        assert rel_err(out, F.linear(x, weight, bias)) < 1e-2


def test_skinny_gemv_default_is_off_without_a_hopper_gpu(tmp_path):
    """skinny_gemv=None (auto) turns the kernel on only for CUDA devices of compute capability >= 9
    at tensor-parallel size 1; on the CPU, even with the Triton backend, the linears keep F.linear."""
    from llm_core import LLM
    from tests.helpers.checkpoints import make_text_checkpoint
    path = make_text_checkpoint(tmp_path / "llama", "llama")
    llm = LLM(str(path), device="cpu", attention_backend="triton")
    model = llm.engine.runner.model
    assert llm.engine.config.model.skinny_gemv is None
    linears = [m for m in model.modules() if isinstance(m, (ColumnParallelLinear, RowParallelLinear))]
    assert linears and not any(m.use_skinny_kernel for m in linears)
    assert not model.fused_decode
