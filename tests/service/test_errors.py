"""Every bad input gets its error event (the session stays open and then completes a request) or
its close code, while a second session on the same server completes a request meanwhile.

The server's model is a text Llama; its media side is set to take images, video and audio so
that media errors come from decoding, not from the model's kind.
"""

from __future__ import annotations

import asyncio
import base64

import msgpack
import pytest
from PIL import Image

from encoders.encoder_config import (AudioPreprocessConfig, audio_encoder_config, image_encoder_config)
from service.media_tokens import ModelMedia
from tests.encoders.media.samples import to_bytes
from tests.service.conftest import serve
from tests.service.wire import chat, complete, expect, next_event, open_ws, run, send, session

PNG = to_bytes(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG")
LIMITS = dict(max_message_bytes=64 << 10, max_item_bytes=8 << 10, max_session_media_bytes=12 << 10,
              max_items_per_session=3, max_responses_per_session=2)


@pytest.fixture(scope="module")
def server(text_checkpoint):
    with serve(text_checkpoint, **LIMITS) as running:
        running.gateway.model_media = ModelMedia(image=image_encoder_config({"model_type": "llava"}),
                                                 audio=audio_encoder_config({"model_type": "qwen2_audio"}),
                                                 audio_preprocess=AudioPreprocessConfig())
        yield running


def append(item_id, data, final=True, modality="image", mime="image/png") -> dict:
    return {"type": "input.append", "item_id": item_id, "modality": modality, "mime": mime, "data": data,
            "final": final}


def with_bystander(server, act):
    """Run act(bad_ws) on one session while another completes a request; returns act's result."""
    async def go():
        async with open_ws(server.ws_url) as good, open_ws(server.ws_url) as bad:
            await session(good)
            await session(bad)
            await send(good, {"type": "response.create", "response_id": "g", "messages": chat("Hello"),
                              "max_tokens": 40, "ignore_eos": True})
            result = await act(bad)
            while (event := await next_event(good)).type != "response.done":
                assert event.type in ("response.created", "response.delta"), event
            assert event.status == "incomplete" and event.usage.output_tokens == 40
            return result
    return run(go())


def error_then_open(server, *frames, binary: bool = True):
    """Send frames (maps, or raw bytes/str); return the first error event, after checking that the
    session still completes a request."""
    async def act(ws):
        for frame in frames:
            await (ws.send(frame) if isinstance(frame, (bytes, str)) else send(ws, frame, binary))
        error = await expect(ws, "error")
        text, done = await complete(ws, "after")
        assert done.status in ("completed", "incomplete")
        return error.error
    return with_bystander(server, act)


def test_malformed_msgpack(server):
    error = error_then_open(server, b"\xc1\x00")
    assert error.code == "invalid_msgpack"


def test_malformed_json(server):
    error = error_then_open(server, '{"type": "response.create",')
    assert error.code == "invalid_json" and "Traceback" not in error.message


def test_not_a_map(server):
    assert error_then_open(server, msgpack.packb([1, 2])).code == "invalid_event"


def test_unknown_event_type(server):
    error = error_then_open(server, {"type": "response.explode"})
    assert (error.code, error.field) == ("unknown_event", "type")


def test_missing_field(server):
    error = error_then_open(server, {"type": "response.create", "response_id": "m"})
    assert (error.code, error.field, error.response_id) == ("missing_field", "messages", "m")


def test_wrong_field_type(server):
    error = error_then_open(server, {"type": "response.create", "messages": chat("x"), "max_tokens": "5"})
    assert (error.code, error.field) == ("invalid_field", "max_tokens")


def test_unknown_field(server):
    error = error_then_open(server, {"type": "response.create", "messages": chat("x"), "temprature": 0.5},
                            binary=False)
    assert (error.code, error.field) == ("unknown_field", "temprature")


def test_unknown_item(server):
    messages = [{"role": "user", "content": [{"type": "item", "item_id": "ghost"}]}]
    error = error_then_open(server, {"type": "response.create", "messages": messages})
    assert (error.code, error.item_id) == ("unknown_item", "ghost")


def test_corrupt_media(server):
    error = error_then_open(server, append("bad", b"this is not a png"))
    assert (error.code, error.item_id) == ("corrupt_media", "bad")


def test_unsupported_mime(server):
    error = error_then_open(server, append("bmp", PNG, mime="image/bmp"))
    assert error.code == "unsupported_media"


def test_bad_base64_in_a_json_frame(server):
    error = error_then_open(server, {**append("b64", "not base64!"), "data": "not base64!"}, binary=False)
    assert (error.code, error.field) == ("invalid_field", "data")


def test_unsupported_schema_keyword(server):
    bad = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "patternProperties": {"a": {}}}}}
    error = error_then_open(server, {"type": "response.create", "response_id": "s", "messages": chat("x"),
                                     "response_format": bad})
    assert (error.code, error.response_id) == ("invalid_schema", "s") and "patternProperties" in error.message


