"""Wire protocol of /v1/stream: typed events, the msgpack/JSON codec, validation, error codes."""

from protocol.chat import ChatMessage, ContentPart, ItemPart, TextPart
from protocol.client_events import (GENERATION_DEFAULTS, ClientEvent, GenerationOptions,
                                    InputAppend, InputDelete, ResponseCancel, ResponseCreate,
                                    SessionUpdate)
from protocol.codec import decode_frame, decode_server_frame, encode_event
from protocol.config import DEFAULT_LIMITS, ProtocolLimits
from protocol.errors import ERROR_CODES, ErrorInfo, ProtocolError
from protocol.response_format import ResponseFormat
from protocol.server_events import (ErrorEvent, InputCommitted, InputDeleted, InputKnown,
                                    ResponseCreated, ResponseDelta, ResponseDone, ServerEvent,
                                    SessionCreated, Usage)

__all__ = [
    "ChatMessage", "ContentPart", "ItemPart", "TextPart",
    "GENERATION_DEFAULTS", "ClientEvent", "GenerationOptions", "InputAppend", "InputDelete",
    "ResponseCancel", "ResponseCreate", "SessionUpdate",
    "decode_frame", "decode_server_frame", "encode_event",
    "DEFAULT_LIMITS", "ProtocolLimits",
    "ERROR_CODES", "ErrorInfo", "ProtocolError",
    "ResponseFormat",
    "ErrorEvent", "InputCommitted", "InputDeleted", "InputKnown", "ResponseCreated",
    "ResponseDelta", "ResponseDone", "ServerEvent", "SessionCreated", "Usage",
]
