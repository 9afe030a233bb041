"""``capture_trace_context``: events joined to the OpenTelemetry trace they were made in.

The span ids are read where the call is made or the event is logged (the span lives in a
``contextvars`` value there), not on the transport thread that builds a logged event.
"""

from __future__ import annotations

import logging

import pytest
from helpers import run_python

from htevents_logging import HtEvents, HtEventsHandler, HtEventsProcessor
from htevents_logging.testing import capture_events

trace = pytest.importorskip("opentelemetry.trace")
sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")

TRACER = sdk_trace.TracerProvider().get_tracer("tests")


def _ids(span) -> dict[str, str]:
    context = span.get_span_context()
    return {"traceId": f"{context.trace_id:032x}", "spanId": f"{context.span_id:016x}"}


def test_a_call_inside_a_span_carries_its_trace_and_span_ids():
    client = HtEvents(disable=True, capture_trace_context=True)
    with capture_events() as events, TRACER.start_as_current_span("checkout") as span:
        client.track(user_id="1", event="Order completed")
    assert {k: events[0]["context"][k] for k in ("traceId", "spanId")} == _ids(span)
    assert len(events[0]["context"]["traceId"]) == 32
    assert len(events[0]["context"]["spanId"]) == 16


def test_outside_a_span_or_with_the_setting_off_nothing_is_added():
    on = HtEvents(disable=True, capture_trace_context=True)
    off = HtEvents(disable=True)
    with capture_events() as events:
        on.track(user_id="1", event="No span")
        with TRACER.start_as_current_span("checkout"):
            off.track(user_id="1", event="Setting off")
    assert all("traceId" not in e["context"] and "spanId" not in e["context"] for e in events)


def test_ids_the_caller_set_win():
    client = HtEvents(disable=True, capture_trace_context=True, context={"spanId": "from-settings"})
    with capture_events() as events, TRACER.start_as_current_span("checkout") as span:
        client.track(user_id="1", event="Mine", context={"traceId": "from-the-call"})
    context = events[0]["context"]
    assert context["traceId"] == "from-the-call"
    assert context["spanId"] == "from-settings"
    assert _ids(span)["spanId"] != "from-settings"


def test_a_logged_event_takes_the_span_of_the_thread_that_logged_it(collector, write_key, closing):
    # The handler's events are built on the transport thread, where no span is active: the
    # ids must be read when the record is logged.
    handler = closing(
        HtEventsHandler(write_key=write_key, host=collector.url, capture_trace_context=True)
    )
    logger = logging.getLogger("tests.trace_context")
    logger.addHandler(handler)
    try:
        with TRACER.start_as_current_span("checkout") as span:
            logger.warning("Order completed", extra={"htevent": {"userId": "1"}})
        handler.flush()
    finally:
        logger.removeHandler(handler)
    assert collector.wait_for_events(1, timeout=5)
    context = collector.events[0]["context"]
    assert {k: context[k] for k in ("traceId", "spanId")} == _ids(span)


def test_the_structlog_processor_reads_the_span_too():
    pytest.importorskip("structlog")
    processor = HtEventsProcessor(disable=True, capture_trace_context=True)
    with capture_events() as events, TRACER.start_as_current_span("checkout") as span:
        processor(None, "info", {"event": "Order completed", "htevent": {"userId": "1"}})
    assert events[0]["context"]["spanId"] == _ids(span)["spanId"]


def test_an_application_that_does_not_trace_never_imports_opentelemetry():
    # What keeps the setting free there (benchmarks/trace_context.py measures it).
    result = run_python(
        "-c",
        "import sys; from htevents_logging import HtEvents; from htevents_logging.testing import "
        "capture_events\n"
        "with capture_events() as events:\n"
        "    HtEvents(disable=True, capture_trace_context=True).track(user_id='1', event='E')\n"
        "assert 'traceId' not in events[0]['context']\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_each_span_gets_its_own_ids():
    client = HtEvents(disable=True, capture_trace_context=True)
    spans = []
    with capture_events() as events:
        for _ in range(3):
            with TRACER.start_as_current_span("request") as span:
                spans.append(_ids(span))
                client.track(user_id="1", event="First")
                client.track(user_id="1", event="Second")
        client.track(user_id="1", event="Outside")
    seen = [{k: e["context"].get(k) for k in ("traceId", "spanId")} for e in events]
    outside = {"traceId": None, "spanId": None}
    assert seen == [spans[0], spans[0], spans[1], spans[1], spans[2], spans[2], outside]
