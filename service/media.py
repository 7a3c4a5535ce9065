"""One media item of a session: its chunks are decoded in the worker pool, in order, off the loop.

Images are decoded when complete; video and audio go through encoders.media's streaming decoders,
so streamable containers (WebM, MPEG-TS, JPEG sequences, PCM) are decoded while chunks arrive.
Each item has one feeder task that hands its chunks, one at a time, to a pool thread; the loop
never blocks on decoding. The sha256 of the bytes is computed on the way (the media cache key).

Video for a model with a vision encoder is also handed to the engine as it decodes: after each
chunk the feeder sends the frames it gave to an engine-side item (`engine_item_id`), whose
frames the engine encodes while the upload goes on; the last chunk commits it there. A response
then names that item instead of sending frames. The engine item is deleted when the item fails,
or once it is closed (deleted, session over) and no response holds it (`hold` / `release`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from concurrent.futures import Executor, Future
from typing import Any, Callable

import numpy as np

from encoders.config import MediaLimits
from encoders.media import MediaError, StreamingAudioDecoder, StreamingVideoDecoder, decode_image
from llm_core.engine_client import AsyncEngineClient, EngineDeadError, EngineRequestError
from protocol.errors import CORRUPT_MEDIA, INTERNAL_ERROR, LIMIT_EXCEEDED, UNKNOWN_ITEM, ErrorInfo

logger = logging.getLogger(__name__)


class _Decoder:
    """Blocking decoder of one item (pool threads only, one call at a time)."""

    def __init__(self, modality: str, mime: str, limits: MediaLimits, item_id: str) -> None:
        self.modality = modality
        self.mime = mime
        self.limits = limits
        self.item_id = item_id
        self.sha256 = hashlib.sha256()
        self._held = bytearray()  # image bytes until the last chunk
        self._parts: list[Any] = []  # decoded frames / sample blocks so far
        self._num_taken = 0  # video frames handed out by take_new_frames
        self._stream: StreamingVideoDecoder | StreamingAudioDecoder | None = None
        if modality == "video":
            self._stream = StreamingVideoDecoder(mime, limits, item_id=item_id)
        elif modality == "audio":
            self._stream = StreamingAudioDecoder(mime, limits, item_id=item_id)

    def push(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        if self._stream is None:
            self._held += chunk
        elif isinstance(self._stream, StreamingVideoDecoder):
            self._parts += [frame.image for frame in self._stream.push(chunk)]
        else:
            self._parts.append(self._stream.push(chunk))

    def finish(self) -> Any:
        """The decoded item: image uint8 [H, W, 3]; video list of frames; audio (samples, rate)."""
        if self._stream is None:
            return decode_image(bytes(self._held), self.limits, mime=self.mime, item_id=self.item_id)
        if isinstance(self._stream, StreamingVideoDecoder):
            frames = self._parts = self._parts + [frame.image for frame in self._stream.finish()]
            if not frames:
                raise MediaError(CORRUPT_MEDIA, "the video has no frames", self.item_id)
            return frames
        blocks = self._parts + [self._stream.finish()]
        samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        if not len(samples) or self._stream.sample_rate is None:
            raise MediaError(CORRUPT_MEDIA, "the audio has no samples", self.item_id)
        return samples, int(self._stream.sample_rate)

    def take_new_frames(self) -> list[np.ndarray]:
        """Video frames decoded since the last call (after finish(): the last ones)."""
        frames = self._parts[self._num_taken:]
        self._num_taken = len(self._parts)
        return frames

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


class MediaItem:
    """An item being uploaded or decoded. `result` resolves to the decoded data, or to an
    ErrorInfo-carrying MediaFailure. `on_done(item)` runs on the loop when it resolves."""

    def __init__(self, item_id: str, modality: str, mime: str, *, limits: MediaLimits, pool: Executor,
                 on_done: Callable[["MediaItem"], None], engine: AsyncEngineClient | None = None,
                 engine_item_id: str | None = None) -> None:
        self.item_id = item_id
        self.modality = modality
        self.mime = mime
        self.num_bytes = 0  # bytes received
        self.num_tokens = 0
        self.sha256: str | None = None
        self.cached = False
        self.is_final = False  # the final chunk arrived
        self.started_ns = time.time_ns()  # first chunk (traces: the "media decode" span)
        self.ended_ns: int | None = None  # decoded or failed
        self.result: asyncio.Future = asyncio.get_running_loop().create_future()
        self._limits = limits
        self._pool = pool
        self._on_done = on_done
        self._chunks: asyncio.Queue[tuple[bytes, bool]] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._inflight: Future | None = None  # the pool call now running for this item
        # Video frames go to the engine item engine_item_id as they decode (None: the data goes
        # with each response instead).
        self._engine = engine if modality == "video" and engine_item_id is not None else None
        self._engine_item_id = engine_item_id
        self._is_in_engine = False  # frames were sent: the engine may hold the item
        self._num_holds = 0
        self._is_closed = False

    @classmethod
    def from_cache(cls, item_id: str, modality: str, mime: str, data: Any, num_tokens: int) -> "MediaItem":
        """A committed item whose content the server already held (`input.known`)."""
        item = cls(item_id, modality, mime, limits=None, pool=None, on_done=lambda _: None)  # type: ignore[arg-type]
        item.num_tokens, item.cached = num_tokens, True
        item.ended_ns = item.started_ns
        item.result.set_result(data)
        return item

    @property
    def is_committed(self) -> bool:
        return self.result.done() and not self.result.cancelled() and self.result.exception() is None

    @property
    def engine_item_id(self) -> str | None:
        """The id under which the engine holds this committed item, encoded or being encoded (a
        response names it instead of sending the data), or None."""
        return self._engine_item_id if self._is_in_engine and self.is_committed else None

    def hold(self) -> None:
        """A response that may name the item in the engine: it stays there until release()."""
        self._num_holds += 1

    def release(self) -> None:
        self._num_holds -= 1
        if self._is_closed and not self._num_holds:
            self._delete_in_engine()

    def feed(self, chunk: bytes, final: bool) -> None:
        """Queue a chunk (never blocks); the first one starts the feeder task."""
        self.num_bytes += len(chunk)
        self.is_final = final
        self._chunks.put_nowait((chunk, final))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"media-{self.item_id}")

    def fail(self, info: ErrorInfo) -> None:
        """End the item with an error (e.g. over a byte limit); stops its decoder."""
        if self._task is not None:
            self._task.cancel()
        self._resolve(error=MediaFailure(info))

    def close(self) -> None:
        """Forget the item: stop decoding. Responses holding its result keep it; those waiting
        for an unfinished one fail with unknown_item."""
        if self._task is not None:
            self._task.cancel()
        self._resolve(error=MediaFailure(ErrorInfo(UNKNOWN_ITEM, f"item {self.item_id!r} was deleted before "
                                                   "it was complete", item_id=self.item_id)), notify=False)
        self._is_closed = True
        if not self._num_holds or not self.is_committed:
            self._delete_in_engine()

    async def _call(self, fn: Callable, *args: Any) -> Any:
        self._inflight = self._pool.submit(fn, *args)
        return await asyncio.wrap_future(self._inflight)

    async def _run(self) -> None:
        decoder: _Decoder | None = None
        try:
            decoder = await self._call(_Decoder, self.modality, self.mime, self._limits, self.item_id)
            while True:
                chunk, final = await self._chunks.get()
                if chunk:
                    await self._call(decoder.push, chunk)
                data = await self._call(decoder.finish) if final else None
                if self._engine is not None:
                    await self._send_frames(decoder.take_new_frames(), final)
                if final:
                    self.sha256 = decoder.sha256.hexdigest()
                    self._resolve(data=data)
                    return
        except MediaError as exc:
            self._resolve(error=MediaFailure(ErrorInfo(exc.code, str(exc), "input.append", item_id=self.item_id)))
        except MediaFailure as failure:
            self._resolve(error=failure)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("decoding item %s failed", self.item_id)
            self._resolve(error=MediaFailure(ErrorInfo(INTERNAL_ERROR, f"item {self.item_id!r} could not be "
                                                       "decoded (internal error)", "input.append",
                                                       item_id=self.item_id)))
        finally:
            if not self.is_committed:
                self._delete_in_engine()
            if decoder is not None and not self.is_committed:
                # One caller at a time: a push still running in the pool closes it when done.
                inflight = self._inflight
                if inflight is not None and not inflight.done():
                    inflight.add_done_callback(lambda _: decoder.close())
                else:
                    decoder.close()

    async def _send_frames(self, frames: list[np.ndarray], final: bool) -> None:
        """Hand newly decoded frames to the engine item (the last chunk commits it)."""
        if not frames and not final:
            return
        self._is_in_engine = True  # from the first send on, the engine may hold the item
        try:
            await self._engine.append_item(self._engine_item_id, "video", frames, final=final)
        except EngineRequestError as exc:
            if exc.kind != "invalid_request":
                logger.error("the engine failed item %s: %s", self.item_id, exc)
                raise MediaFailure(ErrorInfo(INTERNAL_ERROR, f"item {self.item_id!r} could not be encoded "
                                             "(internal error)", "input.append", item_id=self.item_id)) from None
            message = str(exc).replace(repr(self._engine_item_id), repr(self.item_id))
            raise MediaFailure(ErrorInfo(exc.code or LIMIT_EXCEEDED, message, "input.append",
                                         item_id=self.item_id)) from None
        except EngineDeadError:
            raise MediaFailure(ErrorInfo(INTERNAL_ERROR, "the engine is not running; retry later", "input.append",
                                         item_id=self.item_id)) from None

    def _delete_in_engine(self) -> None:
        if self._is_in_engine:
            self._is_in_engine = False
            self._engine.delete_item(self._engine_item_id)

    def _resolve(self, data: Any = None, error: "MediaFailure | None" = None, notify: bool = True) -> None:
        if self.result.done():
            return
        self.ended_ns = time.time_ns()
        if error is not None:
            self.result.set_exception(error)
            self.result.exception()  # retrieved: responses that never wait on it log nothing
        else:
            self.result.set_result(data)
        if notify:
            self._on_done(self)


class MediaFailure(Exception):
    """An item that did not decode; `info` is the body of the error event sent for it."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info
