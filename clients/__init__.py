"""Python client of the tributary /v1/stream WebSocket (async API and `python -m clients` CLI)."""

from clients.client import Connection, connect
from clients.response import ConnectionClosed, Response, ServerError

__all__ = ["Connection", "ConnectionClosed", "Response", "ServerError", "connect"]
