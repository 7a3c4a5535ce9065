import pytest

from protocol import ProtocolError, ResponseFormat
from protocol.config import DEFAULT_LIMITS, ProtocolLimits
from protocol.response_format import parse_response_format

SCHEMA = {"type": "object", "properties": {"a": {"type": "array", "items": {"enum": [1, "x", None,
                                                                                    True, 2.5]}}}}


def parse(value, limits=DEFAULT_LIMITS):
    return parse_response_format(value, "response_format", limits)


def error_of(value, limits=DEFAULT_LIMITS):
    with pytest.raises(ProtocolError) as caught:
        parse(value, limits)
    return caught.value


@pytest.mark.parametrize("fmt", [
    ResponseFormat("text"),
    ResponseFormat("json_object"),
    ResponseFormat("json_schema", schema=SCHEMA),
    ResponseFormat("json_schema", schema={}, name="n", strict=False),
    ResponseFormat("regex", pattern="[a-z]+"),
])
def test_wire_round_trip(fmt):
    assert parse(fmt.to_wire()) == fmt


def test_openai_json_schema_shape():
    wire = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}
    assert parse(wire) == ResponseFormat("json_schema", schema=SCHEMA, name="x", strict=True)


@pytest.mark.parametrize("value, code, field", [
    ("json", "invalid_field", "response_format"),
    ({}, "missing_field", "response_format.type"),
    ({"type": "grammar"}, "invalid_field", "response_format.type"),
    ({"type": "text", "pattern": "x"}, "unknown_field", "response_format.pattern"),
    ({"type": "regex"}, "missing_field", "response_format.pattern"),
    ({"type": "regex", "pattern": ""}, "invalid_field", "response_format.pattern"),
    ({"type": "json_schema"}, "missing_field", "response_format.json_schema"),
    ({"type": "json_schema", "schema": {}}, "unknown_field", "response_format.schema"),
    ({"type": "json_schema", "json_schema": {}}, "missing_field",
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"schema": []}}, "invalid_field",
     "response_format.json_schema.schema"),
    ({"type": "json_schema", "json_schema": {"schema": {}, "description": "d"}}, "unknown_field",
     "response_format.json_schema.description"),
    ({"type": "json_schema", "json_schema": {"schema": {"a": [1, b"x"]}}}, "invalid_field",
     "response_format.json_schema.schema.a[1]"),
    ({"type": "json_schema", "json_schema": {"schema": {"m": float("nan")}}}, "invalid_field",
     "response_format.json_schema.schema.m"),
    ({"type": "json_schema", "json_schema": {"schema": {"p": {b"k": 1}}}}, "invalid_field",
     "response_format.json_schema.schema.p"),
])
def test_bad_formats(value, code, field):
    error = error_of(value)
    assert (error.code, error.field) == (code, field)


def test_schema_size_and_depth_limits():
    limits = ProtocolLimits(max_schema_nodes=5, max_schema_depth=3)
    wide = {"type": "json_schema", "json_schema": {"schema": {"enum": [1, 2, 3, 4, 5]}}}
    assert error_of(wide, limits).code == "limit_exceeded"
    deep = {"a": {"a": {"a": {"a": 1}}}}
    error = error_of({"type": "json_schema", "json_schema": {"schema": deep}}, limits)
    assert error.code == "limit_exceeded"
    assert error.field == "response_format.json_schema.schema.a.a.a.a"


def test_pattern_limit():
    error = error_of({"type": "regex", "pattern": "x" * 9}, ProtocolLimits(max_pattern_chars=8))
    assert (error.code, error.field) == ("limit_exceeded", "response_format.pattern")
