"""Server-wide state shared by the WebSocket sessions and the HTTP endpoints.

One Gateway per app: the engine clients (one per served model, service/models.py), the media
decode pool (threads: Pillow and PyAV release the GIL while decoding), the decoded-media cache, the
set of open sessions, traces and metrics.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llm_core.engine_client import AsyncEngineClient
from service.config import ServiceConfig
from service.media_cache import MediaCache
from service.models import ModelSet, ServedModel
from service.telemetry import Telemetry

logger = logging.getLogger(__name__)


class Gateway:
    """Owns the engine clients for the app's lifetime (start() / stop() from the lifespan).

    `engine` may be given (tests, benchmarks); otherwise one is built per checkpoint of the
    config's model, with the config's engine options. `engine` and `model_media` are those of the
    default (first) model and of all models together; `route` picks a request's model.
    """

    def __init__(self, config: ServiceConfig, engine: AsyncEngineClient | None = None) -> None:
        if engine is None and config.model is None:
            raise ValueError("ServiceConfig.model must be set (python -m service resolves the demo model)")
        self.config = config
        self.models = ModelSet.build(config.model, config.engine_mode, dict(config.engine_options), engine)
        self.engine = self.models.default.engine
        self.model_media = self.models.media
        self.media_cache = MediaCache(config.media_cache_bytes)
        self.pool: ThreadPoolExecutor | None = None
        self.sessions: set[Any] = set()
        self._request_ids = itertools.count()
        self.telemetry = Telemetry(config, lambda: len(self.sessions))

    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.config.decode_workers, thread_name_prefix="media-decode")
        for model in self.models.models:
            if not model.engine.is_running:
                await model.engine.start()
            logger.info("engine ready (%s): %s", model.name, model.engine.engine_info)

    async def stop(self) -> None:
        for session in list(self.sessions):
            session.abort_all()
        for engine in self.models.engines:
            await engine.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.telemetry.close)  # exports the last spans (bounded by the SDK's timeout)

    @property
    def max_model_len(self) -> int:
        return min(int(engine.engine_info.get("max_model_len", 2048)) for engine in self.models.engines)

    @property
    def video_engine(self) -> AsyncEngineClient | None:
        """The engine that streamed video items are built up in: that of the first model that takes
        video (None: no model does, and video data goes with each request)."""
        return next((model.engine for model in self.models.models if "video" in model.media.modalities), None)

    def route(self, modalities) -> ServedModel:
        """The served model for a request with media of these modalities (ProtocolError if none)."""
        return self.models.route(modalities)

    @property
    def is_full(self) -> bool:
        return len(self.sessions) >= self.config.max_sessions

    @staticmethod
    def new_session_id() -> str:
        return "sess_" + secrets.token_hex(8)

    def engine_request_id(self, owner: str, response_id: str) -> str:
        """Engine request ids are unique across sessions and HTTP requests."""
        return f"{owner}:{response_id}:{next(self._request_ids)}"

    def health(self) -> dict[str, Any]:
        is_running = all(engine.is_running for engine in self.models.engines)
        return {"status": "ok" if is_running else "engine_down",
                "model": self.config.model_name, "sessions": len(self.sessions),
                "max_sessions": self.config.max_sessions}
