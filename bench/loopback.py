"""Processes and WebSocket servers on the loopback interface, for the benchmarks that run a gateway."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

from websockets.asyncio.client import connect


def start_process(target, *args) -> multiprocessing.Process:
    """target(*args) in a spawned process; not a daemon: a gateway starts its engine process itself."""
    process = multiprocessing.get_context("spawn").Process(target=target, args=args)
    process.start()
    return process


async def wait_open(url: str, timeout_s: float = 120.0) -> None:
    """Until a WebSocket connection to url opens (a server starting up); OSError past timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with connect(url, proxy=None, open_timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
