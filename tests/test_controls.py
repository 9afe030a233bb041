"""The controls: ``before_send``, shared ``context`` and ``properties``, ``redact``,
``block_on_full`` backpressure, health, and OpenTelemetry metrics."""

from __future__ import annotations

import logging
import logging.config
import threading
import time
from typing import Any, Optional

import pytest
from helpers import Outcomes, assert_flushed, configured_by_dictconfig, wait_until

from htevents_logging import DeliveryError, HtEvents, HtEventsHandler, bind, redact
from htevents_logging._diagnostics import reset_warning_limits
from htevents_logging.collector import Reply
from htevents_logging.testing import capture_events

# -- before_send ------------------------------------------------------------------------------


def add_region(message: dict[str, Any]) -> dict[str, Any]:
    """A before_send for dictConfig (``ext://test_controls.add_region``)."""
    message["context"]["region"] = "eu-west-1"
    return message


@pytest.fixture
def make_client(collector, closing, write_key):
    def make(**settings: Any) -> HtEvents:
        settings.setdefault("flush_interval", 0.05)
        return closing(HtEvents(write_key, host=collector.url, **settings))

    return make


def test_before_send_changes_what_is_sent(collector, make_client):
    def hook(message):
        message["properties"]["seen"] = True
        return message

    client = make_client(before_send=hook)
    returned = client.track(user_id="u", event="Order completed", properties={"total": 9})
    assert_flushed(client)
    [event] = collector.events
    assert event["properties"] == {"total": 9, "seen": True}
    assert event["messageId"] == returned["messageId"]


def test_before_send_runs_on_the_calling_thread_for_calls_and_the_transport_for_logs(
    collector, make_client
):
    seen: list[tuple[str, Optional[str]]] = []

    def hook(message):
        seen.append((threading.current_thread().name, message.get("userId")))
        return message

    client = make_client(before_send=hook)
    handler = HtEventsHandler(client=client)
    logger = logging.getLogger("controls.threads")
    logger.addHandler(handler)
    try:
        client.track(user_id="direct", event="Called")
        with bind(user_id="bound"):  # the identity is captured at the call, not in the hook
            logger.warning("Logged", extra={"htevent": {}})
        assert_flushed(client)
    finally:
        logger.removeHandler(handler)
    assert seen == [("MainThread", "direct"), ("htevents-transport", "bound")]
    assert [event["userId"] for event in collector.events] == ["direct", "bound"]


def test_before_send_returning_none_drops_the_message_and_tells_its_callback(
    collector, make_client, caplog
):
    outcomes = Outcomes()
    failures: list[Any] = []
    client = make_client(
        before_send=lambda m: None if m["event"] == "Noise" else m,
        on_error=lambda error, messages: failures.append(error),
    )
    client.track(user_id="u", event="Noise", callback=outcomes)
    client.track(user_id="u", event="Signal")
    assert_flushed(client)
    assert [event["event"] for event in collector.events] == ["Signal"]
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError) and error.reason == "before_send"
    assert client.stats()["dropped_by_reason"] == {"before_send": 1}
    assert failures == []  # a filter is not a failure: on_error is not called
    assert "dropped" not in caplog.text  # nor warned about


