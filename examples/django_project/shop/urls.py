"""One view: an order, which logs one event."""

from __future__ import annotations

import logging
import os

from django.http import HttpRequest, HttpResponse
from django.urls import path

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


urlpatterns = [path("order", order)]
