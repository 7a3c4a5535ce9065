"""GrammarSpec: what to compile, known before compiling, so caches can be looked up first.

`GrammarSpec.from_response_format` reads the OpenAI-style response_format of a request:
{"type": "json_schema", "json_schema": {"schema": {...}}}, {"type": "json_object"},
{"type": "regex", "pattern": "..."}; {"type": "text"} (no constraint) gives None.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import StructuredOutputError
from .grammar import Grammar, compile_regex, regex_key
from .json_schema import (
    DEFAULT_MAX_WHITESPACE, JsonSchemaOptions, canonical_schema, compile_canonical_schema, json_schema_key,
)


@dataclass(frozen=True)
class GrammarSpec:
    kind: str                     # "json_schema" or "regex"
    source: str                   # canonical schema JSON text, or the pattern
    options: JsonSchemaOptions = field(default_factory=JsonSchemaOptions)

    @classmethod
    def json_schema(cls, schema, *, max_recursion_depth: int = 3,
                    max_whitespace: int = DEFAULT_MAX_WHITESPACE) -> GrammarSpec:
        return cls("json_schema", canonical_schema(schema),
                   JsonSchemaOptions(max_recursion_depth, max_whitespace))

    @classmethod
    def regex(cls, pattern: str) -> GrammarSpec:
        if not isinstance(pattern, str):
            raise StructuredOutputError("a regex response_format needs a string 'pattern'")
        return cls("regex", pattern)

    @classmethod
    def from_response_format(cls, response_format: dict | None, **options) -> GrammarSpec | None:
        if response_format is None:
            return None
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind == "text":
            return None
        if kind == "json_object":
            return cls.json_schema({"type": "object"}, **options)
        if kind == "json_schema":
            body = response_format.get("json_schema")
            if not isinstance(body, dict) or "schema" not in body:
                raise StructuredOutputError("response_format json_schema needs {'json_schema': "
                                            "{'schema': {...}}}")
            return cls.json_schema(body["schema"], **options)
        if kind == "regex":
            return cls.regex(response_format.get("pattern"))
        raise StructuredOutputError(f"unknown response_format type {kind!r} (expected text, "
                                    "json_object, json_schema or regex)")

    @property
    def key(self) -> str:
        """Equal to the `key` of the Grammar that `compile()` returns."""
        if self.kind == "regex":
            return regex_key(self.source)
        return json_schema_key(self.source, self.options)

    def compile(self) -> Grammar:
        if self.kind == "regex":
            return compile_regex(self.source)
        return compile_canonical_schema(self.source, self.options)
