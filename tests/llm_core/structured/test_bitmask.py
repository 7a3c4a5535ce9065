import numpy as np
import pytest
import torch

from llm_core.structured import allocate_token_bitmask, apply_token_bitmask, apply_token_bitmask_torch
from llm_core.structured import bitmask_kernel


def reference(logits: torch.Tensor, bitmask: torch.Tensor, rows) -> torch.Tensor:
    out = logits.clone()
    vocab = logits.shape[1]
    bits = np.unpackbits(bitmask.numpy().astype("<i4").view(np.uint8), axis=1, bitorder="little")
    for r in range(logits.shape[0]) if rows is None else rows:
        for t in range(vocab):
            if t >= bits.shape[1] or not bits[r, t]:
                out[r, t] = float("-inf")
    return out


def random_case(seed: int, batch: int, vocab: int, width: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=g).to(dtype)
    bitmask = torch.randint(-2 ** 31, 2 ** 31 - 1, (batch, width), generator=g, dtype=torch.int64)
    return logits, bitmask.to(torch.int32)


@pytest.mark.parametrize("vocab,width,rows", [(64, 2, None), (70, 3, [0, 2]), (100, 2, [1]), (33, 2, []),
                                              (40, 2, torch.tensor([2, 0]))])
def test_torch_matches_the_reference(vocab, width, rows):
    logits, bitmask = random_case(vocab, 3, vocab, width)
    expected = reference(logits, bitmask, None if rows is None else list(map(int, rows)))
    apply_token_bitmask_torch(logits, bitmask, rows)
    assert torch.equal(logits, expected)


def test_all_ones_bitmask_changes_nothing_and_cpu_dispatches_to_torch():
    logits = torch.randn(2, 50)
    before = logits.clone()
    apply_token_bitmask(logits, allocate_token_bitmask(2, 50))
    assert torch.equal(logits, before)
    bitmask = torch.zeros(2, 2, dtype=torch.int32)
    bitmask[0, 0] = 0b101
    apply_token_bitmask(logits, bitmask, rows=[0])
    assert torch.isfinite(logits[0]).tolist() == [True, False, True] + [False] * 47
    assert torch.equal(logits[1], before[1])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="int32"):
        apply_token_bitmask(torch.zeros(1, 8), torch.zeros(1, 1, dtype=torch.int64))
    with pytest.raises(ValueError, match="logits"):
        apply_token_bitmask(torch.zeros(2, 8), torch.zeros(1, 1, dtype=torch.int32))


@pytest.mark.skipif(not bitmask_kernel.is_available(), reason="needs triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows", [None, [2, 0]])
def test_triton_kernel_matches_torch_under_the_interpreter(monkeypatch, dtype, rows):
    import triton
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    interpreted = triton.jit(bitmask_kernel.apply_token_bitmask_kernel.fn)
    monkeypatch.setattr(bitmask_kernel, "apply_token_bitmask_kernel", interpreted)
    logits, bitmask = random_case(7, 3, 75, 3, dtype)
    expected = logits.clone()
    apply_token_bitmask_torch(expected, bitmask, rows)
    bitmask_kernel.apply_token_bitmask_triton(logits, bitmask, rows, block_size=32)
    assert torch.equal(logits, expected)
