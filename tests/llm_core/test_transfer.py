"""llm_core/transfer.py: the chunked argmax against torch.argmax, and host-to-device copies."""

import numpy as np
import pytest
import torch

from llm_core.transfer import argmax_rows, chunked_argmax, to_device

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("width", [4096, 4099, 5000, 128256])  # 4099: no divisor, padded
@pytest.mark.parametrize("rows", [1, 3, 32])
def test_chunked_argmax_equals_torch_on_random_rows(rows, width):
    gen = torch.Generator().manual_seed(rows * 7 + width)
    x = torch.randn(rows, width, generator=gen)
    assert torch.equal(chunked_argmax(x), x.argmax(dim=-1))


def test_chunked_argmax_ties_go_to_the_lowest_index():
    x = torch.zeros(4, 5000)
    x[0, [3000, 17, 4999]] = 2.0  # three equal maxima in three chunks: the first wins
    x[1, [1030, 1025]] = 1.0  # two in one chunk
    x[2, 4990:] = 5.0  # the maximum inside the padded last chunk
    # row 3: all equal: index 0
    assert chunked_argmax(x).tolist() == [17, 1025, 4990, 0]
    assert chunked_argmax(x).tolist() == x.argmax(dim=-1).tolist()


@pytest.mark.parametrize("width", [4500, 4099])
def test_chunked_argmax_masked_rows(width):
    x = torch.full((2, width), float("-inf"))
    x[1, 4021] = -3.0  # everything else masked out (as a grammar leaves one token)
    assert chunked_argmax(x).tolist() == [0, 4021]


def test_argmax_rows_falls_back_off_cuda():
    x = torch.randn(2, 10_000)
    assert torch.equal(argmax_rows(x), x.argmax(dim=-1))


def test_to_device_converts_on_cpu():
    out = to_device(np.arange(5, dtype=np.int64), torch.device("cpu"), torch.int32)
    assert out.dtype == torch.int32 and out.tolist() == [0, 1, 2, 3, 4]
    assert to_device([[1.5, 2.0]], torch.device("cpu"), torch.float32).tolist() == [[1.5, 2.0]]
    assert to_device((3, 4), torch.device("cpu"), torch.int64).tolist() == [3, 4]


@requires_cuda
def test_to_device_copies_behind_queued_work():
    """The copies land in order with the stream's work, from reused pinned buffers."""
    dev = torch.device("cuda")
    results = []
    busy = torch.randn(4096, 4096, device=dev)
    for i in range(20):
        busy = busy @ busy.T / 4096  # keeps the stream busy while the host goes on
        results.append(to_device(np.full(1000, i, dtype=np.int64), dev))
    torch.cuda.synchronize()
    assert [int(r.unique().item()) for r in results] == list(range(20))


@requires_cuda
@pytest.mark.parametrize("rows", [1, 8, 64, 600])
def test_argmax_rows_on_cuda_equals_torch(rows):
    x = torch.randn(rows, 128256, device="cuda")
    x[0, 5] = x[0, 70000] = x[0].max() + 1  # a tie across chunks
    assert torch.equal(argmax_rows(x), x.argmax(dim=-1))
    assert argmax_rows(x)[0].item() == 5
