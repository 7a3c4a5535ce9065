"""LLM(tensor_parallel_size=2) on the CPU (gloo, a driver and one worker process) gives the same
greedy tokens as the single-process engine, and a dead worker is an error, never a hang."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time

import numpy as np
import pytest
import torch

import llm_core.distributed.executor as executor_module
from llm_core import LLM, SamplingParams
from llm_core.config import EngineConfig
from llm_core.engine_client import AsyncEngineClient, EngineRequest
from tests.helpers.checkpoints import make_text_checkpoint
from tests.helpers.mm_checkpoints import make_llava_checkpoint, make_qwen2_audio_checkpoint
from tests.llm_core.spec_decode.draft_checkpoints import noisy_copy

PROMPT_LENS = (1, 5, 17, 33, 64, 100)
NUM_NEW = 40  # with 16-token blocks, every request crosses blocks while decoding
HANG_GUARD_S = 300.0  # a bound for the engine-process test, not a timing assertion
# name: (architecture, checkpoint overrides, options of the tensor-parallel engine only).
# Llama with GQA (4 heads, 2 KV heads: one KV head per rank); Qwen2 (q/k/v biases); Llama with
# one KV head (replicated on both ranks), tied embeddings, an odd vocabulary (a padded shard) and
# prefill in chunks of at most 48 tokens a step.
CHECKPOINTS = {
    "llama-gqa": ("llama", {}, {}),
    "qwen2-bias": ("qwen2", {}, {}),
    "llama-mqa-tied-odd-vocab": ("llama", {"num_key_value_heads": 1, "tie_word_embeddings": True, "vocab_size": 509},
                                 {"max_num_batched_tokens": 48}),
}


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch):
    """Bounded waits on peers, so that a broken test fails instead of stalling CI."""
    monkeypatch.setattr(executor_module, "TIMEOUT_S", 60.0)


def random_prompts(seed: int, vocab: int = 400) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(n)] for n in PROMPT_LENS]


def make_llm(path, device: str = "cpu", **options) -> LLM:
    backend = "torch" if device == "cpu" else "auto"
    options = {"max_model_len": 256, "enable_prefix_caching": True, **options}
    return LLM(str(path), device=device, dtype="float32", attention_backend=backend, **options)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_text_checkpoint(tmp_path_factory.mktemp("llama"), "llama", seed=2)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL; Triton attention and CUDA graphs)"))])
@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_greedy_outputs_equal_the_single_process_run(name, device, tmp_path):
    arch, overrides, tp_options = CHECKPOINTS[name]
    path = make_text_checkpoint(tmp_path / name, arch, seed=2, **overrides)
    prompts = random_prompts(5)
    prompts.append(prompts[4][:40] + [7, 8, 9])  # shares cached blocks with prompt 4
    params = SamplingParams(max_tokens=NUM_NEW, temperature=0.0, ignore_eos=True)
    single = make_llm(path, device)
    expected = [o.token_ids for o in single.generate(prompts, params)]
    del single  # on CUDA: its memory back before the two ranks size their KV caches

    llm = make_llm(path, device, tensor_parallel_size=2, **tp_options)
    try:
        assert llm.engine.tp.size == 2 and len(llm.engine.tp.worker_pids) == 1
        outputs = llm.generate(prompts, params)
        assert [o.token_ids for o in outputs] == expected
        assert all(len(o.token_ids) == NUM_NEW for o in outputs)
        # Again, served partly from the prefix cache (each rank's KV shard holds the same blocks).
        again = llm.generate(prompts, params)
        assert [o.token_ids for o in again] == expected
        assert sum(o.num_cached_tokens for o in again) > 0
    finally:
        llm.engine.shutdown()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL; Triton attention and CUDA graphs)"))])
def test_multi_step_decoding_feeds_the_workers_the_driver_tokens(llama_dir, device):
    """num_scheduler_steps=4 at size 2: several decode forwards per step, the workers fed each
    forward's tokens by broadcast; greedy and seeded sampled tokens equal single steps of one process."""
    prompts = random_prompts(7)
    params = [SamplingParams(max_tokens=NUM_NEW, temperature=0.0, ignore_eos=True) if i % 2 else
              SamplingParams(max_tokens=NUM_NEW - i, temperature=0.8, top_k=50, seed=i, ignore_eos=True)
              for i in range(len(prompts))]
    single = make_llm(llama_dir, device, num_scheduler_steps=1)
    expected = [o.token_ids for o in single.generate(prompts, params)]
    del single

    llm = make_llm(llama_dir, device, tensor_parallel_size=2, num_scheduler_steps=4)
    try:
        runner, launches = llm.engine.runner, []
        launch = runner.launch_multi_step
        runner.launch_multi_step = lambda plan, **kw: (launches.append(len(plan.requests)), launch(plan, **kw))[1]
        assert [o.token_ids for o in llm.generate(prompts, params)] == expected
        assert launches and max(launches) == len(prompts)  # the whole batch decoded in multi-step steps
        # A request alone in the batch (finishing mid-step) and a second run reusing cached blocks.
        assert [o.token_ids for o in llm.generate(prompts[:1], params[:1])] == expected[:1]
    finally:
        llm.engine.shutdown()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL; Triton attention and CUDA graphs)"))])
