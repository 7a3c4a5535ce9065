import json

import pytest

from llm_core.structured import (
    GrammarTooLargeError, SchemaError, UnsupportedKeywordError, compile_json_schema,
)

from .corpus import CASES
from .helpers import dumps_forms, validator

IDS = [case["name"] for case in CASES]


def compile_case(case):
    return compile_json_schema(case["schema"], **case.get("options", {}))


def test_corpus_is_large_and_covers_the_scope():
    assert len(CASES) >= 30
    text = json.dumps([case["schema"] for case in CASES])
    for keyword in ["type", "enum", "const", "properties", "required", "additionalProperties", "items",
                    "prefixItems", "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref", "$defs",
                    "minLength", "maxLength", "pattern", "format", "minimum", "maximum",
                    "exclusiveMinimum", "exclusiveMaximum", "nullable"]:
        assert f'"{keyword}"' in text, keyword
    for fmt in ["date", "time", "date-time", "email", "uuid", "uri", "ipv4", "ipv6", "hostname"]:
        assert f'"format": "{fmt}"' in text, fmt


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_valid_instances_match_in_every_dumps_form(case):
    grammar = compile_case(case)
    check = validator(case.get("validate_with", case["schema"]))
    for value in case["valid"]:
        assert check.is_valid(value), f"corpus error: {value!r} is not valid"
        for text in dumps_forms(value):
            assert grammar.matches(text), text


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_invalid_instances_do_not_match(case):
    grammar = compile_case(case)
    check = validator(case.get("validate_with", case["schema"]))
    for value in case.get("invalid", []):
        assert not check.is_valid(value), f"corpus error: {value!r} is valid"
        for text in dumps_forms(value):
            assert not grammar.matches(text), text
    for value in case.get("rejected", []):
        for text in dumps_forms(value):
            assert not grammar.matches(text), text


def test_prefixes_of_valid_texts_are_prefixes_and_not_matches():
    grammar = compile_json_schema(CASES[0]["schema"])
    text = json.dumps({"name": "Ada", "age": 36})
    for i in range(len(text)):
        assert grammar.is_prefix(text[:i])
        assert not grammar.matches(text[:i])
    assert not grammar.is_prefix('{"age"')


def test_whitespace_is_bounded_and_configurable():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    default = compile_json_schema(schema)
    assert default.matches("{\n" + " " * 20 + '"a": 1}')
    assert not default.matches("{\n" + " " * 21 + '"a": 1}')
    assert not default.matches('{\n\n"a": 1}')
    assert not default.matches(' {"a": 1}')
    narrow = compile_json_schema(schema, max_whitespace=2)
    assert narrow.matches(json.dumps({"a": 1}, indent=2))
    assert not narrow.matches(json.dumps({"a": 1}, indent=4))
    assert compile_json_schema(schema, max_whitespace=0).matches('{\n"a":\n1\n}')


def test_recursion_depth_is_configurable():
    schema = {"type": "object", "properties": {"next": {"$ref": "#"}}}
    nested = {"next": {"next": {"next": {"next": {}}}}}
    assert not compile_json_schema(schema, max_recursion_depth=3).matches(json.dumps(nested))
    assert compile_json_schema(schema, max_recursion_depth=4).matches(json.dumps(nested))


def test_schema_as_json_text_and_memoized():
    schema = {"type": "string", "maxLength": 3}
    assert compile_json_schema(json.dumps(schema)) is compile_json_schema(schema)
    assert compile_json_schema(schema).key != compile_json_schema(schema, max_whitespace=3).key


@pytest.mark.parametrize("keyword,schema,path", [
    ("patternProperties", {"type": "object", "properties": {"x": {"type": "object", "patternProperties": {}}}},
     "#/properties/x"),
    ("uniqueItems", {"type": "array", "uniqueItems": True}, "#"),
    ("multipleOf", {"type": "integer", "multipleOf": 3}, "#"),
    ("not", {"not": {"type": "string"}}, "#"),
    ("if", {"if": {"type": "string"}, "then": {}}, "#"),
    ("minProperties", {"type": "object", "minProperties": 1}, "#"),
    ("contains", {"type": "array", "items": {"contains": {}}}, "#/items"),
    ("dependentRequired", {"$defs": {"d": {"dependentRequired": {}}}, "$ref": "#/$defs/d"}, "#/$defs/d"),
])
def test_unsupported_keyword_is_named_with_its_place(keyword, schema, path):
    with pytest.raises(UnsupportedKeywordError) as info:
        compile_json_schema(schema)
    assert info.value.keyword == keyword
    assert str(info.value) == f"unsupported JSON Schema keyword {keyword!r} at {path}"


@pytest.mark.parametrize("schema,message", [
    ({"type": "string", "format": "color"}, "unsupported JSON Schema format 'color'"),
    ({"type": "strin"}, "unknown type 'strin'"),
    ({"$ref": "#/$defs/missing"}, "points to nothing"),
    ({"$ref": "https://example.com/s.json"}, "only local '$ref'"),
    ({"type": "string", "pattern": "(?=a)"}, "lookahead"),
    ({"type": "string", "pattern": "a", "maxLength": 3}, "together with 'pattern'"),
    ({"type": "object", "properties": {"a": False}, "required": ["a"]}, "allows no JSON value"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "no value in common"),
    ({"allOf": [{"pattern": "a"}, {"pattern": "b"}]}, "cannot merge two different values of 'pattern'"),
    ({"enum": ["a"], "minLength": 2}, "'enum'/'const' together with 'minLength'"),
    ({"type": "array", "minItems": -1}, "'minItems' must be a non-negative integer"),
    ({"type": "number", "minimum": "0"}, "'minimum' must be a number"),
    ({"properties": {"a": 1}}, "a schema must be an object or a boolean"),
    ('{"type": ', "schema is not valid JSON"),
])
def test_schema_errors_are_clear(schema, message):
    with pytest.raises(SchemaError, match=None) as info:
        compile_json_schema(schema)
    assert message in str(info.value)


def test_errors_are_value_errors_and_huge_schemas_are_refused():
    assert issubclass(SchemaError, ValueError)
    with pytest.raises(GrammarTooLargeError, match="too large"):
        compile_json_schema({"type": "array", "items": {"type": "string", "maxLength": 1000},
                             "maxItems": 1000})


def test_extension_and_annotation_keywords_are_ignored():
    schema = {"type": "integer", "title": "n", "description": "d", "default": 1, "examples": [1],
              "x-internal": True, "$comment": "c", "deprecated": False}
    grammar = compile_json_schema(schema)
    assert grammar.matches("12") and not grammar.matches('"12"')
