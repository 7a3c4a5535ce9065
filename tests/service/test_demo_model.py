"""Acceptance of issue 10: the shipped demo models answer about fresh media through the gateway.

One real server serves models/demo/vision and models/demo/audio side by side (as `make serve`
does), each request routed by its media. Media come from tools/demo_data.py with seeds never used
in training (training draws from seed 0's generator, these from their own), are uploaded as a
client would (PNG, WebM, WAV), and each answer must be right in at least 90% of the samples.
Decoding is greedy; the same prompts with temperature also mostly hold, but are not asserted.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from clients import ServerError, connect
from tests.service.conftest import serve
from tests.service.wire import run
from tools import demo_data

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
NUM_SAMPLES = 12
MIN_ACCURACY = 0.9
CONCURRENCY = 8  # responses in flight per session (under max_responses_per_session)
GREEDY = dict(max_tokens=40, temperature=0.0)


@pytest.fixture(scope="module")
def server():
    with serve(f"{DEMO / 'vision'},{DEMO / 'audio'}", engine_options={"max_model_len": 512}) as running:
        yield running


def _upload_args(sample: demo_data.Sample) -> tuple[bytes, str, str]:
    if sample.kind == "image":
        return demo_data.png_bytes(sample.media), "image", "image/png"
    if sample.kind == "video":
        return demo_data.video_bytes(sample, "webm"), "video", "video/webm"
    return demo_data.wav_bytes(sample.media), "audio", "audio/wav"


def ask(server, samples: list[demo_data.Sample], question: str, **options) -> list[str]:
    """Each sample uploaded and asked `question` in one session, CONCURRENCY responses at a time."""
    async def go():
        async with connect(server.ws_url) as conn:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def one(index: int, sample: demo_data.Sample) -> str:
                async with gate:
                    data, modality, mime = _upload_args(sample)
                    await conn.upload(f"item{index}", data, modality, mime)
                    content = [{"type": "item", "item_id": f"item{index}"}, {"type": "text", "text": question}]
                    response = await conn.create_response([{"role": "user", "content": content}],
                                                          **GREEDY, **options)
                    return "".join([text async for text in response])

            return await asyncio.gather(*(one(i, sample) for i, sample in enumerate(samples)))

    return run(go(), timeout_s=300)


def _accuracy(answers: list[str], is_right) -> float:
    return sum(map(is_right, answers)) / len(answers)


def test_a_red_circle_is_red_and_a_circle(server):
    rng = np.random.default_rng(101)
    samples = [demo_data.make_image(rng, shape="circle", color="red") for _ in range(NUM_SAMPLES)]
    answers = ask(server, samples, "What is in the image?")
    assert _accuracy(answers, lambda a: "red" in a.lower() and "circle" in a.lower()) >= MIN_ACCURACY, answers


def test_a_blue_square_moving_right_is_blue_square_right(server):
    rng = np.random.default_rng(202)
    samples = [demo_data.make_video(rng, shape="square", color="blue", direction="right", seconds=2.0)
               for _ in range(NUM_SAMPLES)]
    answers = ask(server, samples, "What happens in the video?")
    assert _accuracy(answers, lambda a: all(w in a.lower() for w in ("blue", "square", "right"))) >= MIN_ACCURACY, \
        answers


def test_440_hz_and_880_hz_tones_get_different_right_answers(server):
    rng = np.random.default_rng(303)
    for frequency, other in ((440, 880), (880, 440)):
        samples = [demo_data.make_audio(rng, frequency=frequency) for _ in range(NUM_SAMPLES)]
        answers = ask(server, samples, "What do you hear?")
        assert _accuracy(answers, lambda a: str(frequency) in a and str(other) not in a) >= MIN_ACCURACY, answers


def _schema(properties: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "facts", "schema": {
        "type": "object", "properties": properties, "required": list(properties)}}}


def test_json_schema_answers_are_valid_json_with_the_right_fields(server):
    rng = np.random.default_rng(404)
    samples = [demo_data.make_image(rng) for _ in range(NUM_SAMPLES)]
    schema = _schema({"shape": {"type": "string", "enum": list(demo_data.SHAPES)},
                      "color": {"type": "string", "enum": list(demo_data.COLORS)}})
    answers = ask(server, samples, "Describe the image as JSON.", response_format=schema)
    parsed = [json.loads(answer) for answer in answers]  # the grammar makes every answer valid JSON
    assert all(set(fields) == {"shape", "color"} for fields in parsed)
    right = [fields == {"shape": s.meta["shape"], "color": s.meta["color"]} for fields, s in zip(parsed, samples)]
    assert sum(right) / len(right) >= MIN_ACCURACY, list(zip(answers, [s.meta for s in samples]))

    samples = [demo_data.make_audio(rng, sound="tone") for _ in range(NUM_SAMPLES)]
    schema = _schema({"sound": {"type": "string"}, "frequency_hz": {"type": "integer"}})
    parsed = [json.loads(a) for a in ask(server, samples, "Describe the sound as JSON.", response_format=schema)]
    right = [fields == s.meta for fields, s in zip(parsed, samples)]
    assert sum(right) / len(right) >= MIN_ACCURACY, list(zip(parsed, [s.meta for s in samples]))


def test_text_goes_to_the_first_model_and_mixed_media_is_refused(server):
    rng = np.random.default_rng(505)

    async def go():
        async with connect(server.ws_url) as conn:
            greeting = "".join([text async for text in conn.respond([{"role": "user", "content": "Hello"}], **GREEDY)])
            await conn.upload("img", demo_data.png_bytes(demo_data.make_image(rng).media), "image", "image/png")
            await conn.upload("aud", demo_data.wav_bytes(demo_data.make_audio(rng).media), "audio", "audio/wav")
            content = [{"type": "item", "item_id": "img"}, {"type": "item", "item_id": "aud"}]
            with pytest.raises(ServerError) as refused:
                await (await conn.create_response([{"role": "user", "content": content}], **GREEDY)).wait()
            return greeting, refused.value

    greeting, refused = run(go(), timeout_s=120)
    assert "demo model" in greeting
    assert refused.code == "unsupported_media" and "audio and image" in str(refused)
