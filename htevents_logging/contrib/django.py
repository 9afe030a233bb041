"""Django middleware: events logged while a request is handled carry the signed-in user.

Add it after ``AuthenticationMiddleware``::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "htevents_logging.contrib.django.HtEventsMiddleware",
    ]

The binding is a ``contextvars`` one (see ``bind()``): it ends with the request, and never
leaks into the next request the same thread or event loop serves. Works under WSGI and ASGI.
"""

from __future__ import annotations

from typing import Any, Callable

from .._identity import bind

__all__ = ["HtEventsMiddleware"]


class HtEventsMiddleware:
    """Bind ``request.user.pk`` as the ``userId`` of events logged during the request (when
    the user is signed in); anonymous requests are left alone."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        """Handle the request with the signed-in user bound."""
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return self.get_response(request)
        with bind(user_id=user.pk):
            return self.get_response(request)
