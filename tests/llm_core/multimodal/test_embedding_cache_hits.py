"""Repeated media: the embedding cache spares the encoder, the prefix cache spares the prefill."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from llm_core import SamplingParams
from tests.encoders.media.samples import make_video
from tests.helpers.mm_checkpoints import make_llava_checkpoint, make_qwen2_audio_checkpoint
from tests.helpers.mm_generation import make_mm_llm

BLOCK_SIZE = 16
GREEDY = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, logprobs=5)


def random_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (30, 40, 3), dtype=np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def chat(kind: str, media) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": kind, kind: media},
                                                      {"type": "text", "text": "Describe it in a word or two."}]}]}


def close_logprobs(ours: list[dict[int, float]], theirs: list[dict[int, float]], tolerance: float = 1e-4) -> bool:
    return all(row.keys() == other.keys() and all(abs(row[t] - other[t]) < tolerance for t in row)
               for row, other in zip(ours, theirs, strict=True))


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory):
    return make_llava_checkpoint(tmp_path_factory.mktemp("llava_cache"), "clip", seed=8)


@pytest.mark.parametrize("kind", ["image", "video", "audio"])
def test_repeated_media_hits_the_embedding_and_prefix_caches(kind, llava_path, tmp_path):
    path = make_qwen2_audio_checkpoint(tmp_path, seed=9) if kind == "audio" else llava_path
    llm = make_mm_llm(path, block_size=BLOCK_SIZE)
    embedder = llm.engine.multimodal.embedder
    rng = np.random.default_rng(0)
    same, again, other = {
        # The image comes back as a PNG: another container, the same pixels, the same key.
        "image": (random_image(1), png(random_image(1)), random_image(2)),
        "video": (make_video("webm", "vp8", seconds=1.0),) * 2 + (make_video("webm", "vp8", seconds=1.0, size=40),),
        "audio": ((rng.standard_normal(9000).astype(np.float32) * 0.1, 16000),) * 2
                 + ((rng.standard_normal(9000).astype(np.float32) * 0.1, 16000),),
    }[kind]
    first = llm.generate(chat(kind, same), GREEDY)[0]
    assert first.num_cached_tokens == 0
    assert (embedder.num_encoder_forwards, embedder.cache.num_misses, embedder.cache.num_hits) == (1, 1, 0)

    second = llm.generate(chat(kind, again), GREEDY)[0]
    assert (embedder.num_encoder_forwards, embedder.cache.num_hits) == (1, 1)  # no encoder forward
    assert second.num_cached_tokens >= BLOCK_SIZE
    assert second.token_ids == first.token_ids
    assert close_logprobs(second.logprobs, first.logprobs)

    # Other media behind the same placeholder tokens: its own encoder forward, and no prefix hit on
    # any block that its run touches (the run starts in the first block).
    third = llm.generate(chat(kind, other), GREEDY)[0]
    assert third.prompt_token_ids == first.prompt_token_ids
    assert third.num_cached_tokens == 0
    assert embedder.num_encoder_forwards == 2
    assert not close_logprobs(third.logprobs, first.logprobs)


def test_preempted_requests_keep_their_embeddings(llava_path):
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    prompts = [chat("image", random_image(10 + i)) for i in range(3)]
    expected = [o.token_ids for o in make_mm_llm(llava_path).generate(prompts, params)]
    # No embedding cache, and a KV pool of 10 blocks where the three requests need 18: they are
    # preempted and recomputed, yet each image went through the tower once (the steps that admitted
    # them encoded them, several requests' images in one forward).
    llm = make_mm_llm(llava_path, embedding_cache_bytes=0, max_model_len=128, block_size=BLOCK_SIZE,
                      cpu_kv_cache_bytes=10 * 2 * BLOCK_SIZE * 2 * 2 * 16 * 4)
    assert llm.engine.num_blocks == 10
    outputs = llm.generate(prompts, params)
    embedder = llm.engine.multimodal.embedder
    assert llm.engine.scheduler.num_preemptions > 0
    assert [o.token_ids for o in outputs] == expected
    assert embedder.num_encoded_items == 3 and embedder.num_encoder_forwards < 3
    # Finished and aborted requests release their embeddings.
    request_id = llm.engine.add_request(prompts[0], params)
    assert embedder.has_media(request_id)
    llm.engine.abort_request([request_id])
    assert not embedder.has_media(request_id)
    llm.generate("hello", SamplingParams(max_tokens=1))
    assert not any(embedder.has_media(o.request_id) for o in outputs)
