"""Django middleware: events logged while a request is handled carry the signed-in user.

Add it to ``MIDDLEWARE`` (conventionally right after ``AuthenticationMiddleware``)::

    MIDDLEWARE = [
        ...,
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "htevents_logging.contrib.django.HtEventsMiddleware",
    ]

    # Optional; these are the defaults.
    HTEVENTS = {
        "USER_ID_ATTRIBUTE": "pk",          # what of request.user is the userId ("email", ...)
        "ANONYMOUS_ID_COOKIE": None,        # a cookie holding the anonymousId
        "ANONYMOUS_ID_SESSION_KEY": None,   # or a key of request.session holding it
    }

Who the request is about is read when an event is logged, not when the middleware runs: a
user authenticated later is seen, as Django REST framework's token authentication is (it
authenticates inside the view, and sets ``request.user`` then). The binding is a
``contextvars`` one (see ``bind()``): it ends with the request and never leaks into the next
one the same thread or event loop serves. A view's own ``userId``, or a ``bind()`` in it, wins.

The middleware is sync and async capable: under WSGI and under ASGI it adds no thread switch
of its own. For an ``async def`` view, the user and session are loaded before the view runs
(in a worker thread under ASGI, as Django does for any synchronous work), since an event
loop may not query the database.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Callable, Optional
from urllib.parse import unquote

from .._identity import bind_resolver

__all__ = ["HtEventsMiddleware"]

#: The Django setting that configures the middleware, and its keys with their defaults.
SETTING = "HTEVENTS"
DEFAULTS: Mapping[str, Optional[str]] = {
    "USER_ID_ATTRIBUTE": "pk",
    "ANONYMOUS_ID_COOKIE": None,
    "ANONYMOUS_ID_SESSION_KEY": None,
}


def _coroutine_tools() -> tuple[Callable[[Any], bool], Callable[[Any], Any]]:
    """``iscoroutinefunction`` and ``markcoroutinefunction`` as Django uses them: asgiref's
    (3.6+, which Django 4.2+ requires), else the standard library's equivalents (what Django
    4.1 and earlier did by hand), so that the mark means the same to any Django."""
    try:
        sync = importlib.import_module("asgiref.sync")
        return sync.iscoroutinefunction, sync.markcoroutinefunction
    except (ImportError, AttributeError):
        pass
    import asyncio

    def mark(function: Any) -> Any:
        marker = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
        if marker is not None:
            return marker(function)
        function._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
        return function

    return asyncio.iscoroutinefunction, mark


_iscoroutinefunction, _markcoroutinefunction = _coroutine_tools()


def _settings() -> dict[str, Optional[str]]:
    """The ``HTEVENTS`` setting over the defaults; a mistake in it stops startup, naming it."""
    django_settings = importlib.import_module("django.conf").settings
    improperly_configured = importlib.import_module("django.core.exceptions").ImproperlyConfigured
    given = getattr(django_settings, SETTING, None) or {}
    if not isinstance(given, Mapping):
        raise improperly_configured(f"{SETTING} must be a dict, not {type(given).__name__}")
    chosen = dict(DEFAULTS)
    for key, value in given.items():
        if key not in DEFAULTS:
            raise improperly_configured(
                f"{SETTING} has an unknown key {key!r}; the keys are {', '.join(DEFAULTS)}"
            )
        if value is not None and (not isinstance(value, str) or not value):
            raise improperly_configured(
                f"{SETTING}[{key!r}] must be a non-empty str or None, not {value!r}"
            )
        chosen[key] = value
    if not chosen["USER_ID_ATTRIBUTE"]:
        raise improperly_configured(f"{SETTING}['USER_ID_ATTRIBUTE'] cannot be None")
    return chosen


def _cookie_text(value: str) -> Optional[str]:
    """An anonymous id as a cookie carries it: analytics.js (Segment's, and the browser SDKs
    derived from it) stores it as a URL-encoded JSON string, ``%22abc%22``."""
    value = unquote(value)
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value or None


class HtEventsMiddleware:
    """Bind the request's user (``request.user``'s ``pk``, or the attribute
    ``HTEVENTS["USER_ID_ATTRIBUTE"]`` names, when the user is authenticated) and its
    anonymous id (from the cookie ``HTEVENTS["ANONYMOUS_ID_COOKIE"]`` or the session key
    ``HTEVENTS["ANONYMOUS_ID_SESSION_KEY"]``, when one is set) as the ``userId`` and
    ``anonymousId`` of the events logged while the request is handled.

    Both are read each time an event is logged, so a user authenticated after the middleware
    ran (Django REST framework's ``TokenAuthentication``) is the one the event carries. A
    request with neither an authenticated user nor an anonymous id binds nothing: such an
    event gets a fresh ``anonymousId``, as everywhere.
    """

    sync_capable = True
    async_capable = True

    #: Django's view hook; set per instance to the sync or the async form (see ``__init__``).
    process_view: Callable[..., Any]

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        settings = _settings()
        self.user_id_path: tuple[str, ...] = tuple(str(settings["USER_ID_ATTRIBUTE"]).split("."))
        self.anonymous_id_cookie = settings["ANONYMOUS_ID_COOKIE"]
        self.anonymous_id_session_key = settings["ANONYMOUS_ID_SESSION_KEY"]
        # Django calls this in async mode when what it wraps is async (ASGI), as its own
        # MiddlewareMixin does: mark the instance, and switch in __call__.
        self.async_mode: bool = _iscoroutinefunction(get_response)
        if self.async_mode:
            _markcoroutinefunction(self)
            self.process_view = self._process_view_async
        else:
            self.process_view = self._process_view_sync

    def __repr__(self) -> str:
        mode = "async" if self.async_mode else "sync"
        return f"<{type(self).__name__} {mode} user_id={'.'.join(self.user_id_path)!r}>"

    def __call__(self, request: Any) -> Any:
        """Handle the request with its identity bound (the async form under ASGI)."""
        if self.async_mode:
            return self.__acall__(request)
        with bind_resolver(functools.partial(self.identity_of, request)):
            return self.get_response(request)

    async def __acall__(self, request: Any) -> Any:
        """The async form of :meth:`__call__`."""
        with bind_resolver(functools.partial(self.identity_of, request)):
            return await self.get_response(request)

    def identity_of(self, request: Any) -> Optional[dict[str, Any]]:
        """The ids of ``request`` now: ``user_id`` when its user is authenticated, and
        ``anonymous_id`` when one is configured and found; ``None`` when neither is."""
        ids: dict[str, Any] = {}
        user = getattr(request, "user", None)
        if user is not None and getattr(user, "is_authenticated", False):
            user_id = self._user_id(user)
            if user_id is not None:
                ids["user_id"] = user_id
        anonymous_id = self._anonymous_id(request)
        if anonymous_id is not None:
            ids["anonymous_id"] = anonymous_id
        return ids or None

    def _user_id(self, user: Any) -> Any:
        """The configured attribute of ``user`` (a dotted path; a method is called)."""
        value = user
        for name in self.user_id_path:
            value = getattr(value, name)
            if value is None:
                return None
        return value() if callable(value) else value

    def _anonymous_id(self, request: Any) -> Optional[str]:
        """The anonymous id from the configured cookie, else from the session."""
        if self.anonymous_id_cookie is not None:
            cookie = request.COOKIES.get(self.anonymous_id_cookie)
            if cookie:
                return _cookie_text(cookie)
        if self.anonymous_id_session_key is not None:
            session = getattr(request, "session", None)
            if session is not None:
                value = session.get(self.anonymous_id_session_key)
                return str(value) if value else None
        return None

    def _load(self, request: Any) -> None:
        """Load the user and the session now (a database query, perhaps): an event logged on
        an event loop then reads them without querying. A failure here is the view's to
        meet, and the resolver's to report."""
        try:
            self.identity_of(request)
        except Exception:
            pass

    def _process_view_sync(self, request: Any, view: Any, args: Any, kwargs: Any) -> Optional[Any]:
        """Before an ``async def`` view (run on an event loop): load the user."""
        if _iscoroutinefunction(view):
            self._load(request)
        return None

    async def _process_view_async(
        self, request: Any, view: Any, args: Any, kwargs: Any
    ) -> Optional[Any]:
        """Before an ``async def`` view under ASGI: load the user in a worker thread (a sync
        view runs in one already, and reads it there when it logs)."""
        if _iscoroutinefunction(view):
            sync_to_async = importlib.import_module("asgiref.sync").sync_to_async
            await sync_to_async(self._load, thread_sensitive=True)(request)
        return None
