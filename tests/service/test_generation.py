"""Protocol requests to engine requests and engine deltas back, without an engine."""

from __future__ import annotations

import numpy as np
import pytest

from llm_core.engine_client import CompletionDelta
from protocol import ChatMessage, GenerationOptions, ItemPart, ProtocolError, ResponseFormat, TextPart
from service.generation import (MediaData, UsageCounter, chat_prompt, check_response_format, finish_status,
                                sampling_params, wire_logprobs)


def test_sampling_params_from_resolved_options():
    options = GenerationOptions(max_tokens=5, temperature=0.3, top_k=-1, stop=("x",), seed=9).resolved()
    fmt = ResponseFormat("json_schema", schema={"type": "object"})
    params = sampling_params(options, fmt, max_model_len=100)
    assert (params.max_tokens, params.temperature, params.top_k, params.stop, params.seed) == (5, 0.3, 0, ("x",), 9)
    assert params.response_format == {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
    assert sampling_params(GenerationOptions().resolved(), ResponseFormat("text"), 100).response_format is None


def test_unset_max_tokens_means_up_to_the_context_and_too_many_is_refused():
    assert sampling_params(GenerationOptions().resolved(), None, max_model_len=64).max_tokens == 64
    with pytest.raises(ProtocolError) as error:
        sampling_params(GenerationOptions(max_tokens=64).resolved(), None, max_model_len=64)
    assert (error.value.code, error.value.field) == ("context_length_exceeded", "max_tokens")


@pytest.mark.parametrize("fmt, ok", [
    (ResponseFormat("regex", pattern="[a-z]+"), True),
    (ResponseFormat("regex", pattern="(unclosed"), False),
    (ResponseFormat("json_object"), True),
    (ResponseFormat("json_schema", schema={"type": "object", "properties": {"a": {"type": "integer"}}}), True),
    (ResponseFormat("json_schema", schema={"type": "object", "patternProperties": {"a": {}}}), False),
    (ResponseFormat("json_schema", schema={"type": "integer", "minimum": 5, "maximum": 1}), False),
])
def test_check_response_format(fmt, ok):
    if ok:
        check_response_format(fmt)
    else:
        with pytest.raises(ProtocolError) as error:
            check_response_format(fmt)
        assert error.value.code == "invalid_schema" and error.value.field == "response_format"


def test_chat_prompt_places_media_and_instructions():
    image = np.zeros((2, 2, 3), np.uint8)
    messages = (ChatMessage("user", (ItemPart("img"), TextPart("what?"))),)
    prompt = chat_prompt(messages, "Be brief.", {"img": MediaData("image", image)})
    assert prompt["messages"][0] == {"role": "system", "content": "Be brief."}
    parts = prompt["messages"][1]["content"]
    assert parts[0]["type"] == "image" and parts[0]["image"] is image
    assert parts[1] == {"type": "text", "text": "what?"}
    with_system = (ChatMessage("system", "Own."), ChatMessage("user", "hi"))
    assert chat_prompt(with_system, "Ignored.", {})["messages"][0]["content"] == "Own."


def test_logprobs_put_the_sampled_token_first():
    delta = CompletionDelta("r", (5, 7), "ab", False, logprobs=({1: -0.1, 5: -0.9}, {7: -0.2, 2: -3.0}))
    assert wire_logprobs(delta) == (((5, -0.9), (1, -0.1)), ((7, -0.2), (2, -3.0)))
    assert wire_logprobs(CompletionDelta("r", (1,), "a", False)) is None


def test_usage_and_finish_status():
    usage = UsageCounter()
    usage.add(CompletionDelta("r", (1, 2), "ab", False, num_prompt_tokens=10, num_cached_tokens=4))
    usage.add(CompletionDelta("r", (3,), "c", True, "stop", num_prompt_tokens=10, num_cached_tokens=4))
    assert (usage.input_tokens, usage.output_tokens, usage.cached_tokens) == (10, 3, 4)
    assert finish_status("stop") == ("completed", "stop")
    assert finish_status("length") == ("incomplete", "length")
    assert finish_status("abort") == ("cancelled", "cancelled")
    assert finish_status("error") == ("failed", "error")
