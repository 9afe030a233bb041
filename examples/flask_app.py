"""Hightouch Events in a Flask app: identity bound per request, events logged from views.

``before_request`` binds the user for the request with :func:`htevents_logging.bind`;
``teardown_request`` unbinds it, on the same thread and in the same context, whatever happened
in between (an exception included). Every event logged while handling the request that names no
user gets the bound ``userId``.

Try it without a write key or network:

    htevents-logging collect --port 8787                                  # one terminal
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/flask_app.py
    curl -X POST localhost:5000/orders -H 'X-User-Id: 123' -H 'Content-Type: application/json' \\
         -d '{"orderId": "o-1", "total": 29.99}'

Requires ``pip install flask``.
"""

from __future__ import annotations

import contextlib
import logging
import logging.config
import os
from typing import Any, Optional

from flask import Flask, g, jsonify, request

from htevents_logging import bind

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler"},
        "htevents": {
            "class": "htevents_logging.HtEventsHandler",
            "write_key": os.environ.get("HT_WRITE_KEY"),
            "host": os.environ.get("HT_HOST", "https://us-east-1.hightouch-events.com"),
        },
    },
    "root": {"handlers": ["console", "htevents"], "level": "INFO"},
}

log = logging.getLogger("shop")


def create_app() -> Flask:
    app = Flask(__name__)

    @app.before_request
    def bind_user() -> None:
        # In a real app this comes from your authentication (flask_login's current_user.id,
        # the session...). A header keeps the example self-contained.
        user_id = request.headers.get("X-User-Id")
        stack = contextlib.ExitStack()
        if user_id:
            stack.enter_context(bind(user_id=user_id, context={"ip": request.remote_addr}))
        g.htevents_identity = stack

    @app.teardown_request
    def unbind_user(error: Optional[BaseException]) -> None:
        stack = g.pop("htevents_identity", None)
        if stack is not None:
            stack.close()

    @app.post("/orders")
    def create_order() -> Any:
        order = request.get_json(force=True)
        # No userId here: the request's bound user is used.
        log.info(
            "Order completed",
            extra={
                "htevent": {"properties": {"orderId": order["orderId"], "total": order["total"]}}
            },
        )
        return jsonify(status="created", orderId=order["orderId"]), 201

    return app


if __name__ == "__main__":
    logging.config.dictConfig(LOGGING)  # before the app starts handling requests
    create_app().run()
