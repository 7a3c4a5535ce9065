"""Tensor parallelism: the process group, the parallel layers, and the driver and workers that run a
model split over several GPUs of one host (or several CPU processes with gloo).

Re-exports resolve lazily: the model imports the layers, and the executor imports the model.
"""

import importlib

_EXPORTS = {
    "TensorParallelGroup": "llm_core.distributed.group",
    "SINGLE": "llm_core.distributed.group",
    "TensorParallelExecutor": "llm_core.distributed.executor",
    "check_tensor_parallel": "llm_core.distributed.sharding",
    "rank_arch": "llm_core.distributed.sharding",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llm_core.distributed' has no attribute {name!r}")
