"""Running a blocking decode loop (PyAV's) over bytes that are still arriving.

PyAV reads its input through a file object and blocks inside `read`; it cannot be handed bytes a
chunk at a time. So the decode loop runs in a thread of its own over a `GrowingStream`, whose
`read` waits on a condition variable until more bytes are pushed, or the input is finished or the
decoder closed (then it returns b"", end of file; after a close the loop's results are dropped
and it is stopped at its next result. An exception raised inside PyAV's read callback would be
printed as "dropped" by PyAV, so a close is an end of file rather than an exception).

`push` returns once the loop has consumed every byte pushed so far and waits for more (or has
ended), so its result holds everything decodable from the prefix so far, and a caller never sees
the thread. Neither side can wait forever: the loop waits only while all bytes are consumed and
the input is open, and `push`/`finish` wait only until that state is reached or the loop has
ended. A decoder that is dropped without `finish` or `close` is closed by a finalizer.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

_COMPACT_BYTES = 1 << 20


class GrowingStream:
    """A read-only, non-seekable file over bytes that are still arriving (PyAV sees a pipe)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.buffer = bytearray()
        self.pos = 0  # bytes of `buffer` already read; compacted away now and then
        self.is_finished = False  # no more bytes will come
        self.is_closed = False  # the decoder was closed: end of file, results dropped
        self.is_waiting = False  # the loop is blocked in read() with nothing left to read
        self.is_done = False  # the loop has ended
        self.results: list = []
        self.error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        with self.cond:
            while self.pos == len(self.buffer) and not self.is_finished and not self.is_closed:
                self.is_waiting = True
                self.cond.notify_all()
                self.cond.wait()
            self.is_waiting = False
            if self.is_closed:
                return b""
            end = len(self.buffer) if size is None or size < 0 else min(len(self.buffer),
                                                                          self.pos + size)
            chunk = bytes(self.buffer[self.pos:end])
            self.pos = end
            if self.pos >= _COMPACT_BYTES and self.pos * 2 >= len(self.buffer):
                del self.buffer[:self.pos]
                self.pos = 0
            return chunk

    def close_input(self) -> None:
        with self.cond:
            self.is_closed = True
            self.cond.notify_all()


class ProgressiveDecoder(Generic[T]):
    """Feeds bytes to `decode(stream)`, an iterable of results that reads `stream` as it goes.

    `decode` runs in a daemon thread started by the first push; it must not hold a reference to
    this object (the finalizer that closes a forgotten decoder needs it to be collectable). An
    exception that `decode` raises is raised again by push and finish, and by every call after.
    Not thread-safe: one caller pushes.
    """

    def __init__(self, decode: Callable[[GrowingStream], Iterable[T]], name: str = "media-decode"):
        self._stream = GrowingStream()
        self._decode = decode
        self._name = name
        self._thread: threading.Thread | None = None
        weakref.finalize(self, self._stream.close_input)

    @property
    def is_done(self) -> bool:
        """Whether the decode loop has ended (finished, failed, or stopped early on its own)."""
        return self._stream.is_done

    def push(self, chunk: bytes) -> list[T]:
        """Adds bytes and returns the results that they (with the bytes before) made decodable."""
        stream = self._stream
        with stream.cond:
            if stream.is_finished or stream.is_closed:
                raise RuntimeError("push() after finish() or close()")
            if not stream.is_done:
                stream.buffer += chunk
                stream.cond.notify_all()
        self._start()
        with stream.cond:
            stream.cond.wait_for(
                lambda: stream.is_done or (stream.is_waiting and stream.pos == len(stream.buffer)))
            return self._take()

    def finish(self) -> list[T]:
        """Ends the input and returns the remaining results once the decode loop has ended."""
        stream = self._stream
        with stream.cond:
            if stream.is_closed:
                raise RuntimeError("finish() after close()")
            stream.is_finished = True
            stream.cond.notify_all()
        self._start()
        self._thread.join()
        with stream.cond:
            return self._take()

    def close(self) -> None:
        """Ends the input and stops the decode loop at its next result, dropping what it has not
        returned; idempotent."""
        self._stream.close_input()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=_run, args=(self._decode, self._stream),
                                            name=self._name, daemon=True)
            self._thread.start()

    def _take(self) -> list[T]:
        stream = self._stream
        if stream.error is not None:
            raise stream.error
        results, stream.results = stream.results, []
        return results


def _run(decode: Callable[[GrowingStream], Iterable[T]], stream: GrowingStream) -> None:
    try:
        for result in decode(stream):
            with stream.cond:
                if stream.is_closed:
                    break
                stream.results.append(result)
    except BaseException as error:  # handed to the caller's thread and raised there
        with stream.cond:
            if not stream.is_closed:
                stream.error = error
    finally:
        with stream.cond:
            stream.is_done = True
            stream.buffer = bytearray()
            stream.cond.notify_all()
