"""The integrations: flush_all and flush_after, and the ASGI and Django middlewares.

The ASGI middleware is driven here by hand, message by message, as a server would; the real
servers (uvicorn, gunicorn, uWSGI) run in ``tests/deploy``.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from helpers import Outcomes

from htevents_logging import HtEvents, flush_after, flush_all
from htevents_logging.contrib.asgi import HtEventsMiddleware as AsgiMiddleware
from htevents_logging.contrib.django import HtEventsMiddleware as DjangoMiddleware
from htevents_logging.testing import capture_events


@pytest.fixture
def client(collector, write_key, closing) -> HtEvents:
    """A client whose events wait a minute in their batch unless something flushes them."""
    return closing(HtEvents(write_key, host=collector.url, flush_interval=60))


def test_flush_all_delivers_what_every_client_queued(client, collector):
    client.track(user_id="u", event="queued")
    assert flush_all(5)
    assert [e["event"] for e in collector.events] == ["queued"]


def test_flush_after_flushes_when_the_function_returns_or_raises(client, collector):
    @flush_after
    def handler(event: str) -> str:
        client.track(user_id="u", event=event)
        if event == "fails":
            raise RuntimeError(event)
        return event

    assert handler("returns") == "returns"
    with pytest.raises(RuntimeError):
        handler("fails")
    assert [e["event"] for e in collector.events] == ["returns", "fails"]


def test_flush_after_works_on_a_coroutine_function(client, collector):
    @flush_after
    async def handler() -> None:
        client.track(user_id="u", event="async")

    asyncio.run(handler())
    assert [e["event"] for e in collector.events] == ["async"]


# -- ASGI --------------------------------------------------------------------------------------


class Server:
    """Plays an ASGI server's side of one connection: what it sends, and what it got back."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        self.inbox = collections.deque(messages)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        return self.inbox.popleft()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


LIFESPAN = ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"})


async def django_like(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An ASGI app with no lifespan support: it refuses the scope at once, as Django's does."""
    if scope["type"] != "http":
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")


def test_an_app_without_lifespan_gets_one_and_the_shutdown_delivers_what_is_queued(
    client, collector
):
    # Regression: under uvicorn, SIGTERM is raised again after the graceful shutdown with its
    # default action; atexit never runs, and 5 of 200 events were lost.
    client.track(user_id="u", event="queued before shutdown")
    server = Server(*LIFESPAN)
    asyncio.run(AsgiMiddleware(django_like)({"type": "lifespan"}, server.receive, server.send))
    assert [m["type"] for m in server.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert [e["event"] for e in collector.events] == ["queued before shutdown"]


def test_an_apps_own_lifespan_runs_and_the_flush_comes_before_its_shutdown_completes(
    client, collector
):
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                client.track(user_id="u", event="logged during shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                seen.append(f"delivered: {len(collector.events)}")
                return

    server = Server(*LIFESPAN)
    asyncio.run(AsgiMiddleware(app)({"type": "lifespan"}, server.receive, server.send))
    assert seen == ["lifespan.startup", "lifespan.shutdown", "delivered: 1"]


def test_identify_binds_each_requests_ids(client):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        client.track(event="Viewed")

    def identify(scope: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": dict(scope["headers"]).get(b"x-user", b"").decode() or None}

    middleware = AsgiMiddleware(app, identify=identify)
    with capture_events() as events:
        for user in (b"u-1", b"u-2"):
            scope = {"type": "http", "headers": [(b"x-user", user)]}
            asyncio.run(middleware(scope, Server().receive, Server().send))
    assert [e["userId"] for e in events] == ["u-1", "u-2"]


# -- Django ------------------------------------------------------------------------------------


class User:
    def __init__(self, pk: Any, is_authenticated: bool) -> None:
        self.pk, self.is_authenticated = pk, is_authenticated


class Request:
    def __init__(self, user: Any) -> None:
        self.user = user


def test_the_django_middleware_binds_the_signed_in_user_only(client):
    outcomes = Outcomes()

    def view(request: Request) -> dict[str, Any]:
        return client.track(event="Viewed", callback=outcomes)

    middleware = DjangoMiddleware(view)
    signed_in = middleware(Request(User(42, True)))
    anonymous = middleware(Request(User(None, False)))
    assert signed_in["userId"] == "42"
    assert "userId" not in anonymous and anonymous["anonymousId"]
