"""Sample events for the protocol tests: every event type, with every optional field set or not."""

from protocol import (ChatMessage, ErrorEvent, ErrorInfo, GenerationOptions, InputAppend,
                      InputCommitted, InputDelete, InputDeleted, InputKnown, ItemPart,
                      ResponseCancel, ResponseCreate, ResponseCreated, ResponseDelta, ResponseDone,
                      ResponseFormat, SessionCreated, SessionUpdate, TextPart, Usage)

HASH = "ab" * 32
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

FULL_OPTIONS = GenerationOptions(max_tokens=64, temperature=0.7, top_p=0.9, top_k=40, min_p=0.05,
                                 seed=1234, stop=("\n\n", "END"), ignore_eos=False, logprobs=3,
                                 priority=-5)

MESSAGES = (
    ChatMessage("system", "Be brief."),
    ChatMessage("user", (TextPart("What is in this picture?"), ItemPart("img-1"),
                         ItemPart("clip.2"), TextPart("And the audio?"), ItemPart("mic:3"))),
    ChatMessage("assistant", (TextPart("A cat."),)),
    ChatMessage("user", "héllo ✓ 🐈"),
)

CLIENT_EVENTS = [
    SessionUpdate(),
    SessionUpdate(instructions="You are terse.", defaults=FULL_OPTIONS, output_format="msgpack"),
    SessionUpdate(instructions="", defaults=GenerationOptions(), output_format="json"),
    InputAppend("img-1", "image", "image/png", b"\x89PNG\r\n\x1a\n\x00\xff", final=True),
    InputAppend("clip.2", "video", "video/webm", b"", final=False, content_hash=HASH),
    InputAppend("mic:3", "audio", "audio/pcm;rate=16000", bytes(range(256)), final=False),
    InputDelete("img-1"),
    ResponseCreate(MESSAGES),
    ResponseCreate(MESSAGES, FULL_OPTIONS, "resp_1", ResponseFormat("regex", pattern=r"\d+"),
                   TRACEPARENT, True, {"user": "u-1", "empty": ""}),
    ResponseCreate((ChatMessage("user", "json please"),), GenerationOptions(temperature=0.0),
                   response_format=ResponseFormat("json_schema", schema={
                       "type": "object", "properties": {"n": {"type": "integer", "maximum": 1.5}},
                       "required": ["n"], "additionalProperties": False}, name="num", strict=True)),
    ResponseCreate((ChatMessage("user", "x"),), response_format=ResponseFormat("json_object")),
    ResponseCreate((ChatMessage("user", "x"),), response_format=ResponseFormat("text"),
                   speculative=False),
    ResponseCancel("resp_1"),
]

USAGE = Usage(input_tokens=812, output_tokens=64, cached_tokens=512)

SERVER_EVENTS = [
    SessionCreated("sess_1", "tiny-llava", {"max_message_bytes": 1 << 20, "idle_timeout_s": 30.5}),
    SessionCreated("sess_2", "m"),
    InputCommitted("img-1", 576, False),
    InputCommitted("clip.2", 0, True),
    InputKnown("clip.2", HASH),
    InputDeleted("img-1"),
    ResponseCreated("resp_1"),
    ResponseDelta("resp_1", "Hello"),
    ResponseDelta("resp_1", " wörld 🐈", (1, 2, 3)),
    ResponseDelta("resp_1", "", (7,), (((7, -0.25), (9, -1.5)),)),
    ResponseDone("resp_1", "completed", "stop", USAGE, "0af7651916cd43dd8448eb211c80319c"),
    ResponseDone("resp_2", "incomplete", "length", USAGE, None),
    ResponseDone("resp_3", "cancelled", "cancelled", Usage(10, 0, 0), "ab" * 16),
    ResponseDone("resp_4", "failed", "error", Usage(0, 0, 0), None,
                 ErrorInfo("internal_error", "internal error", response_id="resp_4")),
    ErrorEvent(ErrorInfo("invalid_field", "max_tokens must be an integer, got a string",
                         event_type="response.create", field="max_tokens",
                         response_id="resp_5")),
    ErrorEvent(ErrorInfo("unknown_item", "no item 'x'", item_id="x")),
]
