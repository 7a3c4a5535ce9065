"""Prompts with repeats (so n-gram lookup finds drafts) and a small schema, shared by the
speculative decoding tests."""

PROMPTS = ["the cat sat on the mat. the cat sat on the mat. the cat",
           "one two three one two three one two",
           "abc abc abc abc abc",
           "a completely different prompt with few repeats"]
SCHEMA = {"type": "object", "properties": {"shape": {"enum": ["circle", "square", "triangle"]},
                                           "count": {"type": "integer", "minimum": 0, "maximum": 20}},
          "required": ["shape", "count"], "additionalProperties": False}
