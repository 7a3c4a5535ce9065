"""Server-wide state shared by the WebSocket sessions and the HTTP endpoints.

One Gateway per app: the engine client, the media decode pool (threads: Pillow and PyAV release
the GIL while decoding), the decoded-media cache, the set of open sessions.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llm_core.engine_client import AsyncEngineClient
from service.config import ServiceConfig
from service.media_cache import MediaCache
from service.media_tokens import ModelMedia

logger = logging.getLogger(__name__)


class Gateway:
    """Owns the engine client for the app's lifetime (start() / stop() from the lifespan).

    `engine` may be given (tests, benchmarks); otherwise one is built from the config's model and
    engine options.
    """

    def __init__(self, config: ServiceConfig, engine: AsyncEngineClient | None = None) -> None:
        if engine is None and config.model is None:
            raise ValueError("ServiceConfig.model must be set (python -m service resolves the demo model)")
        self.config = config
        self.engine = engine or AsyncEngineClient.from_options(config.model, mode=config.engine_mode,
                                                               **config.engine_options)
        self.model_media = ModelMedia.from_model_dir(config.model,
                                                     config.engine_options.get("video_pool_stride", 1))
        self.media_cache = MediaCache(config.media_cache_bytes)
        self.pool: ThreadPoolExecutor | None = None
        self.sessions: set[Any] = set()
        self._request_ids = itertools.count()

    async def start(self) -> None:
        self.pool = ThreadPoolExecutor(self.config.decode_workers, thread_name_prefix="media-decode")
        if not self.engine.is_running:
            await self.engine.start()
        logger.info("engine ready: %s", self.engine.engine_info)

    async def stop(self) -> None:
        for session in list(self.sessions):
            session.abort_all()
        await self.engine.close()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    @property
    def max_model_len(self) -> int:
        return int(self.engine.engine_info.get("max_model_len", 2048))

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
        return {"status": "ok" if self.engine.is_running else "engine_down",
                "model": self.config.model_name, "sessions": len(self.sessions),
                "max_sessions": self.config.max_sessions}
