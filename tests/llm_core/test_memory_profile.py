"""The profiling forward that sizes the KV cache runs the largest step against a two-block cache."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from llm_core import LLM  # noqa: E402
from llm_core.attention import get_attention_backend  # noqa: E402
from llm_core.memory_profile import profile_peak_bytes, warm_up_query_lengths  # noqa: E402
from llm_core.models.arch_config import ArchConfig, read_hf_config  # noqa: E402
from llm_core.models.registry import build_model  # noqa: E402
from tests.helpers.checkpoints import make_text_checkpoint  # noqa: E402


@pytest.mark.parametrize("backend_name", ["torch", "triton"])
def test_profiling_forward_runs_the_largest_step(tmp_path, backend_name):
    path = make_text_checkpoint(tmp_path, "qwen3", seed=2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = ArchConfig.from_dict(read_hf_config(str(path)))
    model = build_model(str(path), arch, get_attention_backend(backend_name, device), dtype=torch.float32,
                        device=device, max_position=256)
    peak = profile_peak_bytes(model, arch, device=device, dtype=torch.float32, num_tokens=37, num_logits=5,
                              block_size=16)
    if device.type == "cuda":
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        assert peak > weights
    else:
        assert peak == 0


def test_warm_up_runs_every_short_query_length_once(tmp_path):
    """The start-up warm-up (compiles of the attention kernels' short-query tile shapes) runs one
    forward per power of two up to max_len, each one sequence that stores no key (slot -1)."""
    path = make_text_checkpoint(tmp_path, "llama", seed=2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    arch = ArchConfig.from_dict(read_hf_config(str(path)))
    model = build_model(str(path), arch, get_attention_backend("triton", device), dtype=torch.float32,
                        device=device, max_position=256)
    seen = []
    forward = model.forward

    def spy(input_ids, positions, kv_caches, meta, **kwargs):
        seen.append((len(input_ids), meta.max_query_len, int(meta.slot_mapping.max()), len(kv_caches[0][0])))
        return forward(input_ids, positions, kv_caches, meta, **kwargs)
    model.forward = spy
    warm_up_query_lengths(model, arch, device=device, dtype=torch.float32, block_size=16, max_len=64)
    assert seen == [(n, n, -1, 2) for n in (1, 2, 4, 8, 16, 32, 64)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the KV budget is measured on CUDA only")
def test_an_engine_built_after_another_gets_the_same_kv_cache(tmp_path):
    path = make_text_checkpoint(tmp_path, "llama", seed=2)
    blocks = []
    for _ in range(2):
        # max_num_seqs * 1024 tokens exceeds what 30% of the GPU holds, so the budget decides
        llm = LLM(str(path), device="cuda", dtype="float32", max_model_len=1024, max_num_seqs=100_000,
                  gpu_memory_utilization=0.3, enforce_eager=True)
        blocks.append(llm.engine.num_blocks)
        del llm
        torch.cuda.empty_cache()
    assert blocks[1] >= 0.95 * blocks[0]


def test_graph_memory_bound_counts_every_graph_set():
    """The CUDA graphs' pool bound (computed on the CPU here: it reads only shapes and options)."""
    from types import SimpleNamespace

    from llm_core.config import EngineConfig
    from llm_core.engine import LLMEngine
    from llm_core.spec_decode import SpeculativeConfig

    arch = SimpleNamespace(vocab_size=1000, intermediate_size=64)
    draft = SimpleNamespace(arch=SimpleNamespace(vocab_size=1000, intermediate_size=32))
    config = EngineConfig.from_options("unused", max_num_seqs=8)
    engine = SimpleNamespace(device=torch.device("cuda"), arch=arch, speculative=None)
    plain = LLMEngine._graph_memory(engine, config, None)
    assert plain == 8 * (1000 * 8 + 64 * 16) + (64 << 20)
    engine.speculative = SpeculativeConfig(num_tokens=3)
    with_verify = LLMEngine._graph_memory(engine, config, None)
    assert with_verify == plain + 8 * 4 * (1000 * 8 + 64 * 16)
    # the draft's decode graphs (8 rows) and its first pass's graphs (k + 2 = 5 rows per sequence)
    assert LLMEngine._graph_memory(engine, config, draft) == with_verify + (8 + 8 * 5) * (1000 * 8 + 32 * 16)
    eager = EngineConfig.from_options("unused", max_num_seqs=8, enforce_eager=True)
    assert LLMEngine._graph_memory(engine, eager, draft) == 0
    engine.device = torch.device("cpu")
    assert LLMEngine._graph_memory(engine, config, draft) == 0
