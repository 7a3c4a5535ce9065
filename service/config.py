"""ServiceConfig: every setting of the gateway, and the only code that reads argv and environment.

`load_config(argv, environ)` builds it: a flag wins over its TRIBUTARY_* variable, which wins over
the default here. `python -m service --help` lists every option (service/options.py).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from encoders.config import DEFAULT_MEDIA_LIMITS, MediaLimits
from service.options import GROUPS, OPTIONS, MiB, Option

ENGINE_MODES = ("process", "thread")


@dataclass(frozen=True)
class ServiceConfig:
    """The gateway's settings. Limits are per message, item, session or server (docs/protocol.md)."""

    # Server
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None  # one directory or several, comma-separated; None: the demo models (resolved by __main__)
    served_model_name: str | None = None
    engine_mode: str = "process"
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    decode_workers: int = 4
    media_cache_bytes: int = 256 * MiB
    log_level: str = "info"
    # Security
    api_key: str | None = None
    allowed_origins: tuple[str, ...] = ()  # (): same origin only; ("*",): any
    # Limits
    max_message_bytes: int = 4 * MiB
    max_item_bytes: int = 64 * MiB
    max_session_media_bytes: int = 256 * MiB
    max_items_per_session: int = 64
    max_responses_per_session: int = 16
    max_sessions: int = 1024
    idle_timeout_s: float = 300.0
    max_pending_events: int = 1024
    # Observability
    otlp_traces_endpoint: str | None = None  # None: no tracing (load_config reads the OTEL_* variables)
    otel_service_name: str = "tributary"

    def __post_init__(self) -> None:
        object.__setattr__(self, "engine_options", MappingProxyType(dict(self.engine_options)))
        object.__setattr__(self, "allowed_origins", tuple(self.allowed_origins))
        if self.engine_mode not in ENGINE_MODES:
            raise ValueError(f"engine_mode must be one of {ENGINE_MODES}, got {self.engine_mode!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        for name in ("decode_workers", "max_message_bytes", "max_item_bytes", "max_session_media_bytes",
                     "max_items_per_session", "max_responses_per_session", "max_sessions",
                     "max_pending_events"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if type(self.media_cache_bytes) is not int or self.media_cache_bytes < 0:
            raise ValueError(f"media_cache_bytes must be an integer >= 0, got {self.media_cache_bytes!r}")
        if not self.idle_timeout_s > 0:
            raise ValueError(f"idle_timeout_s must be > 0, got {self.idle_timeout_s!r}")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must not be empty (leave it unset to turn authentication off)")
        if self.otlp_traces_endpoint is not None and not self.otlp_traces_endpoint.startswith(("http://", "https://")):
            raise ValueError(f"the OTLP traces endpoint must be an http:// or https:// URL, got "
                             f"{self.otlp_traces_endpoint!r}")

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        if not self.model:
            return "demo"
        return "+".join(Path(path.strip()).name for path in self.model.split(",") if path.strip())

    @property
    def media_limits(self) -> MediaLimits:
        """The decoding limits, with each modality's byte limit capped at max_item_bytes."""
        base = DEFAULT_MEDIA_LIMITS
        return MediaLimits(
            max_image_bytes=min(base.max_image_bytes, self.max_item_bytes),
            max_video_bytes=min(base.max_video_bytes, self.max_item_bytes),
            max_audio_bytes=min(base.max_audio_bytes, self.max_item_bytes),
            max_image_pixels=base.max_image_pixels, max_video_frames=base.max_video_frames,
            video_sample_fps=base.video_sample_fps, max_video_duration_s=base.max_video_duration_s,
            max_audio_duration_s=base.max_audio_duration_s)

    def limits(self) -> dict[str, int | float]:
        """The service limits as session.created reports them (names as in docs/protocol.md)."""
        return {"max_message_bytes": self.max_message_bytes, "max_item_bytes": self.max_item_bytes,
                "max_session_media_bytes": self.max_session_media_bytes,
                "max_items_per_session": self.max_items_per_session,
                "max_responses_per_session": self.max_responses_per_session,
                "max_sessions": self.max_sessions, "idle_timeout_s": self.idle_timeout_s}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service", description="Serve a checkpoint over the /v1/stream WebSocket and an "
        "OpenAI-compatible HTTP API. Every flag FOO-BAR can also be set as TRIBUTARY_FOO_BAR.")
    defaults = {f.name: f.default for f in fields(ServiceConfig) if not callable(f.default_factory)}
    for title, options in GROUPS.items():
        group = parser.add_argument_group(title)
        for option in options:
            default = defaults.get(option.name) if option.kind == "service" else None
            shown = f" (default: {default})" if default not in (None, ()) else ""
            kwargs: dict[str, Any] = dict(dest=option.name, default=None, help=option.help + shown + f" [{option.env}]")
            if option.is_bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                metavar = option.metavar or (None if option.choices else {int: "N", float: "X"}.get(option.parse, "S"))
                kwargs.update(type=option.parse, choices=option.choices, metavar=metavar)
            group.add_argument(option.flag, **kwargs)
    return parser


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """The config from command-line flags, then TRIBUTARY_* variables, then the defaults.

    A bad flag exits with argparse's usage message; a bad variable or value raises SystemExit too.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    environ = os.environ if environ is None else environ
    service: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(args, option.name)
        if value is None and option.env in environ:
            value = _from_env(parser, option, environ[option.env])
        if value is not None:
            (service if option.kind == "service" else engine)[option.name] = value
    try:
        service.update(otel_settings(environ, service.get("otlp_traces_endpoint")))
        return ServiceConfig(engine_options=engine, **service)
    except ValueError as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits


def otel_settings(environ: Mapping[str, str], endpoint: str | None) -> dict[str, Any]:
    """Tracing settings from the standard OpenTelemetry variables; `endpoint` (a flag or
    TRIBUTARY_OTLP_TRACES_ENDPOINT) wins over them. Only OTLP over HTTP with protobuf is spoken."""
    def get(name: str) -> str:
        return environ.get(name, "").strip()

    if endpoint is None:
        endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or None
        if endpoint is None and get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            endpoint = get("OTEL_EXPORTER_OTLP_ENDPOINT").rstrip("/") + "/v1/traces"
    protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if endpoint is not None and protocol != "http/protobuf":
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: this server exports traces over "
                         "http/protobuf only (Jaeger's port 4318)")
    if get("OTEL_SDK_DISABLED").lower() == "true" or get("OTEL_TRACES_EXPORTER").lower() == "none":
        endpoint = None
    return {"otlp_traces_endpoint": endpoint, "otel_service_name": get("OTEL_SERVICE_NAME") or "tributary"}


def _from_env(parser: argparse.ArgumentParser, option: Option, text: str) -> Any:
    try:
        value = option.parse(text)
    except ValueError as exc:
        parser.error(f"{option.env}: {exc}")
    if option.choices is not None and value not in option.choices:
        parser.error(f"{option.env} must be one of {', '.join(option.choices)}, got {text!r}")
    return value
