"""``capture_events()`` and the ``htevents_events`` fixture: check events with no network."""

from __future__ import annotations

import logging

import pytest
from helpers import assert_flushed, run_python

from htevents_logging import HtEvents
from htevents_logging._frontends.handler import HtEventsHandler
from htevents_logging._frontends.processor import HtEventsProcessor
from htevents_logging.collector import Collector
from htevents_logging.testing import capture_events, htevents_events  # noqa: F401 (a fixture)


def test_every_front_end_is_captured_in_order():
    client = HtEvents(disable=True)
    handler = HtEventsHandler(client=client)
    processor = HtEventsProcessor(client=client)

    with capture_events() as events:
        client.identify(user_id="1", traits={"plan": "pro"})
        handler.handle(
            logging.makeLogRecord({"name": "app", "msg": "Order completed", "htevent": {}})
        )
        processor(None, "info", {"event": "Refund issued", "htevent": {"userId": "1"}})

    assert [(e["type"], e.get("event")) for e in events] == [
        ("identify", None),
        ("track", "Order completed"),
        ("track", "Refund issued"),
    ]
    assert all("messageId" in e and "timestamp" in e for e in events)


def test_nothing_reaches_the_network(collector: Collector, write_key):
    with HtEvents(write_key, host=collector.url, flush_interval=0.05) as client:
        with capture_events() as events:
            client.track(user_id="1", event="Captured")
        assert_flushed(client, 5)
        stats = client.stats()

    assert [e["event"] for e in events] == ["Captured"]
    assert stats["enqueued"] == 0
    assert collector.requests == []


def test_after_the_block_messages_are_sent_again(collector: Collector, write_key):
    with HtEvents(write_key, host=collector.url, flush_interval=0.05) as client:
        with capture_events():
            client.track(user_id="1", event="Captured")
        client.track(user_id="1", event="Sent")
        assert_flushed(client, 5)
    assert [e["event"] for e in collector.events] == ["Sent"]


def test_the_capture_ends_even_when_the_block_raises(collector: Collector, write_key):
    with HtEvents(write_key, host=collector.url, flush_interval=0.05) as client:
        with pytest.raises(RuntimeError), capture_events():
            raise RuntimeError("the test failed")
        client.track(user_id="1", event="Sent")
        assert_flushed(client, 5)
    assert [e["event"] for e in collector.events] == ["Sent"]


def test_captures_nest_and_each_gets_what_was_sent_while_it_was_open():
    client = HtEvents(disable=True)

    with capture_events() as outer:
        with capture_events() as inner:  # both empty: equal lists, still distinct captures
            pass
        client.track(user_id="1", event="After the inner block")
        with capture_events() as second_inner:
            client.track(user_id="1", event="In both")

    assert [e["event"] for e in outer] == ["After the inner block", "In both"]
    assert inner == []
    assert [e["event"] for e in second_inner] == ["In both"]


def test_rejected_messages_are_not_captured():
    client = HtEvents(disable=True)

    with capture_events() as events, pytest.raises(ValueError, match="event is required"):
        client.track(user_id="1")

    assert events == []


def test_the_pytest_fixture_captures_the_test_s_events(htevents_events):  # noqa: F811
    HtEvents(disable=True).track(user_id="1", event="Signed up")

    assert [e["event"] for e in htevents_events] == ["Signed up"]


def test_the_module_imports_without_pytest():
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import htevents_logging.testing as t\n"
        "from htevents_logging import HtEvents\n"
        "with t.capture_events() as events:\n"
        "    HtEvents(disable=True).track(user_id='1', event='e')\n"
        "print(len(events), hasattr(t, 'htevents_events'))\n"
    )
    result = run_python("-c", code, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]
