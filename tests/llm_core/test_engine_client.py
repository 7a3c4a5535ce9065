"""The async engine client against a torch-free fake engine: streaming, errors, abort, death.

End-to-end runs on a real checkpoint are in test_engine_client_e2e.py. asyncio.wait_for bounds
below are hang guards, not timing assertions.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

from llm_core import engine_client
from llm_core.config import EngineConfig
from llm_core.engine_client import (
    AsyncEngineClient, CompletionDelta, EngineDeadError, EngineRequest, EngineRequestError, merge_deltas,
)
from llm_core.engine_protocol import encode_message
from llm_core.sampling_params import SamplingParams
from tests.helpers.fake_engine import FakeEngine, fake_token

HANG_GUARD_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, HANG_GUARD_S))


def make_client(mode: str = "thread", **fake_options) -> AsyncEngineClient:
    factory = functools.partial(FakeEngine, **fake_options) if fake_options else FakeEngine
    return AsyncEngineClient(EngineConfig.from_options("fake-model"), mode=mode, engine_factory=factory)


def request(request_id: str, prompt="abc", max_tokens: int = 8, **kwargs) -> EngineRequest:
    return EngineRequest(request_id, prompt, SamplingParams(max_tokens=max_tokens), **kwargs)


async def collect(client: AsyncEngineClient, req: EngineRequest) -> list[CompletionDelta]:
    return [delta async for delta in client.generate(req)]


async def wait_until_idle(client: AsyncEngineClient) -> dict:
    for _ in range(5000):  # bounded: the hang guard fires long before
        stats = await client.stats()
        if stats["num_running"] == 0 and stats["num_waiting"] == 0:
            return stats
        await asyncio.sleep(0.002)
    raise AssertionError(f"the engine never went idle: {stats}")


def test_engine_client_imports_no_torch():
    code = "import sys, llm_core.engine_client; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_merge_deltas_concatenates_and_keeps_the_last_state():
    parts = [CompletionDelta("r", (1,), "a", False, logprobs=({1: -0.5},)),
             CompletionDelta("r", (2, 3), "bc", True, "stop", stop_reason="x", num_prompt_tokens=4)]
    merged = merge_deltas(parts)
    assert merged == CompletionDelta("r", (1, 2, 3), "abc", True, "stop", stop_reason="x", num_prompt_tokens=4,
                                     logprobs=({1: -0.5},))


def test_concurrent_streams_deliver_every_token_once_in_order():
    async def main():
        async with make_client() as client:
            prompts = ["a", "bb", "ccc", "dddd", "eeeee", "ffffff"]
            results = await asyncio.gather(*(collect(client, request(f"r{i}", p, 10 + i))
                                             for i, p in enumerate(prompts)))
            return prompts, results

    prompts, results = run(main())
    for i, (prompt, deltas) in enumerate(zip(prompts, results)):
        expected = [fake_token(prompt, k) for k in range(10 + i)]
        assert [t for d in deltas for t in d.new_token_ids] == expected
        assert "".join(d.text_delta for d in deltas) == "".join(f"<{t}>" for t in expected)
        assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
        assert deltas[-1].finish_reason == "length"


def test_a_lagging_consumer_gets_the_backlog_as_one_delta():
    async def main():
        async with make_client(step_delay_s=0.001) as client:
            stream = client.generate(request("r", "xy", 30))
            first = await anext(stream)
            stats = await wait_until_idle(client)  # stats reply after every output sent before them
            rest = [delta async for delta in stream]
            return first, stats, rest

    first, stats, rest = run(main())
    assert stats["num_running"] == 0
    # Whatever the first delta held, everything after it waited and arrives merged.
    assert len(rest) == (0 if first.finished else 1)
    assert [t for d in [first, *rest] for t in d.new_token_ids] == [fake_token("xy", k) for k in range(30)]
    assert [first, *rest][-1].finished


def test_an_invalid_request_fails_alone():
    async def main():
        async with make_client() as client:
            good = asyncio.ensure_future(collect(client, request("good", max_tokens=5)))
            with pytest.raises(EngineRequestError, match="invalid") as info:
                await collect(client, request("bad", "invalid"))
            return info.value, await good

    error, good = run(main())
    assert (error.request_id, error.kind) == ("bad", "invalid_request")
    assert good[-1].finished and sum(len(d.new_token_ids) for d in good) == 5


def test_a_request_id_streams_once_at_a_time():
    async def main():
        async with make_client(step_delay_s=0.001) as client:
            first = client.generate(request("same", max_tokens=50))
            await anext(first)
            with pytest.raises(ValueError, match="already streaming"):
                await anext(client.generate(request("same")))
            await first.aclose()
            return await collect(client, request("same", max_tokens=3))  # free again after the abort

    assert run(main())[-1].finished


def test_abort_ends_the_stream_and_frees_the_request_in_the_engine():
    async def main():
        async with make_client(step_delay_s=0.001) as client:
            stream = client.generate(request("r", max_tokens=10_000))
            first = await anext(stream)
            aborted = await client.abort("r")
            rest = [delta async for delta in stream]
            return first, aborted, rest, await client.abort("r"), await client.stats()

    first, aborted, rest, aborted_again, stats = run(main())
    assert not first.finished and aborted and not aborted_again
    assert rest[-1].finished and rest[-1].finish_reason == "abort"
    assert (stats["num_running"], stats["num_aborted"], stats["num_open_streams"]) == (0, 1, 0)


def test_a_consumer_that_stops_iterating_aborts_its_request():
    async def main():
        async with make_client(step_delay_s=0.001) as client:
            stream = client.generate(request("r", max_tokens=10_000))
            async for _ in stream:
                break
            await stream.aclose()
            return await client.stats()

    stats = run(main())
    assert (stats["num_running"], stats["num_aborted"]) == (0, 1)


def test_generate_fails_fast_unless_the_engine_runs():
    async def main():
        client = make_client()
        with pytest.raises(EngineDeadError, match="never started"):
            await anext(client.generate(request("r")))
        await client.start()
        assert client.is_running and client.engine_info["max_model_len"] == 128
        await client.close()
        assert not client.is_running
        with pytest.raises(EngineDeadError, match="closed"):
            await anext(client.generate(request("r")))
        with pytest.raises(EngineDeadError):
            await client.stats()

    run(main())


def test_a_failed_step_ends_every_stream_and_start_brings_up_a_new_engine():
    async def main():
        client = make_client(step_delay_s=0.001)
        await client.start()
        victim = asyncio.ensure_future(collect(client, request("long", max_tokens=10_000)))
        await asyncio.sleep(0)  # let it send first, so that both are in the engine
        with pytest.raises(EngineDeadError, match="the model blew up"):
            await collect(client, request("boom", "crash"))
        with pytest.raises(EngineDeadError, match="the model blew up"):
            await victim
        assert not client.is_running
        await client.start()
        deltas = await collect(client, request("after", max_tokens=4))
        await client.close()
        return deltas

    assert run(main())[-1].finished


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_an_engine_that_sends_a_bad_message_ends_every_stream_and_start_brings_up_a_new_one(mode, monkeypatch):
    """A message the client cannot decode ends every stream with an error naming it, whatever the
    decoder trips on (here an index past the row, bent in this process's decoder: the client's in
    both modes). Before, such an IndexError killed the reader thread and every stream hung."""
    from llm_core import engine_protocol

    row = engine_protocol._delta_row

    async def main():
        client = make_client(mode, step_delay_s=0.001)
        await client.start()
        stream = client.generate(request("garbled", max_tokens=10_000))
        assert (await anext(stream)).new_token_ids
        monkeypatch.setattr(engine_protocol, "_TOKEN_IDS", 99)  # the client's decoder, in every mode
        with pytest.raises(EngineDeadError, match="the engine sent a bad message"):
            async for _ in stream:
                pass
        assert not client.is_running
        monkeypatch.setattr(engine_protocol, "_TOKEN_IDS", engine_protocol._DELTA_FIELDS.index("new_token_ids"))
        await client.start()
        deltas = await collect(client, request("after", max_tokens=4))
        await client.close()
        return deltas

    assert run(main())[-1].finished


def test_an_engine_that_cannot_start_is_reported():
    def broken_factory(config):
        raise RuntimeError("no weights here")

    async def main():
        client = AsyncEngineClient(EngineConfig.from_options("fake"), mode="thread", engine_factory=broken_factory)
        with pytest.raises(EngineDeadError, match="no weights here"):
            await client.start()
        assert not client.is_running
        await client.close()

    run(main())


def test_a_large_buffer_goes_through_shared_memory_and_is_released(monkeypatch):
    created = []

    def recording_encode(message, **kwargs):
        payload, shm_names = encode_message(message, **kwargs)
        created.extend(shm_names)
        return payload, shm_names

    monkeypatch.setattr(engine_client, "encode_message", recording_encode)

    async def main():
        client = make_client()
        client.shm_threshold_bytes = 64
        async with client:
            with pytest.raises(EngineRequestError, match="no media buffers"):
                await collect(client, request("media", buffers={"img": os.urandom(4096)}))

    run(main())
    assert len(created) == 1
    with pytest.raises(FileNotFoundError):  # the engine read the segment and unlinked it
        shared_memory.SharedMemory(name=created[0])


def test_killing_the_engine_process_ends_every_stream_and_restart_works():
    async def main():
        client = make_client(mode="process", step_delay_s=0.002)
        await client.start()
        streams = [client.generate(request(f"r{i}", max_tokens=100_000)) for i in range(3)]
        for stream in streams:
            await anext(stream)
        os.kill(client.engine_info["pid"], signal.SIGKILL)
        for stream in streams:
            with pytest.raises(EngineDeadError, match="exited with code -9"):
                async for _ in stream:
                    pass
        assert not client.is_running
        with pytest.raises(EngineDeadError, match="-9"):
            await anext(client.generate(request("late")))
        await client.start()
        deltas = await collect(client, request("again", "abc", max_tokens=6))
        await client.close()
        return deltas

    deltas = run(main())
    assert [t for d in deltas for t in d.new_token_ids] == [fake_token("abc", k) for k in range(6)]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_media_items_are_appended_answered_and_deleted(mode):
    frame = np.zeros((8, 8, 3), np.uint8)

    async def main():
        async with make_client(mode=mode) as client:
            assert await client.append_item("clip", "video", [frame, frame], final=False) == 2
            assert await client.append_item("clip", "video", [frame], final=True) == 3
            with pytest.raises(EngineRequestError, match="video only") as refused:
                await client.append_item("img", "image", frame, final=True)
            assert (refused.value.request_id, refused.value.kind) == ("img", "invalid_request")
            with pytest.raises(EngineRequestError, match="blew up") as failed:
                await client.append_item("x", "crash", [], final=True)
            assert failed.value.kind == "internal"
            assert (await client.stats())["num_media_items"] == 1
            client.delete_item("clip")
            assert (await client.stats())["num_media_items"] == 0  # commands are handled in order
            deltas = await collect(client, request("after", "abc", max_tokens=2))  # the engine runs on
        with pytest.raises(EngineDeadError):
            await client.append_item("late", "video", [frame], final=True)
        client.delete_item("late")  # nothing to do on a closed client
        return deltas

    assert [t for d in run(main()) for t in d.new_token_ids] == [fake_token("abc", k) for k in range(2)]