def test_async_scheduling_queues_every_rank_ahead_alike(llama_dir, device):
    """Async scheduling at size 2: the driver queues the predicted next multi-step step and tells
    the workers, with each plan, whether it takes that run and whether it queues the next; the
    queued run's first tokens reach them by broadcast. Requests ending at different steps (parts of
    the predicted plan), stop tokens, seeded sampling and a second round on cached prefixes equal
    one process without any of it."""
    prompts = random_prompts(13)
    params = [SamplingParams(max_tokens=9 + 5 * i, temperature=0.0, ignore_eos=True) if i % 3 else
              SamplingParams(max_tokens=NUM_NEW, temperature=1.0, seed=i, ignore_eos=True)
              for i in range(len(prompts))]
    single = make_llm(llama_dir, device, num_scheduler_steps=1)
    expected = [o.token_ids for o in single.generate(prompts, params)]
    del single

    llm = make_llm(llama_dir, device, tensor_parallel_size=2, num_scheduler_steps=4, async_scheduling=True)
    try:
        assert llm.engine.async_scheduling
        for _ in range(2):
            assert [o.token_ids for o in llm.generate(prompts, params)] == expected
        runner = llm.engine.runner
        assert runner.num_queued_adopted > 5 and runner._queued is None
    finally:
        llm.engine.shutdown()


def test_grammar_steps_queue_their_next_forward_on_every_rank(llama_dir):
    """Grammar-constrained requests (one forward a step) with async scheduling at size 2: the next
    step's forward is queued on every rank before the driver's tokens reach its host (the workers
    get them by broadcast), and the plan that follows samples it under the new masks; a plain
    request rides along. Tokens equal one process without any of it."""
    from tests.helpers.spec_prompts import SCHEMA

    schema = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    params = [SamplingParams(max_tokens=50, temperature=0.0, response_format=schema),
              SamplingParams(max_tokens=50, temperature=1.0, seed=4, response_format=schema),
              SamplingParams(max_tokens=12, temperature=0.0, response_format={"type": "regex", "pattern": "[a-d]{3,8}"}),
              SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)]
    prompts = [f"json {i} json {i}" for i in range(len(params))]
    single = make_llm(llama_dir, num_scheduler_steps=1)
    expected = [(o.token_ids, o.finish_reason) for o in single.generate(prompts, params)]
    del single

    llm = make_llm(llama_dir, tensor_parallel_size=2, num_scheduler_steps=4, async_scheduling=True)
    try:
        runner = llm.engine.runner
        assert [(o.token_ids, o.finish_reason) for o in llm.generate(prompts, params)] == expected
        assert runner.num_queued_adopted > 5  # (a forward queued for a request that then stopped stays queued)
    finally:
        llm.engine.shutdown()


