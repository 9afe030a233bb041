"""loguru: ``logger.add(HtEventsSink(...))``, and ``logger.add(HtEventsHandler(...))`` too.

loguru keeps what is bound to a call in ``record["extra"]``: the payload of
``logger.bind(htevent=...)`` and of ``logger.info(..., htevent=...)``, and the ids of
``logger.contextualize(user_id=...)``. Every test adds its sink to the one global loguru
logger and removes it again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until

from htevents_logging import HtEvents, HtEventsHandler, bind
from htevents_logging.loguru import HtEventsSink
from htevents_logging.testing import capture_events

loguru = pytest.importorskip("loguru")
logger = loguru.logger


@pytest.fixture
def added() -> Iterator[Any]:
    """``add(sink)`` adds a sink to loguru's logger for the test (removed after it)."""
    ids: list[int] = []

    def add(sink: Any, **options: Any) -> int:
        ids.append(logger.add(sink, **options))
        return ids[-1]

    yield add
    for sink_id in ids:
        try:
            logger.remove(sink_id)
        except ValueError:  # the test removed it already
            pass


@pytest.fixture
def sink(added) -> HtEventsSink:
    """A sink whose client sends nothing (its messages are captured in the tests)."""
    made = HtEventsSink(disable=True)
    added(made)
    return made


def test_both_ways_loguru_carries_a_payload_send_an_event(sink):
    with capture_events() as events:
        logger.bind(htevent={"userId": "1"}).info("Order completed")
        logger.info("Order {n} paid", n=7, htevent={"userId": "2", "properties": {"total": 9}})
    assert [(e["event"], e["userId"]) for e in events] == [
        ("Order completed", "1"),
        ("Order 7 paid", "2"),  # the message as loguru formatted it
    ]
    assert events[1]["properties"] == {"total": 9}


def test_the_records_time_is_the_timestamp(sink):
    frozen = dt.datetime(2026, 11, 29, 15, 0, 6, 100000, tzinfo=dt.timezone.utc)
    with capture_events() as events:
        logger.patch(lambda record: record.update(time=frozen)).info("Signed up", htevent={})
    assert events[0]["timestamp"] == "2026-11-29T15:00:06.100Z"


def test_identity_comes_from_contextualize_then_bind_and_the_payloads_own_wins(sink):
    with capture_events() as events, bind(user_id="from-bind", anonymous_id="anon-bind"):
        logger.info("A", htevent={})
        with logger.contextualize(user_id="from-loguru"):
            logger.info("B", htevent={})
            logger.info("C", htevent={"userId": "own"})
    assert [(e["event"], e.get("userId"), e.get("anonymousId")) for e in events] == [
        ("A", "from-bind", "anon-bind"),
        ("B", "from-loguru", None),  # ids named beside the payload come as a pair, as in structlog
        ("C", "own", None),
    ]


def test_records_without_a_payload_send_nothing(sink):
    with capture_events() as events:
        logger.info("just a log line")
        logger.bind(user_id="1").warning("still just a log line")
    assert events == []


def test_a_bad_payload_warns_once_is_counted_and_never_raises(sink, caplog):
    with capture_events() as events, caplog.at_level(logging.WARNING, "htevents_logging"):
        logger.info("Bad", htevent={"type": "track", "propertys": {}})
        logger.info("Not a mapping", htevent=["a list"])
    assert events == []
    assert sink.client.stats()["rejected"] == 2
    assert any("propertys" in r.getMessage() for r in caplog.records)


def test_remove_delivers_what_is_queued(added, collector, write_key):
    sink = HtEventsSink(write_key=write_key, host=collector.url, flush_interval=60)
    sink_id = added(sink)
    for n in range(3):
        logger.info("Order completed", htevent={"userId": str(n)})
    assert collector.events == []  # a minute's flush interval: nothing yet
    logger.remove(sink_id)
    assert sorted(e["userId"] for e in collector.events) == ["0", "1", "2"]  # no wait
    assert sink.client.stats()["sent"] == 3


