import pytest

from protocol import ChatMessage, ItemPart, ProtocolError, TextPart
from protocol.chat import parse_messages
from protocol.config import DEFAULT_LIMITS, ProtocolLimits


def parse(value, limits=DEFAULT_LIMITS):
    return parse_messages(value, "messages", limits)


def error_of(value, limits=DEFAULT_LIMITS):
    with pytest.raises(ProtocolError) as caught:
        parse(value, limits)
    return caught.value


def test_string_and_part_content():
    messages = parse([
        {"role": "system", "content": "s"},
        {"role": "user",
         "content": [{"type": "text", "text": ""}, {"type": "item", "item_id": "a"}]},
    ])
    assert messages == (ChatMessage("system", "s"),
                        ChatMessage("user", (TextPart(""), ItemPart("a"))))
    assert messages[1].item_ids == ("a",) and messages[0].item_ids == ()


def test_to_wire_keeps_the_content_form():
    assert ChatMessage("user", "x").to_wire() == {"role": "user", "content": "x"}
    assert ChatMessage("user", (ItemPart("a"),)).to_wire() == {
        "role": "user", "content": [{"type": "item", "item_id": "a"}]}


@pytest.mark.parametrize("value, code, field", [
    ("hi", "invalid_field", "messages"),
    ([], "invalid_field", "messages"),
    (["hi"], "invalid_field", "messages[0]"),
    ([{"content": "x"}], "missing_field", "messages[0].role"),
    ([{"role": "tool", "content": "x"}], "invalid_field", "messages[0].role"),
    ([{"role": "user"}], "missing_field", "messages[0].content"),
    ([{"role": "user", "content": 3}], "invalid_field", "messages[0].content"),
    ([{"role": "user", "content": []}], "invalid_field", "messages[0].content"),
    ([{"role": "user", "content": "x", "name": "bob"}], "unknown_field", "messages[0].name"),
    ([{"role": "user", "content": ["x"]}], "invalid_field", "messages[0].content[0]"),
    ([{"role": "user", "content": [{"text": "x"}]}], "missing_field",
     "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], "invalid_field",
     "messages[0].content[0].type"),
    ([{"role": "user", "content": [{"type": "text"}]}], "missing_field",
     "messages[0].content[0].text"),
    ([{"role": "user", "content": [{"type": "text", "text": "x", "item_id": "a"}]}],
     "unknown_field", "messages[0].content[0].item_id"),
    ([{"role": "user", "content": [{"type": "item", "item_id": "a b"}]}], "invalid_field",
     "messages[0].content[0].item_id"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": [
        {"type": "text", "text": "x"}, {"type": "item", "item_id": "a"}]}], "invalid_field",
     "messages[1].content[1]"),
])
def test_bad_messages(value, code, field):
    error = error_of(value)
    assert (error.code, error.field) == (code, field)


def test_part_limit():
    limits = ProtocolLimits(max_parts=2)
    parts = [{"type": "text", "text": "x"}] * 3
    error = error_of([{"role": "user", "content": parts}], limits)
    assert (error.code, error.field) == ("limit_exceeded", "messages[0].content")
    error = error_of([{"role": "user", "content": [{"type": "text", "text": "x" * 6}]}],
                     ProtocolLimits(max_text_chars=5))
    assert (error.code, error.field) == ("limit_exceeded", "messages[0].content[0].text")
