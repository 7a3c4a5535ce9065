"""`response_format` of `response.create`: free text, any JSON object, a JSON schema, or a regex.

The codec checks only the shape: a schema is a JSON-compatible map within size limits, a pattern is
a bounded string. Whether the engine can compile them is reported later as `invalid_schema`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from protocol.config import ProtocolLimits
from protocol.errors import LIMIT_EXCEEDED, ProtocolError
from protocol.fields import Fields, invalid, is_unicode, join, wrong_type

RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema", "regex")

_FIELDS_BY_TYPE = {
    "text": frozenset({"type"}),
    "json_object": frozenset({"type"}),
    "json_schema": frozenset({"type", "json_schema"}),
    "regex": frozenset({"type", "pattern"}),
}
_JSON_SCHEMA_FIELDS = frozenset({"name", "schema", "strict"})


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    """An output constraint: `schema`, `name`, `strict` go with json_schema, `pattern` with regex.

    `strict` is accepted for OpenAI compatibility; output always follows the schema.
    """

    type: str
    schema: dict | None = None
    name: str | None = None
    strict: bool | None = None
    pattern: str | None = None

    def to_wire(self) -> dict:
        if self.type == "json_schema":
            body: dict = {"schema": self.schema}
            if self.name is not None:
                body["name"] = self.name
            if self.strict is not None:
                body["strict"] = self.strict
            return {"type": "json_schema", "json_schema": body}
        if self.type == "regex":
            return {"type": "regex", "pattern": self.pattern}
        return {"type": self.type}


def parse_response_format(value: Any, field: str, limits: ProtocolLimits) -> ResponseFormat:
    kind = Fields(value, field, None).get_choice("type", RESPONSE_FORMAT_TYPES, required=True)
    fields = Fields(value, field, _FIELDS_BY_TYPE[kind])
    if kind == "regex":
        pattern = fields.get_str("pattern", max_chars=limits.max_pattern_chars, required=True,
                                 allow_empty=False)
        return ResponseFormat("regex", pattern=pattern)
    if kind != "json_schema":
        return ResponseFormat(kind)
    body = fields.get_map("json_schema", _JSON_SCHEMA_FIELDS, required=True)
    name = body.get_str("name", max_chars=limits.max_id_chars)
    strict = body.get_bool("strict")
    schema = body.get("schema", required=True)
    if type(schema) is not dict:
        raise wrong_type(body.field("schema"), "a map", schema)
    check_json_value(schema, body.field("schema"), limits)
    return ResponseFormat("json_schema", schema=schema, name=name, strict=strict)


def check_json_value(value: Any, path: str, limits: ProtocolLimits) -> None:
    """Raises ProtocolError unless `value` is plain JSON (no binary, no NaN) within the limits."""
    budget = [limits.max_schema_nodes]
    _walk(value, path, 0, budget, limits)


def _walk(value: Any, path: str, depth: int, budget: list[int], limits: ProtocolLimits) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise ProtocolError(LIMIT_EXCEEDED, f"{path} has more than {limits.max_schema_nodes} "
                            f"values; the limit is {limits.max_schema_nodes}", field=path)
    if depth > limits.max_schema_depth:
        raise ProtocolError(LIMIT_EXCEEDED, f"{path} is nested deeper than "
                            f"{limits.max_schema_depth} levels", field=path)
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not is_unicode(key):
                raise invalid(path, "has a key that is not a Unicode string")
            _walk(item, join(path, key), depth + 1, budget, limits)
    elif kind is list:
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", depth + 1, budget, limits)
    elif kind is str:
        if not is_unicode(value):
            raise invalid(path, "holds an unpaired surrogate, which is not valid Unicode")
    elif kind is float:
        if not math.isfinite(value):
            raise invalid(path, "must be a finite number")
    elif kind not in (int, bool, type(None)):
        raise wrong_type(path, "a JSON value", value)
