"""Values that export the buffer protocol are sent alike by every way in.

A logged payload is frozen with ``marshal`` on the calling thread, and ``marshal`` writes any
object that exports the buffer protocol as its raw bytes. NumPy's numbers and arrays export it
(``np.float64(29.99)`` came out as 8 bytes of garbage text), so a logged payload is checked for
them before it is frozen, and they are sent as ``track()`` sends them: as numbers and arrays.
Other buffers (``memoryview``, ``array.array``) are sent as their bytes, as ``bytes`` are,
whichever way they came in.
"""

from __future__ import annotations

import array
import logging
from typing import Any

import pytest

from htevents_logging import HtEvents, HtEventsHandler, HtEventsProcessor


def sent_three_ways(collector: Any, write_key: str, make_payload: Any) -> list[dict[str, Any]]:
    """The ``properties`` each way in sent for the same payload: ``track()``, a logged
    record, and a structlog event dict, in that order."""
    client = HtEvents(write_key, host=collector.url, flush_interval=60)
    handler = HtEventsHandler(client=client)
    logger = logging.getLogger("test.buffer_values")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        client.track({"userId": "u", "event": "Way in", **make_payload()})
        logger.info("Way in", extra={"htevent": {"userId": "u", **make_payload()}})
        HtEventsProcessor(client=client)(
            None, "info", {"event": "Way in", "htevent": {"userId": "u", **make_payload()}}
        )
        assert client.flush(5)
        assert collector.wait_for_events(3, 5)
    finally:
        logger.removeHandler(handler)
        client.close()
    return [event["properties"] for event in collector.events]


def test_numpy_numbers_and_arrays_are_sent_as_numbers_and_arrays_by_every_way_in(
    collector, write_key, new_york
):
    # Regression: a logged np.float64(29.99) was sent as its 8 raw bytes, read as text,
    # where track() sent 29.99; NumPy numbers that are not float subclasses were sent by
    # track() as their repr ("np.int64(3)").
    np = pytest.importorskip("numpy")

    def payload() -> dict[str, Any]:
        return {
            "properties": {
                "total": np.float64(29.99),
                "count": np.int64(3),
                "paid": np.bool_(True),
                "sizes": np.array([1, 2]),
                np.str_("sku"): "A-1",
                "at": np.datetime64("2024-01-02T03:04:05.678901234"),
                "days": np.array(["2024-01-02", "NaT"], dtype="datetime64[D]"),
            }
        }

    expected = {
        "total": 29.99,
        "count": 3,
        "paid": True,
        "sizes": [1, 2],
        "sku": "A-1",
        "at": "2024-01-02T03:04:05.678Z",  # NumPy's datetimes are UTC
        "days": ["2024-01-02T00:00:00.000Z", "NaT"],
    }
    assert sent_three_ways(collector, write_key, payload) == [expected] * 3


def test_other_buffers_are_sent_as_their_bytes_by_every_way_in(collector, write_key):
    def payload() -> dict[str, Any]:
        return {
            "properties": {
                "raw": bytearray(b"abc"),
                "view": memoryview(b"def"),
                "codes": array.array("b", [104, 105]),
            }
        }

    expected = {"raw": "abc", "view": "def", "codes": "hi"}
    assert sent_three_ways(collector, write_key, payload) == [expected] * 3


def test_a_logged_payload_without_numpy_values_is_still_frozen_by_marshal():
    # With NumPy imported, a payload of plain values is checked and then frozen as before
    # (one bytes object), and one holding a NumPy value is copied instead.
    np = pytest.importorskip("numpy")
    from htevents_logging._frontends.snapshot import frozen

    assert isinstance(frozen({"userId": "u", "properties": {"tags": ["a", (1, 2.5)]}}), bytes)
    held = frozen({"userId": "u", "properties": {"total": np.float64(1.5)}})
    assert held == {"userId": "u", "properties": {"total": 1.5}}
    assert type(held["properties"]["total"]) is np.float64


def test_a_numpy_array_is_taken_as_it_is_at_the_call():
    np = pytest.importorskip("numpy")
    from htevents_logging._frontends.snapshot import frozen

    sizes = np.array([1, 2, 3])
    held = frozen({"userId": "u", "properties": {"sizes": sizes}})
    sizes[0] = 99
    assert isinstance(held, dict) and held["properties"]["sizes"].tolist() == [1, 2, 3]
