"""Load HF safetensors checkpoints into a model, one tensor at a time.

Tensors stream from each file straight into the model's preallocated parameters on the
target device (safetensors reads lazily), so the weights never exist twice in memory.
Progress is logged per file; a missing file or tensor is an error that names it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import safe_open
from torch import nn

logger = logging.getLogger(__name__)

# Checkpoint tensors that carry no weights we need.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def weight_files(model_dir: str | Path) -> list[Path]:
    """The checkpoint's safetensors files: those of the index if there is one, else all *.safetensors."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        files = [model_dir / n for n in names]
        for path in files:
            if not path.is_file():
                raise FileNotFoundError(f"weight file {path.name!r} named in {index.name} is missing from {str(model_dir)!r}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weight files in model directory {str(model_dir)!r}")
    return files


def iter_checkpoint(model_dir: str | Path, device: torch.device) -> Iterator[tuple[str, torch.Tensor]]:
    files = weight_files(model_dir)
    total_bytes = sum(p.stat().st_size for p in files)
    done_bytes, start = 0, time.perf_counter()
    load_device = str(device) if device.type == "cuda" else "cpu"
    for i, path in enumerate(files, 1):
        with safe_open(str(path), framework="pt", device=load_device) as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
        done_bytes += path.stat().st_size
        logger.info("loading weights: file %d/%d (%.1f/%.1f MB, %.1fs)", i, len(files), done_bytes / 1e6,
                    total_bytes / 1e6, time.perf_counter() - start)


def _rank_part(model: nn.Module, target: str, tensor: torch.Tensor, shard) -> torch.Tensor:
    """This rank's part of a checkpoint tensor: a tensor-parallel layer narrows it to its shard
    (llm_core/distributed/layers.py); any other parameter takes it whole."""
    module_name, _, param_name = target.rpartition(".")
    narrow = getattr(model.get_submodule(module_name), "narrow_checkpoint", None)
    return tensor if narrow is None else narrow(param_name, tensor, shard)


def load_weights(
    model: nn.Module,
    weights: Iterator[tuple[str, torch.Tensor]],
    *,
    rename: Callable[[str], str | None],
) -> None:
    """Copy checkpoint tensors into `model`'s parameters.

    `rename` maps a checkpoint name to the model's (None: skip the tensor). Merged
    projections are filled slice by slice through the model's `stacked_params` and
    `shard_slice`. Every parameter must be filled exactly once, or an error names the rest.
    """
    params = dict(model.named_parameters())
    stacked = getattr(model, "stacked_params", {})
    filled: dict[str, int] = {}
    for ckpt_name, tensor in weights:
        if ckpt_name.endswith(_IGNORED_SUFFIXES):
            continue
        name = rename(ckpt_name)
        if name is None:
            continue
        parts = name.split(".")
        target, rows, shard = name, None, None
        for i, part in enumerate(parts):
            if part in stacked:
                merged, shard = stacked[part]
                target = ".".join(parts[:i] + [merged] + parts[i + 1:])
                rows = model.shard_slice(merged, shard)
                break
        param = params.get(target)
        if param is None:
            raise KeyError(f"checkpoint tensor {ckpt_name!r} has no place in the model ({target!r})")
        tensor = _rank_part(model, target, tensor, shard)
        dest = param.data if rows is None else param.data[rows]
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ValueError(f"checkpoint tensor {ckpt_name!r} has shape {tuple(tensor.shape)}, "
                             f"the model expects {tuple(dest.shape)}")
        dest.copy_(tensor)
        filled[target] = filled.get(target, 0) + 1
    expected = {n: (3 if n.endswith("qkv_proj.weight") or n.endswith("qkv_proj.bias") else
                    2 if n.endswith("gate_up_proj.weight") or n.endswith("gate_up_proj.bias") else 1)
                for n in params}
    missing = sorted(n for n, count in expected.items() if filled.get(n, 0) < count)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise KeyError(f"checkpoint lacks weights for: {shown}")
