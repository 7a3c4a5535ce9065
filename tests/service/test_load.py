"""200 concurrent sessions on one CPU server with a tiny checkpoint: every one completes, every
text equals the offline API's for its prompt (nothing lost, nothing crossed between sessions)."""

from __future__ import annotations

import asyncio
import time

from llm_core import SamplingParams
from tests.service.test_session import engine_idle
from tests.service.wire import chat, next_event, open_ws, run, send, session

NUM_SESSIONS = 200
SAMPLING = dict(max_tokens=4, temperature=0.8, seed=7, ignore_eos=True)


def test_200_concurrent_sessions_all_complete(server, offline):
    prompts = [f"Session number {i} says hello" for i in range(NUM_SESSIONS)]
    expected = [o.text for o in offline.generate([{"messages": chat(p)} for p in prompts],
                                                 SamplingParams(**SAMPLING))]

    async def one(i: int, all_open: asyncio.Event, counter: list[int]) -> tuple[str, object]:
        async with open_ws(server.ws_url, open_timeout=30) as ws:
            await session(ws)
            counter[0] += 1
            if counter[0] == NUM_SESSIONS:
                all_open.set()
            await asyncio.wait_for(all_open.wait(), 30)  # every session is open before any request
            await send(ws, {"type": "response.create", "response_id": "r", "messages": chat(prompts[i]),
                            **SAMPLING})
            texts = []
            while (event := await next_event(ws)).type != "response.done":
                if event.type == "response.delta":
                    texts.append(event.delta)
            return "".join(texts), event

    async def go():
        all_open, counter = asyncio.Event(), [0]
        return await asyncio.gather(*(one(i, all_open, counter) for i in range(NUM_SESSIONS)))

    start = time.monotonic()
    results = run(go(), timeout_s=90)
    elapsed = time.monotonic() - start
    assert [text for text, _ in results] == expected
    assert all(done.status == "incomplete" and done.usage.output_tokens == 4 for _, done in results)
    engine_idle(server)
    assert elapsed < 60
