"""Chat messages of `response.create`: a role and a string or a list of text and item parts.

An item part refers to an image, video or audio item that the session uploaded with `input.append`;
whether that item exists is the session's question, not the codec's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from protocol.config import ProtocolLimits
from protocol.fields import Fields, check_list, invalid, wrong_type

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "item")

_MESSAGE_FIELDS = frozenset({"role", "content"})
_TEXT_PART_FIELDS = frozenset({"type", "text"})
_ITEM_PART_FIELDS = frozenset({"type", "item_id"})


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str

    def to_wire(self) -> dict:
        return {"type": "text", "text": self.text}


@dataclass(frozen=True, slots=True)
class ItemPart:
    """A reference to an uploaded media item, placed where the model should see it."""

    item_id: str

    def to_wire(self) -> dict:
        return {"type": "item", "item_id": self.item_id}


ContentPart = Union[TextPart, ItemPart]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One chat turn. `content` keeps the wire form: a string, or a tuple of parts."""

    role: str
    content: str | tuple[ContentPart, ...]

    @property
    def item_ids(self) -> tuple[str, ...]:
        if isinstance(self.content, str):
            return ()
        return tuple(p.item_id for p in self.content if isinstance(p, ItemPart))

    def to_wire(self) -> dict:
        content = self.content
        if not isinstance(content, str):
            content = [part.to_wire() for part in content]
        return {"role": self.role, "content": content}


def parse_messages(value: Any, field: str, limits: ProtocolLimits) -> tuple[ChatMessage, ...]:
    """Validates the `messages` array; raises ProtocolError naming e.g. messages[1].content[0]."""
    items = check_list(value, field, max_items=limits.max_messages, what="messages")
    if not items:
        raise invalid(field, "must hold at least one message")
    return tuple(_parse_message(item, f"{field}[{i}]", limits) for i, item in enumerate(items))


def _parse_message(value: Any, path: str, limits: ProtocolLimits) -> ChatMessage:
    fields = Fields(value, path, _MESSAGE_FIELDS)
    role = fields.get_choice("role", ROLES, required=True)
    content = fields.get("content", required=True)
    content_field = fields.field("content")
    if isinstance(content, str):
        fields.get_str("content", max_chars=limits.max_text_chars)
        return ChatMessage(role, content)
    if type(content) is not list:
        raise wrong_type(content_field, "a string or an array of parts", content)
    parts = check_list(content, content_field, max_items=limits.max_parts, what="parts")
    if not parts:
        raise invalid(content_field, "must hold at least one part")
    parsed = tuple(_parse_part(p, f"{content_field}[{i}]", limits) for i, p in enumerate(parts))
    if role != "user":
        for i, part in enumerate(parsed):
            if isinstance(part, ItemPart):
                raise invalid(f"{content_field}[{i}]", f"is an item; items may appear only in "
                              f"user messages, not in {role} messages")
    return ChatMessage(role, parsed)


def _parse_part(value: Any, path: str, limits: ProtocolLimits) -> ContentPart:
    kind = Fields(value, path, None).get_choice("type", PART_TYPES, required=True)
    if kind == "text":
        fields = Fields(value, path, _TEXT_PART_FIELDS)
        return TextPart(fields.get_str("text", max_chars=limits.max_text_chars, required=True))
    fields = Fields(value, path, _ITEM_PART_FIELDS)
    return ItemPart(fields.get_id("item_id", max_chars=limits.max_id_chars, required=True))
