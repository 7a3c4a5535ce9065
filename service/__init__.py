"""The gateway: starlette app (WebSocket /v1/stream, OpenAI-compatible HTTP), sessions, config."""

from service.app import build_app
from service.config import ServiceConfig, load_config

__all__ = ["ServiceConfig", "build_app", "load_config"]
