"""Arrival counters for kernels whose programs finish a reduction themselves: each program of a
group (the K splits of a GEMV column block, the KV splits of a decode-attention head group) adds
1 to the group's counter after storing its partial result; the one that sees the last count
combines the partials and sets the counter back to 0. So no second kernel is launched, and the
buffer is all zeros between launches.

One int32 buffer per device, shared by every such kernel: launches on one stream run one after
another (a kernel launched with PDL touches counters only after its gdc_wait), and each resets the
slots it used before it ends.
"""

from __future__ import annotations

import torch

COUNTER_SLOTS = 1 << 16
GRID_SLOT = COUNTER_SLOTS - 1  # the GEMV's whole-grid counter (residual epilogue)

_COUNTERS: dict[tuple[str, torch.device], torch.Tensor] = {}


def arrival_counters(device: torch.device) -> torch.Tensor:
    """The device's counters ([COUNTER_SLOTS] int32, zero). Allocated on first use, which must not
    be inside a CUDA graph capture (each captured kernel runs once before capture)."""
    return zeroed_counters("arrival counters", device, COUNTER_SLOTS)


def zeroed_counters(owner: str, device: torch.device, slots: int) -> torch.Tensor:
    """`owner`'s int32 buffer of `slots` zeros on device (its kernels leave it zero), allocated on
    first use, which must not be inside a CUDA graph capture."""
    counters = _COUNTERS.get((owner, device))
    if counters is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"{owner} are allocated on a kernel's first call, which must come before CUDA graph "
                               "capture")
        counters = _COUNTERS[(owner, device)] = torch.zeros(slots, dtype=torch.int32, device=device)
    return counters
