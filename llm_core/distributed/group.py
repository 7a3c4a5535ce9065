"""The tensor-parallel group: the ranks that share one model's weights, and its collectives.

One process per rank: gloo on the CPU, NCCL on CUDA (one GPU per process). The group is
passed explicitly to the layers that communicate; at size 1 (`SINGLE`) every collective is
the identity and torch.distributed is never touched, so a single-process engine does no
extra work.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

LEAVE_TIMEOUT_S = 60.0  # destroy_group's bound on NCCL's teardown
# NVLink multicast (NVLS) is off on shared hosts: a program using it can take the host's GPUs
# out of service. Set in every process of a group before NCCL starts, unless already set.
NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


class TensorParallelGroup:
    """Rank `rank` of `size` ranks. Rank 0 is the driver: it samples, the others only compute.

    Collectives are called in the same order on every rank (each rank runs the same plan).
    """

    def __init__(self, rank: int = 0, size: int = 1) -> None:
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is outside a group of {size}")
        self.rank = rank
        self.size = size

    @property
    def is_driver(self) -> bool:
        return self.rank == 0

    def partition(self, total: int) -> tuple[int, int]:
        """[start, end) of this rank's equal share of `total` items (total must divide evenly)."""
        if total % self.size:
            raise ValueError(f"{total} does not split evenly over {self.size} tensor-parallel ranks")
        share = total // self.size
        return self.rank * share, (self.rank + 1) * share

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of x over the ranks, in place; x itself at size 1."""
        if self.size > 1:
            dist.all_reduce(x)
        return x

    def broadcast_from_driver(self, x: torch.Tensor) -> torch.Tensor:
        """The driver's x (contiguous) on every rank, in place; x itself at size 1."""
        if self.size > 1:
            dist.broadcast(x, src=0)
        return x

    def gather_to_driver(self, x: torch.Tensor) -> torch.Tensor | None:
        """x [..., N] of every rank, concatenated along the last dim on the driver ([..., size * N]);
        None on the other ranks. x itself at size 1."""
        if self.size == 1:
            return x
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.size)] if self.is_driver else None
        dist.gather(x, parts, dst=0)
        return torch.cat(parts, dim=-1) if self.is_driver else None

    def __repr__(self) -> str:
        return f"TensorParallelGroup(rank={self.rank}, size={self.size})"


SINGLE = TensorParallelGroup(0, 1)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, rank: int) -> torch.device:
    """The device of `rank`: one GPU per rank counted from the engine's GPU; the CPU for all on CPU."""
    if device.type != "cuda":
        return device
    index = (device.index or 0) + rank
    if index >= torch.cuda.device_count():
        raise ValueError(f"tensor-parallel rank {rank} needs GPU {index}, but only "
                         f"{torch.cuda.device_count()} are visible")
    return torch.device("cuda", index)


def init_group(rank: int, size: int, device: torch.device, store: dist.Store, timeout_s: float) -> TensorParallelGroup:
    """Join the default process group (one per process) over `store`; a collective that waits on a
    dead or stuck rank raises after `timeout_s` instead of hanging."""
    if dist.is_initialized():
        raise RuntimeError("this process already belongs to a tensor-parallel group: "
                           "one tensor-parallel engine per process")
    backend = backend_for(device)
    if backend == "nccl":
        for key, value in NCCL_SAFE_ENV.items():
            os.environ.setdefault(key, value)
        torch.cuda.set_device(device)
    dist.init_process_group(backend, store=store, rank=rank, world_size=size,
                            timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=device if backend == "nccl" else None)
    return TensorParallelGroup(rank, size)


def destroy_group() -> None:
    """Leave the group. Every CUDA graph that captured a collective must be destroyed first
    (ModelRunner.release_cuda_graphs): NCCL's teardown waits until no graph holds the communicator
    (NCCL's teardown polls until the graph references to the communicator are gone; on two H200s it
    waited forever while the driver's graphs were alive, the fix not yet run there). On NCCL the communicators are
    then aborted, not finalized: ncclCommFinalize + ncclCommDestroy (what destroy_process_group runs)
    is collective and would wait forever on a rank that died; abort waits for nobody, and by the time
    a rank leaves no collective is in flight (the device is synchronized first)."""
    if not dist.is_initialized():
        return
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if abort is None or dist.get_backend() != "nccl":
        dist.destroy_process_group()
        return
    torch.cuda.synchronize()
    # Bounded, as every wait on peers here: a teardown that still waits (a graph we do not know of)
    # is reported and left behind, not a process that never exits.
    leaving = threading.Thread(target=abort, name="leave-nccl-group", daemon=True)
    leaving.start()
    leaving.join(LEAVE_TIMEOUT_S)
    if leaving.is_alive():
        logger.error("leaving the NCCL group did not finish within %.0f s (a CUDA graph that captured a "
                     "collective still alive?); going on without it", LEAVE_TIMEOUT_S)
