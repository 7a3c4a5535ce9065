"""Async Python client of the /v1/stream WebSocket.

    async with connect("ws://127.0.0.1:8000/v1/stream", api_key=None) as conn:
        await conn.upload("img1", "cat.png")                     # chunks, waits for input.committed
        async for text in conn.respond([{"role": "user", "content": [
                {"type": "item", "item_id": "img1"}, {"type": "text", "text": "What is it?"}]}],
                max_tokens=32, seed=1):
            print(text, end="", flush=True)

Frames are msgpack (binary) unless `binary=False`. One task receives and routes server events: to
responses by response_id, to uploads by item_id; other errors go to `conn.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import itertools
import mimetypes
from collections import deque
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import msgpack
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WsClosed

from clients.response import ConnectionClosed, Response, ServerError
from protocol import (ErrorEvent, ErrorInfo, InputCommitted, InputKnown, ProtocolError, ResponseCreated,
                      ResponseDelta, ResponseDone, SessionCreated, decode_server_frame)

DEFAULT_CHUNK_SIZE = 256 << 10


class Connection:
    """One session. Use `connect()`; methods run on the loop that opened it."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.session: SessionCreated | None = None
        self.errors: deque[ErrorInfo] = deque(maxlen=1000)  # errors about neither a response nor an item
        self._responses: dict[str, Response] = {}
        self._uploads: dict[str, asyncio.Future] = {}
        self._known: set[str] = set()
        self._ids = itertools.count(1)
        self._created = asyncio.get_running_loop().create_future()
        self._closed_reason: str | None = None
        self._receiver = asyncio.get_running_loop().create_task(self._receive_loop())

    async def send(self, event: dict[str, Any]) -> None:
        """Send one client event given as its wire map."""
        await self.ws.send(encode_client_event(event, self.binary))

    async def upload(self, item_id: str, source: str | Path | bytes, modality: str | None = None,
                     mime: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                     announce_hash: bool = True) -> InputCommitted:
        """Send a file or bytes as `input.append` chunks and wait for `input.committed`.

        modality and mime default from the file name (bytes need mime). With announce_hash the
        first chunk carries the content's sha256, and uploading stops if the server answers
        `input.known`. Raises ServerError with the server's error (corrupt_media, ...).
        """
        data, mime = await _read_source(source, mime)
        modality = modality or mime.split("/")[0]
        future = self._uploads[item_id] = asyncio.get_running_loop().create_future()
        chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
        for index, chunk in enumerate(chunks):
            if future.done() or item_id in self._known:
                break
            event = {"type": "input.append", "item_id": item_id, "modality": modality, "mime": mime,
                     "data": chunk, "final": index == len(chunks) - 1}
            if index == 0 and announce_hash:
                event["content_hash"] = hashlib.sha256(data).hexdigest()
            await self.send(event)
        if item_id in self._known and not future.done():
            await self.send({"type": "input.append", "item_id": item_id, "modality": modality, "mime": mime,
                             "data": b"", "final": True})
        return await future

    async def create_response(self, messages: list[dict[str, Any]], *, response_id: str | None = None,
                              **options: Any) -> Response:
        """Send `response.create` (options such as max_tokens, seed, priority, response_format at
        the top level, as on the wire) and return the Response to iterate."""
        if self._closed_reason is not None:
            raise ConnectionClosed(self._closed_reason)
        response_id = response_id or f"r{next(self._ids)}"
        response = self._responses[response_id] = Response(self, response_id)
        event = {"type": "response.create", "response_id": response_id, "messages": messages}
        event.update({key: value for key, value in options.items() if value is not None})
        await self.send(event)
        return response

    async def respond(self, messages: list[dict[str, Any]], **options: Any) -> AsyncIterator[str]:
        """Text deltas of a new response, as they arrive."""
        response = await self.create_response(messages, **options)
        async for text in response:
            yield text

    async def update_session(self, **fields: Any) -> None:
        await self.send({"type": "session.update", **fields})

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._receiver, return_exceptions=True)

    async def _receive_loop(self) -> None:
        reason = "the connection closed"
        try:
            async for frame in self.ws:
                self._route(decode_server_frame(frame))
        except WsClosed as exc:
            reason = f"the connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except ProtocolError as exc:
            reason = f"the server sent a bad event: {exc.message}"
        finally:
            if self.ws.close_code is not None:
                reason = f"the connection closed with code {self.ws.close_code}"
            self._closed_reason = reason
            for response in self._responses.values():
                response._on_closed(reason)
            for future in self._uploads.values():
                if not future.done():
                    future.set_exception(ConnectionClosed(reason))
            if not self._created.done():
                # Refused at once (1008 unauthorized, 1013 overloaded): the server said why first.
                error = ServerError(self.errors[-1]) if self.errors else ConnectionClosed(reason)
                error.close_code = self.ws.close_code
                self._created.set_exception(error)

    def _route(self, event) -> None:
        if isinstance(event, (ResponseCreated, ResponseDelta, ResponseDone)):
            response = self._responses.get(event.response_id)
            if response is not None and response._on_event(event):
                del self._responses[event.response_id]
        elif isinstance(event, InputCommitted):
            future = self._uploads.pop(event.item_id, None)
            if future is not None and not future.done():
                future.set_result(event)
        elif isinstance(event, InputKnown):
            self._known.add(event.item_id)
        elif isinstance(event, ErrorEvent):
            self._route_error(event.error)
        elif isinstance(event, SessionCreated):
            self.session = event
            if not self._created.done():
                self._created.set_result(event)

    def _route_error(self, info: ErrorInfo) -> None:
        response = self._responses.get(info.response_id) if info.response_id else None
        future = self._uploads.get(info.item_id) if info.item_id else None
        if response is not None:
            if response._on_event(info):
                del self._responses[info.response_id]
        elif future is not None and not future.done():
            del self._uploads[info.item_id]
            future.set_exception(ServerError(info))
        else:
            self.errors.append(info)


@asynccontextmanager
async def connect(url: str, *, api_key: str | None = None, binary: bool = True,
                  open_timeout: float = 10.0, **ws_options: Any) -> AsyncIterator[Connection]:
    """A session on `url` (ws://HOST:PORT/v1/stream), open until the block ends."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    ws_options.setdefault("max_size", 64 << 20)
    ws_options.setdefault("compression", None)
    async with ws_connect(url, additional_headers=headers, open_timeout=open_timeout, proxy=None,
                          **ws_options) as ws:
        conn = Connection(ws, binary)
        await asyncio.wait_for(asyncio.shield(conn._created), open_timeout)
        try:
            yield conn
        finally:
            await conn.close()


def encode_client_event(event: dict[str, Any], binary: bool) -> bytes | str:
    """A frame for a client event's wire map: msgpack, or JSON with bytes as base64."""
    if binary:
        return msgpack.packb(event, use_bin_type=True)
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_base64)


def _base64(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot send {type(value).__name__} in a JSON frame")


async def _read_source(source: str | Path | bytes, mime: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if mime is None:
            raise ValueError("uploading bytes needs a mime type")
        return bytes(source), mime
    path = Path(source)
    data = await asyncio.to_thread(path.read_bytes)
    mime = mime or mimetypes.guess_type(path.name)[0]
    if mime is None:
        raise ValueError(f"cannot tell the mime type of {path.name!r}; pass mime=")
    return data, mime
