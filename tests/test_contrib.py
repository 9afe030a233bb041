"""The integrations: flush_all and flush_after, and the ASGI and Django middlewares.

The ASGI middleware is driven here by hand, message by message, as a server would; the real
servers (uvicorn, gunicorn, uWSGI) run in ``tests/deploy``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Iterator
from typing import Any, Optional

import pytest
from helpers import run_python, transport_threads, wait_until

from htevents_logging import HtEvents, bind, flush_after, flush_all
from htevents_logging._diagnostics import reset_warning_limits
from htevents_logging._transport import registry
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


# -- identity resolved when an event is logged (what both middlewares bind) -------------------


def test_a_resolver_is_read_when_each_message_is_built_and_nests_with_bind(client):
    from htevents_logging._identity import bind_resolver

    who: dict[str, Any] = {}
    with capture_events() as events, bind(user_id="outer", context={"ip": "203.0.113.5"}):
        with bind_resolver(lambda: who or None):
            client.track(event="Nobody yet")  # the resolver knows nobody: the outer bind
            who.update(user_id="late", context={"locale": "fr"})
            client.track(event="Known now")
            with bind(anonymous_id="inner", context={"page": "cart"}):
                client.track(event="Inside an inner bind")
        client.track(event="After the block")
    nobody, known, inner, after = events
    assert nobody["userId"] == "outer"
    assert (known["userId"], known["context"]["locale"]) == ("late", "fr")
    assert known["context"]["ip"] == "203.0.113.5"
    assert (inner["userId"], inner["anonymousId"], inner["context"]["page"]) == (
        "late",
        "inner",
        "cart",
    )
    assert inner["context"]["locale"] == "fr"
    assert (after["userId"], after["context"].get("locale")) == ("outer", None)


def test_the_logging_handler_reads_a_resolver_on_the_logging_thread(client):
    from htevents_logging import HtEventsHandler
    from htevents_logging._identity import bind_resolver

    threads: list[str] = []

    def resolver() -> dict[str, Any]:
        threads.append(threading.current_thread().name)
        return {"user_id": "u-log"}

    logger = logging.getLogger("contrib.resolver")
    handler = HtEventsHandler(client=client)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with capture_events() as events, bind_resolver(resolver):
            logger.warning("Order completed", extra={"htevent": {}})
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert [e["userId"] for e in events] == ["u-log"]
    assert threads == [threading.current_thread().name]


def test_a_resolver_that_logs_an_event_does_not_call_itself_again(client):
    from htevents_logging._identity import bind_resolver

    calls: list[int] = []

    def resolver() -> dict[str, Any]:
        calls.append(1)
        client.track(event="Logged by the resolver")  # built with the identity around it
        return {"user_id": "resolved"}

    with capture_events() as events, bind_resolver(resolver):
        client.track(event="Logged by the app")
    assert {e["event"]: e.get("userId") for e in events} == {
        "Logged by the resolver": None,
        "Logged by the app": "resolved",
    }
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("returned", "why"),
    [
        (["u"], "must return a mapping or None, not list"),
        ({"userId": "u"}, "it returned 'userId'; it may return user_id, anonymous_id, context"),
        ({"user_id": ["u"]}, "user_id must be a str, a number or a UUID"),
    ],
)
def test_a_resolver_returning_nonsense_is_reported_and_the_event_still_goes(
    client, caplog, returned, why
):
    from htevents_logging._identity import bind_resolver

    reset_warning_limits()
    warnings = caplog.at_level(logging.WARNING, "htevents_logging")
    with warnings, capture_events() as events, bind_resolver(lambda: returned):
        client.track(event="Viewed")
    [event] = events
    assert "userId" not in event and event["anonymousId"]
    assert why in caplog.text


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


def test_identify_sees_the_user_an_inner_authentication_puts_into_the_scope(client):
    # Starlette's AuthenticationMiddleware inside this one sets scope["user"]: identify is
    # called when the event is logged, so it sees it; a request that logs nothing never calls it.
    calls: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        client.track(event="Before authentication")
        scope["user"] = scope["path"].strip("/")
        client.track(event="After authentication")

    async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
        pass

    def identify(scope: dict[str, Any]) -> Optional[dict[str, Any]]:
        calls.append(scope["path"])
        return {"user_id": scope["user"]} if "user" in scope else None

    with capture_events() as events:
        asyncio.run(
            AsgiMiddleware(app, identify=identify)(
                {"type": "http", "path": "/ann"}, Server().receive, Server().send
            )
        )
        asyncio.run(
            AsgiMiddleware(silent, identify=identify)(
                {"type": "http", "path": "/bob"}, Server().receive, Server().send
            )
        )
    before, after = events
    assert "userId" not in before and before["anonymousId"]
    assert after["userId"] == "ann"
    assert calls == ["/ann", "/ann"]


def test_a_failing_identify_costs_the_event_its_user_not_the_request(client, caplog):
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        client.track(event="Viewed")
        await send({"type": "http.response.start", "status": 200})

    def identify(scope: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("x-user")

    server = Server()
    reset_warning_limits()
    warnings = caplog.at_level(logging.WARNING, "htevents_logging")
    with capture_events() as events, warnings, bind(user_id="outer"):
        asyncio.run(
            AsgiMiddleware(app, identify=identify)({"type": "http"}, server.receive, server.send)
        )
    assert [m["type"] for m in server.sent] == ["http.response.start"]
    assert [e["userId"] for e in events] == ["outer"]  # the identity bound around it
    assert "the identity resolver" in caplog.text and "KeyError" in caplog.text


def test_identify_must_be_callable():
    with pytest.raises(TypeError, match=r"identify=\.\.\.\) takes a function of the scope"):
        AsgiMiddleware(django_like, identify={"user_id": "u"})  # type: ignore[arg-type]


def test_the_lifespan_shutdown_closes_every_transport(client, collector):
    client.track(user_id="u", event="queued before shutdown")
    [thread] = transport_threads()
    server = Server(*LIFESPAN)
    asyncio.run(AsgiMiddleware(django_like)({"type": "lifespan"}, server.receive, server.send))
    assert [e["event"] for e in collector.events] == ["queued before shutdown"]
    assert wait_until(lambda: not thread.is_alive(), 5), "the transport thread still runs"
    assert registry.flush_all(0) is True and not registry._transports
    client.track(user_id="u", event="after the shutdown")
    assert client.stats()["dropped_by_reason"] == {"after_close": 1}


def test_close_at_shutdown_false_only_flushes(client, collector):
    client.track(user_id="u", event="queued before shutdown")
    [thread] = transport_threads()
    server = Server(*LIFESPAN)
    middleware = AsgiMiddleware(django_like, close_at_shutdown=False)
    asyncio.run(middleware({"type": "lifespan"}, server.receive, server.send))
    assert [e["event"] for e in collector.events] == ["queued before shutdown"]
    assert thread.is_alive()
    client.track(user_id="u", event="after the shutdown")
    assert client.flush(5)
    assert [e["event"] for e in collector.events][-1] == "after the shutdown"


# -- Django ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_settings() -> Iterator[Any]:
    """Django configured in this process (the real project runs in ``tests/deploy``)."""
    pytest.importorskip("django")
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
            DATABASES={},
            USE_TZ=True,
        )
        django.setup()
    yield settings


@pytest.fixture
def htevents_setting(django_settings: Any) -> Iterator[Any]:
    """``htevents_setting(**HTEVENTS)``: a middleware factory under that setting."""
    from django.test import override_settings

    overrides: list[Any] = []

    def configure(**setting: Any) -> None:
        override = override_settings(HTEVENTS=setting)
        override.enable()
        overrides.append(override)

    yield configure
    for override in reversed(overrides):
        override.disable()


class User:
    """Django's user interface, as far as the middleware reads it (no database)."""

    def __init__(self, pk: Any, is_authenticated: bool = True, email: str = "") -> None:
        self.pk, self.is_authenticated, self.email = pk, is_authenticated, email
        self.profile = collections.namedtuple("Profile", "external_id")(f"ext-{pk}")

    def get_username(self) -> str:
        return f"name-{self.pk}"


