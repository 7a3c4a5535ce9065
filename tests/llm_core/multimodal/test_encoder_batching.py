"""Encoder work of different requests goes through the tower in one batch, within the step's
encoder budget (issue 4: "Encoder work from different requests is batched; the scheduler gives
it its own budget per step")."""

from __future__ import annotations

import numpy as np
import pytest

from llm_core import SamplingParams
from tests.helpers.mm_checkpoints import make_llava_checkpoint
from tests.helpers.mm_generation import make_mm_llm

GREEDY = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)


def image_chat(seed: int) -> dict:
    image = np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return {"messages": [{"role": "user", "content": [{"type": "image", "image": image},
                                                      {"type": "text", "text": "What is it?"}]}]}


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory):
    return make_llava_checkpoint(tmp_path_factory.mktemp("llava_batching"), "clip", seed=4)


def test_images_of_two_requests_in_one_step_take_one_encoder_forward(llava_path):
    llm = make_mm_llm(llava_path, embedding_cache_bytes=0)
    engine, embedder = llm.engine, llm.engine.multimodal.embedder
    for seed in (1, 2):
        engine.add_request(image_chat(seed), GREEDY, request_id=f"r{seed}")
    engine.step()
    assert (embedder.num_encoder_forwards, embedder.num_encoded_items) == (1, 2)
    while engine.has_unfinished_requests():
        engine.step()
    assert embedder.num_encoder_forwards == 1


def test_a_small_encoder_budget_spreads_the_images_over_steps(llava_path):
    expected = [o.token_ids for o in make_mm_llm(llava_path).generate([image_chat(1), image_chat(2)], GREEDY)]
    probe = make_mm_llm(llava_path)
    num_image_tokens = probe.engine.multimodal.processor.image_encoder.config.num_image_tokens
    llm = make_mm_llm(llava_path, max_num_encoder_input_tokens=num_image_tokens)
    engine, embedder = llm.engine, llm.engine.multimodal.embedder
    for seed in (1, 2):
        engine.add_request(image_chat(seed), GREEDY, request_id=f"r{seed}")
    plan = engine.scheduler.schedule()
    assert plan.num_encoder_tokens == num_image_tokens and plan.encoder_inputs == (("r1", 0),)
    engine.abort_request(["r1", "r2"])
    outputs = llm.generate([image_chat(1), image_chat(2)], GREEDY)
    assert [o.token_ids for o in outputs] == expected
    assert embedder.num_encoder_forwards == 2  # one image per step
