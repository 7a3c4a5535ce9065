"""Running the app under uvicorn: the settings it needs, for `python -m service`, tests and benchmarks.

uvicorn's WebSocket layer enforces max_message_bytes (a larger message closes the socket with
1009) and applies backpressure on send (a send waits while the socket's write buffer is full,
which is what lets a session's outbox merge deltas for a slow client).
"""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from llm_core.engine_client import AsyncEngineClient
from service.app import build_app
from service.config import ServiceConfig


def uvicorn_config(config: ServiceConfig, app) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level,
        ws="websockets-sansio", ws_max_size=config.max_message_bytes, ws_per_message_deflate=False,
        lifespan="on", timeout_graceful_shutdown=5, backlog=max(2048, config.max_sessions))


class ServerThread:
    """uvicorn in a background thread with its own event loop (tests, benchmarks).

        with ServerThread(ServiceConfig(model=..., port=0)) as server:
            url = server.ws_url   # ws://127.0.0.1:PORT/v1/stream

    Port 0 picks a free port; `port` is the one bound. Start-up waits at most `start_timeout_s`.
    """

    def __init__(self, config: ServiceConfig, engine: AsyncEngineClient | None = None,
                 start_timeout_s: float = 120.0) -> None:
        self.app = build_app(config, engine)
        self.gateway = self.app.state.gateway
        self.server = uvicorn.Server(uvicorn_config(config, self.app))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.start_timeout_s = start_timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)
        self.port = 0

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        finally:
            self.loop.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def __enter__(self) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server failed to start (see its log)")
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError("the server did not start in time")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def call(self, coro, timeout_s: float = 30.0):
        """Run a coroutine on the server's loop (e.g. engine stats) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self._thread.join(30)
