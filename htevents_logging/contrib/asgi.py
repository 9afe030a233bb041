"""ASGI middleware: the identity of each request, and delivery at shutdown.

Wrap any ASGI app (Starlette, FastAPI, Django's ``get_asgi_application()``)::

    from htevents_logging.contrib.asgi import HtEventsMiddleware

    application = HtEventsMiddleware(get_asgi_application(), identify=user_of_request)

Two things happen:

- ``identify(scope)``, if given, returns a mapping with ``user_id`` and/or ``anonymous_id``;
  events logged while that request is handled carry them (as with ``bind()``).
- At the server's lifespan shutdown, what every client has queued is delivered (``flush_all``)
  before the server is told shutdown is complete. uvicorn, after a graceful shutdown on
  SIGTERM, raises SIGTERM again with its default action, so ``atexit`` never runs: this is
  where the last events are sent. An app that has no lifespan support of its own (Django's)
  gets a minimal one from the middleware.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, MutableMapping
from typing import Any, Callable, Optional

from .._flushing import flush_all, off_the_loop
from .._identity import bind

__all__ = ["HtEventsMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Identify = Callable[[Scope], Optional[Mapping[str, Any]]]


class HtEventsMiddleware:
    """Bind each request's identity (``identify``), and deliver what is queued at the
    lifespan shutdown, within ``flush_timeout`` seconds (default: ``shutdown_timeout``)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        identify: Optional[Identify] = None,
        flush_timeout: Optional[float] = None,
    ) -> None:
        self.app = app
        self.identify = identify
        self.flush_timeout = flush_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: a request (with its identity bound) or the lifespan."""
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        ids = (
            self.identify(scope)
            if self.identify is not None and scope["type"] != "lifespan"
            else None
        )
        if not ids:
            await self.app(scope, receive, send)
            return
        with bind(user_id=ids.get("user_id"), anonymous_id=ids.get("anonymous_id")):
            await self.app(scope, receive, send)

    async def _flush(self) -> None:
        """Deliver everything queued, off the event loop."""
        await off_the_loop(flush_all, self.flush_timeout)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the lifespan to the app, flushing before its shutdown is reported complete;
        serve a minimal lifespan for an app that has none (it raises at once, as Django's)."""
        started = False

        async def receiving() -> Message:
            nonlocal started
            started = True
            return await receive()

        async def sending(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._flush()
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        except Exception:
            if started:
                raise
            await self._serve_lifespan(receive, send)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        """The lifespan protocol for an app without one: nothing at startup, flush at
        shutdown."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._flush()
                await send({"type": "lifespan.shutdown.complete"})
                return
