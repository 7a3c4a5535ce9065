"""The engine process: an LLMEngine driven by msgpack messages over one connection.

`main` is the spawn target of the engine client's process mode; `run_engine` is also what the
in-process mode runs in a thread. This module imports no torch itself (the client names `main`
as a target, and the gateway must stay torch-free): LLMEngine is imported when it is built.

The loop: drain the commands that are waiting (without blocking while requests are
unfinished, blocking when idle), then run one step and send all its deltas in one message.
A request that cannot be added gets an error of its own and the engine goes on; a step that
raises is a bug that the engine cannot attribute: it reports it as fatal and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
from multiprocessing.connection import Connection
from typing import Any, Callable

from encoders.media.errors import MediaError
from llm_core.config import EngineConfig
from llm_core.engine_protocol import (
    AbortRequests, AddRequest, AppendItem, DeleteItem, EngineError, GetStats, ItemAppended, Message, ProtocolError,
    Ready, Shutdown, Stats, StepOutputs, decode_message, encode_message,
)

logger = logging.getLogger(__name__)

# Commands handled between two steps at most, so that a flood of requests never stalls decoding.
MAX_COMMANDS_PER_DRAIN = 1024

EngineFactory = Callable[[EngineConfig], Any]


def main(config: EngineConfig, conn: Connection, engine_factory: EngineFactory | None = None) -> None:
    """Entry point of the spawned engine process. Ctrl-C belongs to the parent, which shuts us down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format=f"%(levelname)s engine[{os.getpid()}] %(name)s: %(message)s")
    run_engine(config, conn, engine_factory)


def run_engine(config: EngineConfig, conn: Connection, engine_factory: EngineFactory | None = None) -> None:
    """Build the engine, send Ready, serve until Shutdown or until the peer goes away; closes conn."""
    try:
        try:
            engine = (engine_factory or build_llm_engine)(config)
        except Exception as exc:
            logger.exception("engine failed to start")
            _send(conn, EngineError(None, f"engine failed to start: {type(exc).__name__}: {exc}", "fatal"))
            return
        _send(conn, Ready(engine_info(engine)))
        EngineLoop(engine, conn).run()
    except (EOFError, OSError):
        logger.info("engine client went away; engine stopping")
    finally:
        conn.close()


def build_llm_engine(config: EngineConfig):
    from llm_core.engine import LLMEngine

    return LLMEngine(config)


def engine_info(engine) -> dict[str, Any]:
    """What the client learns at start: limits the gateway validates against."""
    info: dict[str, Any] = {"pid": os.getpid()}
    for name in ("max_model_len", "num_blocks"):
        if isinstance(getattr(engine, name, None), int):
            info[name] = getattr(engine, name)
    return info


class EngineLoop:
    """Serves one connection with one engine (the engine's only caller, on one thread)."""

    def __init__(self, engine, conn: Connection) -> None:
        self.engine = engine
        self.conn = conn
        self.num_steps = 0
        self.is_shutdown = False

    def run(self) -> None:
        while not self.is_shutdown:  # ends on Shutdown, on EOF (raises), or on a failed step
            self.drain(block=not self.engine.has_unfinished_requests())
            if self.is_shutdown or not self.engine.has_unfinished_requests():
                continue
            try:
                deltas = self.engine.step()
            except Exception as exc:
                logger.exception("engine step failed")
                _send(self.conn, EngineError(None, f"engine step failed: {type(exc).__name__}: {exc}\n"
                                                   f"{traceback.format_exc()}", "fatal"))
                return
            self.num_steps += 1
            if deltas:
                _send(self.conn, StepOutputs(tuple(deltas)))

    def drain(self, *, block: bool) -> None:
        """Handle waiting commands; when `block`, wait for the first one. EOF raises EOFError."""
        timeout = None if block else 0
        for _ in range(MAX_COMMANDS_PER_DRAIN):
            if not self.conn.poll(timeout):
                return
            timeout = 0
            data = self.conn.recv_bytes()
            try:
                message = decode_message(data)
            except ProtocolError as exc:
                if exc.request_id is None:
                    raise
                _send(self.conn, EngineError(exc.request_id, str(exc), "invalid_request"))
                continue
            self.handle(message)
            if self.is_shutdown:
                return

    def handle(self, message: Message) -> None:
        if isinstance(message, AddRequest):
            self._add(message)
        elif isinstance(message, AbortRequests):
            deltas = self.engine.abort_request(list(message.request_ids))
            if deltas:  # traced requests' span records (the client hands them to whoever traced them)
                _send(self.conn, StepOutputs(tuple(deltas)))
        elif isinstance(message, GetStats):
            stats = dict(self.engine.stats(), num_steps=self.num_steps)
            _send(self.conn, Stats(message.query_id, stats))
        elif isinstance(message, AppendItem):
            self._append_item(message)
        elif isinstance(message, DeleteItem):
            self.engine.delete_media_item(message.item_id)
        elif isinstance(message, Shutdown):
            self.is_shutdown = True
        else:
            raise ProtocolError(f"the engine does not take {type(message).__name__} messages")

    def _add(self, message: AddRequest) -> None:
        request = message.request
        try:
            if request.buffers:
                raise ValueError("this engine takes no media buffers (a text-only model)")
            self.engine.add_request(request.prompt, request.sampling_params, request_id=request.request_id,
                                    priority=request.priority, arrival_time=request.arrival_time,
                                    traceparent=request.traceparent)
        except (ValueError, TypeError) as exc:
            _send(self.conn, EngineError(request.request_id, str(exc), "invalid_request"))
        except Exception as exc:
            logger.exception("adding request %s failed", request.request_id)
            self.engine.abort_request([request.request_id])
            _send(self.conn, EngineError(request.request_id, f"{type(exc).__name__}: {exc}", "internal"))

    def _append_item(self, message: AppendItem) -> None:
        """Media the client's bytes made: bad media or a bad item gets an error of its own."""
        try:
            size = self.engine.add_media_item(message.item_id, message.modality, message.data, final=message.final)
            reply = ItemAppended(message.query_id, message.item_id, size)
        except MediaError as exc:
            reply = ItemAppended(message.query_id, message.item_id, error=str(exc), kind="invalid_request",
                                 code=exc.code)
        except (ValueError, TypeError) as exc:
            reply = ItemAppended(message.query_id, message.item_id, error=str(exc), kind="invalid_request")
        except Exception as exc:
            logger.exception("appending to item %s failed", message.item_id)
            reply = ItemAppended(message.query_id, message.item_id, error=f"{type(exc).__name__}: {exc}",
                                 kind="internal")
        _send(self.conn, reply)


def _send(conn: Connection, message: Message) -> None:
    payload, _ = encode_message(message)
    conn.send_bytes(payload)
