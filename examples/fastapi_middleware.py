"""Hightouch Events from FastAPI (any ASGI app) with ``contrib.asgi.HtEventsMiddleware``.

``identify(scope)`` says who a request is about; it is called when an event is logged, so it
sees what the app put into the scope by then (here a header, in real apps Starlette's
``AuthenticationMiddleware``'s ``scope["user"]``). At the lifespan shutdown the middleware
delivers what is queued and closes the transports: uvicorn never runs ``atexit`` after SIGTERM.

Try it without a write key or network:

    htevents-logging collect --port 8787                                   # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 uvicorn examples.fastapi_middleware:app
    curl -X POST localhost:8000/orders -H 'X-User-Id: 123' -H 'Content-Type: application/json' \\
         -d '{"total": 29.99}'

Requires ``pip install fastapi uvicorn``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Optional

from fastapi import FastAPI

from htevents_logging import HtEventsHandler
from htevents_logging.contrib.asgi import HtEventsMiddleware

logger = logging.getLogger("shop")
logger.setLevel(logging.INFO)
logger.addHandler(HtEventsHandler())  # write key and host from HT_WRITE_KEY / HT_HOST


def user_of(scope: Mapping[str, Any]) -> Optional[dict[str, str]]:
    """The request's user, from its ``X-User-Id`` header (``None`` for an anonymous one)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-user-id":
            return {"user_id": value.decode("latin-1")}
    return None


app = FastAPI()
app.add_middleware(HtEventsMiddleware, identify=user_of)


@app.post("/orders")
async def create_order(order: dict[str, Any]) -> dict[str, str]:
    """No user is passed: the middleware's ``identify`` supplies it."""
    logger.info("Order completed", extra={"htevent": {"properties": order}})
    return {"status": "ok"}