def test_response_not_found(server):
    error = error_then_open(server, {"type": "response.cancel", "response_id": "nope"})
    assert (error.code, error.response_id) == ("response_not_found", "nope")


def test_duplicate_response(server):
    create = {"type": "response.create", "response_id": "dup", "messages": chat("x"), "max_tokens": 600,
              "ignore_eos": True}
    error = error_then_open(server, create, create, {"type": "response.cancel", "response_id": "dup"})
    assert (error.code, error.field) == ("duplicate_response", "response_id")


def test_duplicate_item(server):
    async def act(ws):
        await send(ws, append("img", PNG))
        committed = await expect(ws, "input.committed")
        await send(ws, append("img", PNG))
        return committed, (await expect(ws, "error")).error

    committed, error = with_bystander(server, act)
    assert committed.num_tokens == image_encoder_config({"model_type": "llava"}).num_image_tokens
    assert (error.code, error.item_id) == ("duplicate_item", "img")


def test_item_over_its_byte_limit(server):
    chunk = bytes(5 << 10)
    error = error_then_open(server, append("big", chunk, final=False), append("big", chunk))
    assert (error.code, error.item_id) == ("media_too_large", "big")


def test_session_over_its_media_limit(server):
    chunk = bytes(7 << 10)
    error = error_then_open(server, append("a", chunk, final=False), append("b", chunk, final=False))
    assert (error.code, error.item_id) == ("media_too_large", "b")


def test_too_many_items(server):
    frames = [append(f"i{i}", b"x", final=False) for i in range(4)]
    error = error_then_open(server, *frames)
    assert (error.code, error.item_id) == ("limit_exceeded", "i3")


def test_too_many_responses_in_flight(server):
    async def act(ws):
        for i in range(3):
            await send(ws, {"type": "response.create", "response_id": f"f{i}", "messages": chat("x"),
                            "max_tokens": 600, "ignore_eos": True})
        error = (await expect(ws, "error")).error
        for i in range(2):
            await send(ws, {"type": "response.cancel", "response_id": f"f{i}"})
        statuses = [(await expect(ws, "response.done")).status for _ in range(2)]
        text, done = await complete(ws, "after")
        return error, statuses, done

    error, statuses, done = with_bystander(server, act)
    assert (error.code, error.response_id) == ("limit_exceeded", "f2")
    assert statuses == ["cancelled", "cancelled"] and done.status == "incomplete"


def test_max_tokens_beyond_the_context(server):
    error = error_then_open(server, {"type": "response.create", "messages": chat("x"), "max_tokens": 5000})
    assert (error.code, error.field) == ("context_length_exceeded", "max_tokens")


def test_a_response_waiting_on_a_corrupt_item_fails(server):
    async def act(ws):
        await send(ws, append("late", b"garbage", final=False))
        messages = [{"role": "user", "content": [{"type": "item", "item_id": "late"}]}]
        await send(ws, {"type": "response.create", "response_id": "w", "messages": messages})
        await send(ws, append("late", b"more garbage"))
        return await expect(ws, "response.done")

    done = with_bystander(server, act)
    assert (done.status, done.error.code) == ("failed", "corrupt_media")


def test_oversized_message_closes_with_1009(server):
    async def act(ws):
        await send(ws, append("huge", bytes(70 << 10)))
        with pytest.raises(Exception):
            while True:
                await next_event(ws, 10)
        return ws.close_code

    assert with_bystander(server, act) == 1009


def test_full_server_closes_new_sessions_with_1013(text_checkpoint):
    with serve(text_checkpoint, max_sessions=2) as small:
        async def act(ws):
            async with open_ws(small.ws_url) as third:
                error = await next_event(third)
                await asyncio.wait_for(third.wait_closed(), 10)
                return error.error.code, third.close_code
        assert with_bystander(small, act) == ("overloaded", 1013)


def test_idle_session_closes_with_1001(text_checkpoint):
    with serve(text_checkpoint, idle_timeout_s=0.3) as idle:
        async def go():
            async with open_ws(idle.ws_url) as ws:
                await session(ws)
                await asyncio.wait_for(ws.wait_closed(), 10)
                return ws.close_code
        assert run(go()) == 1001


def test_chunks_of_an_item_must_agree(server):
    error = error_then_open(server, append("v", b"\x1a\x45", final=False, modality="video", mime="video/webm"),
                            append("v", b"\x00", modality="video", mime="video/mp4"))
    assert (error.code, error.field) == ("invalid_field", "mime")


def test_base64_image_in_json_commits(server):
    async def act(ws):
        await send(ws, append("j", base64.b64encode(PNG).decode()), binary=False)
        return await expect(ws, "input.committed")

    assert with_bystander(server, act).item_id == "j"
