"""Raw WebSocket helpers for service tests: send any frame, read server events with a bound.

Every wait is bounded (HANG_GUARD_S): a hang fails the test instead of stalling the suite.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgpack
from websockets.asyncio.client import connect as ws_connect

from protocol import ServerEvent, decode_server_frame

HANG_GUARD_S = 30.0


def run(coro, timeout_s: float = HANG_GUARD_S):
    """Run a coroutine to completion on a fresh event loop, within a hang guard."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def open_ws(url: str, **options: Any):
    options.setdefault("proxy", None)
    options.setdefault("compression", None)
    options.setdefault("open_timeout", 10)
    return ws_connect(url, **options)


async def send(ws, event: dict[str, Any], binary: bool = True) -> None:
    await ws.send(msgpack.packb(event, use_bin_type=True) if binary else json.dumps(event))


async def next_event(ws, timeout_s: float = HANG_GUARD_S) -> ServerEvent:
    return decode_server_frame(await asyncio.wait_for(ws.recv(), timeout_s))


async def expect(ws, kind: str, timeout_s: float = HANG_GUARD_S) -> ServerEvent:
    """The next event of type `kind`, skipping others (deltas, created, ...)."""
    while True:
        event = await next_event(ws, timeout_s)
        if event.type == kind:
            return event


async def session(ws) -> ServerEvent:
    return await expect(ws, "session.created")


def chat(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def complete(ws, response_id: str, text: str = "Hello there", **options: Any) -> tuple[str, ServerEvent]:
    """Create a response and read it to its done event: (concatenated deltas, done)."""
    options.setdefault("max_tokens", 6)
    await send(ws, {"type": "response.create", "response_id": response_id, "messages": chat(text), **options})
    texts = []
    while True:
        event = await next_event(ws)
        if event.type == "response.delta" and event.response_id == response_id:
            texts.append(event.delta)
        elif event.type == "response.done" and event.response_id == response_id:
            return "".join(texts), event
        elif event.type == "error" and event.error.response_id == response_id:
            raise AssertionError(f"response {response_id} was refused: {event.error}")
