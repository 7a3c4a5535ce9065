"""The driver's side of tensor parallelism: rank 0 lives in the engine process and drives ranks
1..N-1, each a worker process (worker.py) with its own GPU (or all on the CPU, with gloo).

Startup, in order (each wait bounded by timeout_s, a failed worker an error that names it):
1. the driver opens a TCPStore on a free port and starts the workers (subprocesses, so that a
   daemonic engine process may start them too), each told its rank and the engine's config;
2. every worker says it started, then all ranks join one process group (NCCL on CUDA, gloo on CPU);
3. every rank builds its shard of the model; each reports its KV budget, and all take the
   smallest (agree_kv_budget), so that every rank plans the same number of KV blocks.
Each step the driver pickles the plan to every worker (send_plan) and then runs it itself.
A worker that died surfaces as a RuntimeError at the next step, one that dies within a step as
the collective's error (or its timeout): never a hang. shutdown() stops the workers; so does the
driver's exit (their pipes reach EOF).

At size 1 there are no workers, no process group, and every method is a no-op.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import weakref
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.connection import Connection
from pathlib import Path

import torch
import torch.distributed as dist

from llm_core.config import EngineConfig
from llm_core.distributed.group import (
    NCCL_SAFE_ENV, SINGLE, TensorParallelGroup, destroy_group, init_group, rank_device,
)
from llm_core.distributed.sharding import check_tensor_parallel, rank_arch
from llm_core.distributed.worker import WorkerSpec
from llm_core.models.arch_config import ArchConfig
from llm_core.scheduler_output import SchedulerOutput

logger = logging.getLogger(__name__)

# Longest wait for a peer: startup steps, and any one collective (then it raises, not hangs).
TIMEOUT_S = 300.0
# Grace for workers to exit after shutdown before they are killed.
SHUTDOWN_GRACE_S = 10.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


class TensorParallelExecutor:
    """Rank 0's handle on the tensor-parallel group: its group for the model's layers, the shape
    of its shard (rank_arch), and the workers that mirror every step."""

    def __init__(self, arch: ArchConfig, group: TensorParallelGroup = SINGLE,
                 workers: list[tuple[subprocess.Popen, Connection]] | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        self.group = group
        self.rank_arch = rank_arch(arch, group.size)
        self.timeout_s = timeout_s
        self._workers = workers if workers is not None else []
        self._before_leaving: list[Callable[[], None]] = []
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers, group.size > 1, self._before_leaving)

    def before_leaving(self, release: Callable[[], None]) -> None:
        """Run `release` at shutdown before this rank leaves the group (the runner's CUDA graphs,
        which hold the NCCL communicator: DecodeGraphs.release)."""
        self._before_leaving.append(release)

    @property
    def size(self) -> int:
        return self.group.size

    @property
    def worker_pids(self) -> list[int]:
        return [proc.pid for proc, _ in self._workers]

    @classmethod
    def start(cls, config: EngineConfig, arch: ArchConfig, *, device: torch.device, dtype: torch.dtype,
              max_model_len: int, timeout_s: float | None = None) -> "TensorParallelExecutor":
        """Start the workers and join the group (size 1: nothing to start). Raises ValueError for a
        model or device that cannot split, RuntimeError for a worker that fails to start."""
        size = config.tensor_parallel_size
        if size == 1:
            return cls(arch)
        timeout_s = TIMEOUT_S if timeout_s is None else timeout_s
        _check_supported(config, arch, device, size)
        if dist.is_initialized():
            gc.collect()  # an engine that nobody holds any more stops its workers when collected
        if dist.is_initialized():
            raise RuntimeError("this process already runs a tensor-parallel engine: one per process "
                               "(shut the other one down first)")
        store = dist.TCPStore("127.0.0.1", 0, size, is_master=True, timeout=timedelta(seconds=timeout_s),
                              wait_for_workers=False)
        workers: list[tuple[subprocess.Popen, Connection]] = []
        executor = cls(arch, TensorParallelGroup(0, size), workers, timeout_s)
        executor._store = store  # the rendezvous lives as long as the group
        try:
            for rank in range(1, size):
                spec = WorkerSpec(rank, size, config, str(rank_device(device, rank)), dtype, max_model_len,
                                  "127.0.0.1", store.port, timeout_s)
                workers.append(_spawn(spec))
            for rank in range(1, size):
                executor._expect(rank, "started", "to start")
            executor.group = init_group(0, size, rank_device(device, 0), store, timeout_s)
        except BaseException:
            executor.shutdown()
            raise
        logger.info("tensor parallel: %d ranks (%s), workers %s", size, dist.get_backend(), executor.worker_pids)
        return executor

    def agree_kv_budget(self, budget_bytes: int, share: Callable[[int], int] | None = None) -> int:
        """The smallest KV budget over the ranks, once every worker has built its shard, less what
        `share` leaves of it for the target's cache (a draft model's cache on the driver has a block
        for each of the target's); every rank then plans its KV cache from it (the same number of
        blocks everywhere)."""
        try:
            budgets = [budget_bytes] + [self._expect(rank, "loaded", "to load its shard")[1]
                                        for rank in range(1, self.size)]
            budget = min(budgets)
            if share is not None:
                budget = share(budget)
            for _, conn in self._workers:
                conn.send(("budget", budget))
        except BaseException:
            self.shutdown()  # the other workers, waiting for the budget, stop at once
            raise
        return budget

    def send_plan(self, plan: SchedulerOutput, multi_step: bool = False, media_rows: bool = False,
                  adopt: bool = False, queue_next: int = 0) -> None:
        """Hand the step's plan to every worker; call just before running it on the driver.
        multi_step: the driver runs it as a multi-step step (ModelRunner.launch_multi_step), taking
        the run it queued last step (`adopt`) and queuing the next one (`queue_next` forwards a
        step; 0: none). media_rows: some of its tokens are media placeholders (the driver, which
        holds the encoders, broadcasts the step's input embeddings: ModelRunner.forward_inputs)."""
        if not self._workers:
            return
        payload = pickle.dumps((plan, multi_step, media_rows, adopt, queue_next), protocol=pickle.HIGHEST_PROTOCOL)
        for rank, (proc, conn) in enumerate(self._workers, 1):
            if proc.poll() is not None:
                error = self._dead(rank)
            else:
                try:
                    conn.send_bytes(payload)
                    continue
                except OSError:
                    error = self._dead(rank)
            self.shutdown()  # the group is broken: stop the other workers
            raise error

    def shutdown(self) -> None:
        """Stop the workers and leave the group; idempotent. The engine cannot step afterwards."""
        self._finalizer()

    def _expect(self, rank: int, kind: str, what: str) -> tuple:
        proc, conn = self._workers[rank - 1]
        if not conn.poll(self.timeout_s):
            raise RuntimeError(f"tensor-parallel worker {rank} (pid {proc.pid}) did not manage {what} "
                               f"within {self.timeout_s:.0f}s")
        try:
            message = conn.recv()
        except (EOFError, OSError):
            raise self._dead(rank) from None
        if message[0] != kind:
            detail = message[1] if message[0] == "error" else repr(message)
            raise RuntimeError(f"tensor-parallel worker {rank} failed {what}:\n{detail}")
        return message

    def _dead(self, rank: int) -> RuntimeError:
        """The error for a worker that exited, with its last words if it sent any."""
        proc, conn = self._workers[rank - 1]
        try:
            code = proc.wait(SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            code = None
        detail = ""
        try:
            while conn.poll(0):
                message = conn.recv()
                if message and message[0] == "error":
                    detail = f":\n{message[1]}"
        except (EOFError, OSError):
            pass
        return RuntimeError(f"tensor-parallel worker {rank} (pid {proc.pid}) exited with code {code}{detail}")


def _check_supported(config: EngineConfig, arch: ArchConfig, device: torch.device, size: int) -> None:
    check_tensor_parallel(arch, size)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"tensor parallelism runs on cpu (gloo) or cuda (NCCL), not {device.type}")
    rank_device(device, size - 1)  # raises when there are too few GPUs


def _spawn(spec: WorkerSpec) -> tuple[subprocess.Popen, Connection]:
    """Start one worker process and send it its spec; returns the process and the driver's end of its pipe."""
    ours, theirs = multiprocessing.Pipe(duplex=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    for key, value in NCCL_SAFE_ENV.items():
        env.setdefault(key, value)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "llm_core.distributed.worker", str(theirs.fileno())],
                                pass_fds=(theirs.fileno(),), env=env)
    finally:
        theirs.close()  # the child holds its own copy: EOF here means the child is gone
    ours.send(spec)
    return proc, ours


def _stop_workers(workers: list[tuple[subprocess.Popen, Connection]], in_group: bool,
                  before_leaving: list[Callable[[], None]]) -> None:
    """Tell every worker to stop, release what holds the communicator, leave the group (each worker
    does the same), wait for the workers (killing one past the grace period)."""
    for _, conn in workers:
        try:
            conn.send_bytes(pickle.dumps(None))
        except OSError:
            pass
    for release in before_leaving:
        try:
            release()
        except Exception:  # a failed release must not keep the workers running
            logger.exception("releasing before leaving the tensor-parallel group failed")
    if in_group:
        destroy_group()
    for rank, (proc, conn) in enumerate(workers, 1):
        try:
            proc.wait(SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.warning("tensor-parallel worker %d (pid %d) did not exit; killing it", rank, proc.pid)
            proc.kill()
            proc.wait()
        conn.close()
