"""A tensor-parallel worker: ranks 1..N-1, each in its own process (`python -m llm_core.distributed.worker FD`).

FD is the worker's end of a socket pair with the driver (rank 0, in the engine process); the
executor (executor.py) starts the worker and speaks this protocol on it:

    driver -> worker   WorkerSpec, then ("budget", bytes), then one pickled SchedulerOutput per
                       step; a pickled None (or EOF: the driver is gone) ends the worker
    worker -> driver   ("started",) just before joining the process group,
                       ("loaded", kv budget bytes) once its shard is on its device,
                       ("error", traceback) before it exits on a failure

The worker builds the same model shard and KV cache shard as the driver and runs every plan
through its own ModelRunner, so every collective of a step happens on every rank in the same
order; only the driver samples. Between steps a worker waits on the pipe, never in a
collective, so a driver that fails or exits ends its workers at once.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import Connection

import torch
import torch.distributed as dist

from llm_core.attention import get_attention_backend
from llm_core.config import EngineConfig
from llm_core.distributed.group import destroy_group, init_group
from llm_core.distributed.sharding import rank_arch
from llm_core.kv_memory import kv_budget_bytes, plan_num_blocks
from llm_core.model_runner import ModelRunner
from llm_core.models.arch_config import ArchConfig, read_hf_config
from llm_core.models.registry import build_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its shard: the engine's config and the values the driver resolved."""

    rank: int
    world_size: int
    config: EngineConfig
    device: str  # this rank's device ("cpu", "cuda:1", ...)
    dtype: torch.dtype
    max_model_len: int
    store_host: str
    store_port: int
    timeout_s: float


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the driver, which stops us
    conn = Connection(int(sys.argv[1]))
    try:
        spec: WorkerSpec = conn.recv()
    except EOFError:
        return
    logging.basicConfig(level=logging.INFO,
                        format=f"%(levelname)s tp-worker[{spec.rank}:{os.getpid()}] %(name)s: %(message)s")
    code = 0
    try:
        run_worker(spec, conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        logger.info("driver went away; worker stopping")
    except BaseException:
        code = 1
        logger.exception("tensor-parallel worker %d failed", spec.rank)
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        destroy_group()
        conn.close()
    sys.exit(code)


def run_worker(spec: WorkerSpec, conn: Connection) -> None:
    """Join the group, build this rank's shard and KV cache, then run plans until told to stop."""
    config, model_cfg = spec.config, spec.config.model
    device = torch.device(spec.device)
    torch.manual_seed(model_cfg.seed)
    store = dist.TCPStore(spec.store_host, spec.store_port, spec.world_size, is_master=False,
                          timeout=timedelta(seconds=spec.timeout_s))
    conn.send(("started",))
    group = init_group(spec.rank, spec.world_size, device, store, spec.timeout_s)
    arch = ArchConfig.from_dict(read_hf_config(model_cfg.model), source=f"{model_cfg.model}/config.json")
    backend = get_attention_backend(model_cfg.attention_backend, device)
    model = build_model(model_cfg.model, arch, backend, dtype=spec.dtype, device=device,
                        max_position=spec.max_model_len, tp=group)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    conn.send(("loaded", kv_budget_bytes(config.cache, device, peak)))
    message = conn.recv()
    if message is None:
        return
    _, budget = message
    shard_arch = rank_arch(arch, spec.world_size)
    num_blocks = plan_num_blocks(shard_arch, config.cache, spec.dtype, budget, max_model_len=spec.max_model_len,
                                 max_num_seqs=config.scheduler.max_num_seqs)
    # Built exactly as the driver builds its runner, so that any collective at construction
    # (CUDA graph capture) happens on every rank.
    runner = ModelRunner(model, shard_arch, device=device, dtype=spec.dtype, num_blocks=num_blocks,
                         block_size=config.cache.block_size, seed=model_cfg.seed,
                         max_num_seqs=config.scheduler.max_num_seqs, max_model_len=spec.max_model_len,
                         use_cuda_graphs=not model_cfg.enforce_eager, tp=group)
    logger.info("rank %d/%d ready: %d KV blocks on %s", spec.rank, spec.world_size, num_blocks, device)
    try:
        while (message := pickle.loads(conn.recv_bytes())) is not None:
            execute_plan(runner, *message)
    finally:
        runner.release_cuda_graphs()  # before main() leaves the group (DecodeGraphs.release)


def execute_plan(runner: ModelRunner, plan, multi_step: bool, media_rows: bool, adopt: bool, queue_next: int) -> None:
    """The driver's ModelRunner.execute up to its logits (ModelRunner.forward_plan: the same host
    state, the same forward and collectives); the logits stay with the driver, which samples. A
    multi-step step's forwards take the tokens the driver samples (ModelRunner.follow_multi_step)."""
    if multi_step:
        runner.follow_multi_step(plan, adopt, queue_next)
    else:
        runner.follow_single_step(plan, media_rows, adopt, queue_next > 0)


if __name__ == "__main__":
    main()
