"""Limits that the wire protocol itself enforces while decoding one frame.

These bound the size of a single event so that decoding and validation stay cheap. Limits that need
state across frames (media bytes per item or per session, items per session, responses in flight,
sessions per server, idle timeout) are service-level and live in the service's config.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """Per-event limits; exceeding one gives a `limit_exceeded` error naming the field."""

    # Identifiers
    max_id_chars: int = 64  # item_id, response_id
    max_mime_chars: int = 128
    # Text
    max_text_chars: int = 1 << 20  # one string: instructions, a message's text, a text part
    max_messages: int = 512  # messages in one response.create
    max_parts: int = 256  # content parts in one message
    max_stop: int = 16  # stop strings
    max_stop_chars: int = 256  # one stop string
    # Sampling
    max_logprobs: int = 20  # most likely alternatives returned per token
    # Structured output
    max_pattern_chars: int = 16_384  # response_format regex
    max_schema_nodes: int = 10_000  # values (maps, arrays, scalars) in a JSON schema
    max_schema_depth: int = 64  # nesting of a JSON schema
    # Metadata
    max_metadata_keys: int = 16
    max_metadata_key_chars: int = 64
    max_metadata_value_chars: int = 512

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 1:
                raise ValueError(f"ProtocolLimits.{f.name} must be a positive integer, "
                                 f"got {value!r}")


DEFAULT_LIMITS = ProtocolLimits()
