"""Tensor-parallel linear and embedding layers (Megatron-style), each holding one rank's shard.

- ColumnParallelLinear and its merged forms (QKVParallelLinear, MergedColumnParallelLinear):
  the output features are split; each rank computes its slice of y, with no communication.
- RowParallelLinear: the input features are split (x is a column-parallel output); partial
  products are summed with one all-reduce, the bias is added once after it.
- VocabParallelEmbedding: the vocabulary rows are split; ids outside a rank's range give zero
  rows and the all-reduce fills them in. vocab_parallel_logits multiplies by the same shard and
  gathers the logits on the driver.

At tensor-parallel size 1 each layer is exactly nn.Linear / nn.Embedding: the same parameters,
the same single kernel call, no communication.

Skinny GEMMs: a linear layer with `use_skinny_kernel` set (by enable_skinny_kernels; the engine
does it per its skinny_gemv option, on by default on Hopper GPUs) multiplies a 2-D input of at most DISPATCH_MAX_ROWS rows (decode) with the
Triton kernel of llm_core/layers/kernels/gemv.py instead of F.linear, on CUDA (or on CPU under
TRITON_INTERPRET=1). Triton is imported only then, so CPU installs without it still work.

Loading: `narrow_checkpoint(param_name, tensor, shard)` returns this rank's part of a checkpoint
tensor (the loader copies it in); the merged layers' `shard_slice(shard)` names the rows of
their parameter that a checkpoint tensor (q, k, v; gate, up) fills.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from llm_core.distributed.group import SINGLE, TensorParallelGroup
from llm_core.distributed.sharding import kv_head_start, num_rank_kv_heads, num_rank_vocab


def _parameter(*shape: int, dtype=None, device=None) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype, device=device), requires_grad=False)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, use_skinny_kernel: bool) -> torch.Tensor:
    """F.linear, or skinny_linear where use_skinny_kernel is set and the kernel takes x."""
    if (use_skinny_kernel and x.dim() == 2 and x.stride(-1) == 1
            and (x.is_cuda or os.environ.get("TRITON_INTERPRET") == "1")):
        from llm_core.layers.kernels.gemv import DISPATCH_MAX_ROWS, skinny_linear
        if x.shape[0] <= DISPATCH_MAX_ROWS:
            return skinny_linear(x, weight, bias)
    return F.linear(x, weight, bias)


class ColumnParallelLinear(nn.Module):
    """y[:, rank's columns] = x @ W[rank's rows]^T + b[rank's rows]; weight [out / tp, in]."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool, tp: TensorParallelGroup = SINGLE,
                 dtype=None, device=None) -> None:
        super().__init__()
        if out_features % tp.size:
            raise ValueError(f"{type(self).__name__}: {out_features} output features do not split over "
                             f"{tp.size} ranks")
        self.tp = tp
        self.in_features, self.out_features = in_features, out_features // tp.size
        self.weight = _parameter(self.out_features, in_features, dtype=dtype, device=device)
        self.bias = _parameter(self.out_features, dtype=dtype, device=device) if bias else None
        self.use_skinny_kernel = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(x, self.weight, self.bias, self.use_skinny_kernel)

    def narrow_checkpoint(self, param_name: str, tensor: torch.Tensor, shard=None) -> torch.Tensor:
        start, end = self.tp.partition(tensor.shape[0])
        return tensor[start:end]


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of one input in one weight (gate/up): each rank holds
    its slice of every part, parts in order. Shard i is part i."""

    def __init__(self, in_features: int, output_sizes: list[int], *, bias: bool,
                 tp: TensorParallelGroup = SINGLE, dtype=None, device=None) -> None:
        for size in output_sizes:
            if size % tp.size:
                raise ValueError(f"{type(self).__name__}: a part of {size} features does not split over "
                                 f"{tp.size} ranks")
        super().__init__(in_features, sum(output_sizes), bias=bias, tp=tp, dtype=dtype, device=device)
        self.rank_sizes = [size // tp.size for size in output_sizes]

    def shard_slice(self, shard: int) -> slice:
        start = sum(self.rank_sizes[:shard])
        return slice(start, start + self.rank_sizes[shard])


class QKVParallelLinear(ColumnParallelLinear):
    """q, k and v of attention in one weight, split by heads: each rank holds num_heads / tp query
    heads and their KV heads (num_kv_heads / tp, or one replicated head when tp > num_kv_heads)."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, *, bias: bool,
                 tp: TensorParallelGroup = SINGLE, dtype=None, device=None) -> None:
        if num_heads % tp.size or (num_kv_heads % tp.size and tp.size % num_kv_heads):
            raise ValueError(f"{num_heads} query heads and {num_kv_heads} KV heads do not split over "
                             f"{tp.size} ranks")
        self.head_dim = head_dim
        self.num_kv_heads = num_kv_heads
        self.num_rank_heads = num_heads // tp.size
        self.num_rank_kv_heads = num_rank_kv_heads(num_kv_heads, tp.size)
        rank_out = (self.num_rank_heads + 2 * self.num_rank_kv_heads) * head_dim
        super().__init__(hidden_size, rank_out * tp.size, bias=bias, tp=tp, dtype=dtype, device=device)

    def shard_slice(self, shard: str) -> slice:
        q, kv = self.num_rank_heads * self.head_dim, self.num_rank_kv_heads * self.head_dim
        start = {"q": 0, "k": q, "v": q + kv}[shard]
        return slice(start, start + (q if shard == "q" else kv))

    def narrow_checkpoint(self, param_name: str, tensor: torch.Tensor, shard=None) -> torch.Tensor:
        if shard == "q":
            start, size = self.tp.rank * self.num_rank_heads, self.num_rank_heads
        else:
            start, size = kv_head_start(self.num_kv_heads, self.tp.size, self.tp.rank), self.num_rank_kv_heads
        return tensor[start * self.head_dim:(start + size) * self.head_dim]


