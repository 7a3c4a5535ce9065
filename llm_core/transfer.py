"""Host-to-device copies that never wait for the GPU, and reductions shaped for few long rows.

A copy from pageable host memory makes the host wait until the stream has drained (the driver
stages it through its own buffer): in an eager step with a dozen small inputs, host and GPU then
take turns instead of overlapping. `to_device` stages through pinned memory from torch's caching
host allocator, which keeps each buffer until the copy that reads it has finished, so the copy is
queued like a kernel.
"""

from __future__ import annotations

import functools

import numpy as np
import torch


def to_device(data: np.ndarray | torch.Tensor | list | tuple, device: torch.device,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """`data` (a host array, tensor or list) as a tensor on `device`, converted to `dtype`,
    queued on the current stream without waiting for it (CUDA); on the CPU a tensor of the data."""
    if isinstance(data, np.ndarray):
        tensor = torch.from_numpy(data)
    elif isinstance(data, torch.Tensor):
        tensor = data
    else:
        tensor = torch.tensor(data, dtype=dtype)
    if dtype is not None and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


# Width of the chunks that argmax_rows reduces in parallel, and the most rows it splits (past
# that, one block per row fills the GPU).
_CHUNK = 1024
_MAX_SPLIT_ROWS = 512


def argmax_rows(x: torch.Tensor) -> torch.Tensor:
    """x.argmax(dim=-1) of [R, V], ties to the lowest index like torch.argmax; NaN wins as there.

    torch gives each row of a reduction one thread block, so one row of 128k logits takes an
    H100 ~50 us (and 64 rows use 64 of its 132 SMs); up to 512 long rows are cut into chunks of
    512..1024 reduced in parallel (chunk maxima, then the first chunk holding the row's maximum)."""
    rows, width = x.shape
    if x.device.type != "cuda" or rows > _MAX_SPLIT_ROWS or width < 4 * _CHUNK:
        return x.argmax(dim=-1)
    return chunked_argmax(x)


@functools.lru_cache(maxsize=64)
def _chunk_width(width: int) -> int:
    """A divisor of `width` in [_CHUNK / 2, _CHUNK] (no padding copy), else _CHUNK."""
    return next((c for c in range(_CHUNK, _CHUNK // 2 - 1, -1) if width % c == 0), _CHUNK)


def chunked_argmax(x: torch.Tensor) -> torch.Tensor:
    """argmax_rows' chunked reduction, on any device (the tests run it on the CPU)."""
    rows, width = x.shape
    chunk_width = _chunk_width(width)
    pad = (-width) % chunk_width
    if pad:
        x = torch.nn.functional.pad(x, (0, pad), value=float("-inf"))
    values, within = x.reshape(rows, -1, chunk_width).max(dim=-1)  # [R, C] each chunk's max, first index
    chunk = values.argmax(dim=-1, keepdim=True)  # [R, 1] first chunk holding the row's max
    return (chunk * chunk_width + within.gather(1, chunk)).squeeze(1)
