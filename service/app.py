"""The starlette app: /v1/stream WebSocket, OpenAI-compatible HTTP, health, and the browser client.

    app = build_app(ServiceConfig(model="path/to/checkpoint"))   # uvicorn.run(app, ...)

Routes: WS /v1/stream; POST /v1/chat/completions; GET /v1/models; GET /healthz; GET /metrics
(Prometheus text, no key needed, as /healthz); GET / and the static files of clients/web/. The
engine starts and stops with the app's lifespan.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from llm_core.engine_client import AsyncEngineClient
from protocol import ErrorEvent, ErrorInfo, encode_event
from protocol.errors import CLOSE_POLICY_VIOLATION, CLOSE_TRY_AGAIN_LATER, OVERLOADED, UNAUTHORIZED
from service.auth import access_problem, choose_subprotocol
from service.config import ServiceConfig
from service.gateway import Gateway
from service.openai_api import chat_completions, list_models
from service.session import Session

logger = logging.getLogger(__name__)

# A path on disk, not an import: the service does not import the clients package.
WEB_DIR = Path(__file__).resolve().parents[1] / "clients" / "web"


async def stream_endpoint(websocket: WebSocket) -> None:
    """One session. Refusals are accepted, told why in an `error` event, then closed with their code
    (browsers see close codes, not HTTP statuses)."""
    gateway: Gateway = websocket.app.state.gateway
    offered = websocket.scope.get("subprotocols", [])
    problem = access_problem(gateway.config, websocket.headers, websocket.query_params, offered)
    await websocket.accept(subprotocol=choose_subprotocol(offered))
    if problem is not None:
        gateway.telemetry.on_error(UNAUTHORIZED)
        await _refuse(websocket, UNAUTHORIZED, problem, CLOSE_POLICY_VIOLATION)
        return
    if gateway.is_full:
        gateway.telemetry.on_error(OVERLOADED)
        await _refuse(websocket, OVERLOADED, f"the server is full ({gateway.config.max_sessions} sessions); "
                      "retry later", CLOSE_TRY_AGAIN_LATER)
        return
    session = Session(gateway, websocket)
    gateway.sessions.add(session)
    try:
        await session.run()
    finally:
        gateway.sessions.discard(session)


async def _refuse(websocket: WebSocket, code: str, message: str, close_code: int) -> None:
    try:
        await websocket.send_text(encode_event(ErrorEvent(ErrorInfo(code, message)), False))
        await websocket.close(close_code, message[:120])
    except (RuntimeError, OSError):
        pass  # the client left first


async def healthz(request: Request) -> Response:
    health = request.app.state.gateway.health()
    return JSONResponse(health, 200 if health["status"] == "ok" else 503)


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return Response(await gateway.telemetry.metrics.render(gateway.models.engines), media_type=CONTENT_TYPE_LATEST)


async def index(request: Request) -> Response:
    if not (WEB_DIR / "index.html").is_file():
        return JSONResponse({"error": "the browser client is not installed"}, 404)
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def build_app(config: ServiceConfig, engine: AsyncEngineClient | None = None) -> Starlette:
    """The app for `config`; `engine` (not started) replaces the one built from config.model."""
    gateway = Gateway(config, engine)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        WebSocketRoute("/v1/stream", stream_endpoint),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Mount("/", StaticFiles(directory=WEB_DIR, check_dir=False), name="web"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.gateway = gateway
    return app
