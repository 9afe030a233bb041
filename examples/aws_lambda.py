"""Hightouch Events from AWS Lambda (or Cloud Run, Cloud Functions): nothing lost at the freeze.

A serverless platform freezes the process as soon as the handler returns, and later kills it
without running ``atexit``, so events still queued for the background thread would be lost.
Two ways prevent it; this file shows both:

- ``@flush_after`` on the handler: events are batched by the background thread as usual, and
  delivered before the handler returns (one request for the whole invocation). The default.
- ``sync_mode=True``: each call is sent before it returns, with no thread at all. For a
  platform that forbids threads, or for code that must know each event's outcome at once.

Try it without a write key or network:

    htevents-logging collect --port 8787                                   # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/aws_lambda.py

Deployed, set ``HT_WRITE_KEY`` in the function's environment and point the runtime at
``aws_lambda.handler`` (or ``aws_lambda.sync_handler``).
"""

from __future__ import annotations

import logging
from typing import Any

from htevents_logging import HtEvents, HtEventsHandler, flush_after

# Made once per container, at import (the cold start), and reused by every invocation.
logger = logging.getLogger("orders")
logger.setLevel(logging.INFO)
logger.addHandler(HtEventsHandler())  # write key and host from HT_WRITE_KEY / HT_HOST

# The same, sending on the calling thread.
sync_events = HtEvents(sync_mode=True)


@flush_after
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Log one event per order; ``flush_after`` delivers them all before returning."""
    for order in event["orders"]:
        logger.info(
            "Order completed",
            extra={"htevent": {"userId": event["user"], "properties": order}},
        )
    return {"statusCode": 200}


def sync_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Send each event before going on; the callback has run when ``track`` returns."""
    outcomes: list[str] = []
    for order in event["orders"]:
        sync_events.track(
            user_id=event["user"],
            event="Order completed",
            properties=order,
            callback=lambda error, message: outcomes.append("sent" if error is None else "failed"),
        )
    return {"statusCode": 200, "outcomes": outcomes}


if __name__ == "__main__":
    orders = {"user": "123", "orders": [{"orderId": "o-1", "total": 29.99}]}
    print(handler(orders, None))
    print(sync_handler({"user": "456", "orders": [{"orderId": "o-2", "total": 5.0}]}, None))