@pytest.mark.skipif(sys.version_info < (3, 10), reason="3.9's inspect sees no sink.complete")
def test_complete_flushes_in_plain_code(added, collector, write_key):
    sink = HtEventsSink(write_key=write_key, host=collector.url, flush_interval=60)
    added(sink)
    logger.info("Order completed", htevent={"userId": "1"})
    logger.complete()
    assert [e["userId"] for e in collector.events] == ["1"]  # no wait
    sink.close()


@pytest.mark.skipif(sys.version_info < (3, 10), reason="3.9's inspect sees no sink.complete")
def test_await_complete_flushes_without_blocking_the_loop(added, collector, write_key):
    sink = HtEventsSink(write_key=write_key, host=collector.url, flush_interval=60)
    added(sink)

    async def main() -> None:
        logger.info("Order completed", htevent={"userId": "1"})
        await logger.complete()

    asyncio.run(main())
    assert [e["userId"] for e in collector.events] == ["1"]
    sink.close()


def test_a_sink_given_a_client_only_flushes_it_when_removed(added, collector, write_key, closing):
    client = closing(HtEvents(write_key, host=collector.url, flush_interval=60))
    logger.remove(added(HtEventsSink(client=client)))
    client.track(user_id="1", event="After the sink went")
    assert client.flush(5)
    assert [e["event"] for e in collector.events] == ["After the sink went"]


def test_the_stdlib_handler_added_to_loguru_reads_the_payload_where_loguru_puts_it(added):
    handler = HtEventsHandler(disable=True)
    added(handler, format="{message}")
    with capture_events() as events:
        logger.bind(htevent={"userId": "1"}).info("Order completed")
        with logger.contextualize(user_id="ctx"):
            logger.info("Signed up", htevent={})
        logger.info("no event")
    assert [(e["event"], e["userId"]) for e in events] == [
        ("Order completed", "1"),
        ("Signed up", "ctx"),
    ]


def test_the_packages_own_warnings_never_become_events(sink):
    with capture_events() as events:
        logger.patch(lambda record: record.update(name="htevents_logging.x")).info(
            "loop?", htevent={}
        )
    assert events == []


def test_importing_the_module_does_not_import_loguru():
    from helpers import run_python

    result = run_python(
        "-c",
        "import sys; import htevents_logging.loguru; print('loguru' in sys.modules)",
    )
    assert result.stdout.strip() == "False", result.stderr


def test_a_logging_call_never_waits_on_the_network(added, collector, write_key):
    # loguru calls a sink's flush() after every record: the sink has none, so a call returns
    # while the server hangs. (Regression: it once had one, and each call sent and waited.)
    from htevents_logging.collector import Hang

    collector.script(Hang(30))
    sink = HtEventsSink(write_key=write_key, host=collector.url, shutdown_timeout=0.2)
    added(sink)
    assert not hasattr(sink, "flush")
    logger.info("Order completed", htevent={"userId": "1"})
    stats = sink.client.stats()
    assert (stats["sent"], stats["failed"], collector.events) == (0, 0, [])  # still on its way
    # (enqueued is read without a lock: the thread may have the event in hand for a moment)
    assert wait_until(lambda: sink.client.stats()["enqueued"] == 1)


def test_the_packages_own_modules_never_make_events(sink):
    with capture_events() as events:
        logger.patch(lambda record: record.update(name="htevents_logging._transport")).info(
            "own", htevent={"userId": "1"}
        )
        logger.patch(lambda record: record.update(name="htevents_logging_app")).info(
            "Kept", htevent={"userId": "1"}
        )
    assert [e["event"] for e in events] == ["Kept"]


def test_an_event_logged_on_the_transport_thread_is_counted_not_sent(added, collector, write_key):
    client = HtEvents(write_key, host=collector.url, flush_interval=0.05)
    added(HtEventsSink(client=client))

    def log_from_the_callback(error: Any, message: Any) -> None:  # on the transport thread
        logger.info("Looped", htevent={"userId": "u"})

    try:
        client.track(user_id="u", event="Direct", callback=log_from_the_callback)
        assert client.flush(5)
        assert client.stats()["dropped_by_reason"] == {"transport_thread": 1}
        assert [event["event"] for event in collector.events] == ["Direct"]
    finally:
        client.close()
