"""API key (header, query token, bearer subprotocol) and Origin allow-list: the rules, then a real
server that closes refused sessions with 1008 while an authorised session completes a request."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from service.auth import access_problem, choose_subprotocol, presented_key
from service.config import ServiceConfig
from tests.service.conftest import serve
from tests.service.wire import complete, next_event, open_ws, run, session

KEY = "s3cret-key"
CONFIG = ServiceConfig(model="m", api_key=KEY, allowed_origins=("https://app.example",))


def test_key_is_found_in_header_query_or_subprotocol():
    assert presented_key({"authorization": f"Bearer {KEY}"}, {}) == KEY
    assert presented_key({}, {"token": KEY}) == KEY
    assert presented_key({}, {}, ["tributary.v1", f"bearer.{KEY}"]) == KEY
    assert presented_key({"authorization": "Basic abc"}, {}) is None


def test_subprotocol_choice_keeps_browsers_happy():
    assert choose_subprotocol(["tributary.v1", f"bearer.{KEY}"]) == "tributary.v1"
    assert choose_subprotocol([f"bearer.{KEY}"]) == f"bearer.{KEY}"
    assert choose_subprotocol([]) is None


@pytest.mark.parametrize("headers, ok", [
    ({"authorization": f"Bearer {KEY}"}, True),
    ({"authorization": f"Bearer {KEY}", "origin": "https://app.example"}, True),
    ({"authorization": f"Bearer {KEY}", "origin": "http://127.0.0.1:8000", "host": "127.0.0.1:8000"}, True),
    ({"authorization": f"Bearer {KEY}", "origin": "https://evil.example", "host": "127.0.0.1:8000"}, False),
    ({"authorization": "Bearer wrong"}, False),
    ({}, False),
])
def test_access_rules(headers, ok):
    assert (access_problem(CONFIG, headers, {}) is None) == ok


def test_no_key_configured_lets_everyone_in():
    assert access_problem(ServiceConfig(model="m"), {}, {}) is None


@pytest.fixture(scope="module")
def server(text_checkpoint):
    with serve(text_checkpoint, api_key=KEY, allowed_origins=("https://app.example",)) as running:
        yield running


def refused(server, **options):
    """Open a session with `options` while an authorised one completes a request; returns the
    refused session's (error code, close code)."""
    async def go():
        async with open_ws(server.ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as good:
            await session(good)
            async with open_ws(server.ws_url, **options) as bad:
                error = await next_event(bad)
                await asyncio.wait_for(bad.wait_closed(), 10)
            text, done = await complete(good, "g")
            assert done.status in ("completed", "incomplete")
            return error.error.code, bad.close_code
    return run(go())


def test_missing_key_closes_with_1008(server):
    assert refused(server) == ("unauthorized", 1008)


def test_wrong_key_closes_with_1008(server):
    assert refused(server, additional_headers={"Authorization": "Bearer nope"}) == ("unauthorized", 1008)


def test_foreign_origin_closes_with_1008(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    assert refused(server, additional_headers=headers, origin="https://evil.example") == ("unauthorized", 1008)


@pytest.mark.parametrize("how", ["header", "query", "subprotocol", "origin"])
def test_accepted_ways_in(server, how):
    url, options = server.ws_url, {}
    if how == "header":
        options["additional_headers"] = {"Authorization": f"Bearer {KEY}"}
    elif how == "query":
        url += f"?token={KEY}"
    elif how == "subprotocol":
        options["subprotocols"] = [f"bearer.{KEY}"]
    else:
        url += f"?token={KEY}"
        options["origin"] = "https://app.example"

    async def go():
        async with open_ws(url, **options) as ws:
            await session(ws)
            text, done = await complete(ws, "r")
            return ws.subprotocol, done.status

    subprotocol, status = run(go())
    assert status in ("completed", "incomplete")
    assert subprotocol == (f"bearer.{KEY}" if how == "subprotocol" else None)


def test_http_endpoints_need_the_key(server):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    url = f"{server.base_url}/v1/chat/completions"
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert ok.status_code == 200
    assert httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200  # health needs no key