def request_for(
    user: Any = None, cookies: Optional[dict[str, str]] = None, session: Any = None
) -> Any:
    from django.test import RequestFactory

    request = RequestFactory().get("/", headers={})
    if cookies:
        request.COOKIES.update(cookies)
    if user is not None:
        request.user = user
    if session is not None:
        request.session = session
    return request


def tracking(client: HtEvents) -> Any:
    def view(request: Any) -> dict[str, Any]:
        return client.track(event="Viewed")

    return view


def test_the_django_middleware_binds_the_signed_in_user_only(client, django_settings):
    from django.contrib.auth.models import AnonymousUser

    middleware = DjangoMiddleware(tracking(client))
    signed_in = middleware(request_for(User(42)))
    anonymous = middleware(request_for(AnonymousUser()))
    no_user = middleware(request_for())
    assert signed_in["userId"] == "42"
    assert "userId" not in anonymous and anonymous["anonymousId"]
    assert "userId" not in no_user


@pytest.mark.parametrize(
    ("attribute", "expected"),
    [("email", "ann@example.com"), ("profile.external_id", "ext-7"), ("get_username", "name-7")],
)
def test_the_user_id_attribute_setting(client, htevents_setting, attribute, expected):
    htevents_setting(USER_ID_ATTRIBUTE=attribute)
    middleware = DjangoMiddleware(tracking(client))
    assert middleware(request_for(User(7, email="ann@example.com")))["userId"] == expected


