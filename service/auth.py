"""API key and Origin checks for WebSockets and HTTP.

The key travels as `Authorization: Bearer KEY`, as a `token` query parameter, or (browsers, which
cannot set headers on a WebSocket) as the subprotocol `bearer.KEY`. A WebSocket handshake must
then select one of the offered subprotocols or browsers fail it: the server selects `tributary.v1`
when offered, else the bearer one.

Origin: a request without an Origin header (not a browser) passes. A browser's Origin must be the
server's own (its host:port equals the Host header) or in the allow-list; `*` allows any.
"""

from __future__ import annotations

import hmac
from typing import Mapping, Sequence
from urllib.parse import urlsplit

from service.config import ServiceConfig

SUBPROTOCOL = "tributary.v1"
BEARER_PREFIX = "bearer."


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to accept: ours if offered, else the bearer token's, else none."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    return next((p for p in offered if p.startswith(BEARER_PREFIX)), None)


def presented_key(headers: Mapping[str, str], query: Mapping[str, str], subprotocols: Sequence[str] = ()) -> str | None:
    """The API key a request carries, wherever it is."""
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if query.get("token"):
        return query["token"]
    for protocol in subprotocols:
        if protocol.startswith(BEARER_PREFIX):
            return protocol[len(BEARER_PREFIX):]
    return None


def key_is_valid(config: ServiceConfig, key: str | None) -> bool:
    if config.api_key is None:
        return True
    return key is not None and hmac.compare_digest(key.encode(), config.api_key.encode())


def origin_is_allowed(config: ServiceConfig, headers: Mapping[str, str]) -> bool:
    origin = headers.get("origin")
    if origin is None or "*" in config.allowed_origins:
        return True
    if origin.rstrip("/") in {o.rstrip("/") for o in config.allowed_origins}:
        return True
    host = headers.get("host")
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


def access_problem(config: ServiceConfig, headers: Mapping[str, str], query: Mapping[str, str],
                   subprotocols: Sequence[str] = ()) -> str | None:
    """Why a request is refused (a message safe to show), or None when it may proceed."""
    if not origin_is_allowed(config, headers):
        return f"origin {headers.get('origin', '')[:100]!r} is not allowed"
    if not key_is_valid(config, presented_key(headers, query, subprotocols)):
        return "missing or wrong API key"
    return None
