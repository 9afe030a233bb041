"""Hightouch Events in a Django project: the ``LOGGING`` setting, and identity per request.

Copy ``LOGGING`` into your ``settings.py`` (Django hands it to ``logging.config.dictConfig``) and
the middleware into your project. Then, anywhere in your code::

    logger = logging.getLogger(__name__)
    logger.info("Order completed", extra={"htevent": {"properties": {"total": 29.99}}})

Inside a request the middleware has bound the signed-in user, so the event carries their
``userId`` without the view passing it.

This file also runs on its own, with no Django installed, to show the dict is valid:

    htevents-logging collect --port 8787                                 # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/django_settings.py
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from htevents_logging import bind

# ---------------------------------------------------------------------------------------------
# settings.py

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "{levelname} {name}: {message}", "style": "{"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        # Only records logged with extra={"htevent": {...}} become events. Every other record
        # (Django's own included) is dismissed at almost no cost, so the handler can sit on
        # the root logger.
        "htevents": {
            "class": "htevents_logging.HtEventsHandler",
            # Keep the key out of settings.py: read it from the environment. (Leaving it out
            # reads HT_WRITE_KEY too; a missing key stops startup with a message saying so.)
            "write_key": os.environ.get("HT_WRITE_KEY"),
            "host": os.environ.get("HT_HOST", "https://us-east-1.hightouch-events.com"),
            # Any other HtEvents setting, for example:
            "flush_interval": 5.0,  # send at least every 5 s (default 10)
            "shutdown_timeout": 5.0,  # at exit, wait at most 5 s for delivery
            # Or share a client you already have instead of the settings above:
            # "client": "ext://myproject.events.htevents",
        },
    },
    "root": {"handlers": ["console", "htevents"], "level": "INFO"},
    "loggers": {
        # Django's loggers propagate to the root: their records print, and are never events.
        "django": {"level": "INFO"},
    },
}

# MIDDLEWARE = [
#     ...
#     "django.contrib.auth.middleware.AuthenticationMiddleware",
#     "myproject.middleware.htevents_identity",   # after AuthenticationMiddleware
#     ...
# ]

# ---------------------------------------------------------------------------------------------
# myproject/middleware.py


def htevents_identity(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Django middleware: events logged while handling a request carry the signed-in user.

    The binding is a ``contextvars`` one: it ends with the request and never leaks into the
    next request served by the same thread.
    """

    def middleware(request: Any) -> Any:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            with bind(user_id=str(user.pk)):
                return get_response(request)
        return get_response(request)

    return middleware


# ---------------------------------------------------------------------------------------------
# Running this file: check the dict is valid and send one event, without Django.

if __name__ == "__main__":
    import logging.config

    logging.config.dictConfig(LOGGING)
    logging.getLogger("myproject.orders").info(
        "Order completed",
        extra={"htevent": {"userId": "123", "properties": {"orderId": "o-1", "total": 29.99}}},
    )
    # logging.shutdown() runs at exit and delivers the event.
