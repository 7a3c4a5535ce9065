"""The LLM engine: scheduler, model runner, models, attention, sampler, offline API.

Re-exports resolve lazily, so that importing a torch-free submodule (the engine client,
the scheduler) does not import torch.
"""

import importlib

_EXPORTS = {
    "LLM": "llm_core.llm",
    "SamplingParams": "llm_core.sampling_params",
    "RequestOutput": "llm_core.outputs",
    "CompletionDelta": "llm_core.outputs",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llm_core' has no attribute {name!r}")
