"""One /v1/stream WebSocket session: a reader task, a writer task, its items and responses.

The reader decodes each frame into a client event and handles it without waiting on anything slow:
media chunks go to their item's decoder (worker pool), a response becomes its own task. The writer
sends what the outbox holds. A bad event gets an `error` event and the session goes on; a
disconnect (or any end of the session) cancels every response, which aborts its engine request,
and stops every decoder.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.websockets import WebSocket

from protocol import (ErrorEvent, ErrorInfo, GenerationOptions, InputAppend, InputDelete, InputDeleted,
                      ProtocolError, ResponseCancel, ResponseCreate, ServerEvent, SessionCreated, SessionUpdate,
                      decode_frame, encode_event)
from protocol.errors import (CLOSE_GOING_AWAY, DUPLICATE_RESPONSE, INTERNAL_ERROR, LIMIT_EXCEEDED,
                             RESPONSE_NOT_FOUND)
from service.gateway import Gateway
from service.items import SessionItems
from service.outbox import Outbox
from service.responses import Response
from service.telemetry import error_code

logger = logging.getLogger(__name__)

FLUSH_BEFORE_CLOSE_S = 2.0  # how long a closing session waits for its last events to go out


class Session:
    """One accepted WebSocket. `run()` serves it to the end; `abort_all()` cancels what it started.

    Server events go out in the encoding of the client's latest frame unless `output_format` pins
    one; `session.created` is a text frame.
    """

    def __init__(self, gateway: Gateway, websocket: WebSocket) -> None:
        config = gateway.config
        self.gateway = gateway
        self.websocket = websocket
        self.session_id = gateway.new_session_id()
        self.outbox = Outbox(config.max_pending_events)
        self.items = SessionItems(config, gateway.model_media, gateway.media_cache, gateway.pool, self.outbox.put,
                                  engine=gateway.video_engine, owner=self.session_id)
        self.responses: dict[str, Response] = {}
        self.instructions: str | None = None
        self.defaults = GenerationOptions()
        self.output_format: str | None = None  # None: mirror the client's last frame
        self.is_binary = False  # session.created goes out as a text frame
        self._num_responses = 0
        self._is_writing = False
        # Tracing: the upgrade request's traceparent is the parent of the session span and of
        # responses that bring none of their own.
        self.traceparent = websocket.headers.get("traceparent")
        self.span = gateway.telemetry.start_session(self.session_id, self.traceparent)

    async def run(self) -> None:
        """Serve the session until the client leaves or a connection-level rule closes it."""
        config = self.gateway.config
        self.outbox.put(SessionCreated(self.session_id, config.model_name, config.limits()))
        reader = asyncio.create_task(self._read_loop(), name=f"{self.session_id}-reader")
        writer = asyncio.create_task(self._write_loop(), name=f"{self.session_id}-writer")
        try:
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            self.abort_all()
            await asyncio.gather(reader, writer, return_exceptions=True)
            self.gateway.telemetry.end_session(self.span, self._num_responses)

    def abort_all(self) -> None:
        """Cancel every response (aborting its engine request) and stop every decoder."""
        for response in list(self.responses.values()):
            response.task.cancel()
        self.items.close()

    # Reader

    async def _read_loop(self) -> None:
        idle_s = self.gateway.config.idle_timeout_s
        while True:
            await self.outbox.wait_for_room()
            try:
                async with asyncio.timeout(idle_s):
                    message = await self.websocket.receive()
            except TimeoutError:
                if self.responses or self.items.is_decoding:
                    continue
                await self._close(CLOSE_GOING_AWAY, "idle timeout")
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = message.get("text", "")
            if not await self._on_frame(data):
                return

    async def _on_frame(self, data: bytes | str) -> bool:
        """Handle one frame; False when the session must end."""
        self.is_binary = isinstance(data, bytes)
        self.gateway.telemetry.on_frame_in("ws", len(data))  # text frames: characters
        try:
            event = decode_frame(data, max_bytes=self.gateway.config.max_message_bytes)
            self._handle(event)
        except ProtocolError as exc:
            self.outbox.put(ErrorEvent(exc.to_info()))
            if exc.close_code is not None:
                await self._close(exc.close_code, exc.code)
                return False
        except Exception:
            logger.exception("session %s: handling an event failed", self.session_id)
            self.outbox.put(ErrorEvent(ErrorInfo(INTERNAL_ERROR, "internal error")))
        return True

    def _handle(self, event: Any) -> None:
        if isinstance(event, InputAppend):
            self.items.append(event)
        elif isinstance(event, ResponseCreate):
            self._create_response(event)
        elif isinstance(event, ResponseCancel):
            response = self.responses.get(event.response_id)
            if response is None:
                raise ProtocolError(RESPONSE_NOT_FOUND, f"no response {event.response_id!r} is in flight",
                                    event_type=event.type, response_id=event.response_id)
            response.cancel()
        elif isinstance(event, InputDelete):
            self.items.delete(event.item_id)
            self.outbox.put(InputDeleted(event.item_id))
        elif isinstance(event, SessionUpdate):
            if event.instructions is not None:
                self.instructions = event.instructions or None
            if event.defaults is not None:
                self.defaults = self.defaults.merged(event.defaults)
            if event.output_format is not None:
                self.output_format = event.output_format

    def _create_response(self, event: ResponseCreate) -> None:
        self._num_responses += 1
        response_id = event.response_id or f"resp_{self._num_responses}"
        if response_id in self.responses:
            raise ProtocolError(DUPLICATE_RESPONSE, f"response {response_id!r} is already in flight",
                                event_type=event.type, field="response_id", response_id=response_id)
        limit = self.gateway.config.max_responses_per_session
        if len(self.responses) >= limit:
            raise ProtocolError(LIMIT_EXCEEDED, f"{limit} responses are in flight, the session's limit; wait "
                                "for one to finish", event_type=event.type, response_id=response_id)
        items = {}
        for message in event.messages:
            for item_id in message.item_ids:
                items[item_id] = self.items.get(item_id)
        options = self.defaults.merged(event.options).resolved()
        for item in items.values():
            item.hold()  # an engine-side item outlives its deletion until the response ends
        self.responses[response_id] = Response(self.gateway, self.outbox, self.session_id, response_id, event,
                                               options, self.instructions, items, self._on_response_end,
                                               session_span=self.span, default_traceparent=self.traceparent)

    def _on_response_end(self, response_id: str) -> None:
        response = self.responses.pop(response_id, None)
        if response is not None:
            for item in response.items.values():
                item.release()

    # Writer

    async def _write_loop(self) -> None:
        while True:
            event = await self.outbox.get()
            self._is_writing = True
            frame = self._frame(event)
            await self.websocket.send(frame)
            self._is_writing = False
            self.gateway.telemetry.on_frame_out("ws", len(frame.get("bytes") or frame.get("text")), error_code(event))

    def _frame(self, event: ServerEvent) -> dict:
        binary = self.is_binary if self.output_format is None else self.output_format == "msgpack"
        if binary:
            return {"type": "websocket.send", "bytes": encode_event(event, True)}
        return {"type": "websocket.send", "text": encode_event(event, False)}

    async def _close(self, code: int, reason: str) -> None:
        """Let the writer flush (bounded), then close the socket with `code`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_BEFORE_CLOSE_S
        while (len(self.outbox) or self._is_writing) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        try:
            await self.websocket.close(code, reason)
        except (RuntimeError, OSError):
            pass  # already closed by the peer
