"""Decode CUDA graphs give the tokens that eager execution gives (CUDA only; skipped elsewhere).

On the CPU the graph code path does not exist; this runs on the GPU machine
(`python -m pytest tests/llm_core/test_cuda_graphs.py`).
"""

from __future__ import annotations

import random

import pytest
import torch

from llm_core import LLM, SamplingParams
from llm_core.cuda_graphs import capture_sizes
from tests.helpers.checkpoints import make_text_checkpoint
from tests.helpers.hopper import ws_decode_runs_here

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")


def test_capture_sizes_cover_every_batch_size():
    for max_size in (1, 3, 8, 50, 256, 300):
        sizes = capture_sizes(max_size)
        assert sizes == sorted(set(sizes)) and sizes[0] == 1 and sizes[-1] == max_size


def test_greedy_step_kernels():
    # The greedy-step graphs' bookkeeping (llm_core/cuda_graphs.py) against torch, for the step
    # the counter names; on the CPU under the Triton interpreter.
    from llm_core.cuda_graphs import advance_step_kernel, commit_tokens_kernel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(random.randrange(2**31))
    padded, num_steps, step = 6, 4, 2
    steps = torch.randint(-1, 5000, (num_steps, 3, padded), generator=gen).to(device)
    positions, slots = torch.zeros(8, dtype=torch.int64, device=device), torch.zeros(8, dtype=torch.int64, device=device)
    seq_lens = torch.zeros(8, dtype=torch.int32, device=device)
    counter = torch.tensor([step], dtype=torch.int32, device=device)
    advance_step_kernel[(1,)](steps, positions, slots, seq_lens, counter, padded, BLOCK=8)
    assert positions[:padded].tolist() == steps[step, 0].tolist() and positions[padded:].tolist() == [0, 0]
    assert slots[:padded].tolist() == steps[step, 1].tolist()
    assert seq_lens[:padded].tolist() == steps[step, 2].tolist() and int(counter) == step
    tokens = torch.randint(0, 1000, (5,), generator=gen).to(device)
    input_ids = torch.full((8,), -7, dtype=torch.int64, device=device)
    history = torch.full((num_steps, 8), -7, dtype=torch.int64, device=device)
    commit_tokens_kernel[(1,)](tokens, input_ids, history, counter, 5, 8, BLOCK=8)
    assert input_ids.tolist() == tokens.tolist() + [-7] * 3
    assert history[step].tolist() == tokens.tolist() + [-7] * 3
    assert (history[[0, 1, 3]] == -7).all() and int(counter) == step + 1


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {arch: make_text_checkpoint(tmp_path_factory.mktemp(arch), arch, seed=5) for arch in ("llama", "qwen3")}


def _prompts(n: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 400) for _ in range(rng.randrange(1, 60))] for _ in range(n)]


