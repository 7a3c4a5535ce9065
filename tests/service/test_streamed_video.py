"""Acceptance 3 end to end: a video uploaded in many chunks starts encoding its first frames before
the last chunk arrives.

A real uvicorn server on 127.0.0.1 serves a tiny LLaVA (engine in thread mode). The client sends
the first half of a WebM in small input.append chunks and, before sending the rest (the last
chunk among them), waits (bounded) until the engine's stats show frames of the item through the
vision tower. The response that names the item
sends no frames to the engine (its prompt names the engine-side item), runs no encoder forward,
and streams the same text as the offline LLM on the same video bytes. A corrupt chunk fails its
item with an error naming it, the engine drops its frames, and the session goes on.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from encoders.config import DEFAULT_MEDIA_LIMITS
from encoders.media import StreamingVideoDecoder
from llm_core import SamplingParams
from tests.encoders.media.samples import make_video
from tests.helpers.mm_checkpoints import make_llava_checkpoint
from tests.helpers.mm_generation import make_mm_llm
from tests.service.conftest import serve
from tests.service.wire import complete, expect, next_event, open_ws, run, send, session

SAMPLING = dict(max_tokens=10, temperature=0.8, seed=7, ignore_eos=True)
MM_ENGINE = {"dtype": "float32", "attention_backend": "torch", "max_model_len": 512}
CHUNK = 200  # bytes per input.append
QUESTION = "What moves?"
POLLS = 1000  # bounded waits on the engine's counters (the hang guard fires first)


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return str(make_llava_checkpoint(tmp_path_factory.mktemp("streamed_video_llava"), "clip", seed=12))


@pytest.fixture(scope="module")
def server(llava):
    with serve(llava, engine_options=MM_ENGINE) as running:
        yield running


def engine_stats(server) -> dict:
    return server.call(server.gateway.engine.stats())


async def wait_for_stats(server, predicate) -> dict:
    for _ in range(POLLS):
        stats = await asyncio.to_thread(engine_stats, server)
        if predicate(stats):
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"the engine's counters never got there: {stats}")


def append(item_id: str, data: bytes, final: bool) -> dict:
    return {"type": "input.append", "item_id": item_id, "modality": "video", "mime": "video/webm",
            "data": data, "final": final}


def video_messages(item_id: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "item", "item_id": item_id}, {"type": "text", "text": QUESTION}]}]


def test_a_chunked_video_is_encoded_before_its_last_chunk_and_equals_the_offline_api(llava, server, monkeypatch):
    video = make_video("webm", "vp8", seconds=3.0)  # 6 frames sampled at 2 fps
    chunks = [video[i:i + CHUNK] for i in range(0, len(video), CHUNK)]
    half = len(chunks) // 2
    assert half >= 4
    decoder = StreamingVideoDecoder("video/webm", DEFAULT_MEDIA_LIMITS)
    num_early_frames = len(decoder.push(b"".join(chunks[:half])))  # what the first half can give
    decoder.close()
    assert 0 < num_early_frames < 6
    engine = server.gateway.engine
    sent_prompts = []
    generate = engine.generate

    def recording_generate(request, **options):
        sent_prompts.append(request.prompt)
        return generate(request, **options)

    monkeypatch.setattr(engine, "generate", recording_generate)
    before = engine_stats(server)

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            for chunk in chunks[:half]:
                await send(ws, append("clip", chunk, final=False))
            # The rest is not sent until the engine has run the tower on frames of the item.
            early = await wait_for_stats(server, lambda s: s["num_item_frames_encoded"] > before["num_item_frames_encoded"])
            for i, chunk in enumerate(chunks[half:], half):
                await send(ws, append("clip", chunk, final=i == len(chunks) - 1))
            committed = await expect(ws, "input.committed")
            stats = await wait_for_stats(server, lambda s: s["num_item_frames_pending"] == 0)
            text, done = await complete(ws, "r1", messages=video_messages("clip"), **SAMPLING)
            return early, committed, stats, text, done

    early, committed, stats, text, done = run(go(), timeout_s=120)
    num_frames = stats["num_item_frames_encoded"] - before["num_item_frames_encoded"]
    assert 0 < early["num_item_frames_encoded"] - before["num_item_frames_encoded"] <= num_early_frames
    assert num_frames == 6
    assert committed.item_id == "clip" and not committed.cached

    # The response named the engine's item: no frame crossed to the engine with it, no encoder ran.
    assert len(sent_prompts) == 1
    part = sent_prompts[0]["messages"][0]["content"][0]
    assert part["type"] == "item" and part["item_id"].endswith("/clip/0") and set(part) == {"type", "item_id"}
    after = engine_stats(server)
    assert after["num_encoder_forwards"] == stats["num_encoder_forwards"]

    expected = make_mm_llm(llava).generate(
        {"messages": [{"role": "user", "content": [{"type": "video", "video": video},
                                                   {"type": "text", "text": QUESTION}]}]},
        SamplingParams(**SAMPLING))[0]
    assert text == expected.text
    assert done.status == "incomplete" and done.usage.output_tokens == len(expected.token_ids)
    assert done.usage.input_tokens == len(expected.prompt_token_ids)
    assert 0 < committed.num_tokens < done.usage.input_tokens


def test_engine_items_go_with_their_session_items(server):
    video = make_video("webm", "vp8", seconds=1.0)
    base = engine_stats(server)["num_media_items"]

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            for item_id in ("a", "b"):
                await send(ws, append(item_id, video, final=True))
                await expect(ws, "input.committed")
            assert (await wait_for_stats(server, lambda s: s["num_media_items"] == base + 2))
            await send(ws, {"type": "input.delete", "item_id": "a"})
            await expect(ws, "input.deleted")
            await wait_for_stats(server, lambda s: s["num_media_items"] == base + 1)
        await wait_for_stats(server, lambda s: s["num_media_items"] == base)  # the session closed

    run(go(), timeout_s=60)


def test_a_corrupt_chunk_fails_its_item_and_the_session_goes_on(server):
    video = make_video("webm", "vp8", seconds=3.0)
    good = video[:int(len(video) * 0.7)]  # four frames decode from this prefix
    base = engine_stats(server)

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            await send(ws, append("bad", good, final=False))
            await wait_for_stats(server, lambda s: s["num_media_items"] == base["num_media_items"] + 1)
            await send(ws, append("bad", os.urandom(3000), final=True))
            error = (await expect(ws, "error")).error
            await wait_for_stats(server, lambda s: s["num_media_items"] == base["num_media_items"])
            text, done = await complete(ws, "after", max_tokens=3)  # the session is still open
            return error, done

    error, done = run(go(), timeout_s=60)
    assert (error.code, error.item_id) == ("corrupt_media", "bad")
    assert "'bad'" in error.message
    assert done.status == "incomplete"
