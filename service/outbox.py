"""The queue between a session's producers (reader, responses, media) and its writer task.

Backpressure without loss: producers never wait. A response's text delta that finds an earlier
delta of the same response still unsent is merged into it (text, token ids and logprobs
appended), so a slow client gets fewer, larger deltas and the engine never waits on a socket;
nothing is dropped, and order within a response holds (its done event is queued after its last
delta). The queue is bounded by the responses in flight plus the other events; the reader checks
`has_room` before reading the next client frame, so a client that floods bad events while not
reading waits on its own socket.
"""

from __future__ import annotations

import asyncio
from collections import deque

from protocol import ResponseDelta, ServerEvent


class _OpenDelta:
    """A delta of one response not yet handed to the writer; grows while it waits."""

    __slots__ = ("response_id", "texts", "token_ids", "logprobs")

    def __init__(self, response_id: str, logprobs: bool) -> None:
        self.response_id = response_id
        self.texts: list[str] = []
        self.token_ids: list[int] = []
        self.logprobs: list | None = [] if logprobs else None

    def event(self) -> ResponseDelta:
        return ResponseDelta(self.response_id, "".join(self.texts), tuple(self.token_ids),
                             tuple(self.logprobs) if self.logprobs is not None else None)


class Outbox:
    """Events for one client, in order. Single consumer (the writer); producers on the same loop."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self._queue: deque[ServerEvent | _OpenDelta] = deque()
        self._open: dict[str, _OpenDelta] = {}
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.num_merged = 0  # deltas folded into an earlier one (a measure of client lag)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def has_room(self) -> bool:
        return len(self._queue) - len(self._open) < self.max_pending

    def put(self, event: ServerEvent) -> None:
        self._queue.append(event)
        self._ready.set()
        if not self.has_room:
            self._room.clear()

    def put_delta(self, response_id: str, text: str, token_ids: tuple[int, ...],
                  logprobs: tuple | None = None) -> None:
        """Queue new output of a response, merged into its unsent delta if it has one."""
        open_delta = self._open.get(response_id)
        if open_delta is None:
            open_delta = self._open[response_id] = _OpenDelta(response_id, logprobs is not None)
            self._queue.append(open_delta)
            self._ready.set()
        else:
            self.num_merged += 1
        open_delta.texts.append(text)
        open_delta.token_ids.extend(token_ids)
        if logprobs is not None and open_delta.logprobs is not None:
            open_delta.logprobs.extend(logprobs)

    async def get(self) -> ServerEvent:
        """The next event; a merged delta is closed to further merging when taken."""
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        event = self.get_nowait()
        assert event is not None
        return event

    def get_nowait(self) -> ServerEvent | None:
        """The next event if one is queued (the writer drains several per wake-up)."""
        if not self._queue:
            return None
        item = self._queue.popleft()
        if isinstance(item, _OpenDelta):
            del self._open[item.response_id]
            item = item.event()
        if self.has_room:
            self._room.set()
        return item

    async def wait_for_room(self) -> None:
        while not self.has_room:
            self._room.clear()
            await self._room.wait()
