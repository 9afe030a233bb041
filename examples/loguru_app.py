"""Hightouch Events from loguru: a sink beside your other sinks.

``logger.bind(htevent={...})`` or ``htevent={...}`` on the call carries the event; the log
message is the event's name, the record's time its timestamp, and ``logger.contextualize(
user_id=...)`` says who it is about. Records without ``htevent`` are only log lines.

Try it without a write key or network:

    htevents-logging collect --port 8787                                   # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/loguru_app.py

Requires ``pip install loguru``.
"""

from __future__ import annotations

import sys

from loguru import logger

from htevents_logging.loguru import HtEventsSink

logger.remove()
logger.add(sys.stderr, format="{time:HH:mm:ss} {level} {message}")
logger.add(HtEventsSink())  # write key and host from HT_WRITE_KEY / HT_HOST


def checkout(user_id: str, total: float) -> None:
    """A request handler: everything logged inside is about ``user_id``."""
    with logger.contextualize(user_id=user_id):
        logger.info("Cart viewed")  # a log line, not an event
        logger.info("Order completed", htevent={"properties": {"total": total}})
        logger.bind(htevent={"type": "identify", "traits": {"plan": "pro"}}).info("Plan chosen")


if __name__ == "__main__":
    checkout("123", 29.99)
    logger.remove()  # closes the sink: what is queued is delivered now