def test_multi_step_decoding_under_preemption(llama_dir):
    """A KV pool of 13 blocks a rank for four requests growing past 60 tokens: requests are
    preempted and recomputed between multi-step steps, on every rank alike."""
    from llm_core.models.arch_config import ArchConfig, read_hf_config

    arch = ArchConfig.from_dict(read_hf_config(str(llama_dir)))
    shard_block_bytes = 2 * arch.num_layers * 16 * (arch.num_kv_heads // 2) * arch.head_dim * 4  # k, v; fp32
    prompts = [p[:30] for p in random_prompts(11)[2:]]
    params = SamplingParams(max_tokens=60, temperature=0.0, ignore_eos=True)
    single = make_llm(llama_dir)
    expected = [o.token_ids for o in single.generate(prompts, params)]
    del single

    llm = make_llm(llama_dir, tensor_parallel_size=2, num_scheduler_steps=5, block_size=16, max_model_len=160,
                   cpu_kv_cache_bytes=13 * shard_block_bytes)
    try:
        assert llm.engine.num_blocks <= 13
        assert [o.token_ids for o in llm.generate(prompts, params)] == expected
        assert llm.engine.stats()["num_preemptions"] > 0
    finally:
        llm.engine.shutdown()


def test_a_draft_model_on_the_driver_speculates_for_the_sharded_target(llama_dir, tmp_path):
    """speculative method "draft" at size 2: the draft runs whole on the driver, the workers verify
    with it; greedy tokens equal one process without speculation, drafts are accepted, and every
    rank plans the blocks the driver's split with the draft's cache leaves."""
    draft = noisy_copy(llama_dir, tmp_path / "draft", noise=0.03)
    prompts = random_prompts(9)
    params = SamplingParams(max_tokens=NUM_NEW, temperature=0.0, ignore_eos=True)
    single = make_llm(llama_dir, cpu_kv_cache_bytes=1 << 20)
    expected = [o.token_ids for o in single.generate(prompts, params)]
    single_blocks = single.engine.num_blocks
    del single

    llm = make_llm(llama_dir, cpu_kv_cache_bytes=1 << 20, tensor_parallel_size=2,
                   speculative={"method": "draft", "model": str(draft), "num_tokens": 3})
    try:
        assert [o.token_ids for o in llm.generate(prompts, params)] == expected
        stats = llm.engine.stats()
        assert stats["spec_num_accepted_draft_tokens"] > 0
        # A block costs the driver half the target's bytes (its shard's heads) plus the whole draft's
        # (the same shape as the target): a third of the budget is the target's, 2/3 of one process's blocks.
        assert abs(llm.engine.num_blocks - 2 * single_blocks / 3) <= 1
    finally:
        llm.engine.shutdown()


def test_ranks_release_their_graphs_before_leaving_the_group(llama_dir, monkeypatch):
    """NCCL's teardown waits for every CUDA graph that captured a collective (it hung on two H200s
    while the driver's graphs were alive): the driver releases its runner's graphs, then leaves."""
    llm = make_llm(llama_dir, tensor_parallel_size=2)
    events = []
    leave = executor_module.destroy_group
    monkeypatch.setattr(executor_module, "destroy_group", lambda: (events.append("leave"), leave()))
    assert llm.engine.tp._before_leaving == [llm.engine.runner.release_cuda_graphs]
    llm.engine.tp._before_leaving[:] = [lambda: events.append("release")]
    llm.engine.shutdown()
    assert events == ["release", "leave"]
    assert all(proc.returncode == 0 for proc, _ in llm.engine.tp._workers)  # told to stop, they left too
    llm.engine.shutdown()
    assert events == ["release", "leave"]  # once


def test_shards_split_the_kv_cache(llama_dir):
    """Each rank's KV cache holds its share of the KV heads; the budget is per rank."""
    path = llama_dir
    single = make_llm(path, cpu_kv_cache_bytes=1 << 20)
    llm = make_llm(path, cpu_kv_cache_bytes=1 << 20, tensor_parallel_size=2)
    try:
        k_cache, _ = llm.engine.runner.kv_caches[0]
        assert k_cache.shape[2] == single.engine.arch.num_kv_heads // 2
        assert llm.engine.num_blocks == 2 * single.engine.num_blocks  # half the bytes a block
    finally:
        llm.engine.shutdown()
    llm.engine.shutdown()  # idempotent


def test_the_engine_process_starts_its_workers(llama_dir):
    """The serving path: a (daemonic) engine process drives a worker process of its own."""
    path = llama_dir
    prompts = random_prompts(9)[:3]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    expected = [o.token_ids for o in make_llm(path).generate(prompts, params)]
    config = EngineConfig.from_options(str(path), device="cpu", dtype="float32", attention_backend="torch",
                                       max_model_len=256, tensor_parallel_size=2)

    async def main():
        async with AsyncEngineClient(config, mode="process") as client:
            async def tokens(i, prompt):
                stream = client.generate(EngineRequest(f"r{i}", prompt, params))
                return [t async for delta in stream for t in delta.new_token_ids]

            return await asyncio.gather(*(tokens(i, p) for i, p in enumerate(prompts)))

    assert asyncio.run(asyncio.wait_for(main(), HANG_GUARD_S)) == expected


def kill_and_wait(pid: int) -> None:
    """SIGKILL a worker (a child of this process) and wait until it has exited, leaving it for the
    executor to reap (WNOWAIT)."""
    os.kill(pid, signal.SIGKILL)
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        time.sleep(0.01)


def test_a_dead_worker_is_an_error(llama_dir):
    path = llama_dir
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    llm = make_llm(path, tensor_parallel_size=2)
    try:
        assert len(llm.generate([[5, 6, 7]], params)[0].token_ids) == 4
        (pid,) = llm.engine.tp.worker_pids
        kill_and_wait(pid)  # between two steps: the next step names it
        with pytest.raises(RuntimeError, match=f"tensor-parallel worker 1 \\(pid {pid}\\) exited with code -9"):
            llm.generate([[5, 6, 7]], params)
        assert not llm.engine.has_unfinished_requests()
    finally:
        llm.engine.shutdown()


@pytest.mark.parametrize("num_scheduler_steps", [1, 4])  # 4: it dies before the step's token broadcasts
def test_a_worker_dying_within_a_step_is_an_error(llama_dir, monkeypatch, num_scheduler_steps):
    path = llama_dir
    llm = make_llm(path, tensor_parallel_size=2, num_scheduler_steps=num_scheduler_steps)
    try:
        tp = llm.engine.tp
        send_plan, num_steps = tp.send_plan, []

        def send_then_kill(plan, **kinds):  # the third step's plan reaches the worker, then it dies
            send_plan(plan, **kinds)
            num_steps.append(1)
            if len(num_steps) == 3:
                kill_and_wait(tp.worker_pids[0])

        monkeypatch.setattr(tp, "send_plan", send_then_kill)
        with pytest.raises(RuntimeError):  # the driver's collective fails (gloo), within TIMEOUT_S at worst
            llm.generate(random_prompts(1), SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))
        assert len(num_steps) == 3
    finally:
        llm.engine.shutdown()


