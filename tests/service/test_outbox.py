"""The session outbox without sockets: deltas of one response merge while unsent, nothing is lost,
order holds, and the room check bounds what a non-reading client can queue."""

from __future__ import annotations

import asyncio

from protocol import ErrorEvent, ErrorInfo, ResponseCreated, ResponseDelta, ResponseDone, Usage
from service.outbox import Outbox
from tests.service.wire import run


def drain(outbox: Outbox) -> list:
    events = []
    while (event := outbox.get_nowait()) is not None:
        events.append(event)
    return events


def test_unsent_deltas_of_a_response_merge_in_place():
    outbox = Outbox(max_pending=10)
    outbox.put(ResponseCreated("a"))
    outbox.put_delta("a", "He", (1,), (((1, -0.5),),))
    outbox.put_delta("b", "x", (9,))
    outbox.put_delta("a", "llo", (2, 3), (((2, -0.1),), ((3, -0.2),)))
    outbox.put(ResponseDone("a", "completed", "stop", Usage(1, 3, 0)))
    events = drain(outbox)
    assert [e.type for e in events] == ["response.created", "response.delta", "response.delta", "response.done"]
    merged = events[1]
    assert merged == ResponseDelta("a", "Hello", (1, 2, 3), (((1, -0.5),), ((2, -0.1),), ((3, -0.2),)))
    assert events[2] == ResponseDelta("b", "x", (9,), None)
    assert outbox.num_merged == 1


def test_a_taken_delta_is_closed_to_merging():
    outbox = Outbox(max_pending=10)
    outbox.put_delta("a", "one", (1,))
    first = outbox.get_nowait()
    outbox.put_delta("a", "two", (2,))
    assert (first.delta, outbox.get_nowait().delta) == ("one", "two")


def test_merging_never_drops_text_under_any_interleaving():
    outbox = Outbox(max_pending=10)
    sent = []
    for i in range(1000):
        outbox.put_delta("r", str(i % 10), (i,))
        if i % 7 == 0:
            sent.append(outbox.get_nowait())
    sent += drain(outbox)
    assert "".join(e.delta for e in sent) == "".join(str(i % 10) for i in range(1000))
    assert [t for e in sent for t in e.token_ids] == list(range(1000))
    assert len(sent) < 200


def test_room_bounds_other_events_but_not_deltas():
    async def go():
        outbox = Outbox(max_pending=3)
        for i in range(50):
            outbox.put_delta(f"r{i}", "x", (i,))
        assert outbox.has_room  # deltas (one per response) do not count
        for _ in range(3):
            outbox.put(ErrorEvent(ErrorInfo("invalid_json", "bad")))
        assert not outbox.has_room
        waiter = asyncio.ensure_future(outbox.wait_for_room())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        while not waiter.done():
            await outbox.get()
            await asyncio.sleep(0)
        return len(outbox)

    assert run(go()) < 53


def test_get_waits_for_an_event():
    async def go():
        outbox = Outbox(max_pending=3)
        getter = asyncio.ensure_future(outbox.get())
        await asyncio.sleep(0.01)
        assert not getter.done()
        outbox.put(ResponseCreated("z"))
        return await getter

    assert run(go()) == ResponseCreated("z")
