"""One adapter per sender: build a client pointed at the local collector, send the same event.

Every adapter sends the event ``Order completed`` for user ``123`` with properties
``{"total": 29.99}``, written out literally in its loop (as an application would), and exposes
``loop(n)``, ``flush()`` and ``close()``. ``batch`` and ``queue`` override the SDK's batch size
and queue bound; ``None`` keeps the SDK's shipped default. Background delivery always stays on
(``sync_mode=False`` for the peers), and hosts are always the loopback collector.

Ours are three senders, one per way in: ``htevents-logging`` (``HtEvents.track()``),
``htevents-logging-handler`` (``logger.info(..., extra={"htevent": {...}})`` through
``HtEventsHandler`` on a dedicated logger) and ``htevents-logging-structlog`` (the structlog
chain of ``structlog_chain`` with ``HtEventsProcessor``, rendering to ``os.devnull``). The
logger and the chain are built here and nowhere else: ``percall.py`` times the same ones.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from typing import Any, Callable, Optional, Protocol, TextIO

__all__ = [
    "LABELS",
    "OURS",
    "PEERS",
    "SDKS",
    "SENDERS",
    "Sdk",
    "dedicated_logger",
    "distribution_version",
    "event_loop",
    "is_ours",
    "make_sdk",
    "structlog_chain",
    "structlog_event_loop",
]

WRITE_KEY = "bench-write-key"
#: Peer SDK name -> its distribution on PyPI (the ``bench`` extra).
PEERS = {
    "events-sdk-python": "events-sdk-python",
    "segment": "segment-analytics-python",
    "posthog": "posthog",
}
#: Every SDK with a ``track`` call (ours is ``HtEvents.track()``), ours first.
SDKS = ("htevents-logging", *PEERS)
#: Our burst senders: ``HtEvents.track()`` and the two logging front-ends.
OURS = ("htevents-logging", "htevents-logging-handler", "htevents-logging-structlog")
#: Every burst sender, ours first.
SENDERS = (*OURS, *PEERS)
#: How the report names each sender.
LABELS = {
    "htevents-logging": "htevents-logging `HtEvents.track()`",
    "htevents-logging-handler": "htevents-logging `HtEventsHandler`",
    "htevents-logging-structlog": "htevents-logging structlog `HtEventsProcessor`",
    "events-sdk-python": "events-sdk-python",
    "segment": "segment",
    "posthog": "posthog",
}


def is_ours(name: str) -> bool:
    """True for one of our senders (a peer otherwise)."""
    return name in OURS


class Sdk(Protocol):
    """What the benchmarks need from a client."""

    name: str

    def loop(self, n: int) -> None:
        """Send the benchmark event ``n`` times from the calling thread."""

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until what was sent is acknowledged; False when it timed out."""

    def close(self) -> None:
        """Stop the background thread(s)."""

    def stats(self) -> dict[str, Any]:
        """The SDK's own counters, when it has any."""


