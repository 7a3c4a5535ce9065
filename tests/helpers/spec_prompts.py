"""Prompts with repeats (so n-gram lookup finds drafts), a small schema and the check of the
schema's runs, shared by the speculative decoding tests."""

import json

import jsonschema

from llm_core import LLM, SamplingParams

PROMPTS = ["the cat sat on the mat. the cat sat on the mat. the cat",
           "one two three one two three one two",
           "abc abc abc abc abc",
           "a completely different prompt with few repeats"]
SCHEMA = {"type": "object", "properties": {"shape": {"enum": ["circle", "square", "triangle"]},
                                           "count": {"type": "integer", "minimum": 0, "maximum": 20}},
          "required": ["shape", "count"], "additionalProperties": False}


def run_json_schema(llm: LLM, seeds: int) -> None:
    """Greedy and sampled (temperature 1) requests under SCHEMA, `seeds` of each: at least half
    stop (the rest hit max_tokens), none errs, and every one that stopped parses and validates."""
    rf = {"type": "json_schema", "json_schema": {"schema": SCHEMA}}
    params = [SamplingParams(max_tokens=80, temperature=t, seed=s, response_format=rf)
              for s in range(seeds) for t in (0.0, 1.0)]
    outputs = llm.generate([f"json {i} json {i}" for i in range(len(params))], params)
    assert sum(o.finish_reason == "stop" for o in outputs) >= len(outputs) // 2
    for out in outputs:
        assert out.error is None
        if out.finish_reason == "stop":
            jsonschema.validate(json.loads(out.text), SCHEMA)