def test_an_anonymous_id_from_a_cookie_or_the_session(client, htevents_setting):
    from django.contrib.auth.models import AnonymousUser

    htevents_setting(ANONYMOUS_ID_COOKIE="ajs_anonymous_id", ANONYMOUS_ID_SESSION_KEY="anon")
    middleware = DjangoMiddleware(tracking(client))
    # analytics.js keeps it as URL-encoded JSON.
    from_cookie = middleware(request_for(AnonymousUser(), {"ajs_anonymous_id": "%22a-1%22"}))
    from_session = middleware(request_for(AnonymousUser(), session={"anon": "a-2"}))
    signed_in = middleware(request_for(User(3), {"ajs_anonymous_id": "a-3"}))
    assert (from_cookie.get("userId"), from_cookie["anonymousId"]) == (None, "a-1")
    assert (from_session.get("userId"), from_session["anonymousId"]) == (None, "a-2")
    assert (signed_in["userId"], signed_in["anonymousId"]) == ("3", "a-3")


def test_a_bad_htevents_setting_stops_startup_naming_the_key(htevents_setting):
    from django.core.exceptions import ImproperlyConfigured

    htevents_setting(USER_ID="email")
    with pytest.raises(
        ImproperlyConfigured, match=r"unknown key 'USER_ID'; the keys are USER_ID_ATTRIBUTE"
    ):
        DjangoMiddleware(lambda request: None)


def test_a_user_set_after_the_middleware_ran_is_the_one_events_carry(client, django_settings):
    # What Django REST framework's authentication does inside the view.
    from django.contrib.auth.models import AnonymousUser

    def view(request: Any) -> list[dict[str, Any]]:
        before = client.track(event="Before authentication")
        request.user = User("token-user")
        with bind(context={"page": "api"}):  # a bind() in the view still works, under it
            after = client.track(event="After authentication")
        return [before, after]

    before, after = DjangoMiddleware(view)(request_for(AnonymousUser()))
    assert "userId" not in before
    assert after["userId"] == "token-user"
    assert after["context"]["page"] == "api"


def test_drf_authentication_inside_the_view(client, django_settings):
    pytest.importorskip("rest_framework", reason="Django REST framework is not installed")
    from django.contrib.auth.models import AnonymousUser
    from rest_framework.authentication import BaseAuthentication
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class HeaderAuthentication(BaseAuthentication):
        def authenticate(self, request: Any) -> Optional[tuple[Any, None]]:
            user = request.META.get("HTTP_X_USER")
            return (User(user), None) if user else None

    sent: list[dict[str, Any]] = []

    class Orders(APIView):
        authentication_classes = (HeaderAuthentication,)
        permission_classes = ()

        def get(self, request: Any) -> Any:
            sent.append(client.track(event="Order viewed"))
            return Response({"ok": True})

    from django.test import RequestFactory

    middleware = DjangoMiddleware(Orders.as_view())
    request = RequestFactory().get("/orders", HTTP_X_USER="u-drf")
    request.user = AnonymousUser()  # what AuthenticationMiddleware leaves for a token request
    assert middleware(request).status_code == 200
    assert [e["userId"] for e in sent] == ["u-drf"]


