import pytest

from llm_core.structured import GrammarSpec, StructuredOutputError


@pytest.mark.parametrize("response_format,kind", [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}}, "json_schema"),
    ({"type": "json_object"}, "json_schema"),
    ({"type": "regex", "pattern": "a+"}, "regex"),
])
def test_spec_key_equals_the_compiled_grammar_key(response_format, kind):
    spec = GrammarSpec.from_response_format(response_format)
    assert spec.kind == kind
    assert spec.key == spec.compile().key


def test_spec_compiles_what_it_names():
    assert GrammarSpec.from_response_format({"type": "regex", "pattern": "a+"}).compile().matches("aaa")
    grammar = GrammarSpec.from_response_format({"type": "json_object"}).compile()
    assert grammar.matches('{"k": [1]}') and not grammar.matches("[1]")
    assert GrammarSpec.from_response_format({"type": "text"}) is None
    assert GrammarSpec.from_response_format(None) is None
    a = GrammarSpec.json_schema({"type": "string"})
    assert a.key == GrammarSpec.json_schema('{"type":"string"}').key
    assert a.key != GrammarSpec.json_schema({"type": "string"}, max_whitespace=4).key


@pytest.mark.parametrize("response_format,message", [
    ({"type": "json_schema"}, "needs"),
    ({"type": "regex"}, "string 'pattern'"),
    ({"type": "yaml"}, "unknown response_format type 'yaml'"),
    ("json", "unknown response_format type None"),
])
def test_bad_response_formats_are_clear_errors(response_format, message):
    with pytest.raises(StructuredOutputError, match=None) as info:
        GrammarSpec.from_response_format(response_format)
    assert message in str(info.value)
