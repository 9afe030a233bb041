"""A minimal Django project that sends an event per order, served as it is in production.

Run it with any server; the key and host come from the environment (``HT_WRITE_KEY``,
``HT_HOST``). Without ``HT_WRITE_KEY`` it still starts: the handler says so once and drops.

    htevents-logging collect --port 8787                                   # one terminal
    cd examples/django_project
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 gunicorn --preload -w 2 shop.wsgi
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 uvicorn shop.asgi:application
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 uwsgi --http-socket :8000 --master \\
        --processes 2 --module shop.wsgi --die-on-term
    curl 'localhost:8000/order?user=123'
"""

from __future__ import annotations

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE = [
    # After AuthenticationMiddleware in a project that has users: events logged during a
    # request then carry request.user.pk as their userId.
    "htevents_logging.contrib.django.HtEventsMiddleware",
]
ROOT_URLCONF = "shop.urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

LOGGING = {
    "version": 1,
    # Keep the loggers made before this (the package's own among them, for its warnings).
    "disable_existing_loggers": False,
    "handlers": {
        "htevents": {
            "class": "htevents_logging.HtEventsHandler",
            "write_key": os.environ.get("HT_WRITE_KEY"),
            "host": os.environ.get("HT_HOST", "https://us-east-1.hightouch-events.com"),
            # Nothing to send where there is no key (tests, CI, manage.py on a laptop).
            "disable": not os.environ.get("HT_WRITE_KEY"),
        },
    },
    "root": {"handlers": ["htevents"], "level": "INFO"},
}
