"""Programmatic dependent launch (PDL, Hopper and later) for the decode kernels.

A kernel launched with PDL may start while the kernel before it on the stream still runs: its
programs first do what needs nothing from that kernel (the GEMV loads its first two weight tiles),
then `gdc_wait()` blocks until the previous kernel has finished and its writes are visible.
Each of our PDL kernels calls `gdc_launch_dependents()` first thing, so the next one may be
scheduled as soon as all of its programs have started. Rules for a kernel launched this way:
nothing it reads before the wait may be written by an earlier kernel (weights only), and
nothing is stored before the wait (an earlier kernel may still read that memory).

Under CUDA graph capture the launches keep their programmatic edges (CUDA >= 12.3). Without
PDL (older GPUs, the interpreter, `TRIBUTARY_DISABLE_PDL=1`) the kernels are compiled without
the wait and launched as usual.
"""

from __future__ import annotations

import functools
import os

import torch

DISABLE_ENV = "TRIBUTARY_DISABLE_PDL"


@functools.lru_cache(maxsize=None)
def _device_supports_pdl(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def device_supports_pdl(device: torch.device) -> bool:
    """A CUDA device of compute capability >= 9 (Hopper and later), whatever the environment says."""
    return device.type == "cuda" and _device_supports_pdl(
        device.index if device.index is not None else torch.cuda.current_device())


def pdl_enabled(device: torch.device) -> bool:
    """Whether kernels on `device` are launched with PDL: CUDA, compute capability >= 9, and
    TRIBUTARY_DISABLE_PDL unset (or 0)."""
    if device.type != "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    if os.environ.get(DISABLE_ENV, "0") not in ("", "0"):
        return False
    return device_supports_pdl(device)


def pdl_launch_args(device: torch.device) -> tuple[bool, dict]:
    """(USE_PDL constexpr value, extra launch keyword arguments) for a kernel on `device`."""
    use = pdl_enabled(device)
    return use, ({"launch_pdl": True} if use else {})