@cuda
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("num_prompts", [1, 3, 13])  # 3 and 13 replay padded graphs (sizes 4 and 16)
def test_graph_decode_equals_eager(checkpoints, arch, num_prompts):
    prompts = _prompts(num_prompts, seed=num_prompts)
    params = [SamplingParams(max_tokens=40 + 7 * i, temperature=0.0, ignore_eos=True) for i in range(num_prompts)]
    seeded = [SamplingParams(max_tokens=30, temperature=1.0, seed=i, ignore_eos=True) for i in range(num_prompts)]
    results = {}
    # eager single steps; graphs single steps; graphs with 4 decode forwards per step (the default),
    # with the next step queued before this one's tokens reach the host (async scheduling, the
    # default) and without
    for eager, num_steps, ahead in ((True, 1, None), (False, 1, None), (False, None, None), (False, None, False)):
        llm = LLM(str(checkpoints[arch]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=16,
                  block_size=16, enforce_eager=eager, num_scheduler_steps=num_steps, async_scheduling=ahead)
        assert (llm.engine.runner.graphs is None) == eager
        assert llm.engine.async_scheduling == (num_steps is None and ahead is None)
        results[eager, num_steps, ahead] = ([o.token_ids for o in llm.generate(prompts, params)],
                                            [o.token_ids for o in llm.generate(prompts, seeded)])
        if llm.engine.async_scheduling:
            assert llm.engine.runner.num_queued_adopted > 4
        if num_steps is None:  # greedy multi-step runs replay the greedy-step graphs
            assert llm.engine.runner.graphs.num_greedy_replays > 0
        del llm
    assert results[False, 1, None] == results[True, 1, None]
    assert results[False, None, None] == results[True, 1, None]
    assert results[False, None, False] == results[True, 1, None]


@cuda
def test_released_graphs_leave_an_engine_that_decodes_eagerly(checkpoints):
    """release_cuda_graphs (what a tensor-parallel rank runs before it leaves its NCCL group)
    destroys every graph; later steps run eagerly and give the same tokens."""
    prompts = _prompts(3, seed=11)
    params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    llm = LLM(str(checkpoints["llama"]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=16,
              speculative={"method": "ngram", "num_tokens": 3})
    graphs = llm.engine.runner.graphs
    expected = [o.token_ids for o in llm.generate(prompts, params)]
    llm.engine.runner.release_cuda_graphs()
    assert llm.engine.runner.graphs is None and llm.engine.runner.verify_graphs is None
    assert not graphs._graphs and not graphs._greedy_graphs
    assert [o.token_ids for o in llm.generate(prompts, params)] == expected
    llm.engine.runner.release_cuda_graphs()  # idempotent


def _repeating_prompts_eager(checkpoint, num_prompts: int, repeats: int):
    """Prompts that repeat a random 8-token run (so drafts get accepted), greedy params of
    varying lengths, and the tokens eager decoding without speculation gives them (fp32)."""
    rng = random.Random(num_prompts)
    prompts = [[rng.randrange(3, 60) for _ in range(8)] * repeats for _ in range(num_prompts)]
    params = [SamplingParams(max_tokens=30 + 5 * i, temperature=0.0, ignore_eos=True) for i in range(num_prompts)]
    eager = LLM(str(checkpoint), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=8,
                enforce_eager=True, num_scheduler_steps=1)
    expected = [o.token_ids for o in eager.generate(prompts, params)]
    del eager
    return prompts, params, expected


@cuda
@pytest.mark.parametrize("num_prompts", [1, 5])
def test_speculative_verification_graphs_equal_eager(checkpoints, num_prompts):
    """n-gram drafts of varying length (padded in the verification graph) verify to the tokens
    that eager decoding without speculation produces."""
    prompts, params, expected = _repeating_prompts_eager(checkpoints["llama"], num_prompts, repeats=4)
    spec = LLM(str(checkpoints["llama"]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=8,
               speculative={"method": "ngram", "num_tokens": 3})
    assert spec.engine.runner.verify_graphs is not None
    assert [o.token_ids for o in spec.generate(prompts, params)] == expected
    assert spec.engine.stats()["spec_num_draft_tokens"] > 0


@cuda
@pytest.mark.parametrize("num_prompts", [1, 6])
def test_draft_model_graphs_equal_eager(checkpoints, tmp_path, num_prompts):
    """A draft model's first pass (the kept tokens and the newest, up to k + 2 rows per request)
    and its chained passes replay its graphs, and greedy outputs equal eager decoding without
    speculation (fp32)."""
    draft = make_text_checkpoint(tmp_path / "draft", "llama", seed=6)
    prompts, params, expected = _repeating_prompts_eager(checkpoints["llama"], num_prompts, repeats=3)
    spec = LLM(str(checkpoints["llama"]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=8,
               speculative={"method": "draft", "model": str(draft), "num_tokens": 3})
    runner = spec.engine.speculator.draft.runner
    assert runner.verify_graphs is not None and runner.verify_graphs.q == 5
    replays = {"first pass": 0}
    run = runner.verify_graphs.run

    def counting_run(*args):
        logits = run(*args)
        replays["first pass"] += logits is not None
        return logits

    runner.verify_graphs.run = counting_run
    assert [o.token_ids for o in spec.generate(prompts, params)] == expected
    assert spec.engine.stats()["spec_num_draft_tokens"] > 0
    assert replays["first pass"] > 0


@cuda
def test_capture_after_an_engine_left_to_the_garbage_collector(checkpoints, monkeypatch):
    # An engine dropped in a reference cycle is freed by the cycle collector, whenever it runs; were
    # that inside the next engine's graph capture, destroying its graphs would fail the capture (seen:
    # test_skinny_gemv_engine_equals_cublas after the tests above). So every capture begins with the
    # dropped engine's graphs gone and the collector off.
    import gc
    import weakref

    prompts = _prompts(2, seed=3)
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    llm = LLM(str(checkpoints["llama"]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=4)
    expected = [o.token_ids for o in llm.generate(prompts, params)]
    old_graphs = weakref.ref(llm.engine.runner.graphs)
    holder = {"llm": llm}
    holder["self"] = holder
    del llm, holder
    seen = []

    class Spy(torch.cuda.graph):
        def __enter__(self):
            seen.append((gc.isenabled(), old_graphs() is None))
            return super().__enter__()

    monkeypatch.setattr(torch.cuda, "graph", Spy)
    llm = LLM(str(checkpoints["llama"]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=4)
    assert seen and all(not enabled and collected for enabled, collected in seen)
    assert gc.isenabled()
    assert [o.token_ids for o in llm.generate(prompts, params)] == expected


@cuda
def test_skinny_gemv_engine_equals_cublas(checkpoints):
    """skinny_gemv=True (batch-1 decode linears on the Triton GEMV kernel, in CUDA graphs), alone
    and with fused_decode, and the defaults (both on on Hopper) give the greedy tokens of cuBLAS (fp32), each prompt decoded alone so
    that every decode step has one row; the fused path's kernels run in the graph replays."""
    from llm_core.distributed.layers import ColumnParallelLinear

    prompts = _prompts(5, seed=17)
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    outputs = {}
    hopper = torch.cuda.get_device_capability()[0] >= 9  # the defaults (None): both on there
    for skinny, fused in ((False, False), (True, False), (True, True), (None, None)):
        llm = LLM(str(checkpoints["llama"]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=8,
                  skinny_gemv=skinny, fused_decode=fused)
        model = llm.engine.runner.model
        linears = [m for m in model.modules() if isinstance(m, ColumnParallelLinear)]
        assert linears and all(m.use_skinny_kernel == (skinny if skinny is not None else hopper) for m in linears)
        assert model.fused_decode == (fused if fused is not None else hopper)
        outputs[skinny, fused] = [llm.generate([p], params)[0].token_ids for p in prompts]
        del llm
    assert outputs[True, False] == outputs[False, False]
    assert outputs[True, True] == outputs[False, False]
    assert outputs[None, None] == outputs[False, False]


@pytest.mark.skipif(not ws_decode_runs_here(), reason="the warp-specialized decode kernel needs a Hopper GPU")
def test_ws_decode_graphs_equal_eager(tmp_path, monkeypatch):
    """Batch-1 decode on the warp-specialized kernel (a bf16 checkpoint of sizes its tiles take): the
    graphs (multi-step, async scheduling, greedy-step graphs) give the tokens eager steps give, both
    through the kernel."""
    from llm_core.layers.kernels import ws_decode as wd

    checkpoint = make_text_checkpoint(tmp_path / "ws", "llama", seed=7, dtype=torch.bfloat16, hidden_size=2048,
                                      num_attention_heads=32, num_key_value_heads=8, intermediate_size=2048)
    calls = []
    original = wd.ws_decode
    monkeypatch.setattr(wd, "ws_decode", lambda *a, **k: calls.append(1) or original(*a, **k))
    prompts = _prompts(3, seed=12)
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    results = {}
    for eager in (True, False):
        calls.clear()
        llm = LLM(str(checkpoint), device="cuda", dtype="bfloat16", max_model_len=256, max_num_seqs=4,
                  enforce_eager=eager, ws_decode=True)
        results[eager] = [llm.generate([p], params)[0].token_ids for p in prompts]  # one at a time: batch 1
        assert len(calls) > 0  # eager: every one-token step; graphs: their capture
        if not eager:
            assert llm.engine.runner.graphs.num_greedy_replays > 0
        del llm
    assert results[False] == results[True]
