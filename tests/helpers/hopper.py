"""Whether the warp-specialized decode kernel (llm_core/layers/kernels/ws_decode.py) can run here: a
Hopper GPU and a Triton with Gluon's Hopper module."""

from __future__ import annotations

import torch


def ws_decode_runs_here() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        from llm_core.layers.kernels.ws_decode import ws_decode_available
    except ImportError:
        return False
    return ws_decode_available(torch.device("cuda"))
