"""The app's HTTP side (health, the browser client's files) and one server whose engine runs in its
own process, as in production."""

from __future__ import annotations

import os

import httpx
import pytest

from llm_core import SamplingParams
from service.app import WEB_DIR
from tests.service.conftest import serve
from tests.service.wire import chat, complete, open_ws, run, session


def get(server, path: str) -> httpx.Response:
    return httpx.get(server.base_url + path, timeout=30, trust_env=False)


def test_healthz_reports_the_engine_and_sessions(server):
    response = get(server, "/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["model"] == server.gateway.config.model_name
    assert body["sessions"] == 0


@pytest.mark.skipif(not (WEB_DIR / "index.html").is_file(), reason="clients/web is not there yet")
def test_root_serves_the_browser_client_and_its_files(server):
    index = get(server, "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert index.text == (WEB_DIR / "index.html").read_text()
    for path in sorted(WEB_DIR.iterdir()):
        if path.is_file() and path.name != "index.html":
            response = get(server, "/" + path.name)
            assert response.status_code == 200 and response.content == path.read_bytes()
    assert get(server, "/no-such-file.js").status_code == 404


def test_engine_in_its_own_process(text_checkpoint, offline, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned engine: one thread on a small machine
    sampling = dict(max_tokens=10, temperature=0.6, seed=2, ignore_eos=True)
    expected = offline.generate({"messages": chat("Hello there")}, SamplingParams(**sampling))[0]
    with serve(text_checkpoint, engine_mode="process") as server:
        pid = server.gateway.engine.engine_info["pid"]

        async def go():
            async with open_ws(server.ws_url) as ws:
                await session(ws)
                return await complete(ws, "p", "Hello there", **sampling)

        text, done = run(go(), timeout_s=120)
    assert pid != os.getpid()
    assert text == expected.text and done.usage.output_tokens == 10
