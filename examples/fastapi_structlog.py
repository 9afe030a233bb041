"""Hightouch Events in a FastAPI app that logs with structlog.

A middleware binds the user with ``structlog.contextvars``; ``merge_contextvars`` puts it into
every event dict, and ``HtEventsProcessor`` takes ``user_id`` from there, so a route only says
what happened: ``log.info("Order completed", htevent={...})``. The processor pops ``htevent``
from the event dict, so the JSON log line does not repeat it.

Try it without a write key or network:

    htevents-logging collect --port 8787                                  # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 uvicorn examples.fastapi_structlog:app
    curl -X POST localhost:8000/orders -H 'X-User-Id: 123' -H 'Content-Type: application/json' \\
         -d '{"orderId": "o-1", "total": 29.99}'

Requires ``pip install fastapi structlog`` (and ``uvicorn`` to serve it).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Callable

import structlog
from fastapi import FastAPI, Request, Response

from htevents_logging import HtEventsProcessor

log = structlog.get_logger("shop")


def configure_structlog() -> HtEventsProcessor:
    """Configure structlog with the Hightouch Events processor; return the processor."""
    processor = HtEventsProcessor(
        write_key=os.environ.get("HT_WRITE_KEY"),
        host=os.environ.get("HT_HOST", "https://us-east-1.hightouch-events.com"),
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,  # before the processor: brings user_id
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            processor,
            structlog.processors.JSONRenderer(),
        ]
    )
    return processor


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    processor = configure_structlog()
    yield
    # Deliver what is still queued before the worker exits (at most shutdown_timeout, 5 s).
    processor.close()


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def bind_user(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Any:
    # In a real app this comes from your authentication; a header keeps the example short.
    user_id = request.headers.get("x-user-id")
    if user_id is None:
        return await call_next(request)
    # Bound for this request only: contextvars follow it across awaits, never into another one.
    with structlog.contextvars.bound_contextvars(user_id=user_id):
        return await call_next(request)


@app.post("/orders", status_code=201)
async def create_order(order: dict[str, Any]) -> dict[str, Any]:
    log.info(
        "Order completed",
        htevent={"properties": {"orderId": order["orderId"], "total": order["total"]}},
    )
    return {"status": "created", "orderId": order["orderId"]}
