"""Constrained generation through the engine: random weights wander through the grammar (a fuzzer)."""

from __future__ import annotations

import json

import jsonschema
import pytest

from llm_core import LLM, SamplingParams
from llm_core.structured import compile_json_schema, compile_regex
from tests.helpers.checkpoints import make_text_checkpoint

SCHEMAS = [
    {"type": "object", "properties": {"shape": {"enum": ["circle", "square", "triangle"]},
                                      "count": {"type": "integer", "minimum": 0, "maximum": 20},
                                      "ok": {"type": "boolean"}},
     "required": ["shape", "count"], "additionalProperties": False},
    {"type": "array", "items": {"type": "integer", "minimum": -5, "maximum": 99}, "minItems": 1, "maxItems": 4},
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 6},
                                      "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
                                      "score": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 0,
                                                                             "maximum": 1}]}},
     "required": ["name", "score"], "additionalProperties": False},
]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    path = make_text_checkpoint(tmp_path_factory.mktemp("structured"), "llama", seed=4)
    return LLM(str(path), device="cpu", max_model_len=512)


@pytest.mark.parametrize("schema_index", range(len(SCHEMAS)))
def test_outputs_validate_over_many_seeds(llm, schema_index):
    schema = SCHEMAS[schema_index]
    grammar = compile_json_schema(schema)
    rf = {"type": "json_schema", "json_schema": {"schema": schema}}
    params = [SamplingParams(max_tokens=120, temperature=1.0, seed=seed, response_format=rf) for seed in range(24)]
    outputs = llm.generate([f"json {i}" for i in range(24)], params)
    finished = [o for o in outputs if o.finish_reason == "stop"]
    assert len(finished) >= 12, [o.finish_reason for o in outputs]
    for out in outputs:
        assert out.error is None
        if out.finish_reason == "stop":
            jsonschema.validate(json.loads(out.text), schema)
            assert grammar.matches(out.text)
        else:  # cut by max_tokens, never by an empty mask: what exists is a valid prefix
            assert out.finish_reason == "length" and grammar.is_prefix(out.text)


def test_regex_constraint(llm):
    pattern = r"(red|blue) (circle|square) at [0-9]{1,2}"
    grammar = compile_regex(pattern)
    params = [SamplingParams(max_tokens=40, temperature=1.0, seed=s, response_format={"type": "regex",
                                                                                     "pattern": pattern})
              for s in range(8)]
    for out in llm.generate(["x"] * 8, params):
        assert out.finish_reason == "stop" and grammar.matches(out.text), out.text


def test_unconstrained_rows_are_untouched(llm):
    greedy = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    alone = llm.generate(["plain prompt"], greedy)[0]
    rf = {"type": "json_schema", "json_schema": {"schema": SCHEMAS[0]}}
    mixed = llm.generate(["plain prompt", "json"], [greedy, SamplingParams(max_tokens=60, seed=1, response_format=rf)])
    assert mixed[0].token_ids == alone.token_ids
    assert mixed[1].finish_reason in ("stop", "length")


def test_constraint_survives_preemption(tmp_path):
    path = make_text_checkpoint(tmp_path / "small", "llama", seed=4)
    # 14 usable blocks of 16 tokens: three 60-token prompts fill 12; the pattern forces at least
    # 24 output tokens each, so running requests outgrow the pool, get preempted and resume with
    # their matcher state intact.
    small = LLM(str(path), device="cpu", max_model_len=200, cpu_kv_cache_bytes=15 * 2 * 16 * 2 * 2 * 16 * 4)
    pattern = r"[a-z]{24,40}"
    grammar = compile_regex(pattern)
    params = [SamplingParams(max_tokens=60, temperature=1.0, seed=s, response_format={"type": "regex",
                                                                                     "pattern": pattern})
              for s in range(6)]
    outputs = small.generate([[10 + i] * 60 for i in range(6)], params)
    assert small.engine.scheduler.num_preemptions > 0
    for out in outputs:
        assert out.finish_reason == "stop" and grammar.matches(out.text), out.text


def test_bad_schema_is_a_clear_error(llm):
    rf = {"type": "json_schema", "json_schema": {"schema": {"type": "object", "patternProperties": {"a": {}}}}}
    with pytest.raises(ValueError, match="patternProperties"):
        llm.generate(["x"], SamplingParams(response_format=rf))
    assert not llm.engine.has_unfinished_requests()
