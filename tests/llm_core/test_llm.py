"""The offline API end to end on tiny checkpoints: seeds, stops, chat, logprobs, loading variants, errors."""

from __future__ import annotations

import json
import logging
import random
import shutil

import pytest
import torch

from llm_core import LLM, SamplingParams
from tests.helpers.checkpoints import hf_greedy, load_hf_model, make_text_checkpoint


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return make_text_checkpoint(tmp_path_factory.mktemp("llama"), "llama", seed=3)


@pytest.fixture(scope="module")
def llm(llama_dir):
    return LLM(str(llama_dir), device="cpu", max_model_len=256)


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 400) for _ in range(rng.randrange(1, 40))] for _ in range(n)]


def test_seeded_sampling_is_batch_invariant(llm):
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=42, ignore_eos=True)
    batch = prompts(16, seed=1)
    alone = llm.generate([batch[5]], params)[0]
    together = llm.generate(batch, params)[5]
    assert alone.token_ids == together.token_ids
    other_seed = llm.generate([batch[5]], SamplingParams(max_tokens=16, temperature=1.0, seed=43, ignore_eos=True))
    assert other_seed[0].token_ids != alone.token_ids
    # Seeded requests among unseeded ones at other priorities and temperatures still agree.
    mixed = [SamplingParams(max_tokens=16, temperature=0.7, ignore_eos=True)] * 16
    mixed[5] = params
    assert llm.generate(batch, mixed)[5].token_ids == alone.token_ids


def test_outputs_and_text(llm):
    tokenizer = llm.get_tokenizer()
    out = llm.generate("hello world", SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))[0]
    assert len(out.token_ids) == 12 and out.finish_reason == "length"
    assert out.text == tokenizer.decode(out.token_ids)
    assert out.prompt_token_ids == tokenizer.encode("hello world")


def test_stop_strings_end_the_request(llm):
    free = llm.generate("stop test", SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))[0]
    assert len(free.text) > 6
    stop = free.text[3:6]
    out = llm.generate("stop test", SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, stop=[stop]))[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == free.text[: free.text.index(stop)]
    assert len(out.token_ids) < len(free.token_ids)
    kept = llm.generate("stop test", SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True, stop=[stop],
                                                    include_stop_str_in_output=True))[0]
    assert kept.text == free.text[: free.text.index(stop) + len(stop)]


def test_stop_token_ids_and_eos(llm):
    free = llm.generate("abc", SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True))[0]
    target = free.token_ids[4]
    out = llm.generate("abc", SamplingParams(max_tokens=10, temperature=0.0, stop_token_ids=[target],
                                             ignore_eos=True))[0]
    assert out.token_ids == free.token_ids[: free.token_ids.index(target) + 1]
    assert out.finish_reason == "stop" and out.stop_reason == target


def test_chat_prompt_uses_the_template(llm):
    tokenizer = llm.get_tokenizer()
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]}]
    out = llm.generate({"messages": messages}, SamplingParams(max_tokens=4, temperature=0.0))[0]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi there"}], add_generation_prompt=True)
    assert out.prompt_token_ids == tokenizer.encode(rendered, add_special_tokens=False)
    with pytest.raises(ValueError, match="media"):
        llm.generate({"messages": [{"role": "user", "content": [{"type": "image", "image": b"x"}]}]})


def test_logprobs(llm):
    out = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=3, temperature=0.0, logprobs=2, ignore_eos=True))[0]
    assert len(out.logprobs) == 3
    for token, entry in zip(out.token_ids, out.logprobs):
        assert token in entry and 2 <= len(entry) <= 3
        assert entry[token] == max(entry.values())  # greedy picks the most likely


def test_bad_inputs_are_clear(llm):
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([[5] * 300])
    with pytest.raises(ValueError, match="empty"):
        llm.generate([[]])
    with pytest.raises(TypeError, match="unknown engine option 'max_num_seq'"):
        LLM("unused", device="cpu", max_num_seq=3)
    assert not llm.engine.has_unfinished_requests()


@pytest.mark.parametrize("variant", ["tied_sharded", "llama3_rope", "linear_rope", "bf16_weights"])
def test_loading_variants_match_transformers(tmp_path, variant):
    options = {
        "tied_sharded": dict(tie_word_embeddings=True, max_shard_size="60KB"),
        "llama3_rope": dict(rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                             "high_freq_factor": 4.0, "original_max_position_embeddings": 128,
                                             "rope_theta": 500000.0}),
        "linear_rope": dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        "bf16_weights": dict(dtype=torch.bfloat16),
    }[variant]
    path = make_text_checkpoint(tmp_path / variant, "llama", seed=5, **options)
    if variant == "tied_sharded":
        assert (path / "model.safetensors.index.json").is_file()
        assert "lm_head.weight" not in json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    hf = load_hf_model(path)
    ids = prompts(1, seed=9)[0] + list(range(10, 60))
    with torch.inference_mode():
        expected = hf(torch.tensor([ids])).logits[0, -1]
    out = LLM(str(path), device="cpu", dtype="float32", max_model_len=512).generate(
        [ids], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=5))[0]
    assert out.token_ids == hf_greedy(hf, ids, 8)
    first = out.logprobs[0]
    lp = torch.log_softmax(expected.float(), -1)
    for token, value in first.items():
        assert abs(value - lp[token].item()) < 1e-4


def test_load_errors_name_the_problem(tmp_path, llama_dir, caplog):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LLM(str(tmp_path / "nope"), device="cpu")
    broken = tmp_path / "unknown_arch"
    shutil.copytree(llama_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="unsupported architecture 'GPT2LMHeadModel'"):
        LLM(str(broken), device="cpu")
    no_weights = tmp_path / "no_weights"
    shutil.copytree(llama_dir, no_weights)
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        LLM(str(no_weights), device="cpu")
    sharded = make_text_checkpoint(tmp_path / "sharded", "llama", max_shard_size="60KB")
    shard = sorted(sharded.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        LLM(str(sharded), device="cpu")
    no_tok = tmp_path / "no_tokenizer"
    shutil.copytree(llama_dir, no_tok)
    (no_tok / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        LLM(str(no_tok), device="cpu")
    # Loading shows progress.
    with caplog.at_level(logging.INFO, logger="llm_core.models.loader"):
        LLM(str(llama_dir), device="cpu", max_model_len=64)
    assert any("loading weights" in r.getMessage() for r in caplog.records)


def test_sliding_window_matches_transformers(tmp_path):
    path = make_text_checkpoint(tmp_path / "mistral_window", "mistral", seed=6, sliding_window=48)
    hf = load_hf_model(path)
    ids = prompts(1, seed=2)[0] + list(range(20, 120))  # longer than the window
    out = LLM(str(path), device="cpu", max_model_len=512).generate(
        [ids], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=3))[0]
    assert out.token_ids == hf_greedy(hf, ids, 8)
    with torch.inference_mode():
        lp = torch.log_softmax(hf(torch.tensor([ids])).logits[0, -1].float(), -1)
    assert all(abs(v - lp[t].item()) < 1e-4 for t, v in out.logprobs[0].items())