class RowParallelLinear(nn.Module):
    """y = sum over ranks of x[:, rank's columns] @ W[:, rank's columns]^T, then + b; weight [out, in / tp].

    The input is this rank's slice of a column-parallel output; the output is whole on every rank.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool, tp: TensorParallelGroup = SINGLE,
                 dtype=None, device=None) -> None:
        super().__init__()
        if in_features % tp.size:
            raise ValueError(f"{type(self).__name__}: {in_features} input features do not split over "
                             f"{tp.size} ranks")
        self.tp = tp
        self.in_features, self.out_features = in_features // tp.size, out_features
        self.weight = _parameter(out_features, self.in_features, dtype=dtype, device=device)
        self.bias = _parameter(out_features, dtype=dtype, device=device) if bias else None
        self.use_skinny_kernel = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return _linear(x, self.weight, self.bias, self.use_skinny_kernel)
        y = self.tp.all_reduce(_linear(x, self.weight, None, self.use_skinny_kernel))
        return y if self.bias is None else y + self.bias

    def narrow_checkpoint(self, param_name: str, tensor: torch.Tensor, shard=None) -> torch.Tensor:
        if param_name == "bias":
            return tensor
        start, end = self.tp.partition(tensor.shape[1])
        return tensor[:, start:end]


def enable_skinny_kernels(model: nn.Module, enabled: bool = True, fused_decode: bool = False,
                          persistent_decode: bool = False, ws_decode: bool | None = False) -> int:
    """Sets use_skinny_kernel on every ColumnParallelLinear and RowParallelLinear in model and on every
    module with an LM head applied through vocab_parallel_logits (`skinny_lm_head`), and
    `fused_decode` (enabled and fused_decode), `persistent_decode` (that and persistent_decode) and
    `ws_decode` (the persistent kernel's warp-specialized form: as given, None for the model's
    default, where persistent_decode is set) on every module that has them (the Llama family's fused
    decode path and its persistent kernels); returns how many linears."""
    layers = [m for m in model.modules() if isinstance(m, (ColumnParallelLinear, RowParallelLinear))]
    for layer in layers:
        layer.use_skinny_kernel = enabled
    for module in model.modules():
        if hasattr(module, "fused_decode"):
            module.fused_decode = enabled and fused_decode
        if hasattr(module, "skinny_lm_head"):
            module.skinny_lm_head = enabled
        if hasattr(module, "persistent_decode"):
            module.persistent_decode = enabled and fused_decode and persistent_decode
        if hasattr(module, "ws_decode"):
            module.ws_decode = ws_decode if enabled and fused_decode and persistent_decode else False
    return len(layers)


class VocabParallelEmbedding(nn.Module):
    """Embedding rows split over ranks: rank r holds ids [r * R, (r + 1) * R), R = ceil(vocab / tp),
    rows past the vocabulary zero. forward(ids [T]) -> [T, dim], whole on every rank."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, tp: TensorParallelGroup = SINGLE,
                 dtype=None, device=None) -> None:
        super().__init__()
        self.tp = tp
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.num_rank_embeddings = num_rank_vocab(num_embeddings, tp.size)
        self.vocab_start = tp.rank * self.num_rank_embeddings
        self.vocab_end = min(self.vocab_start + self.num_rank_embeddings, num_embeddings)
        self.weight = _parameter(self.num_rank_embeddings, embedding_dim, dtype=dtype, device=device)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.size == 1:
            return F.embedding(input_ids, self.weight)
        is_local = (input_ids >= self.vocab_start) & (input_ids < self.vocab_end)  # [T]
        local_ids = (input_ids - self.vocab_start) * is_local
        x = F.embedding(local_ids, self.weight).masked_fill_(~is_local.unsqueeze(-1), 0)  # [T, dim]
        return self.tp.all_reduce(x)

    def narrow_checkpoint(self, param_name: str, tensor: torch.Tensor, shard=None) -> torch.Tensor:
        rows = tensor[self.vocab_start:self.vocab_end]
        missing = self.num_rank_embeddings - rows.shape[0]
        return F.pad(rows, (0, 0, 0, missing)) if missing else rows


class ParallelLMHead(VocabParallelEmbedding):
    """The output projection's weight [vocab, dim], split like the embedding; applied through
    vocab_parallel_logits (it has no forward of its own)."""

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise TypeError("ParallelLMHead is applied through vocab_parallel_logits")


def vocab_parallel_logits(hidden: torch.Tensor, weight: torch.Tensor, vocab_size: int,
                          tp: TensorParallelGroup = SINGLE, use_skinny_kernel: bool = False) -> torch.Tensor:
    """hidden [S, dim] times this rank's vocabulary shard weight [R, dim]. On the driver: fp32 logits
    [S, vocab_size], gathered from every rank, padding dropped. On any other rank: its own shard's
    fp32 logits [S, R] (what it sent; meaningless alone), so that callers that keep the result
    (a CUDA graph's output buffer) run unchanged on every rank. use_skinny_kernel: one row on the
    Triton GEMV (as the linear layers, _linear)."""
    local = _linear(hidden, weight, None, use_skinny_kernel)  # [S, R]
    logits = tp.gather_to_driver(local)  # [S, tp * R] on the driver
    if logits is None:
        return local.float()
    if logits.shape[-1] != vocab_size:
        logits = logits[:, :vocab_size]
    return logits.float()
