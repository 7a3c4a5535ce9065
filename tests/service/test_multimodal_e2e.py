"""Acceptance 2: media through the Python client and a real server equal the offline API.

A tiny LLaVA server takes an image and a chunked WebM video; a tiny Qwen2-Audio server takes a
chunked WAV (no single architecture here takes images and audio). Each streamed text must equal
the offline LLM's for the same media bytes and seed, and response.done must carry the same prompt
length. The engine runs in thread mode; the media cross the engine protocol as numpy arrays. The LLaVA
case runs again at tensor-parallel size 2 (gloo, the engine in its own process).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clients import connect
from llm_core import SamplingParams
from tests.encoders.media.samples import make_video, make_wav, tone
from tests.helpers.mm_checkpoints import make_llava_checkpoint, make_qwen2_audio_checkpoint
from tests.helpers.mm_generation import make_mm_llm
from tests.service.conftest import serve
from tests.service.wire import run

SAMPLING = dict(max_tokens=12, temperature=0.8, seed=5, ignore_eos=True)
CHUNK = 256  # bytes per input.append: every item goes in many chunks
MM_ENGINE = {"dtype": "float32", "attention_backend": "torch", "max_model_len": 512}


def png_bytes(seed: int) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def through_server(model_dir, uploads: list[tuple[str, bytes, str, str]], question: str, *,
                   engine_mode: str = "thread", **engine_options):
    """Upload (item_id, bytes, modality, mime) in small chunks, then stream one response."""
    with serve(str(model_dir), engine_mode, engine_options={**MM_ENGINE, **engine_options}) as server:
        async def go():
            async with connect(server.ws_url) as conn:
                committed = [await conn.upload(item_id, data, modality, mime, chunk_size=CHUNK)
                             for item_id, data, modality, mime in uploads]
                parts = [{"type": "item", "item_id": item_id} for item_id, *_ in uploads]
                messages = [{"role": "user", "content": parts + [{"type": "text", "text": question}]}]
                response = await conn.create_response(messages, **SAMPLING)
                pieces = [text async for text in response]
                return committed, pieces, response.done

        return run(go(), timeout_s=120)


def offline_output(model_dir, parts: list[dict], question: str):
    llm = make_mm_llm(model_dir)
    messages = [{"role": "user", "content": parts + [{"type": "text", "text": question}]}]
    return llm.generate({"messages": messages}, SamplingParams(**SAMPLING))[0]


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return make_llava_checkpoint(tmp_path_factory.mktemp("gateway_llava"), "clip", seed=11)


@pytest.mark.parametrize("tensor_parallel_size", [1, 2])
def test_image_and_chunked_video_equal_the_offline_api(llava, tensor_parallel_size):
    """At tensor-parallel size 2 (the engine in its own process, one worker process beside it) the
    encoders and the streamed video item live on the driver; the text is the single process's."""
    image, video = png_bytes(1), make_video("webm", "vp8", seconds=1.0)
    assert len(video) > 4 * CHUNK
    options = {} if tensor_parallel_size == 1 else {"engine_mode": "process", "tensor_parallel_size": 2}
    committed, pieces, done = through_server(llava, [("img", image, "image", "image/png"),
                                                     ("vid", video, "video", "video/webm")], "Describe both.",
                                             **options)
    expected = offline_output(llava, [{"type": "image", "image": image}, {"type": "video", "video": video}],
                              "Describe both.")
    assert "".join(pieces) == expected.text
    assert len(pieces) > 1  # streamed, not delivered at the end
    assert done.status == "incomplete" and done.usage.output_tokens == len(expected.token_ids)
    assert done.usage.input_tokens == len(expected.prompt_token_ids)
    media_tokens = sum(c.num_tokens for c in committed)
    assert 0 < media_tokens < done.usage.input_tokens  # input.committed counts what the engine placed


def test_chunked_audio_equals_the_offline_api(tmp_path_factory):
    model_dir = make_qwen2_audio_checkpoint(tmp_path_factory.mktemp("gateway_qwen2_audio"), seed=6)
    wav = make_wav(tone(330.0, seconds=1.5, rate=16000), 16000)
    committed, pieces, done = through_server(model_dir, [("aud", wav, "audio", "audio/wav")], "What is it?")
    expected = offline_output(model_dir, [{"type": "audio", "audio": wav}], "What is it?")
    assert "".join(pieces) == expected.text
    assert done.usage.input_tokens == len(expected.prompt_token_ids)
    assert 0 < committed[0].num_tokens < done.usage.input_tokens
