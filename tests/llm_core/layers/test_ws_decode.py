"""The warp-specialized decode kernel (llm_core/layers/kernels/ws_decode.py) against the torch
reference of Llama decoder layers that test_persistent_decode.py checks the persistent kernel with,
on fresh random weights, caches and positions. The kernel needs Hopper (TMA, wgmma): without one only
the size rules are tested here."""

from __future__ import annotations

import random

import pytest
import torch

pytest.importorskip("triton.experimental.gluon.language.nvidia.hopper")

from llm_core.layers.kernels.persistent_decode import DecodeWorkspace, layer_counters  # noqa: E402
from llm_core.layers.kernels.ws_decode import (  # noqa: E402
    ring_slots, ws_decode, ws_decode_available, ws_decode_supported,
)
from tests.llm_core.layers.test_persistent_decode import check, decode_layers, make_case, step_inputs  # noqa: E402

needs_hopper = pytest.mark.skipif(not (torch.cuda.is_available() and ws_decode_available(torch.device("cuda"))),
                                  reason="needs a Hopper GPU")
# The smallest sizes the tiles take (K / 256 = 8 chunks: wgmma's smallest N), with the 1B model's heads.
SMALL = {"hidden": 2048, "num_heads": 32, "num_kv_heads": 8, "head_dim": 64, "intermediate": 2048}


def test_supported_sizes():
    # Llama-3.2-1B: every K / 256 (8, 8, 32) divides the 64 rows of a tile.
    assert ws_decode_supported(2048, 32, 8, 64, 8192, 16)
    # Llama-3.1-8B's intermediate (14336 = 56 x 256) does not; nor odd head dims, groups or split counts.
    assert not ws_decode_supported(4096, 32, 8, 128, 14336, 16)
    assert not ws_decode_supported(2048, 32, 8, 64, 8192, 12)
    assert not ws_decode_supported(2048, 24, 8, 64, 8192, 16)
    assert not ws_decode_supported(2048, 32, 1, 64, 8192, 16)  # 32 query heads: more than attention's 16 rows
    assert not ws_decode_supported(2048, 32, 8, 96, 8192, 16)
    assert not ws_decode_supported(2000, 32, 8, 64, 8192, 16)
    assert not ws_decode_supported(512, 8, 2, 64, 1024, 16)  # 2 and 4 chunks: below wgmma's N of 8


def test_ring_slots_leave_room_for_the_staged_inputs():
    assert ring_slots(2048, 2048, 8192) == 6  # the 1B: 24 KiB staged
    assert ring_slots(16384, 16384, 16384) == 3  # 96 KiB staged: 227 - 96 - 8 = 123 KiB, 3 slots
    for sizes in [(2048, 2048, 2048), (4096, 4096, 16384), (16384, 16384, 16384)]:
        assert ring_slots(*sizes) * 32 * 1024 + 2 * sum(sizes) + 8 * 1024 <= 227 * 1024


@pytest.fixture
def gen() -> torch.Generator:
    seed = random.randrange(2**31)
    print(f"ws decode test seed: {seed}")
    return torch.Generator().manual_seed(seed)


@needs_hopper
@pytest.mark.parametrize("prefetch_kv,keys", [
    (0, (20, 300)), (1, (20, 300)), (2, (20, 300)), (3, (20, 300)),
    # Long contexts: splits of several tiles (the attention's loop over the split's other tiles).
    (0, (900, 1500)), (3, (900, 1500)),
])
def test_layers_match_reference(gen, prefetch_kv, keys):
    case = make_case(gen, **SMALL, seq_len=int(torch.randint(*keys, (1,), generator=gen)), dtype=torch.bfloat16,
                     num_layers=3)
    h = case["h"].clone()
    k_caches = [k.clone() for k in case["k_caches"]]
    v_caches = [v.clone() for v in case["v_caches"]]
    step = step_inputs(case, h.device)
    step.pop("sliding_window")
    ws_decode(h, decode_layers(case, k_caches, v_caches), **step, prefetch_kv=prefetch_kv)
    check(case, (h, k_caches, v_caches), torch.bfloat16)


@needs_hopper
def test_final_norm_and_repeated_launches(gen):
    # The last program out writes RMSNorm(h) too, and leaves the counters at 0 for the next launch.
    case = make_case(gen, **SMALL, seq_len=77, dtype=torch.bfloat16, num_layers=2)
    layers = decode_layers(case, [k.clone() for k in case["k_caches"]], [v.clone() for v in case["v_caches"]])
    step = step_inputs(case, case["h"].device)
    step.pop("sliding_window")
    weight = 1 + 0.1 * torch.randn(SMALL["hidden"], generator=gen).to(torch.bfloat16).cuda()
    workspace = DecodeWorkspace(SMALL["num_heads"], SMALL["head_dim"], SMALL["intermediate"], 16, torch.bfloat16,
                                case["h"].device)
    results = []
    for _ in range(3):
        h = case["h"].clone()
        normed = torch.empty_like(h)
        ws_decode(h, layers, **step, workspace=workspace, final_norm=(weight, 1e-6), normed=normed)
        results.append((h, normed))
        assert int(layer_counters(h.device).abs().sum()) == 0
    hf = results[0][0].float()
    expected = ((hf * torch.rsqrt(hf.pow(2).mean() + 1e-6)).to(torch.bfloat16).float() * weight.float())
    torch.testing.assert_close(results[0][1].float(), expected, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(results[1][0], results[0][0], atol=0, rtol=0)  # the same step again: the same h
    torch.testing.assert_close(results[2][0], results[0][0], atol=0, rtol=0)
