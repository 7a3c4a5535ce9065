"""The asyncio engine client: what the gateway talks to. Imports no torch, directly or not.

    async with AsyncEngineClient.from_options(model_dir, scheduling_policy="priority") as client:
        async for delta in client.generate(EngineRequest("r1", "Hello", SamplingParams(max_tokens=8))):
            print(delta.text_delta, end="")

The engine runs in a spawned process (mode "process") or in a thread of this process (mode
"thread", for tests); both speak the same msgpack messages over a pipe (engine_protocol).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, deque
from dataclasses import replace
from typing import Any, AsyncIterator, Callable

from llm_core.config import EngineConfig
from llm_core.engine_link import EngineLink
from llm_core.engine_process import EngineFactory
from llm_core.engine_protocol import (
    SHM_THRESHOLD_BYTES, AbortRequests, AddRequest, AppendItem, DeleteItem, EngineDeadError, EngineError,
    EngineRequest, EngineRequestError, GetStats, ItemAppended, Message, Ready, Shutdown, Stats, StepOutputs,
    encode_message, unlink_shared_buffers,
)
from llm_core.outputs import CompletionDelta
from llm_core.sampling_params import SamplingParams

# What the gateway needs, importable from here (the only engine module it may import).
__all__ = ["AsyncEngineClient", "CompletionDelta", "EngineConfig", "EngineDeadError", "EngineRequest",
           "EngineRequestError", "SamplingParams", "merge_deltas"]


def merge_deltas(deltas: list[CompletionDelta]) -> CompletionDelta:
    """One delta carrying several consecutive deltas of one request (for a consumer that lags)."""
    if len(deltas) == 1:
        return deltas[0]
    last = deltas[-1]
    logprobs = [lp for d in deltas if d.logprobs is not None for lp in d.logprobs]
    return replace(last, new_token_ids=tuple(t for d in deltas for t in d.new_token_ids),
                   text_delta="".join(d.text_delta for d in deltas),
                   num_draft_tokens=sum(d.num_draft_tokens for d in deltas),
                   num_accepted_draft_tokens=sum(d.num_accepted_draft_tokens for d in deltas),
                   num_drafts=sum(d.num_drafts for d in deltas),
                   logprobs=tuple(logprobs) if any(d.logprobs is not None for d in deltas) else None)


logger = logging.getLogger(__name__)

# Span records of a request that ended here before the engine sent them (generate's on_late_trace).
LateTrace = Callable[[dict[str, Any]], None]
MAX_LATE_TRACES = 4096  # aborted traced requests whose records may still come; the oldest are dropped


class _Stream:
    """Outputs of one request waiting for its consumer: deltas, then maybe one exception."""

    def __init__(self, shm_names: tuple[str, ...], on_late_trace: LateTrace | None = None) -> None:
        self.items: deque[CompletionDelta | BaseException] = deque()
        self.ready = asyncio.Event()
        self.shm_names = shm_names
        self.on_late_trace = on_late_trace

    def put(self, item: CompletionDelta | BaseException) -> None:
        self.items.append(item)
        self.ready.set()

    async def take_all(self) -> list[CompletionDelta | BaseException]:
        while not self.items:  # each wake-up follows a put
            self.ready.clear()
            await self.ready.wait()
        items = list(self.items)
        self.items.clear()
        return items


class AsyncEngineClient:
    """Streams requests through one engine. All methods run on the event loop that called start().

    Every delta is delivered once and in order; the last one of a stream has finished=True. A
    stream ends early with EngineRequestError (this request failed) or EngineDeadError (the
    engine died or was closed: every open stream gets it). A consumer that stops iterating
    (break, cancellation, disconnect) aborts its request. start() after a death starts a new engine.
    """

    def __init__(self, config: EngineConfig, *, mode: str = "process", engine_factory: EngineFactory | None = None,
                 shm_threshold_bytes: int = SHM_THRESHOLD_BYTES, startup_timeout_s: float = 900.0) -> None:
        self.config = config
        self.mode = mode
        self.engine_factory = engine_factory  # None: LLMEngine; in process mode it must pickle
        self.shm_threshold_bytes = shm_threshold_bytes
        self.startup_timeout_s = startup_timeout_s
        self.engine_info: dict[str, Any] = {}
        self._link: EngineLink | None = None
        self._ready: asyncio.Future | None = None
        self._streams: dict[str, _Stream] = {}
        self._late_traces: OrderedDict[str, LateTrace] = OrderedDict()
        self._stats_waiters: dict[int, asyncio.Future] = {}
        self._item_waiters: dict[int, tuple[asyncio.Future, tuple[str, ...]]] = {}  # with their shm segments
        self._query_ids = itertools.count()
        self._death_reason = "the engine was never started"
        self._fatal_message: str | None = None
        self._reaping: set[asyncio.Future] = set()  # stop() of engines that died by themselves

    @classmethod
    def from_options(cls, model: str, *, mode: str = "process", **engine_options: Any) -> "AsyncEngineClient":
        """A client for an engine built from flat options named like the CLI flags (EngineConfig.from_options)."""
        return cls(EngineConfig.from_options(model, **engine_options), mode=mode)

    @property
    def is_running(self) -> bool:
        """Started, ready, and neither dead nor closed."""
        return self._link is not None and self._ready is not None and self._ready.done() \
            and not self._ready.cancelled() and self._ready.exception() is None

    async def __aenter__(self) -> "AsyncEngineClient":
        await self.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def start(self) -> None:
        """Launch the engine and wait until it is ready; raises EngineDeadError if it fails to start."""
        if self._link is not None:
            raise RuntimeError("the engine client is already started")
        loop = asyncio.get_running_loop()
        self._fatal_message = None
        self._ready = loop.create_future()
        link = await asyncio.to_thread(EngineLink, self.config, self.mode, self.engine_factory)
        self._link = link
        link.start_io(lambda msg: loop.call_soon_threadsafe(self._on_message, link, msg),
                      lambda reason: loop.call_soon_threadsafe(self._on_dead, link, reason))
        try:
            self.engine_info = await asyncio.wait_for(self._ready, self.startup_timeout_s)
        except BaseException:
            await self._stop(link, "the engine did not start")
            raise

    async def close(self) -> None:
        """Shut the engine down; open streams end with EngineDeadError. Idempotent."""
        if self._link is not None:
            await self._stop(self._link, "the engine client was closed")
        if self._reaping:
            await asyncio.gather(*self._reaping)

    async def generate(self, request: EngineRequest, *,
                       on_late_trace: LateTrace | None = None) -> AsyncIterator[CompletionDelta]:
        """Incremental outputs of one request; deltas that queued up while the consumer was busy
        arrive merged into one. Fails at once (EngineDeadError) when the engine is not running.
        on_late_trace: for a traced request (a traceparent) whose stream ends here first (abort,
        a consumer that stops), called on the event loop with the engine's span records when they
        come (the engine sends them in reply to the abort; request_trace.py)."""
        link = self._require_running()
        request_id = request.request_id
        if request_id in self._streams:
            raise ValueError(f"request id {request_id!r} is already streaming")
        if request.arrival_time is None:
            request = replace(request, arrival_time=time.monotonic())
        payload, shm_names = encode_message(AddRequest(request), shm_threshold=self.shm_threshold_bytes)
        traced = request.traceparent is not None
        stream = self._streams[request_id] = _Stream(shm_names, on_late_trace if traced else None)
        link.send(payload)
        finished = False
        try:
            while not finished:  # ends at the finished delta or an exception
                pending = []
                for item in await stream.take_all():
                    if isinstance(item, BaseException):
                        if pending:
                            yield merge_deltas(pending)
                        raise item
                    pending.append(item)
                delta = merge_deltas(pending)
                finished = delta.finished
                yield delta
        finally:
            if not finished:
                self._abort_now(request_id)

    async def abort(self, request_id: str) -> bool:
        """Stop a request now: its stream ends with a finished delta (finish_reason "abort") and the
        engine frees its blocks before its next step. False if no such request is streaming."""
        return self._abort_now(request_id)

    async def stats(self) -> dict[str, Any]:
        """The engine's counters (num_running, num_waiting, num_preemptions, kv_usage, ...), taken
        after every command sent before this call."""
        link = self._require_running()
        query_id = next(self._query_ids)
        future = self._stats_waiters[query_id] = asyncio.get_running_loop().create_future()
        link.send(encode_message(GetStats(query_id))[0])
        stats = await future
        return dict(stats, num_open_streams=len(self._streams))

    async def append_item(self, item_id: str, modality: str, data: Any, *, final: bool) -> int:
        """Hand the engine decoded media of an uploaded item (LLMEngine.add_media_item): video
        frames (a list of uint8 [H, W, 3]) are encoded by the engine's next steps, within their
        encoder budget, while the upload goes on. A request's chat part {"type": "item", "item_id":
        item_id} names the item once an append with `final` has returned. Returns the item's frames
        (video) or samples (audio) so far. Raises EngineRequestError (request_id: the item id; kind
        "invalid_request" for media or an item state the engine refuses, with the media error code
        in `code` where there is one) or EngineDeadError."""
        link = self._require_running()
        query_id = next(self._query_ids)
        payload, shm_names = encode_message(AppendItem(query_id, item_id, modality, data, final),
                                            shm_threshold=self.shm_threshold_bytes)
        future = asyncio.get_running_loop().create_future()
        self._item_waiters[query_id] = (future, shm_names)
        link.send(payload)
        return await future

    def delete_item(self, item_id: str) -> None:
        """Drop an uploaded item in the engine; requests added before keep its media. Never waits;
        does nothing when the engine is not running (it holds no items then)."""
        if self.is_running and self._link is not None:
            self._link.send(encode_message(DeleteItem(item_id))[0])

    # Internals (event loop thread only)
    def _require_running(self) -> EngineLink:
        if not self.is_running:
            raise EngineDeadError(f"the engine is not running: {self._death_reason}")
        assert self._link is not None
        return self._link

    def _abort_now(self, request_id: str) -> bool:
        stream = self._streams.pop(request_id, None)
        if stream is None:
            return False
        stream.put(CompletionDelta(request_id, (), "", finished=True, finish_reason="abort"))
        if stream.on_late_trace is not None:
            self._late_traces[request_id] = stream.on_late_trace
            while len(self._late_traces) > MAX_LATE_TRACES:
                self._late_traces.popitem(last=False)
        if self._link is not None:
            self._link.send(encode_message(AbortRequests((request_id,)))[0])
        return True

    def _on_message(self, link: EngineLink, message: Message) -> None:
        if link is not self._link:
            return  # a late message from an engine that was replaced
        if isinstance(message, StepOutputs):
            for delta in message.deltas:
                stream = self._streams.get(delta.request_id)
                if stream is None:  # aborted here while the engine was still working on it
                    if delta.finished:
                        self._late_trace(delta)
                    continue
                if delta.finished:
                    del self._streams[delta.request_id]
                stream.put(delta)
        elif isinstance(message, EngineError):
            if message.request_id is None:
                self._fatal_message = message.message
                return
            stream = self._streams.pop(message.request_id, None)
            if stream is not None:
                stream.put(EngineRequestError(message.request_id, message.message, message.kind))
            else:
                self._late_traces.pop(message.request_id, None)
        elif isinstance(message, Stats):
            waiter = self._stats_waiters.pop(message.query_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message.stats)
        elif isinstance(message, ItemAppended):
            waiter, _ = self._item_waiters.pop(message.query_id, (None, ()))
            if waiter is None or waiter.done():
                return
            if message.error is None:
                waiter.set_result(message.size)
            else:
                waiter.set_exception(EngineRequestError(message.item_id, message.error, message.kind or "internal",
                                                        message.code))
        elif isinstance(message, Ready) and self._ready is not None and not self._ready.done():
            self._ready.set_result(message.info)

    def _late_trace(self, delta: CompletionDelta) -> None:
        """The span records of a request that ended here first, to whoever traced it."""
        on_late_trace = self._late_traces.pop(delta.request_id, None)
        if on_late_trace is None or delta.trace is None:
            return
        try:
            on_late_trace(delta.trace)
        except Exception:  # a tracing failure must not end the engine's other streams
            logger.exception("handling the late span records of %s failed", delta.request_id)

    def _on_dead(self, link: EngineLink, reason: str) -> None:
        """End everything that waits on this engine. Runs once per link; later calls do nothing."""
        if link is not self._link:
            return
        self._link = None
        self._death_reason = self._fatal_message or reason
        streams, self._streams = self._streams, {}
        self._late_traces.clear()  # they died with the engine
        for stream in streams.values():
            unlink_shared_buffers(stream.shm_names)
            stream.put(EngineDeadError(self._death_reason))
        waiters, self._stats_waiters = self._stats_waiters, {}
        for waiter in waiters.values():
            if not waiter.done():
                waiter.set_exception(EngineDeadError(self._death_reason))
        item_waiters, self._item_waiters = self._item_waiters, {}
        for waiter, shm_names in item_waiters.values():
            unlink_shared_buffers(shm_names)
            if not waiter.done():
                waiter.set_exception(EngineDeadError(self._death_reason))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(EngineDeadError(f"the engine failed to start: {self._death_reason}"))
        # Release the dead engine's threads and connection off the loop (close() waits for it).
        reaper = asyncio.get_running_loop().run_in_executor(None, link.stop)
        self._reaping.add(reaper)
        reaper.add_done_callback(self._reaping.discard)

    async def _stop(self, link: EngineLink, reason: str) -> None:
        if link is self._link:
            self._fatal_message = self._fatal_message or reason
        link.send(encode_message(Shutdown())[0])
        await asyncio.to_thread(link.stop)
        self._on_dead(link, reason)
