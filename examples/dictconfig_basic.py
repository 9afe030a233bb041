"""Send events through plain stdlib logging, configured with ``logging.config.dictConfig``.

Only records logged with ``extra={"htevent": {...}}`` become events; every other record is
ignored by the handler, so it can sit on the root logger next to your console handler.

Try it without a write key or network: start a local collector in one terminal,

    htevents-logging collect --port 8787

and run this in another:

    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/dictconfig_basic.py
"""

from __future__ import annotations

import logging
import logging.config
import os

LOGGING = {
    "version": 1,
    # Keep the loggers that libraries created before this call working.
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "htevents": {
            "class": "htevents_logging.HtEventsHandler",
            # Any HtEvents setting goes here. Without a write key, HT_WRITE_KEY is read anyway;
            # a missing key fails right here, at startup, with a message saying so.
            "write_key": os.environ.get("HT_WRITE_KEY"),
            "host": os.environ.get("HT_HOST", "https://us-east-1.hightouch-events.com"),
        },
    },
    "root": {"handlers": ["console", "htevents"], "level": "INFO"},
}


def main() -> None:
    logging.config.dictConfig(LOGGING)
    log = logging.getLogger("shop")

    log.info("Server started")  # an ordinary record: printed, not sent

    # A track (the default type); its event name is the log message.
    log.info(
        "Order completed",
        extra={"htevent": {"userId": "123", "properties": {"orderId": "o-1", "total": 29.99}}},
    )
    # Any other type: say so with "type".
    log.info(
        "User signed up",
        extra={"htevent": {"type": "identify", "userId": "123", "traits": {"plan": "pro"}}},
    )
    # Nothing else to do: at exit, logging.shutdown() delivers what is still queued (within the
    # handler's shutdown_timeout, 5 s by default).


if __name__ == "__main__":
    main()
