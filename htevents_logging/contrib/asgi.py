"""ASGI middleware: the identity of each request, and delivery at shutdown.

Wrap any ASGI app (Starlette, FastAPI, Django's ``get_asgi_application()``)::

    from htevents_logging.contrib.asgi import HtEventsMiddleware

    def user_of(scope):
        user = scope.get("user")  # set by Starlette's AuthenticationMiddleware
        if user is None or not user.is_authenticated:
            return None
        return {"user_id": user.identity}

    app = HtEventsMiddleware(app, identify=user_of)
    # Starlette, FastAPI: app.add_middleware(HtEventsMiddleware, identify=user_of)

Two things happen:

- ``identify(scope)``, if given, returns a mapping with ``user_id`` and/or ``anonymous_id``
  (or ``None``); events logged while that request (HTTP or WebSocket) is handled carry them,
  as with ``bind()``. It is called when an event is logged, on the thread that logs it, so it
  sees what the app has put into the scope by then (an authentication middleware inside
  this one, ``request.state``); a request that logs nothing never calls it.
- At the server's lifespan shutdown, what every client has queued is delivered and every
  transport closed (``shutdown_timeout`` bounds it) before the server is told shutdown is
  complete. uvicorn, after a graceful shutdown on SIGTERM, raises SIGTERM again with its
  default action, so ``atexit`` never runs: this is where the last events are sent. An app
  that has no lifespan support of its own (Django's) gets a minimal one from the middleware.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Mapping, MutableMapping
from typing import Any, Callable, Optional

from .._diagnostics import log
from .._flushing import flush_all, off_the_loop
from .._identity import bind_resolver
from .._lifecycle import notice_fork
from .._transport import registry

__all__ = ["HtEventsMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Identify = Callable[[Scope], Optional[Mapping[str, Any]]]

#: The connections that are a request someone made (and so have a user).
_REQUESTS = frozenset({"http", "websocket"})


class HtEventsMiddleware:
    """Bind each request's identity (``identify(scope)``), and at the lifespan shutdown
    deliver what every client queued and close the transports, within ``shutdown_timeout``
    seconds (default: the largest ``shutdown_timeout`` setting).

    ``close_at_shutdown=False`` only flushes: for an app whose lifespan runs more than once
    in one process (a test suite entering ``TestClient(app)`` again and again), where a
    closed client would drop what is logged after the first shutdown.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        identify: Optional[Identify] = None,
        shutdown_timeout: Optional[float] = None,
        close_at_shutdown: bool = True,
    ) -> None:
        if identify is not None and not callable(identify):
            raise TypeError(
                "HtEventsMiddleware(identify=...) takes a function of the scope, "
                f"not {type(identify).__name__}"
            )
        self.app = app
        self.identify = identify
        self.shutdown_timeout = shutdown_timeout
        self.close_at_shutdown = close_at_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: a request (with its identity bound) or the lifespan."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif self.identify is None or kind not in _REQUESTS:
            await self.app(scope, receive, send)
        else:
            with bind_resolver(functools.partial(self.identify, scope)):
                await self.app(scope, receive, send)

    def _deliver(self) -> None:
        """Flush every client, and close every transport unless told not to (blocking)."""
        notice_fork()
        if not self.close_at_shutdown:
            flush_all(self.shutdown_timeout)
            return
        left = registry.close_all(self.shutdown_timeout)
        if left:
            log(
                logging.WARNING,
                "htevents-logging: %d message(s) were not delivered at the lifespan shutdown "
                "(the server was slow or down); raise shutdown_timeout, or configure "
                "spool_path to keep them",
                left,
            )

    async def _shutdown(self) -> None:
        """Deliver and close, off the event loop."""
        await off_the_loop(self._deliver)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan to the app, delivering before its shutdown is reported complete;
        serve a minimal lifespan for an app that has none (it raises at once, as Django's)."""
        started = False

        async def receiving() -> Message:
            nonlocal started
            started = True
            return await receive()

        async def sending(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._shutdown()
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        except Exception:
            if started:
                raise
            await self._serve_lifespan(receive, send)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        """The lifespan protocol for an app without one: nothing at startup, deliver at
        shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