def test_a_before_send_that_raises_sends_nothing_warns_once_and_the_thread_lives(
    collector, make_client, caplog
):
    reset_warning_limits()

    def broken(message):
        if message["event"] == "boom":
            raise KeyError("a bug in the hook")
        return message

    outcomes = Outcomes()
    client = make_client(before_send=broken)
    handler = HtEventsHandler(client=client)
    logger = logging.getLogger("controls.raises")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, "htevents_logging"):
            client.track(user_id="u", event="boom", callback=outcomes)
            for _ in range(3):
                logger.warning("boom", extra={"htevent": {"userId": "u"}})
            logger.warning("fine", extra={"htevent": {"userId": "u"}})
            assert_flushed(client)
    finally:
        logger.removeHandler(handler)
    assert [event["event"] for event in collector.events] == ["fine"]
    assert outcomes.errors[0].reason == "before_send_error"
    assert client.stats()["dropped_by_reason"] == {"before_send_error": 4}
    warnings = [r for r in caplog.records if "before_send raised" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is not None  # with its traceback


def test_capture_events_sees_the_message_after_the_hook():
    client = HtEvents(disable=True, before_send=redact(["email"]))
    with capture_events() as events:
        client.identify(user_id="u", traits={"email": "a@example.com", "plan": "pro"})
    assert events[0]["traits"] == {"email": "[redacted]", "plan": "pro"}


def test_before_send_from_dictconfig_through_ext(collector, write_key):
    with configured_by_dictconfig(
        "controls.dictconfig",
        write_key=write_key,
        host=collector.url,
        flush_interval=0.05,
        before_send="ext://test_controls.add_region",
    ) as logger:
        logger.info("Signed up", extra={"htevent": {"userId": "u"}})
        assert collector.wait_for_events(1, 5)
    assert collector.events[0]["context"]["region"] == "eu-west-1"


# -- shared context and properties ----------------------------------------------------------


def test_shared_context_and_properties_go_under_every_messages_own(collector, make_client):
    client = make_client(
        context={"app": {"version": "1.2"}, "region": "eu", "ip": "default"},
        properties={"plan": "free", "source": "api"},
    )
    with bind(user_id="u", context={"ip": "203.0.113.5"}):
        client.track(event="Order completed", properties={"plan": "pro"}, context={"region": "us"})
    client.identify(user_id="u", traits={"name": "Ada"})
    assert_flushed(client)
    track, identify = collector.events
    assert track["properties"] == {"plan": "pro", "source": "api"}  # the message wins
    context = {k: v for k, v in track["context"].items() if k != "library"}
    assert context == {"app": {"version": "1.2"}, "region": "us", "ip": "203.0.113.5"}
    assert identify["traits"] == {"name": "Ada"}  # properties are not traits
    assert identify["context"]["region"] == "eu"


def test_redact_masks_or_removes_named_keys_at_any_depth_without_changing_the_input():
    message = {
        "type": "identify",
        "traits": {"Email": "a@example.com", "address": {"email": "b@example.com"}},
        "properties": {"items": [{"email": "c@example.com", "sku": 1}]},
        "context": {"ip": "203.0.113.5", "library": {"name": "x"}},
    }
    masked = redact(["email"])(message)
    dropped = redact(["ip"], mask=None)(message)
    assert masked["traits"] == {"Email": "[redacted]", "address": {"email": "[redacted]"}}
    assert masked["properties"]["items"] == [{"email": "[redacted]", "sku": 1}]
    assert dropped["context"] == {"library": {"name": "x"}}
    assert message["traits"]["Email"] == "a@example.com"  # unchanged
    with pytest.raises(TypeError, match="list of key names"):
        redact("email")


# -- backpressure -----------------------------------------------------------------------------


def burst(client: HtEvents, n: int) -> list[float]:
    """Send ``n`` events; how long each call took."""
    took = []
    for i in range(n):
        started = time.monotonic()
        client.track(user_id="u", event=f"e{i}")
        took.append(time.monotonic() - started)
    return took


def test_block_on_full_waits_for_room_instead_of_dropping(collector, make_client):
    collector.script(*[Reply(200, delay=0.1)] * 20)  # a slow server
    client = make_client(max_queue_size=5, max_events_in_batch=5, block_on_full=3.0)
    took = burst(client, 40)
    assert_flushed(client, 15)
    assert client.stats()["dropped"] == 0
    assert len(collector.events) == 40
    assert max(took) < 3.0  # no call waited longer than the setting
    assert max(took) > 0.01  # some did wait: the queue was full


def test_without_block_on_full_the_same_burst_drops(collector, make_client):
    collector.script(*[Reply(200, delay=0.1)] * 20)
    client = make_client(max_queue_size=5, max_events_in_batch=5)
    took = burst(client, 40)
    assert_flushed(client, 15)
    assert client.stats()["dropped_by_reason"].get("queue_full", 0) > 0
    assert max(took) < 0.5


def test_block_on_full_never_waits_under_the_logging_lock(collector, make_client):
    collector.script(Reply(200, delay=2.0))
    client = make_client(max_queue_size=1, max_events_in_batch=1, block_on_full=5.0)
    client.track(user_id="u", event="first")  # taken off and stuck in the slow request
    assert collector.wait_for_requests(1, 5)
    client.track(user_id="u", event="fills the queue")
    lock = logging._lock  # type: ignore[attr-defined]
    with lock:  # as inside dictConfig
        started = time.monotonic()
        client.track(user_id="u", event="dropped at once")
        assert time.monotonic() - started < 1.0
    assert client.stats()["dropped_by_reason"] == {"queue_full": 1}


# -- health -----------------------------------------------------------------------------------


def test_healthy_flips_when_the_server_goes_down_and_back_when_it_returns(collector, make_client):
    client = make_client(
        flush_interval=0.2, http_request_timeout=1.0, retry_backoff=0.3, max_retries=10
    )
    assert client.healthy() and client.stats()["consecutive_failures"] == 0
    collector.script(*[Reply(503)] * 3)  # down for three requests
    started = time.monotonic()
    client.track(user_id="u", event="during the outage")
    assert wait_until(lambda: not client.healthy(), timeout=5)
    assert time.monotonic() - started < 0.2 + 1.0 + 0.5  # one flush_interval + one timeout
    stats = client.stats()
    assert stats["consecutive_failures"] >= 1 and stats["last_failure_at"] is not None
    assert wait_until(client.healthy, timeout=10)  # back with the first delivery
    stats = client.stats()
    assert (
        stats["consecutive_failures"] == 0 and stats["last_success_at"] >= stats["last_failure_at"]
    )
    assert len(collector.events) == 1


def test_healthy_with_max_age_when_messages_wait_too_long(collector, make_client):
    client = make_client(flush_interval=60)  # the event waits in the batch being built
    assert client.healthy(max_age=0.1)  # nothing waiting
    client.track(user_id="u", event="waiting")
    assert wait_until(lambda: not client.healthy(max_age=0.1), timeout=5)
    assert client.healthy()  # no request has failed
    assert_flushed(client)
    assert client.healthy(max_age=0.1)


# -- metrics ----------------------------------------------------------------------------------


def test_metrics_export_the_counters_with_reasons(collector, make_client):
    sdk = pytest.importorskip("opentelemetry.sdk.metrics")
    export = pytest.importorskip("opentelemetry.sdk.metrics.export")
    from htevents_logging import metrics

    reader = export.InMemoryMetricReader()
    provider = sdk.MeterProvider(metric_readers=[reader])
    metrics.register(provider)
    client = make_client(before_send=lambda m: None if m["event"] == "noise" else m)
    client.track(user_id="u", event="signal")
    client.track(user_id="u", event="noise")
    assert_flushed(client)

    points: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = [
                    (dict(point.attributes or {}), point.value) for point in metric.data.data_points
                ]
    assert {"htevents.sent", "htevents.dropped", "htevents.queue_depth"} <= set(points)
    assert sum(value for _, value in points["htevents.sent"]) >= 1
    dropped = {attributes.get("reason"): value for attributes, value in points["htevents.dropped"]}
    assert dropped.get("before_send", 0) >= 1
    provider.shutdown()


def test_block_on_full_never_waits_on_the_transport_thread(collector, make_client):
    # A callback runs on the transport thread: the one thread that makes room in the queue.
    took: list[float] = []

    def log_more(error, message):
        for i in range(3):
            started = time.monotonic()
            client.track(user_id="u", event=f"from the callback {i}")
            took.append(time.monotonic() - started)

    client = make_client(max_queue_size=1, max_events_in_batch=1, block_on_full=5.0)
    client.track(user_id="u", event="first", callback=log_more)
    assert wait_until(lambda: len(took) == 3, timeout=10)
    assert max(took) < 1.0  # the 2nd and 3rd found the queue full and were dropped at once
    assert client.stats()["dropped_by_reason"].get("queue_full", 0) >= 1
