"""Values of other than builtin types are sent alike by every way in.

A logged payload is taken on the calling thread (frozen by ``marshal``, or copied) and built
later; ``track()`` builds at once. Both must give the same JSON. ``marshal`` writes any object
that exports the buffer protocol as its raw bytes, and NumPy's numbers and arrays export it
(``np.float64(29.99)`` came out as 8 bytes of garbage text), so once NumPy is imported a
logged payload is checked for them before it is frozen. Other buffers (``memoryview``,
``array.array``) are sent as their bytes, as ``bytes`` are, whichever way they came in.

Each case runs in a fresh interpreter: whether NumPy was imported changes how a payload is
taken, so the NumPy cases must not leave it imported for the rest of the suite.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
from helpers import run_python

SEND_FOUR_WAYS = """
import json, logging, sys
from loguru import logger as loguru_logger
from htevents_logging import HtEvents, HtEventsHandler, HtEventsProcessor
from htevents_logging.loguru import HtEventsSink

key, url = sys.argv[1:3]
{setup}
client = HtEvents(key, host=url, flush_interval=60)
handler = HtEventsHandler(client=client)
logger = logging.getLogger("ways_in")
logger.addHandler(handler)
logger.setLevel(logging.INFO)
logger.propagate = False
loguru_logger.remove()
loguru_logger.add(HtEventsSink(client=client))

client.track({{"userId": "u", "event": "track", **payload()}})
logger.info("handler", extra={{"htevent": {{"userId": "u", **payload()}}}})
HtEventsProcessor(client=client)(
    None, "info", {{"event": "processor", "htevent": {{"userId": "u", **payload()}}}}
)
loguru_logger.info("loguru", htevent={{"userId": "u", **payload()}})
assert client.flush(5)
print(json.dumps(client.stats()))
"""


def sent_four_ways(collector: Any, write_key: str, setup: str, tz: str = "UTC") -> dict[str, Any]:
    """The ``properties`` each way in sent for ``payload()`` (defined by ``setup``), by way."""
    code = SEND_FOUR_WAYS.format(setup=textwrap.dedent(setup))
    done = run_python("-c", code, write_key, collector.url, env={"TZ": tz})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["rejected"] == 0, done.stdout
    assert collector.wait_for_events(4, 5)
    return {event["event"]: event["properties"] for event in collector.events}


def test_numpy_numbers_and_arrays_are_sent_as_numbers_and_arrays_by_every_way_in(
    collector, write_key
):
    # Regression: a logged np.float64(29.99) was sent as its 8 raw bytes, read as text,
    # where track() sent 29.99; NumPy numbers that are not float subclasses were sent by
    # track() as their repr ("np.int64(3)"), and a masked array as base64 of its data.
    pytest.importorskip("numpy")
    setup = """
        import numpy as np

        def payload():
            return {"properties": {
                "total": np.float64(29.99),
                "count": np.int64(3),
                "paid": np.bool_(True),
                "sizes": np.array([1, 2]),
                np.str_("sku"): "A-1",
                "masked": np.ma.masked_array([1.5, 2.5], mask=[False, True]),
                "at": np.datetime64("2024-01-02T03:04:05.678901234"),
                "days": np.array(["2024-01-02", "NaT"], dtype="datetime64[D]"),
            }}
    """
    expected = {
        "total": 29.99,
        "count": 3,
        "paid": True,
        "sizes": [1, 2],
        "sku": "A-1",
        "masked": [1.5, None],  # a masked entry has no value
        "at": "2024-01-02T03:04:05.678Z",  # NumPy's datetimes are UTC, whatever TZ says
        "days": ["2024-01-02T00:00:00.000Z", "NaT"],
    }
    sent = sent_four_ways(collector, write_key, setup, tz="America/New_York")
    assert sent == dict.fromkeys(["track", "handler", "processor", "loguru"], expected)


def test_other_buffers_are_sent_as_their_bytes_by_every_way_in(collector, write_key):
    setup = """
        import array

        released = memoryview(b"gone")
        released.release()

        def payload():
            return {"properties": {
                "raw": bytearray(b"abc"),
                "view": memoryview(b"def"),
                "codes": array.array("b", [104, 105]),
                "released": released,
            }}
    """
    expected = {"raw": "abc", "view": "def", "codes": "hi"}
    sent = sent_four_ways(collector, write_key, setup)
    for way, properties in sent.items():
        assert properties.pop("released").startswith("<released memory at"), way
    assert sent == dict.fromkeys(["track", "handler", "processor", "loguru"], expected)


def test_a_mapping_is_read_through_its_items_by_every_way_in(collector, write_key):
    # Regression: copied from its storage, a dict subclass whose items() says otherwise was
    # sent as stored by the logging front-ends, and as items() says by track().
    setup = """
        import datetime

        class Shouting(dict):
            def items(self):
                return [(key, value.upper()) for key, value in super().items()]

        def payload():
            return {"properties": {"at": datetime.date(2026, 12, 4), "tag": Shouting(a="x")}}
    """
    expected = {"at": "2026-12-04", "tag": {"a": "X"}}
    sent = sent_four_ways(collector, write_key, setup)
    assert sent == dict.fromkeys(["track", "handler", "processor", "loguru"], expected)


TAKEN_AT_THE_CALL = """
import numpy as np
from htevents_logging._frontends.snapshot import frozen

# Builtin values only: still frozen by marshal, with NumPy imported.
assert isinstance(frozen({"userId": "u", "properties": {"tags": ["a", (1, 2.5)]}}), bytes)

# A NumPy value in it: copied, NumPy number and all.
held = frozen({"userId": "u", "properties": {"total": np.float64(1.5)}})
assert held == {"userId": "u", "properties": {"total": 1.5}}
assert type(held["properties"]["total"]) is np.float64

# Arrays as their contents are at the call, the objects in an object array too.
sizes = np.array([1, 2, 3])
lines = np.array([{"qty": 1}, None], dtype=object)
held = frozen({"properties": {"sizes": sizes, "lines": lines}})
sizes[0] = 99
lines[0]["qty"] = 99
assert held["properties"]["sizes"].tolist() == [1, 2, 3]
assert held["properties"]["lines"] == [{"qty": 1}, None]
"""


def test_numpy_values_are_taken_as_they_are_at_the_call():
    pytest.importorskip("numpy")
    done = run_python("-c", TAKEN_AT_THE_CALL)
    assert done.returncode == 0, done.stderr
