"""The controls: redact and filter with before_send, shared context and properties,
backpressure with block_on_full, health, and OpenTelemetry metrics.

Try it without a write key or network: start a local collector in one terminal,

    htevents-logging collect --port 8787

and run this in another:

    HT_WRITE_KEY=dev HT_HOST=http://127.0.0.1:8787 python examples/controls.py
"""

from __future__ import annotations

import os

from htevents_logging import HtEvents, redact

mask_emails = redact(["email"])
drop_ips = redact(["ip"], mask=None)


def before_send(message):
    """Drop health-check noise, then drop IPs and mask emails everywhere."""
    if message.get("event") == "Health checked":
        return None  # filtered: counted as dropped (reason before_send), never sent
    return drop_ips(mask_emails(message))


def main() -> int:
    htevents = HtEvents(
        write_key=os.environ.get("HT_WRITE_KEY"),
        host=os.environ.get("HT_HOST", "https://us-east-1.hightouch-events.com"),
        before_send=before_send,
        context={"app": {"name": "shop", "version": "1.4.2"}},  # on every message
        properties={"region": "eu"},  # on every track, page and screen
        block_on_full=2.0,  # wait up to 2 s for room rather than drop
    )
    try:  # OpenTelemetry metrics, when opentelemetry-sdk is installed
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        import htevents_logging.metrics

        reader = InMemoryMetricReader()
        htevents_logging.metrics.register(MeterProvider(metric_readers=[reader]))
    except ImportError:
        reader = None

    htevents.identify(
        user_id="123", traits={"email": "ada@example.com", "plan": "pro"}, context={"ip": "1.2.3.4"}
    )
    htevents.track(user_id="123", event="Order completed", properties={"total": 29.99})
    htevents.track(user_id="123", event="Health checked")

    delivered = htevents.flush(timeout=10)
    print("healthy:", htevents.healthy(), "dropped:", htevents.stats()["dropped_by_reason"])
    if reader is not None:
        names = sorted(
            metric.name
            for resource in reader.get_metrics_data().resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        )
        print("metrics:", ", ".join(names))
    return 0 if htevents.close(timeout=10) and delivered else 1


if __name__ == "__main__":
    raise SystemExit(main())
