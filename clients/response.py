"""A response as the Python client sees it: an async iterator of text deltas, then its done event.

    response = await conn.create_response(messages, max_tokens=32)
    async for text in response:
        print(text, end="", flush=True)
    print(response.usage, response.finish_reason)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, AsyncIterator

from protocol import ErrorInfo, ResponseDelta, ResponseDone, Usage

if TYPE_CHECKING:
    from clients.client import Connection


class ServerError(Exception):
    """The server refused or failed something; `info` is the error body it sent, `close_code` the
    WebSocket close code when it refused the session itself."""

    close_code: int | None = None

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(f"{info.code}: {info.message}")
        self.info = info
        self.code = info.code


class ConnectionClosed(Exception):
    """The connection ended before the response (or upload) did."""

    close_code: int | None = None


class Response:
    """One response in flight. Iterate it for text deltas; `done` is set when it ended.

    Iteration raises ServerError if the server refused the request (an `error` event for it) or the
    response failed (status failed), ConnectionClosed if the socket closed first.
    """

    def __init__(self, conn: "Connection", response_id: str) -> None:
        self.conn = conn
        self.response_id = response_id
        self.deltas: list[ResponseDelta] = []
        self.done: ResponseDone | None = None
        self.error: ErrorInfo | None = None
        self.is_created = False
        self._queue: asyncio.Queue = asyncio.Queue()

    @property
    def text(self) -> str:
        """All text received so far."""
        return "".join(delta.delta for delta in self.deltas)

    @property
    def token_ids(self) -> list[int]:
        return [t for delta in self.deltas for t in (delta.token_ids or ())]

    @property
    def usage(self) -> Usage | None:
        return self.done.usage if self.done is not None else None

    @property
    def status(self) -> str | None:
        return self.done.status if self.done is not None else None

    @property
    def finish_reason(self) -> str | None:
        return self.done.finish_reason if self.done is not None else None

    async def cancel(self) -> None:
        """Ask the server to stop; the response then ends with status cancelled."""
        if self.done is None and self.error is None:
            await self.conn.send({"type": "response.cancel", "response_id": self.response_id})

    async def wait(self) -> ResponseDone:
        """Read to the end (discarding nothing: `text` holds it all) and return the done event."""
        async for _ in self:
            pass
        assert self.done is not None
        return self.done

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        while True:
            item = await self._queue.get()
            if isinstance(item, ResponseDelta):
                yield item.delta
            elif isinstance(item, ResponseDone):
                if item.status == "failed" and item.error is not None:
                    raise ServerError(item.error)
                return
            elif isinstance(item, ErrorInfo):
                raise ServerError(item)
            else:
                raise ConnectionClosed(item)

    # Called by the connection's receive loop.
    def _on_event(self, event) -> bool:
        """Route one event; True when the response is over."""
        if isinstance(event, ResponseDelta):
            self.deltas.append(event)
            self._queue.put_nowait(event)
            return False
        if isinstance(event, ResponseDone):
            self.done = event
            self._queue.put_nowait(event)
            return True
        if isinstance(event, ErrorInfo):
            self.error = event
            self._queue.put_nowait(event)
            return not self.is_created  # a refused create ends it; a later error does not
        self.is_created = True
        return False

    def _on_closed(self, reason: str) -> None:
        self._queue.put_nowait(reason)
