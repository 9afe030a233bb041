"""OpenTelemetry metrics: every counter of ``stats()``, so delivery can be scraped and alerted on.

``stats()`` is only visible inside the process. :func:`register` exports the same figures as
OpenTelemetry observable instruments, read from every transport in the process each time the
meter provider collects (so nothing is counted twice, and nothing costs anything between
collections). Through the OpenTelemetry Prometheus exporter they become a ``/metrics`` page.

It needs ``opentelemetry-api`` (``pip install 'htevents-logging[otel]'``); the package itself
never imports OpenTelemetry unless this module is used.

=============================  ========================================================
instrument                     what
=============================  ========================================================
``htevents.enqueued``          counter: messages accepted into a queue
``htevents.sent``              counter: messages delivered
``htevents.failed``            counter, attribute ``reason``: failed for good
``htevents.dropped``           counter, attribute ``reason``: never sent
``htevents.rejected``          counter, attribute ``reason``: invalid or too large
``htevents.retries``           counter: failed attempts that were retried
``htevents.batches``           counter: requests that delivered a batch
``htevents.queue_depth``       gauge: messages waiting in the queues
``htevents.consecutive_failures``  gauge: failed requests since the last delivery (alert > 0)
=============================  ========================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, Optional

from ._transport.ledger import BY_REASON, COUNTERS
from ._transport.registry import snapshots
from ._version import __version__

__all__ = ["register"]

_GAUGES = ("queue_depth", "consecutive_failures")


def _sum(name: str) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def observe(options: Any) -> Iterable[Any]:
        return [Observation(sum(counts[name] for counts in snapshots()))]

    return observe


def _by_reason(name: str) -> Callable[[Any], Iterable[Any]]:
    from opentelemetry.metrics import Observation

    def observe(options: Any) -> Iterable[Any]:
        totals: dict[str, int] = {}
        for counts in snapshots():
            for reason, count in counts[f"{name}_by_reason"].items():
                totals[reason] = totals.get(reason, 0) + count
        return [Observation(count, {"reason": reason}) for reason, count in totals.items()]

    return observe


def register(meter_provider: Optional[Any] = None) -> None:
    """Export the package's counters and gauges through OpenTelemetry.

    ``meter_provider`` is an OpenTelemetry ``MeterProvider``; by default the global one (set
    with ``opentelemetry.metrics.set_meter_provider``). Call it once, at startup. Counters with
    reasons (``failed``, ``dropped``, ``rejected``) carry the reason as the attribute
    ``reason``, one series per reason.
    """
    from opentelemetry import metrics

    meter = (meter_provider or metrics.get_meter_provider()).get_meter(
        "htevents_logging", __version__
    )
    for name in COUNTERS:
        observe = _by_reason(name) if name in BY_REASON else _sum(name)
        meter.create_observable_counter(
            f"htevents.{name}", callbacks=[observe], unit="{message}", description=_DOC[name]
        )
    for name in _GAUGES:
        meter.create_observable_gauge(
            f"htevents.{name}", callbacks=[_sum(name)], description=_DOC[name]
        )


_DOC = {
    "enqueued": "Messages accepted into a transport's queue",
    "sent": "Messages delivered",
    "failed": "Messages that failed for good, by reason",
    "dropped": "Messages dropped before they were sent, by reason",
    "rejected": "Messages rejected as invalid or too large, by reason",
    "retries": "Failed attempts at a batch that were retried",
    "batches": "Requests that delivered a batch",
    "queue_depth": "Messages waiting in the queues",
    "consecutive_failures": "Failed requests since the last delivery",
}
