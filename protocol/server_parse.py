"""Turns one decoded wire map into a server event, for clients.

Known fields are checked as strictly as on the server, but unknown fields are ignored, so that a
client keeps working when a newer server adds fields. An unknown event type is still an error.
"""

from __future__ import annotations

from typing import Any, Callable

from protocol.errors import INVALID_EVENT, UNKNOWN_EVENT, ErrorInfo, ProtocolError
from protocol.fields import (INT64_MAX, Fields, check_float, check_int, check_list, quote,
                             wrong_type)
from protocol.server_events import (FINISH_REASONS, RESPONSE_STATUSES, ErrorEvent, InputCommitted,
                                    InputDeleted, InputKnown, ResponseCreated, ResponseDelta,
                                    ResponseDone, ServerEvent, SessionCreated, Usage)

_MAX = 1 << 30  # generous bound on strings the server sends


def parse_server_event(value: Any) -> ServerEvent:
    """The event for one decoded frame from the server; raises ProtocolError if malformed."""
    if type(value) is not dict:
        raise ProtocolError(INVALID_EVENT, f"an event must be a map, got {quote(value)}")
    fields = Fields(value, "", None)
    kind = fields.get("type", required=True)
    parser = _PARSERS.get(kind) if type(kind) is str else None
    if parser is None:
        raise ProtocolError(UNKNOWN_EVENT, f"unknown event type {quote(kind)}", field="type")
    try:
        return parser(fields)
    except ProtocolError as error:
        error.event_type = kind
        raise


def _session_created(f: Fields) -> SessionCreated:
    values: dict[str, int | float] = {}
    limits = f.get_map("limits", None)
    for key, item in (f.get("limits") or {}).items():
        if type(key) is not str:
            raise wrong_type("limits", "a map with string keys", key)
        where = limits.field(key)
        if type(item) is float:
            values[key] = check_float(item, where, 0.0, float("inf"))
        else:
            values[key] = check_int(item, where, 0, INT64_MAX)
    return SessionCreated(f.get_str("session_id", max_chars=_MAX, required=True),
                          f.get_str("model", max_chars=_MAX, required=True), values)


def _input_committed(f: Fields) -> InputCommitted:
    return InputCommitted(f.get_str("item_id", max_chars=_MAX, required=True),
                          f.get_int("num_tokens", 0, INT64_MAX, required=True),
                          f.get_bool("cached", required=True))


def _input_known(f: Fields) -> InputKnown:
    return InputKnown(f.get_str("item_id", max_chars=_MAX, required=True),
                      f.get_str("content_hash", max_chars=_MAX, required=True))


def _response_delta(f: Fields) -> ResponseDelta:
    token_ids = f.get("token_ids")
    if token_ids is not None:
        field = f.field("token_ids")
        check_list(token_ids, field, max_items=_MAX)
        token_ids = tuple(check_int(t, f"{field}[{i}]", 0, INT64_MAX)
                          for i, t in enumerate(token_ids))
    logprobs = f.get("logprobs")
    if logprobs is not None:
        entries = check_list(logprobs, "logprobs", max_items=_MAX)
        logprobs = tuple(_token_logprobs(entry, f"logprobs[{i}]")
                         for i, entry in enumerate(entries))
    return ResponseDelta(f.get_str("response_id", max_chars=_MAX, required=True),
                         f.get_str("delta", max_chars=_MAX, required=True), token_ids, logprobs)


def _token_logprobs(entry: Any, path: str) -> tuple[tuple[int, float], ...]:
    pairs = []
    for i, pair in enumerate(check_list(entry, path, max_items=_MAX)):
        where = f"{path}[{i}]"
        if type(pair) is not list or len(pair) != 2:
            raise wrong_type(where, "a [token_id, logprob] pair", pair)
        pairs.append((check_int(pair[0], where, 0, INT64_MAX),
                      check_float(pair[1], where, float("-inf"), 0.0)))
    return tuple(pairs)


def _response_done(f: Fields) -> ResponseDone:
    usage = f.get_map("usage", None, required=True)
    error = f.get_map("error", None)
    return ResponseDone(
        f.get_str("response_id", max_chars=_MAX, required=True),
        f.get_choice("status", RESPONSE_STATUSES, required=True),
        f.get_choice("finish_reason", FINISH_REASONS),
        Usage(*(usage.get_int(name, 0, INT64_MAX, required=True)
                for name in ("input_tokens", "output_tokens", "cached_tokens"))),
        f.get_str("trace_id", max_chars=_MAX),
        None if error is None else _error_info(error))


def _error_info(f: Fields) -> ErrorInfo:
    return ErrorInfo(*(f.get_str(name, max_chars=_MAX, required=name in ("code", "message"))
                       for name in ("code", "message", "event_type", "field", "item_id",
                                    "response_id")))


_PARSERS: dict[str, Callable[[Fields], ServerEvent]] = {
    "session.created": _session_created,
    "input.committed": _input_committed,
    "input.known": _input_known,
    "input.deleted": lambda f: InputDeleted(f.get_str("item_id", max_chars=_MAX, required=True)),
    "response.created": lambda f: ResponseCreated(
        f.get_str("response_id", max_chars=_MAX, required=True)),
    "response.delta": _response_delta,
    "response.done": _response_done,
    "error": lambda f: ErrorEvent(_error_info(f.get_map("error", None, required=True))),
}
