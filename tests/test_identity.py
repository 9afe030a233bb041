"""``bind()``: the identity of a request, for every message built inside the block."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from htevents_logging import HtEvents, bind
from htevents_logging._frontends.handler import HtEventsHandler
from htevents_logging._frontends.processor import HtEventsProcessor
from htevents_logging.collector import Collector
from htevents_logging.testing import capture_events

#: Sends one track with the given payload through one front-end; returns the message built.
Send = Callable[..., dict[str, Any]]


@pytest.fixture(params=["client", "handler", "processor"])
def send(request: pytest.FixtureRequest) -> Iterator[Send]:
    """Each front-end in turn, as a ``send(**payload) -> message`` function."""
    client = HtEvents(disable=True)
    logger = logging.getLogger("identity.app")
    handler = HtEventsHandler(client=client)
    processor = HtEventsProcessor(client=client)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    def via(front_end: str, payload: dict[str, Any]) -> None:
        if front_end == "client":
            client.track(payload, event="Order completed")
        elif front_end == "handler":
            logger.info("Order completed", extra={"htevent": payload})
        else:
            processor(None, "info", {"event": "Order completed", "htevent": payload})

    lock = threading.Lock()  # a capture gets every thread's messages: one send at a time

    def send_one(**payload: Any) -> dict[str, Any]:
        with lock, capture_events() as events:
            via(request.param, payload)
        [message] = events
        return message

    yield send_one
    logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
    handler.close()


def test_bind_fills_the_ids_and_context_of_every_front_end(send: Send):
    with bind(user_id="u-1", anonymous_id="a-1", context={"ip": "203.0.113.5"}):
        message = send(properties={"total": 1})

    assert (message["userId"], message["anonymousId"]) == ("u-1", "a-1")
    assert message["context"]["ip"] == "203.0.113.5"
    assert message["context"]["library"]["name"] == "htevents-logging"


def test_outside_bind_a_message_gets_a_fresh_anonymous_id(send: Send):
    first, second = send(), send()

    assert "userId" not in first
    assert first["anonymousId"] != second["anonymousId"]


def test_the_message_s_own_ids_and_context_win(send: Send):
    with bind(user_id="bound", context={"ip": "203.0.113.5", "locale": "en"}):
        own_user = send(user_id="own")
        own_anonymous = send(anonymous_id="anon")
        own_context = send(context={"locale": "fr"})

    assert own_user["userId"] == "own"
    assert "userId" not in own_anonymous  # one id given: the bound ones are not mixed in
    assert own_anonymous["anonymousId"] == "anon"
    assert own_context["context"]["locale"] == "fr"
    assert own_context["context"]["ip"] == "203.0.113.5"


def test_binds_nest_and_leaving_restores_the_outer_one(send: Send):
    with bind(user_id="outer", context={"ip": "203.0.113.5"}):
        with bind(anonymous_id="inner-anon", context={"page": "checkout"}):
            inner = send()
        after = send()

    assert (inner["userId"], inner["anonymousId"]) == ("outer", "inner-anon")
    assert inner["context"]["ip"] == "203.0.113.5"
    assert inner["context"]["page"] == "checkout"
    assert after["userId"] == "outer"
    assert "anonymousId" not in after
    assert "page" not in after["context"]


def test_threads_do_not_see_each_other_s_binding(send: Send):
    inside = threading.Barrier(3, timeout=5)
    results: dict[str, dict[str, Any]] = {}

    def request(user_id: str) -> None:
        with bind(user_id=user_id):
            inside.wait()  # every thread is inside its own bind now
            inside.wait()  # ...and the main thread has sent its message
            results[user_id] = send()

    threads = [threading.Thread(target=request, args=(u,)) for u in ("alice", "bob")]
    for thread in threads:
        thread.start()
    inside.wait()
    unbound = send()  # this thread bound nothing, while both others are inside bind
    inside.wait()
    for thread in threads:
        thread.join(5)

    assert "userId" not in unbound
    assert results["alice"]["userId"] == "alice"
    assert results["bob"]["userId"] == "bob"


def test_asyncio_tasks_keep_their_own_binding(send: Send):
    async def handle_request(user_id: str, other_went: asyncio.Event, went: asyncio.Event) -> Any:
        with bind(user_id=user_id):
            went.set()
            await other_went.wait()  # the other task is inside its bind now
            return send()

    async def main() -> tuple[Any, Any, dict[str, Any]]:
        a_went, b_went = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(handle_request("alice", b_went, a_went))
        b = asyncio.create_task(handle_request("bob", a_went, b_went))
        alice, bob = await asyncio.gather(a, b)
        return alice, bob, send()  # the tasks' binds never reached the parent

    alice, bob, parent = asyncio.run(main())

    assert alice["userId"] == "alice"
    assert bob["userId"] == "bob"
    assert "userId" not in parent


def test_a_task_created_inside_bind_inherits_it():
    async def child() -> dict[str, Any]:
        return HtEvents(disable=True).track(event="From the child task")

    async def main() -> dict[str, Any]:
        with bind(user_id="parent"):
            task = asyncio.create_task(child())
        return await task  # runs after the block ended: the task kept its copy of the context

    assert asyncio.run(main())["userId"] == "parent"


def test_the_identity_is_taken_when_the_message_is_built_not_when_it_is_sent(
    collector: Collector,
    write_key,
):
    logger = logging.getLogger("identity.delivered")
    handler = HtEventsHandler(write_key=write_key, host=collector.url, flush_interval=60.0)
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        with bind(user_id="u-1", context={"ip": "203.0.113.5"}):
            logger.info("Order completed", extra={"htevent": {}})
        assert collector.events == []  # still queued: flush_interval is a minute

        handler.flush()  # delivered after the block, on the transport thread
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
        handler.close()

    [event] = collector.events
    assert event["userId"] == "u-1"
    assert event["context"]["ip"] == "203.0.113.5"


def test_bind_refuses_bad_values_naming_them():
    bad_id = pytest.raises(TypeError, match=r"bind\(user_id=\.\.\.\) must be a str, a number")
    with bad_id, bind(user_id=["x"]):  # type: ignore[arg-type]
        pass
    bad_context = pytest.raises(TypeError, match=r"bind\(context=\.\.\.\) must be a mapping")
    with bad_context, bind(context="ip=1"):  # type: ignore[arg-type]
        pass
