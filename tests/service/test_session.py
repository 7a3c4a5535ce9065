"""Sessions end to end on a real uvicorn server with a tiny Llama (engine in thread mode): streamed
text equals the offline API's, usage, several responses at once, session settings, cancel,
disconnect, and a slow reader whose deltas merge while the engine runs on."""

from __future__ import annotations

import asyncio
import time

from llm_core import SamplingParams
from tests.service.wire import chat, complete, expect, next_event, open_ws, run, send, session

PROMPT = "Streaming tokens over one socket"


def engine_idle(server, timeout_s: float = 10.0) -> dict:
    """Engine stats once nothing runs (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = server.call(server.gateway.engine.stats())
        if stats["num_running"] == 0 and stats["num_waiting"] == 0 and stats["num_open_streams"] == 0:
            return stats
        assert time.monotonic() < deadline, f"the engine is still busy: {stats}"
        time.sleep(0.02)


def test_streamed_text_equals_offline_and_done_carries_usage(server, offline):
    sampling = dict(max_tokens=24, temperature=0.8, seed=11, ignore_eos=True)
    expected = offline.generate({"messages": chat(PROMPT)}, SamplingParams(**sampling))[0]

    async def go():
        async with open_ws(server.ws_url) as ws:
            created = await session(ws)
            assert created.limits["max_message_bytes"] == server.gateway.config.max_message_bytes
            return await complete(ws, "r1", PROMPT, **sampling)

    text, done = run(go())
    assert text == expected.text
    assert (done.status, done.finish_reason) == ("incomplete", "length")
    assert done.usage.output_tokens == 24 == len(expected.token_ids)
    assert done.usage.input_tokens == len(offline.get_tokenizer().encode(
        offline.get_tokenizer().apply_chat_template(chat(PROMPT), add_generation_prompt=True),
        add_special_tokens=False))
    assert done.trace_id is None


def test_json_frames_session_defaults_and_instructions(server, offline):
    sampling = SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    expected = offline.generate({"messages": messages}, sampling)[0].text

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            await send(ws, {"type": "session.update", "instructions": "Be brief.",
                            "defaults": {"temperature": 0.0, "max_tokens": 10, "ignore_eos": True}}, binary=False)
            await send(ws, {"type": "response.create", "response_id": "j1", "messages": chat("Hi")}, binary=False)
            frames, texts = [], []
            while True:
                frame = await asyncio.wait_for(ws.recv(), 30)
                frames.append(frame)
                event = __import__("protocol").decode_server_frame(frame)
                if event.type == "response.delta":
                    texts.append(event.delta)
                if event.type == "response.done":
                    return frames, "".join(texts)

    frames, text = run(go())
    assert all(isinstance(frame, str) for frame in frames)  # the server mirrors JSON
    assert text == expected


def test_several_responses_in_flight_on_one_session(server, offline):
    prompts = [f"{PROMPT} {i}" for i in range(4)]
    sampling = dict(max_tokens=12, temperature=0.7, seed=3, ignore_eos=True)
    expected = [o.text for o in offline.generate([{"messages": chat(p)} for p in prompts],
                                                 SamplingParams(**sampling))]

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            for i, prompt in enumerate(prompts):
                await send(ws, {"type": "response.create", "response_id": f"p{i}", "messages": chat(prompt),
                                **sampling})
            texts, done = {f"p{i}": "" for i in range(4)}, set()
            while len(done) < 4:
                event = await next_event(ws)
                if event.type == "response.delta":
                    texts[event.response_id] += event.delta
                elif event.type == "response.done":
                    done.add(event.response_id)
            return [texts[f"p{i}"] for i in range(4)]

    assert run(go()) == expected


def test_cancel_ends_the_response_and_frees_the_engine(server):
    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            await send(ws, {"type": "response.create", "response_id": "c1", "messages": chat(PROMPT),
                            "max_tokens": 900, "ignore_eos": True})
            await expect(ws, "response.delta")
            await send(ws, {"type": "response.cancel", "response_id": "c1"})
            done = await expect(ws, "response.done")
            text, after = await complete(ws, "c2")  # the session goes on
            return done, after

    done, after = run(go())
    assert (done.status, done.finish_reason) == ("cancelled", "cancelled")
    assert 0 < done.usage.output_tokens < 900
    assert after.status in ("completed", "incomplete")
    engine_idle(server)


def test_disconnect_aborts_everything_the_session_started(server):
    before = engine_idle(server)["num_steps"]

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            for i in range(3):
                await send(ws, {"type": "response.create", "response_id": f"d{i}", "messages": chat(PROMPT),
                                "max_tokens": 900, "ignore_eos": True})
            await expect(ws, "response.delta")
        # leaving the block closes the socket while all three are generating

    run(go())
    stats = engine_idle(server)
    assert stats["num_steps"] - before < 450  # far fewer steps than 900 tokens would take
    deadline = time.monotonic() + 5
    while server.gateway.sessions and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not server.gateway.sessions


def test_slow_reader_gets_merged_deltas_and_the_engine_never_waits(server, offline):
    sampling = dict(max_tokens=120, temperature=0.0, ignore_eos=True, logprobs=2)
    expected = offline.generate({"messages": chat(PROMPT)}, SamplingParams(**sampling))[0]

    async def go():
        async with open_ws(server.ws_url) as ws:
            await session(ws)
            (slow,) = list(server.gateway.sessions)
            original = slow.websocket.send

            async def slow_send(message):  # a client that reads one event per 30 ms
                await asyncio.sleep(0.03)
                await original(message)

            slow.websocket.send = slow_send
            await send(ws, {"type": "response.create", "response_id": "s1", "messages": chat(PROMPT), **sampling})
            await expect(ws, "response.created")
            engine_done_while_sending = await asyncio.to_thread(engine_idle, server)
            deltas = []
            while True:
                event = await next_event(ws)
                if event.type == "response.delta":
                    deltas.append(event)
                elif event.type == "response.done":
                    return engine_done_while_sending, deltas, event

    stats, deltas, done = run(go())
    assert stats["num_running"] == 0  # the engine finished before the client had read it all
    assert len(deltas) < 120  # merged ...
    assert "".join(d.delta for d in deltas) == expected.text  # ... and nothing lost
    assert [t for d in deltas for t in d.token_ids] == expected.token_ids
    logprobs = [row for d in deltas for row in d.logprobs]
    assert len(logprobs) == 120 and all(row[0][0] == token for row, token in zip(logprobs, expected.token_ids))
    assert done.usage.output_tokens == 120
