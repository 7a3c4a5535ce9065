"""POST /v1/chat/completions, streamed (SSE) and not, against the offline API; its 400s; /v1/models."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from PIL import Image

from llm_core import SamplingParams
from tests.encoders.media.samples import to_bytes

MESSAGES = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "What shape is red?"}]
SCHEMA = {"type": "object", "properties": {"shape": {"enum": ["circle", "square"]}}, "required": ["shape"],
          "additionalProperties": False}


def post(server, body: dict, **options) -> httpx.Response:
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60, trust_env=False, **options)


def sse_events(server, body: dict) -> list:
    events = []
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60,
                      trust_env=False) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                payload = line[len("data: "):]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_non_streamed_completion_equals_offline(server, offline):
    expected = offline.generate({"messages": MESSAGES}, SamplingParams(max_tokens=16, temperature=0.9, seed=4))[0]
    body = post(server, {"model": "anything", "messages": MESSAGES, "max_tokens": 16, "temperature": 0.9,
                         "seed": 4}).json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": expected.text}
    assert choice["finish_reason"] == ("length" if expected.finish_reason == "length" else "stop")
    usage = body["usage"]
    assert usage["completion_tokens"] == len(expected.token_ids)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_completion_equals_offline_with_usage(server, offline):
    sampling = dict(max_tokens=20, temperature=0.0, ignore_eos=True)
    expected = offline.generate({"messages": MESSAGES}, SamplingParams(**sampling))[0]
    events = sse_events(server, {"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True},
                                 "max_completion_tokens": 20, "temperature": 0.0, "ignore_eos": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == expected.text
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 20


def test_json_schema_output_equals_offline(server, offline):
    response_format = {"type": "json_schema", "json_schema": {"name": "shape", "schema": SCHEMA}}
    params = SamplingParams(max_tokens=40, temperature=0.0, response_format=response_format)
    expected = offline.generate({"messages": MESSAGES}, params)[0]
    body = post(server, {"messages": MESSAGES, "max_tokens": 40, "temperature": 0.0,
                         "response_format": response_format}).json()
    assert body["choices"][0]["message"]["content"] == expected.text


@pytest.mark.parametrize("body, code", [
    ({"messages": MESSAGES, "n": 2}, "invalid_field"),
    ({"messages": MESSAGES, "temprature": 1}, "unknown_field"),
    ({"messages": MESSAGES, "max_tokens": "8"}, "invalid_field"),
    ({"messages": []}, "invalid_field"),
    ({}, "missing_field"),
    ({"messages": MESSAGES, "response_format": {"type": "json_schema", "json_schema": {
        "schema": {"type": "object", "patternProperties": {"x": {}}}}}}, "invalid_schema"),
    ({"messages": [{"role": "user", "content": "word " * 1500}], "max_tokens": 4}, "context_length_exceeded"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(to_bytes(Image.new("RGB", (4, 4)), "PNG")).decode()}}]}]},
     "unsupported_media"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {
        "url": "https://example.com/cat.png"}}]}]}, "unsupported_media"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {
        "data": "!!", "format": "wav"}}]}]}, "invalid_field"),
])
def test_bad_requests_get_400(server, body, code):
    response = post(server, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert "Traceback" not in error["message"]


def test_invalid_json_body(server):
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=b"{nope", timeout=30, trust_env=False)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_models_lists_the_served_model(server):
    body = httpx.get(f"{server.base_url}/v1/models", timeout=30, trust_env=False).json()
    assert [model["id"] for model in body["data"]] == [server.gateway.config.model_name]


def test_client_leaving_a_stream_aborts_its_request(server):
    from tests.service.test_session import engine_idle

    before = engine_idle(server)["num_steps"]
    body = {"messages": MESSAGES, "stream": True, "max_tokens": 900, "ignore_eos": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60,
                      trust_env=False) as response:
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # leave after the first token
    assert engine_idle(server)["num_steps"] - before < 450
