"""`profile_steps`: a Chrome trace of the first N engine steps, and nothing after them."""

from __future__ import annotations

import json

import pytest

from llm_core import LLM, SamplingParams
from llm_core.config import EngineConfig, ProfilerConfig
from tests.helpers.checkpoints import make_text_checkpoint


def test_profile_of_n_steps_is_a_chrome_trace(tmp_path):
    model = make_text_checkpoint(tmp_path / "llama", "llama", seed=3)
    out = tmp_path / "profiles"
    llm = LLM(str(model), device="cpu", max_model_len=128, profile_steps=2, profile_dir=str(out))
    [first] = llm.generate("Hello", SamplingParams(max_tokens=5, ignore_eos=True))
    assert len(first.token_ids) == 5  # the profiled steps produced tokens as usual
    [path] = out.glob("engine-steps-*.json")
    events = json.loads(path.read_text())["traceEvents"]
    steps = sorted({e["name"] for e in events if e.get("name", "").startswith("engine.step #")})
    assert steps == ["engine.step #0", "engine.step #1"]
    assert any(e.get("name", "").startswith("aten::") for e in events)  # the forward's ops are in it
    llm.generate("Again", SamplingParams(max_tokens=2))
    assert list(out.glob("engine-steps-*.json")) == [path]  # written once


def test_profiler_options_are_checked():
    assert EngineConfig.from_options("m", profile_steps=3).profiler == ProfilerConfig(profile_steps=3)
    with pytest.raises(ValueError, match="profile_steps"):
        ProfilerConfig(profile_steps=-1)
