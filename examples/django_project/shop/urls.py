"""The shop's views: each logs one event, and only ``order`` names its user itself."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from django.conf import settings
from django.contrib.auth import authenticate, login
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.views.decorators.csrf import ensure_csrf_cookie

logger = logging.getLogger("shop.orders")


def order(request: HttpRequest) -> HttpResponse:
    """Log "Order completed" for ``?user=``, with the serving process in its properties."""
    logger.info(
        "Order completed",
        extra={
            "htevent": {
                "userId": request.GET.get("user", "anonymous"),
                "properties": {"n": request.GET.get("n"), "pid": os.getpid()},
            }
        },
    )
    return HttpResponse("ok\n")


def completed(n: Optional[str], via: str) -> None:
    """Log "Order completed" naming no user: the middleware's binding says who."""
    logger.info("Order completed", extra={"htevent": {"properties": {"n": n, "via": via}}})


def account_order(request: HttpRequest) -> HttpResponse:
    """A view for whoever is signed in (or not) through the session."""
    completed(request.GET.get("n"), "view")
    return HttpResponse("ok\n")


async def account_order_async(request: HttpRequest) -> HttpResponse:
    """The same as an ``async def`` view (on an event loop under ASGI)."""
    completed(request.GET.get("n"), "async view")
    return HttpResponse("ok\n")


@ensure_csrf_cookie
def sign_in(request: HttpRequest) -> HttpResponse:
    """GET: a CSRF cookie. POST ``username`` and ``password`` (with the ``X-CSRFToken``
    header): a session."""
    if request.method != "POST":
        return HttpResponse("POST username and password\n")
    user = authenticate(
        request, username=request.POST.get("username"), password=request.POST.get("password")
    )
    if user is None:
        return HttpResponse("wrong username or password\n", status=401)
    login(request, user)
    return HttpResponse("signed in\n")


urlpatterns: list[Any] = [
    path("order", order),
    path("login", sign_in),
    path("account/order", account_order),
    path("account/async-order", account_order_async),
]

if settings.HAS_DRF:
    from rest_framework.request import Request
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class ApiOrder(APIView):
        """``Authorization: Token <key>`` (see ``REST_FRAMEWORK``): DRF authenticates the
        token here, inside the view, after every middleware has run."""

        def get(self, request: Request) -> Response:
            completed(request.query_params.get("n"), "api")
            return Response({"ok": True})

    api: URLPattern = path("api/order", ApiOrder.as_view())
    urlpatterns.append(api)
