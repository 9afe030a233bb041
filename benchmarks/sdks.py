"""One adapter per SDK: build a client pointed at the local collector, send the same event.

Every adapter sends the event ``Order completed`` for user ``123`` with properties
``{"total": 29.99}``, written out literally in its loop (as an application would), and exposes
``loop(n)``, ``flush()`` and ``close()``. ``batch`` and ``queue`` override the SDK's batch size
and queue bound; ``None`` keeps the SDK's shipped default. Background delivery always stays on
(``sync_mode=False`` for the peers), and hosts are always the loopback collector.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, Callable, Optional, Protocol

__all__ = ["PEERS", "SDKS", "Sdk", "distribution_version", "make_sdk"]

WRITE_KEY = "bench-write-key"
#: Peer SDK name -> its distribution on PyPI (the ``bench`` extra).
PEERS = {
    "events-sdk-python": "events-sdk-python",
    "segment": "segment-analytics-python",
    "posthog": "posthog",
}
#: Every SDK, ours first.
SDKS = ("htevents-logging", *PEERS)


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


class Ours:
    name = "htevents-logging"

    def __init__(self, url: str, batch: Optional[int], queue: Optional[int]) -> None:
        from htevents_logging import HtEvents

        settings: dict[str, Any] = {}
        if batch is not None:
            settings["max_events_in_batch"] = batch
        if queue is not None:
            settings["max_queue_size"] = queue
        self.client = HtEvents(write_key=WRITE_KEY, host=url, **settings)

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
    "events-sdk-python": EventsSdkPython,
    "segment": Segment,
    "posthog": PostHog,
}


def make_sdk(
    name: str, url: str, *, batch: Optional[int] = None, queue: Optional[int] = None
) -> Sdk:
    """A client of SDK ``name`` sending to ``url`` (the collector's base URL)."""
    return _FACTORIES[name](url, batch, queue)