def distribution_version(name: str) -> Optional[str]:
    """The installed version of a distribution, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- the logging front-ends, as an application sets them up ------------------------------------


def dedicated_logger(name: str, handler: logging.Handler) -> logging.Logger:
    """Logger ``bench.NAME`` with ``handler`` as its only handler, level INFO, not propagating."""
    logger = logging.getLogger(f"bench.{name}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def event_loop(logger: logging.Logger) -> Callable[[int], None]:
    """``loop(n)``: log the benchmark event ``n`` times, written out as an application would."""

    def loop(n: int) -> None:
        info = logger.info
        for _ in range(n):
            info(
                "Order completed",
                extra={"htevent": {"userId": "123", "properties": {"total": 29.99}}},
            )

    return loop


def structlog_chain(output: TextIO, processors: list[Any]) -> Any:
    """The structlog logger of the benchmarks: ``merge_contextvars``, then ``processors``, then
    ``JSONRenderer`` to a ``WriteLogger`` on ``output``; INFO and up, cached on first use."""
    import structlog

    return structlog.wrap_logger(
        structlog.WriteLogger(output),
        processors=[
            structlog.contextvars.merge_contextvars,
            *processors,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )


def structlog_event_loop(log: Any) -> Callable[[int], None]:
    """``loop(n)``: the benchmark event through a structlog logger, ``n`` times."""

    def loop(n: int) -> None:
        info = log.info
        for _ in range(n):
            info("Order completed", htevent={"userId": "123", "properties": {"total": 29.99}})

    return loop


# -- the senders --------------------------------------------------------------------------------


def _our_settings(url: str, batch: Optional[int], queue: Optional[int]) -> dict[str, Any]:
    settings: dict[str, Any] = {"write_key": WRITE_KEY, "host": url}
    if batch is not None:
        settings["max_events_in_batch"] = batch
    if queue is not None:
        settings["max_queue_size"] = queue
    return settings


class Ours:
    name = "htevents-logging"

    def __init__(self, url: str, batch: Optional[int], queue: Optional[int]) -> None:
        from htevents_logging import HtEvents

        self.client = HtEvents(**_our_settings(url, batch, queue))

    def loop(self, n: int) -> None:
        track = self.client.track
        for _ in range(n):
            track(user_id="123", event="Order completed", properties={"total": 29.99})

    def flush(self, timeout: Optional[float] = None) -> bool:
        return bool(self.client.flush(120.0 if timeout is None else timeout))

    def close(self) -> None:
        self.client.close(10.0)

    def stats(self) -> dict[str, Any]:
        return dict(self.client.stats())


class OursHandler:
    """``HtEventsHandler`` on a logger of its own (``propagate=False``)."""

    name = "htevents-logging-handler"

    def __init__(self, url: str, batch: Optional[int], queue: Optional[int]) -> None:
        from htevents_logging import HtEventsHandler

        self.handler = HtEventsHandler(**_our_settings(url, batch, queue))
        self.loop = event_loop(dedicated_logger("burst", self.handler))

    def flush(self, timeout: Optional[float] = None) -> bool:
        return bool(self.handler.client.flush(120.0 if timeout is None else timeout))

    def close(self) -> None:
        self.handler.close()

    def stats(self) -> dict[str, Any]:
        return dict(self.handler.client.stats())


class OursStructlog:
    """The structlog chain with ``HtEventsProcessor``, rendering each line to ``os.devnull``."""

    name = "htevents-logging-structlog"

    def __init__(self, url: str, batch: Optional[int], queue: Optional[int]) -> None:
        from htevents_logging import HtEventsProcessor

        self.processor = HtEventsProcessor(**_our_settings(url, batch, queue))
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 (closed in close)
        self.loop = structlog_event_loop(structlog_chain(self._devnull, [self.processor]))

    def flush(self, timeout: Optional[float] = None) -> bool:
        return bool(self.processor.client.flush(120.0 if timeout is None else timeout))

    def close(self) -> None:
        self.processor.close(10.0)
        self._devnull.close()

    def stats(self) -> dict[str, Any]:
        return dict(self.processor.client.stats())


class _SegmentLike:
    """events-sdk-python is a fork of Segment's analytics-python: same constructor, same API."""

    name = ""

    def __init__(self, client_class: Any, url: str, batch: Optional[int], queue: Optional[int]):
        settings: dict[str, Any] = {"host": url, "sync_mode": False}
        if batch is not None:
            settings["upload_size"] = batch
        if queue is not None:
            settings["max_queue_size"] = queue
        self.client = client_class(WRITE_KEY, **settings)

    def loop(self, n: int) -> None:
        track = self.client.track
        for _ in range(n):
            track(user_id="123", event="Order completed", properties={"total": 29.99})

    def flush(self, timeout: Optional[float] = None) -> bool:
        self.client.flush()  # queue.join(): returns once every item was uploaded (or failed)
        return True

    def close(self) -> None:
        self.client.join()

    def stats(self) -> dict[str, Any]:
        return {}


class EventsSdkPython(_SegmentLike):
    name = "events-sdk-python"

    def __init__(self, url: str, batch: Optional[int], queue: Optional[int]) -> None:
        from hightouch.htevents import Client

        super().__init__(Client, url, batch, queue)


class Segment(_SegmentLike):
    name = "segment"

    def __init__(self, url: str, batch: Optional[int], queue: Optional[int]) -> None:
        from segment.analytics import Client

        super().__init__(Client, url, batch, queue)


class PostHog:
    name = "posthog"

    def __init__(self, url: str, batch: Optional[int], queue: Optional[int]) -> None:
        from posthog import Posthog

        settings: dict[str, Any] = {
            "host": url,
            "sync_mode": False,
            "disable_geoip": True,  # no enrichment request; no personal_api_key: no flag poller
            "enable_exception_autocapture": False,
        }
        if batch is not None:
            settings["flush_at"] = batch
        if queue is not None:
            settings["max_queue_size"] = queue
        self.client = Posthog(WRITE_KEY, **settings)

    def loop(self, n: int) -> None:
        capture = self.client.capture
        for _ in range(n):
            capture("Order completed", distinct_id="123", properties={"total": 29.99})

    def flush(self, timeout: Optional[float] = None) -> bool:
        self.client.flush(timeout_seconds=timeout)  # None: wait for the queue to drain
        return True

    def close(self) -> None:
        self.client.shutdown()

    def stats(self) -> dict[str, Any]:
        return {}


_FACTORIES: dict[str, Callable[[str, Optional[int], Optional[int]], Sdk]] = {
    "htevents-logging": Ours,
    "htevents-logging-handler": OursHandler,
    "htevents-logging-structlog": OursStructlog,
    "events-sdk-python": EventsSdkPython,
    "segment": Segment,
    "posthog": PostHog,
}


def make_sdk(
    name: str, url: str, *, batch: Optional[int] = None, queue: Optional[int] = None
) -> Sdk:
    """Sender ``name`` (one of ``SENDERS``) sending to ``url`` (the collector's base URL)."""
    return _FACTORIES[name](url, batch, queue)