def test_bad_sizes_are_refused_before_any_worker_starts(llama_dir):
    path = llama_dir  # 4 heads, 2 KV heads: 3 ranks cannot split them
    with pytest.raises(ValueError, match="num_attention_heads=4"):
        make_llm(path, tensor_parallel_size=3)
    with pytest.raises(ValueError, match="tensor_parallel_size must be an integer >= 1"):
        make_llm(path, tensor_parallel_size=0)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL; Triton attention and CUDA graphs)"))])
@pytest.mark.parametrize("kind", ["llava", "qwen2-audio"])
def test_media_prompts_equal_the_single_process_run(kind, device, tmp_path):
    """Multimodal checkpoints at size 2: the encoders run on the driver alone, which broadcasts the
    input embeddings of steps with media rows (prefill chunks of 7 tokens cut the media runs)."""
    rng = np.random.default_rng(3)
    if kind == "llava":
        path = make_llava_checkpoint(tmp_path / kind, seed=5)
        media = [{"type": "image", "image": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)},
                 {"type": "image", "image": rng.integers(0, 256, (20, 44, 3), dtype=np.uint8)}]
    else:
        path = make_qwen2_audio_checkpoint(tmp_path / kind, seed=5)
        media = [{"type": "audio", "audio": (rng.standard_normal(16000).astype(np.float32) * 0.1, 16000)},
                 {"type": "audio", "audio": (rng.standard_normal(9000).astype(np.float32) * 0.1, 16000)}]
    prompts = [{"messages": [{"role": "user", "content": [media[0], {"type": "text", "text": "What is it?"}]}]},
               {"messages": [{"role": "user", "content": [{"type": "text", "text": "Compare"}, media[0],
                                                            {"type": "text", "text": "with"}, media[1]]}]},
               [5, 9, 13, 2, 7]]  # text only, batched with the media prompts
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    options = {"max_num_batched_tokens": 7}
    single = make_llm(path, device, **options)
    expected = [o.token_ids for o in single.generate(prompts, params)]
    del single

    llm = make_llm(path, device, tensor_parallel_size=2, **options)
    try:
        assert llm.engine.multimodal is not None
        assert [o.token_ids for o in llm.generate(prompts, params)] == expected
        # Again: the embedding cache answers (no encoder runs), the broadcast is the same.
        assert [o.token_ids for o in llm.generate(prompts[:2], params)] == expected[:2]
    finally:
        llm.engine.shutdown()


def test_the_service_flag_reaches_the_engine_config(llama_dir):
    from service.config import load_config

    config = load_config(["--model", str(llama_dir), "--tensor-parallel-size", "2"], environ={})
    assert EngineConfig.from_options(str(llama_dir), **config.engine_options).tensor_parallel_size == 2