def test_sync_and_async_capable_as_django_sees_it(django_settings):
    from asgiref.sync import iscoroutinefunction

    async def async_view(request: Any) -> None:
        return None

    assert DjangoMiddleware.sync_capable and DjangoMiddleware.async_capable
    sync = DjangoMiddleware(lambda request: None)
    asynchronous = DjangoMiddleware(async_view)
    assert not iscoroutinefunction(sync) and not iscoroutinefunction(sync.process_view)
    assert iscoroutinefunction(asynchronous) and iscoroutinefunction(asynchronous.process_view)


def test_the_async_form_binds_each_request_in_its_own_task(client, django_settings):
    async def view(request: Any) -> dict[str, Any]:
        await asyncio.sleep(0)  # the other request runs in between
        return client.track(event="Viewed")

    middleware = DjangoMiddleware(view)

    async def main() -> list[Any]:
        return await asyncio.gather(*(middleware(request_for(User(n))) for n in (1, 2, 3)))

    assert [m["userId"] for m in asyncio.run(main())] == ["1", "2", "3"]


def lazy_user(user: Any) -> Any:
    """``request.user`` as AuthenticationMiddleware sets it: loaded on first use, by a query
    that Django refuses to run on an event loop."""
    from django.utils.asyncio import async_unsafe
    from django.utils.functional import SimpleLazyObject

    return SimpleLazyObject(async_unsafe(lambda: user))


def test_an_async_view_gets_its_user_loaded_before_it_runs(client, django_settings, caplog):
    async def view(request: Any) -> dict[str, Any]:
        return client.track(event="Viewed")

    async def serve(request: Any, load_first: bool) -> Any:
        middleware = DjangoMiddleware(view)
        if load_first:  # Django calls process_view before the view
            await middleware.process_view(request, view, (), {})
        return await middleware(request)

    reset_warning_limits()
    with caplog.at_level(logging.WARNING, "htevents_logging"):
        unloaded = asyncio.run(serve(request_for(lazy_user(User(5))), load_first=False))
    assert "userId" not in unloaded  # the event loop may not load it: reported, not raised
    assert "SynchronousOnlyOperation" in caplog.text
    assert "resolver HtEventsMiddleware.identity_of failed" in caplog.text
    assert asyncio.run(serve(request_for(lazy_user(User(5))), load_first=True))["userId"] == "5"


def test_a_sync_handler_loads_the_user_for_an_async_view_too(client, django_settings):
    # Under WSGI an async view runs on an event loop in another thread (async_to_sync).
    from asgiref.sync import async_to_sync

    async def view(request: Any) -> dict[str, Any]:
        return client.track(event="Viewed")

    middleware = DjangoMiddleware(lambda request: async_to_sync(view)(request))
    request = request_for(lazy_user(User(6)))
    assert middleware.process_view(request, view, (), {}) is None
    assert middleware(request)["userId"] == "6"


def test_the_middlewares_import_without_django_asgiref_or_starlette():
    # Without asgiref's markcoroutinefunction (Django < 4.2 may have an older asgiref), the
    # Django middleware marks itself as Django 4.1 and earlier did, which they recognise.
    code = """
import asyncio, sys
for name in ("django", "asgiref", "asgiref.sync", "starlette", "fastapi"):
    sys.modules[name] = None
from htevents_logging.contrib import asgi, django
marked = type("Marked", (), {})()
django._markcoroutinefunction(marked)
assert asyncio.iscoroutinefunction(marked), "not marked as a coroutine function"
print("imported")
"""
    done = run_python("-W", "ignore::DeprecationWarning", "-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "imported"
