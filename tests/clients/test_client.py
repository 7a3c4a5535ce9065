"""The async Python client against a real server: streamed text equals the offline API's, usage,
cancel, uploads and their errors, JSON frames, and a refused session."""

from __future__ import annotations

import pytest
from PIL import Image

from clients import ConnectionClosed, ServerError, connect
from llm_core import SamplingParams
from tests.encoders.media.samples import to_bytes
from tests.service.conftest import serve
from tests.service.wire import chat, run

PROMPT = "Tell me about the red square"


@pytest.mark.parametrize("binary", [True, False])
def test_respond_streams_the_offline_text(server, offline, binary):
    sampling = dict(max_tokens=16, temperature=0.9, seed=21, ignore_eos=True)
    expected = offline.generate({"messages": chat(PROMPT)}, SamplingParams(**sampling))[0]

    async def go():
        async with connect(server.ws_url, binary=binary) as conn:
            assert conn.session.model == server.gateway.config.model_name
            pieces = [text async for text in conn.respond(chat(PROMPT), **sampling)]
            response = await conn.create_response(chat(PROMPT), **sampling)
            done = await response.wait()
            return pieces, response, done

    pieces, response, done = run(go())
    assert "".join(pieces) == expected.text == response.text
    assert response.token_ids == expected.token_ids
    assert done.usage.output_tokens == 16 and response.finish_reason == "length"


def test_cancel_a_response(server):
    async def go():
        async with connect(server.ws_url) as conn:
            response = await conn.create_response(chat(PROMPT), max_tokens=900, ignore_eos=True)
            async for _ in response:
                await response.cancel()
            return response

    response = run(go())
    assert response.status == "cancelled" and 0 < response.usage.output_tokens < 900


def test_server_errors_reach_the_caller(server):
    async def go():
        async with connect(server.ws_url) as conn:
            with pytest.raises(ServerError) as upload_error:  # a text model takes no images
                await conn.upload("img", to_bytes(Image.new("RGB", (4, 4)), "PNG"), mime="image/png")
            bad = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "patternProperties": {}}}}
            response = await conn.create_response(chat("x"), response_format=bad)
            with pytest.raises(ServerError) as schema_error:
                await response.wait()
            ok = await conn.create_response(chat("x"), max_tokens=3)  # the session goes on
            await ok.wait()
            return upload_error.value.code, schema_error.value.code, ok.status

    assert run(go()) == ("unsupported_media", "invalid_schema", "incomplete")


def test_a_refused_session_says_why(text_checkpoint):
    with serve(text_checkpoint, api_key="k") as locked:
        async def go(key):
            async with connect(locked.ws_url, api_key=key) as conn:
                return (await conn.create_response(chat("x"), max_tokens=2)).response_id

        with pytest.raises(ServerError) as refused:
            run(go("wrong"))
        assert (refused.value.code, refused.value.close_code) == ("unauthorized", 1008)
        assert run(go("k")) == "r1"


def test_responses_end_with_connection_closed_when_the_server_goes(text_checkpoint):
    with serve(text_checkpoint, idle_timeout_s=0.2) as idle:
        async def go():
            async with connect(idle.ws_url) as conn:
                await conn.ws.wait_closed()
                with pytest.raises(ConnectionClosed):
                    await conn.create_response(chat("x"))
                return conn.ws.close_code

        assert run(go()) == 1001
