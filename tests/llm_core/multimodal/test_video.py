"""Video prompts on LLaVA: sampled frames through the vision tower, one run of image tokens."""

from __future__ import annotations

import pytest

from encoders.config import DEFAULT_MEDIA_LIMITS
from encoders.media import decode_video
from llm_core import SamplingParams
from tests.encoders.media.samples import make_video
from tests.helpers.mm_checkpoints import load_hf_model, make_llava_checkpoint
from tests.helpers.mm_generation import NUM_LOGPROBS, hf_greedy, hf_prompt_ids, make_mm_llm, max_logprob_diff

NUM_NEW = 6
GREEDY = SamplingParams(max_tokens=NUM_NEW, temperature=0.0, ignore_eos=True, logprobs=NUM_LOGPROBS)
# Two clips of one second (two frames sampled at 2 fps): a 16 px red square on 64 px and on 40 px frames.
VIDEO_A = make_video("webm", "vp8", seconds=1.0)
VIDEO_B = make_video("webm", "vp8", seconds=1.0, size=40)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    path = make_llava_checkpoint(tmp_path_factory.mktemp("llava_video"), "clip", seed=7)
    return path, make_mm_llm(path)


def video_chat(video) -> dict:
    return {"messages": [{"role": "user", "content": [{"type": "video", "video": video},
                                                      {"type": "text", "text": "What moves?"}]}]}


def test_frames_fill_one_run_of_image_tokens_as_transformers_would(llava):
    path, llm = llava
    frames = [frame.image for frame in decode_video(VIDEO_A, None, DEFAULT_MEDIA_LIMITS)]
    assert len(frames) == 2
    image_id = llm.engine.multimodal.processor.image_encoder.image_token_id
    out = llm.generate(video_chat(VIDEO_A), GREEDY)[0]
    assert out.prompt_token_ids.count(image_id) == len(frames) * 16
    # transformers' LLaVA fills the image tokens with the frames' features in order: the same thing.
    import transformers

    pixels = transformers.AutoImageProcessor.from_pretrained(path, backend="pil")(
        frames, return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    expected_ids = hf_prompt_ids(path, video_chat(VIDEO_A)["messages"], [len(frames) * 16], image_id)
    assert out.prompt_token_ids == expected_ids
    want_tokens, want_logprobs = hf_greedy(load_hf_model(path), expected_ids, NUM_NEW, pixel_values=pixels)
    assert out.token_ids == want_tokens
    assert max_logprob_diff(out.logprobs, want_logprobs) < 1e-4


def test_different_videos_give_different_outputs(llava):
    _, llm = llava
    a, b = llm.generate([video_chat(VIDEO_A), video_chat(VIDEO_B)], GREEDY)
    assert a.prompt_token_ids == b.prompt_token_ids  # the same placeholders ...
    assert max(abs(value - b.logprobs[0].get(token, -100.0)) for token, value in a.logprobs[0].items()) > 1e-2


def test_pooled_frames_and_a_video_file(llava, tmp_path):
    path, _ = llava
    file = tmp_path / "clip.webm"
    file.write_bytes(VIDEO_A)
    llm = make_mm_llm(path, video_pool_stride=2)
    out = llm.generate(video_chat(str(file)), GREEDY)[0]
    image_id = llm.engine.multimodal.processor.image_encoder.image_token_id
    assert out.prompt_token_ids.count(image_id) == 2 * 4  # a 4x4 patch grid pooled 2x2 per frame
    assert len(out.token_ids) == NUM_NEW
