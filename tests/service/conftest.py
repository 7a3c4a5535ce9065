"""Fixtures of the service tests: one tiny random Llama checkpoint for the whole run, the offline
LLM on it, and servers (real uvicorn on 127.0.0.1, free port, engine in thread mode)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import pytest

from service.config import ServiceConfig
from service.server import ServerThread
from tests.helpers.checkpoints import make_text_checkpoint

ENGINE_OPTIONS = {"device": "cpu", "seed": 0, "max_model_len": 1024}


@pytest.fixture(scope="session")
def text_checkpoint(tmp_path_factory) -> str:
    return str(make_text_checkpoint(tmp_path_factory.mktemp("service_llama"), "llama", seed=3))


@pytest.fixture(scope="session")
def offline(text_checkpoint):
    from llm_core import LLM

    return LLM(text_checkpoint, **ENGINE_OPTIONS)


@contextmanager
def serve(model: str, engine_mode: str = "thread", engine_options: dict | None = None, **settings: Any):
    """A running server for `model`; settings are ServiceConfig fields."""
    config = ServiceConfig(model=model, port=0, engine_mode=engine_mode, log_level="warning",
                           engine_options={**ENGINE_OPTIONS, **(engine_options or {})}, **settings)
    with ServerThread(config) as server:
        yield server


@pytest.fixture(scope="module")
def server(text_checkpoint):
    with serve(text_checkpoint) as running:
        yield running
