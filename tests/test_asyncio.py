"""asyncio: ``aflush()`` and ``aclose()`` wait without blocking the event loop.

``flush()`` and ``close()`` block the thread that calls them until the server answers or the
timeout passes; called from a coroutine they would freeze every other task of the loop (every
request of an ASGI server) for that long. The awaitables wait in a worker thread instead: here a
1 ms ticker task keeps ticking while they wait on a server that never answers.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from htevents_logging import HtEvents
from htevents_logging.collector import Hang


async def _tick_while(awaitable) -> tuple[object, list[float]]:
    """Await ``awaitable`` while a task ticks every millisecond; the result and the ticks."""
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker starts
    try:
        result = await awaitable
    finally:
        task.cancel()
    return result, ticks


def _longest_gap(ticks: list[float]) -> float:
    return max(b - a for a, b in zip(ticks, ticks[1:]))


@pytest.fixture
def hanging_client(collector, write_key, closing) -> HtEvents:
    """A client with one event queued for a server that hangs on every request."""
    collector.script(*[Hang(30)] * 4)
    client = closing(
        HtEvents(write_key, host=collector.url, http_request_timeout=20, shutdown_timeout=0.5)
    )
    client.track(user_id="1", event="Order completed")
    return client


@pytest.mark.parametrize("method", ["aflush", "aclose"])
def test_the_loop_keeps_ticking_while_a_flush_or_close_waits_on_a_hanging_server(
    hanging_client, method
):
    started = time.monotonic()
    done, ticks = asyncio.run(_tick_while(getattr(hanging_client, method)(0.5)))
    waited = time.monotonic() - started
    assert done is False  # the server never answered: the timeout ended the wait
    assert 0.4 < waited < 5
    assert len(ticks) > 100  # about 2 per ms were possible; a blocked loop gives 1
    assert _longest_gap(ticks) < 0.25


def test_aflush_delivers_and_an_async_with_closes(collector, write_key):
    async def main() -> tuple[bool, dict]:
        async with HtEvents(write_key, host=collector.url, flush_interval=60) as client:
            client.track(user_id="1", event="Order completed")
            flushed = await client.aflush(5)
            return flushed, client.stats()

    flushed, stats = asyncio.run(main())
    assert flushed is True
    assert stats["sent"] == 1
    assert [e["event"] for e in collector.events] == ["Order completed"]
