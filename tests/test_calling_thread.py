"""What a logging call captures on the calling thread, before the transport thread builds it.

The front-ends hand a logged payload over and build the message later, on the transport
thread; these tests pin what must still be taken at the moment of the call.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from htevents_logging import HtEventsHandler, HtEventsProcessor, bind
from htevents_logging._message import new_message_id


@pytest.fixture
def blocked(collector, write_key):
    """A handler and a processor whose transport thread is held until the test releases it,
    so everything the test does after the call happens before the message is built."""
    gate = threading.Event()
    handler = HtEventsHandler(
        write_key=write_key, host=collector.url, flush_interval=60, max_events_in_batch=50
    )
    handler.client.enqueue(_Gate(gate))  # the thread waits here before anything after it
    logger = logging.getLogger("test.calling_thread")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    processor = HtEventsProcessor(client=handler.client)
    yield logger, processor, gate
    gate.set()
    logger.removeHandler(handler)
    handler.close()


class _Gate:
    """A queued item whose preparation waits for the test: it stands for a busy thread."""

    on_error = None

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def prepare(self):
        self.gate.wait(10)
        return None


def deliver(logger, gate, collector, n):
    gate.set()
    assert logger.handlers[0].client.flush(5)
    assert collector.wait_for_events(n, 5)
    return collector.events


def test_the_callers_dicts_may_change_after_the_call(blocked, collector):
    logger, _, gate = blocked
    properties = {"total": 1}
    payload = {"userId": "u", "properties": properties}
    logger.info("Order completed", extra={"htevent": payload})
    properties["total"] = 2
    payload["userId"] = "someone else"
    [event] = deliver(logger, gate, collector, 1)
    assert event["userId"] == "u" and event["properties"] == {"total": 1}


def test_a_payload_marshal_cannot_write_is_still_taken_all_the_way_down(blocked, collector):
    # Regression: such a payload (a datetime in it, say) was copied only one dict deep, so a
    # list of dicts changed after the call was sent as changed.
    logger, _, gate = blocked
    lines = [{"sku": "a", "qty": 1}]
    nested = {"a": {"b": 1}}
    payload = {
        "userId": "u",
        "properties": {"at": dt.date(2026, 12, 4), "lines": lines, "nested": nested},
    }
    logger.info("Order completed", extra={"htevent": payload})
    lines[0]["qty"] = 99
    lines.append({"sku": "b", "qty": 2})
    nested["a"]["b"] = 99
    [event] = deliver(logger, gate, collector, 1)
    assert event["properties"] == {
        "at": "2026-12-04",
        "lines": [{"sku": "a", "qty": 1}],
        "nested": {"a": {"b": 1}},
    }


def test_mutable_buffers_are_taken_as_they_are_at_the_call(blocked, collector):
    logger, _, gate = blocked
    raw = bytearray(b"abc")
    payload = {"userId": "u", "properties": {"at": dt.date(2026, 12, 4), "raw": raw}}
    logger.info("Order completed", extra={"htevent": payload})
    raw[:] = b"XYZ"
    [event] = deliver(logger, gate, collector, 1)
    assert event["properties"]["raw"] == "abc"


@pytest.mark.parametrize("size", [2, 100])
def test_a_payload_that_holds_itself_is_sent_with_the_cycle_marked(blocked, collector, size):
    # Regression (size 100): the copy counted the list's values again at each turn of the
    # cycle, ran past a message's worth and rejected the event as oversize; track() sent it.
    logger, _, gate = blocked
    loop: list[Any] = list(range(size - 1))
    loop.append(loop)
    properties = {"at": dt.date(2026, 1, 1), "loop": loop}
    logger.info("Looped", extra={"htevent": {"userId": "u", "properties": properties}})
    [event] = deliver(logger, gate, collector, 1)
    assert event["properties"]["loop"] == [*range(size - 1), "<cycle>"]


def test_a_payload_with_more_values_than_a_message_has_bytes_is_copied_no_further():
    # It cannot fit in a message (unless before_send takes some out): the calling thread
    # copies a message's worth of values, and then only the dicts directly in the payload.
    from htevents_logging._frontends.snapshot import copied

    rows = list(range(1_000_000))
    properties = {"at": dt.date(2026, 12, 4), "rows": rows}
    held = copied({"userId": "u", "properties": properties})
    assert held["properties"] is not properties and held["properties"]["rows"] is rows


def test_an_object_of_your_own_is_read_when_the_message_is_built(blocked, collector):
    """What the README says: only containers and buffers are copied; an object of another kind
    is kept, and sent as it is when the transport thread builds the message."""
    logger, _, gate = blocked

    class Basket:
        def __init__(self) -> None:
            self.items = 1

        def __repr__(self) -> str:
            return f"Basket({self.items})"

    basket = Basket()
    logger.info("Order completed", extra={"htevent": {"userId": "u", "properties": {"b": basket}}})
    basket.items = 2
    [event] = deliver(logger, gate, collector, 1)
    assert event["properties"]["b"] == "Basket(2)"


def test_the_timestamp_is_the_time_of_the_call(blocked, collector):
    logger, _, gate = blocked
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        "Order completed",
        (),
        None,
        extra={"htevent": {"userId": "u"}},
    )
    record.created = 1_700_000_000.25
    logger.handle(record)
    [event] = deliver(logger, gate, collector, 1)
    assert event["timestamp"] == "2023-11-14T22:13:20.250Z"


def test_the_identity_is_the_one_bound_at_the_call(blocked, collector):
    logger, processor, gate = blocked
    with bind(user_id="bound-at-call", context={"ip": "203.0.113.5"}):
        logger.info("From the handler", extra={"htevent": {}})
        processor(None, "info", {"event": "From the processor", "htevent": {}})
    with bind(user_id="bound-later"):
        events = deliver(logger, gate, collector, 2)
    assert {e["userId"] for e in events} == {"bound-at-call"}
    assert all(e["context"]["ip"] == "203.0.113.5" for e in events)


def test_the_log_message_is_formatted_at_the_call(blocked, collector):
    logger, _, gate = blocked
    cart = ["apple"]
    logger.info("Cart %s checked out", cart, extra={"htevent": {"userId": "u"}})
    cart.append("pear")
    [event] = deliver(logger, gate, collector, 1)
    assert event["event"] == "Cart ['apple'] checked out"


def test_message_ids_are_random_version_4_uuids():
    ids = {new_message_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for text in list(ids)[:100]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text


def test_queued_events_of_one_logger_share_one_origin(monkeypatch):
    """A queued event keeps where it was logged (for the warning, should it be invalid): one
    tuple per logger, not one per record, so a full queue holds less."""
    from htevents_logging._frontends import shared

    origins = shared.LoggerOrigins()
    assert origins["app.orders"] is origins["app.orders"] == ("logger", "app.orders", "")

    monkeypatch.setattr(shared, "MAX_LOGGER_ORIGINS", 1)
    bounded = shared.LoggerOrigins()
    bounded["first"], bounded["second"], bounded["third"]
    assert list(bounded) == ["first"]  # a service naming a logger per request cannot grow it
    assert bounded["third"] == ("logger", "third", "")


def test_the_packages_own_loggers_have_no_origin_so_their_records_are_never_events():
    from htevents_logging._frontends import shared

    origins = shared.LoggerOrigins()
    assert origins["htevents_logging"] is None and origins["htevents_logging.transport"] is None
    assert origins["htevents_logging_app"] == ("logger", "htevents_logging_app", "")


def test_an_invalid_event_queued_still_names_its_logger(blocked, caplog):
    logger, _, gate = blocked
    logger.info("Order completed", extra={"htevent": {"userID": "typo"}})
    with caplog.at_level(logging.WARNING, logger="htevents_logging"):
        gate.set()
        assert logger.handlers[0].client.flush(5)
    assert "on logger 'test.calling_thread'" in caplog.text
    assert "userID" in caplog.text


def queue_draft(payload: Any) -> Any:
    """What ``send_payload`` queues for ``payload`` (to a stand-in client's queue)."""
    from htevents_logging._frontends.shared import send_payload

    queued: list[Any] = []
    client = SimpleNamespace(
        settings=SimpleNamespace(capture_trace_context=False), enqueue=queued.append
    )
    send_payload(
        client,  # type: ignore[arg-type]
        payload,
        "htevent",  # the payload key
        ("logger", "x", ""),  # the origin
        "Order",  # the event a track names by default
        1.0,  # the timestamp
        None,  # no fields beside the payload
        None,  # no identity
    )
    [draft] = queued
    return draft


def test_a_queued_event_is_one_small_object_its_payload_frozen_in_bytes():
    """A backlog is what a burst or an outage costs in memory, and the garbage collections the
    application runs traverse it: a queued logged event is one tracked object of about 100
    bytes, its payload written by marshal as it was at the call, all the way down."""
    import gc
    import marshal
    import sys

    tags = ["new"]
    payload = {"userId": "1", "properties": {"total": 9.5, "tags": tags}}
    draft = queue_draft(payload)
    tags.append("changed after the call")
    payload["properties"]["total"] = 0

    assert type(draft.payload) is bytes and not gc.is_tracked(draft.payload)
    assert marshal.loads(draft.payload) == {
        "userId": "1",
        "properties": {"total": 9.5, "tags": ["new"]},
    }
    assert sys.getsizeof(draft) <= 120 and not hasattr(draft, "__dict__")
    assert (draft.event_default, draft.timestamp, draft.origin) == (
        "Order",
        1.0,
        ("logger", "x", ""),
    )


def test_a_payload_marshal_cannot_write_is_copied_with_its_dicts():
    when = dt.datetime(2026, 12, 4, tzinfo=dt.timezone.utc)
    payload = {"userId": "1", "properties": {"at": when}}
    draft = queue_draft(payload)
    payload["properties"]["at"] = None

    assert draft.payload == {"userId": "1", "properties": {"at": when}}
    assert draft.payload["properties"] is not payload["properties"]
