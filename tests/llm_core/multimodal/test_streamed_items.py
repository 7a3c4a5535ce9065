"""Uploaded items: a video streamed in chunks is encoded while it arrives (issue 4, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.config import DEFAULT_MEDIA_LIMITS
from encoders.media import StreamingVideoDecoder
from llm_core import SamplingParams
from tests.encoders.media.samples import make_video
from tests.helpers.mm_checkpoints import make_llava_checkpoint
from tests.helpers.mm_generation import make_mm_llm

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=3)
VIDEO = make_video("webm", "vp8", seconds=3.0)  # 6 frames sampled at 2 fps


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    return make_mm_llm(make_llava_checkpoint(tmp_path_factory.mktemp("llava_items"), "clip", seed=8))


def chat(part) -> dict:
    return {"messages": [{"role": "user", "content": [part, {"type": "text", "text": "What moves?"}]}]}


def test_streamed_video_is_encoded_before_its_last_chunk(llm):
    engine = llm.engine
    embedder = engine.multimodal.embedder
    decoder = StreamingVideoDecoder("video/webm", DEFAULT_MEDIA_LIMITS)
    chunk = len(VIDEO) // 8 + 1
    chunks = [VIDEO[i:i + chunk] for i in range(0, len(VIDEO), chunk)]
    frames_seen = []
    for piece in chunks[:-1]:
        frames = [f.image for f in decoder.push(piece)]
        if frames:
            engine.add_media_item("clip-1", "video", frames, final=False)
            assert engine.has_unfinished_requests()  # its frames wait for a step
        while engine.has_unfinished_requests():  # what the engine loop does between messages
            assert engine.step() == []
        frames_seen += frames
    forwards_before_last = embedder.num_encoder_forwards
    last = [f.image for f in decoder.push(chunks[-1]) + decoder.finish()]
    decoder.close()
    engine.add_media_item("clip-1", "video", last, final=True)
    while engine.has_unfinished_requests():
        engine.step()
    frames_seen += last
    assert forwards_before_last > 0, "no frame was encoded before the last chunk arrived"
    assert engine.multimodal.items.num_frames_encoded >= len(frames_seen)

    forwards = embedder.num_encoder_forwards
    via_item = llm.generate(chat({"type": "item", "item_id": "clip-1"}), GREEDY)[0]
    assert embedder.num_encoder_forwards == forwards  # the committed item's embeddings were waiting
    stored = engine.multimodal.items.resolve("clip-1", "test")[1]
    direct = llm.generate(chat({"type": "video", "video": list(stored)}), GREEDY)[0]
    assert via_item.token_ids == direct.token_ids
    assert via_item.prompt_token_ids == direct.prompt_token_ids


def test_item_errors_are_clear(llm):
    engine = llm.engine
    engine.add_media_item("open", "video", [np.zeros((32, 32, 3), np.uint8)], final=False)
    with pytest.raises(ValueError, match="not committed"):
        llm.generate(chat({"type": "item", "item_id": "open"}), GREEDY)
    with pytest.raises(ValueError, match="unknown item 'nope'"):
        llm.generate(chat({"type": "item", "item_id": "nope"}), GREEDY)
    with pytest.raises(ValueError, match="is video, not image"):
        engine.add_media_item("open", "image", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="no media to commit"):
        engine.add_media_item("empty", "video", [], final=True)
    assert not engine.delete_media_item("empty")  # a failed first append leaves nothing behind
    assert engine.delete_media_item("open") and not engine.delete_media_item("open")
    assert not engine.has_unfinished_requests()


def test_uploaded_frames_take_the_encoder_budget_that_requests_leave(tmp_path):
    llm = make_mm_llm(make_llava_checkpoint(tmp_path, "clip", seed=8), max_num_encoder_input_tokens=1)
    engine, items = llm.engine, llm.engine.multimodal.items
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)]
    engine.add_media_item("clip", "video", frames, final=False)
    assert (items.num_frames_encoded, items.num_pending_frames) == (0, 3)
    engine.step()  # a frame is over the budget of one row: each step takes one, alone
    assert (items.num_frames_encoded, items.num_pending_frames) == (1, 2)
    engine.add_media_item("clip", "video", [], final=True)
    # A request naming the committed item encodes its waiting frames when it is added.
    out = llm.generate(chat({"type": "item", "item_id": "clip"}), GREEDY)[0]
    assert (items.num_frames_encoded, items.num_pending_frames) == (3, 0)
    direct = llm.generate(chat({"type": "video", "video": frames}), GREEDY)[0]
    assert out.token_ids == direct.token_ids
    assert engine.stats()["num_item_frames_encoded"] == 3
