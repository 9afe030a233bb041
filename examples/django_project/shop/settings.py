"""A small Django project whose views log events, served as it is in production.

Run it with any server; the key and host come from the environment (``HT_WRITE_KEY``,
``HT_HOST``). Without ``HT_WRITE_KEY`` it still starts: the handler says so once and drops.

    htevents-logging collect --port 8787                                   # one terminal
    cd examples/django_project
    python manage.py migrate && python manage.py createsuperuser           # a user to sign in
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 gunicorn --preload -w 2 shop.wsgi
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 uvicorn shop.asgi:application
    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 uwsgi --http-socket :8000 --master \\
        --processes 2 --module shop.wsgi --die-on-term
    curl 'localhost:8000/order?user=123'

The views under ``account/`` and ``api/`` name no user: ``HtEventsMiddleware`` binds the
signed-in one (a session, or a Django REST framework token, authenticated inside the view).
The database is SQLite, at ``$SHOP_DATABASE`` (default: ``db.sqlite3`` here).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

#: Django REST framework is optional here: without it the project serves no ``api/``.
HAS_DRF = importlib.util.find_spec("rest_framework") is not None

INSTALLED_APPS: list[str] = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    *(["rest_framework", "rest_framework.authtoken"] if HAS_DRF else []),
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Events logged during a request carry request.user's pk as their userId (read when the
    # event is logged: a DRF token user, authenticated in the view, is seen too).
    "htevents_logging.contrib.django.HtEventsMiddleware",
]
# The middleware's settings (all optional; USER_ID_ATTRIBUTE defaults to "pk"). The cookie
# is the one analytics.js (and the browser SDKs derived from it) keeps the anonymousId in.
HTEVENTS = {
    "USER_ID_ATTRIBUTE": "pk",
    "ANONYMOUS_ID_COOKIE": "ajs_anonymous_id",
}
ROOT_URLCONF = "shop.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SHOP_DATABASE", str(BASE_DIR / "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

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
