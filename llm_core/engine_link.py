"""One started engine as the client sees it: a connection, the engine's process or thread, and
the two I/O threads that keep blocking reads and writes off the event loop. Imports no torch.

The reader thread hands every decoded message to `on_message` in arrival order and then calls
`on_dead(reason)` exactly once, when the connection reaches EOF or the process exits (its
sentinel fires), whichever comes first. The writer thread sends queued payloads in order.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import threading
from multiprocessing.connection import wait
from typing import Callable

from llm_core.config import EngineConfig
from llm_core.engine_process import EngineFactory, main, run_engine
from llm_core.engine_protocol import Message, ProtocolError, Shutdown, decode_message, encode_message

logger = logging.getLogger(__name__)

# Bounds on waits while stopping, so that a stuck engine never hangs the client.
SHUTDOWN_GRACE_S = 30.0
KILL_WAIT_S = 5.0
IO_JOIN_S = 5.0

MODES = ("process", "thread")


class EngineLink:
    """The client's handle on one engine, from launch to stop; its I/O threads never touch the event loop
    except through the two callbacks (which must hand over with call_soon_threadsafe)."""

    def __init__(self, config: EngineConfig, mode: str, engine_factory: EngineFactory | None) -> None:
        """Launch the engine (a spawned process, or a daemon thread of this process)."""
        if mode not in MODES:
            raise ValueError(f"engine client mode must be one of {MODES}, not {mode!r}")
        self.conn, engine_conn = multiprocessing.Pipe(duplex=True)
        self.process: multiprocessing.process.BaseProcess | None = None
        self.thread: threading.Thread | None = None
        if mode == "process":
            self.process = multiprocessing.get_context("spawn").Process(
                target=main, args=(config, engine_conn, engine_factory), name="tributary-engine", daemon=True)
            self.process.start()
            engine_conn.close()  # the child holds its own copy: EOF here means the child is gone
        else:
            self.thread = threading.Thread(target=run_engine, args=(config, engine_conn, engine_factory),
                                           name="tributary-engine", daemon=True)
            self.thread.start()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._reader: threading.Thread | None = None
        self._writer = threading.Thread(target=self._write_loop, name="engine-writer", daemon=True)
        self._stop_lock = threading.Lock()
        self._is_stopped = False
        # Process.join is not thread-safe (two threads reaping one child: one sees it alive forever).
        self._process_lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start_io(self, on_message: Callable[[Message], None], on_dead: Callable[[str], None]) -> None:
        self._reader = threading.Thread(target=self._read_loop, args=(on_message, on_dead), name="engine-reader",
                                        daemon=True)
        self._reader.start()
        self._writer.start()

    def send(self, payload: bytes) -> None:
        """Queue a payload; never blocks. Payloads after the engine's death are dropped."""
        self._outbox.put(payload)

    def stop(self) -> None:
        """Wait for the engine to exit (it was told to shut down), killing it past the grace
        period, then stop the I/O threads and close the connection. Blocks: run it off the loop.
        Thread-safe and idempotent."""
        with self._stop_lock:
            if not self._is_stopped:
                self._stop_engine()
                self._stop_io()
                self._is_stopped = True

    def _stop_engine(self) -> None:
        if self.process is not None:
            if self._wait_exit(SHUTDOWN_GRACE_S) is None:
                logger.warning("engine process %s did not exit; terminating it", self.process.pid)
                self.process.terminate()
                if self._wait_exit(KILL_WAIT_S) is None:
                    self.process.kill()
                    self._wait_exit(KILL_WAIT_S)
        elif self.thread is not None:
            self.thread.join(SHUTDOWN_GRACE_S)

    def _wait_exit(self, timeout: float) -> int | None:
        """The engine process's exit code once it exits within `timeout`, else None."""
        assert self.process is not None
        with self._process_lock:
            self.process.join(timeout)
            return self.process.exitcode

    def _stop_io(self) -> None:
        if self._reader is not None:
            self._reader.join(IO_JOIN_S)
        self._outbox.put(None)
        if self._writer.ident is not None:
            self._writer.join(IO_JOIN_S)
        self.conn.close()

    def _read_loop(self, on_message: Callable[[Message], None], on_dead: Callable[[str], None]) -> None:
        reason = ""
        watched = [self.conn] + ([self.process.sentinel] if self.process is not None else [])
        try:
            while True:  # ends at EOF or when the process exits
                if self.conn not in wait(watched):
                    break  # the process exited, yet someone holds its end of the pipe open
                on_message(decode_message(self.conn.recv_bytes()))
        except (EOFError, OSError):
            pass
        except ProtocolError as exc:
            reason = f"the engine sent a bad message: {exc}"
            self._outbox.put(encode_message(Shutdown())[0])  # it stops, rather than wait to be killed
        except RuntimeError:  # the event loop closed under us: nobody is left to tell
            self._outbox.put(None)
            return
        self._outbox.put(None)
        if not reason:
            code = self._wait_exit(KILL_WAIT_S) if self.process is not None else None
            reason = f"engine process {self.pid} exited with code {code}" if code is not None else \
                "the engine closed its connection"
        try:
            on_dead(reason)
        except RuntimeError:
            pass

    def _write_loop(self) -> None:
        while (payload := self._outbox.get()) is not None:  # ends at the None that stop() or the reader queues
            try:
                self.conn.send_bytes(payload)
            except OSError:
                return  # the peer is gone; the reader reports it
