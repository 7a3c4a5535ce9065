"""docs/protocol.md documents every event, field, limit and error code, and its example decodes."""

from dataclasses import fields
from pathlib import Path

import pytest

from protocol import ERROR_CODES, ProtocolError, decode_frame, decode_server_frame
from protocol.client_events import CLIENT_EVENT_TYPES, GenerationOptions
from protocol.config import ProtocolLimits
from protocol.errors import ERROR_DESCRIPTIONS
from protocol.server_events import SERVER_EVENT_TYPES
from tests.protocol.samples import CLIENT_EVENTS, SERVER_EVENTS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def wire_field_names(events) -> set[str]:
    names = set()

    def walk(value):
        if isinstance(value, dict):
            for key, item in value.items():
                names.add(key)
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    for event in events:
        wire = event.to_wire()
        for free_form in ("limits", "metadata"):  # keys are data, not fields
            wire.pop(free_form, None)
        if "response_format" in wire and "schema" in wire["response_format"].get("json_schema", {}):
            wire["response_format"]["json_schema"]["schema"] = {}
        walk(wire)
    return names


@pytest.mark.parametrize("kind", [e.type for e in CLIENT_EVENT_TYPES + SERVER_EVENT_TYPES])
def test_every_event_has_a_section(kind):
    assert f"### {kind}\n" in DOC


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_error_code_is_in_the_table(code):
    assert f"| `{code}` |" in DOC
    assert ERROR_DESCRIPTIONS[code]


@pytest.mark.parametrize("name", [f.name for f in fields(ProtocolLimits)])
def test_every_protocol_limit_is_listed(name):
    assert f"| `{name}` |" in DOC


@pytest.mark.parametrize("name", sorted(wire_field_names(CLIENT_EVENTS + SERVER_EVENTS)
                                        | {f.name for f in fields(GenerationOptions)}))
def test_every_wire_field_is_named(name):
    assert f"`{name}`" in DOC or f'"{name}"' in DOC


def example_lines(prefix: str) -> list[str]:
    block = DOC.split("## Example")[1].split("```")[1]
    return [line[2:] for line in block.splitlines() if line.startswith(prefix)]


def test_example_client_frames_decode_except_the_deliberate_error():
    lines = example_lines("> ")
    for line in lines[:-1]:
        decode_frame(line, max_bytes=1 << 20)
    with pytest.raises(ProtocolError) as caught:
        decode_frame(lines[-1], max_bytes=1 << 20)
    error_line = example_lines("< ")[-1]
    assert decode_server_frame(error_line).error == caught.value.to_info()


def test_example_server_frames_decode():
    for line in example_lines("< "):
        decode_server_frame(line)
