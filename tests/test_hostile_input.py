"""Hostile input: whatever a service logs, the logging call never raises, every accepted message
arrives as valid JSON, and every rejected one is counted with a (rate-limited) warning."""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime as dt
import decimal
import enum
import json
import logging
import uuid
from typing import Any

import pytest
from helpers import assert_flushed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from htevents_logging import HtEventsHandler, HtEventsProcessor
from htevents_logging._diagnostics import reset_warning_limits


class Colour(enum.Enum):
    RED = "red"
    ODD = object()


@dataclasses.dataclass
class Point:
    x: Any
    y: Any


class NoJson:
    """An object with no JSON form at all."""

    __slots__ = ()


def cycle(kind: str) -> Any:
    if kind == "list":
        loop: list[Any] = [1]
        loop.append(loop)
        return loop
    loop_dict: dict[str, Any] = {"a": 1}
    loop_dict["self"] = loop_dict
    return loop_dict


texts = st.text(alphabet=st.characters(blacklist_categories=()), max_size=40)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())),
    st.dates(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.uuids(),
    st.sampled_from(list(Colour)),
    st.binary(max_size=30),
    st.builds(NoJson),
    st.builds(Point, st.integers(), texts),
    st.sampled_from(["list", "dict"]).map(cycle),
    st.just("x" * 1_000_000),  # 1 MB: over the 32 KB limit, so rejected
)
keys = st.one_of(texts, st.integers(), st.booleans(), st.none(), st.tuples(st.integers()))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.frozensets(st.integers(), max_size=4),
        st.dictionaries(keys, inner, max_size=4),
    ),
    max_leaves=12,
)
ids = st.one_of(st.none(), texts, st.integers(), st.floats(), st.booleans(), st.builds(NoJson))
payloads = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["track", "identify", "page", "screen", "group", "bogus"]),
            "userId": ids,
            "anonymousId": ids,
            "event": st.one_of(texts, values),
            "properties": st.one_of(st.dictionaries(keys, values, max_size=5), values),
            "traits": st.dictionaries(keys, values, max_size=5),
            "context": st.one_of(st.dictionaries(texts, values, max_size=3), values),
            "groupId": ids,
            "timestamp": st.one_of(st.datetimes(), texts, st.floats(), values),
            "integrations": st.dictionaries(texts, st.booleans(), max_size=3),
            texts.filter(lambda k: k not in {"type"}): values,
        },
    ),
    values,
)


@pytest.fixture
def front_ends(collector, write_key):
    handler = HtEventsHandler(
        write_key=write_key, host=collector.url, flush_interval=0.05, max_events_in_batch=50
    )
    logger = logging.getLogger("test.hostile")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    processor = HtEventsProcessor(client=handler.client)
    reset_warning_limits()
    yield logger, processor, handler.client
    logger.removeHandler(handler)
    handler.close()


def test_no_payload_ever_raises_and_each_is_delivered_or_counted(front_ends, collector, caplog):
    logger, processor, client = front_ends
    calls = 0

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,  # the same examples every run: CI stays repeatable
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=payloads)
    def log_it(payload: Any) -> None:
        nonlocal calls
        logger.info("Hostile %s", "input", extra={"htevent": payload})
        event_dict = processor(None, "info", {"event": "Hostile", "htevent": payload})
        assert "htevent" not in event_dict
        calls += 0 if payload is None else 2  # htevent=None is no event at all

    with caplog.at_level(logging.WARNING, logger="htevents_logging"):
        log_it()
        assert_flushed(client, 20)
    stats = client.stats()
    assert stats["dropped"] == 0 and stats["failed"] == 0
    assert stats["sent"] + stats["rejected"] == calls
    assert stats["sent"] > 0 and stats["rejected"] > 0  # the strategy makes both
    assert collector.wait_for_events(stats["sent"], 5)
    assert all(r.status == 200 for r in collector.requests)  # the collector parsed them all
    for request in collector.requests:
        json.loads(request.body, parse_constant=pytest.fail)  # strict JSON: no NaN/Infinity
    warnings = [r for r in caplog.records if r.name == "htevents_logging"]
    assert warnings, "rejections must be reported"
    assert len(warnings) < stats["rejected"]  # rate-limited: not one per bad call
    assert all("payload logged" in r.getMessage() for r in warnings)


def test_a_hot_loop_of_bad_input_gives_one_warning_and_counts_every_call(front_ends, caplog):
    logger, _, client = front_ends
    with caplog.at_level(logging.WARNING, logger="htevents_logging"):
        for _ in range(5_000):
            logger.info("Bad", extra={"htevent": {"properties": "not a mapping"}})
        assert_flushed(client, 10)
    warnings = [r for r in caplog.records if r.name == "htevents_logging"]
    assert len(warnings) == 1
    assert "'test.hostile'" in warnings[0].getMessage()
    assert "properties" in warnings[0].getMessage()
    assert client.stats()["rejected_by_reason"] == {"invalid": 5_000}


def test_odd_values_are_sent_in_their_json_form_not_dropped(front_ends, collector):
    logger, _, client = front_ends
    properties = {
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "price": decimal.Decimal("9.99"),
        "id": uuid.UUID(int=7),
        "colour": Colour.RED,
        "tags": {"b", "a"},
        "raw": b"\xff",
        "point": Point(1, "y"),
        "opaque": NoJson(),
        1: "int key",
    }
    logger.info("Odd values", extra={"htevent": {"userId": "u", "properties": properties}})
    assert_flushed(client, 5)
    [event] = collector.events
    sent = event["properties"]
    assert sent["when"] == "2026-01-02T03:04:05.000Z" and sent["price"] == 9.99
    assert sent["id"] == str(uuid.UUID(int=7)) and sent["colour"] == "red"
    assert sent["tags"] == ["a", "b"] and sent["raw"] == "/w=="
    assert sent["point"] == {"x": 1, "y": "y"} and sent["opaque"].startswith("<")
    assert sent["1"] == "int key"


class Unprintable:
    """An object whose ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no text for you")


class BrokenMapping(collections.abc.Mapping):
    """A mapping whose every read raises."""

    def __getitem__(self, key: Any) -> Any:
        raise RuntimeError("unreadable mapping")

    def __iter__(self) -> Any:
        raise RuntimeError("unreadable mapping")

    def __len__(self) -> int:
        return 1

    def __contains__(self, key: Any) -> bool:
        raise RuntimeError("unreadable mapping")


def test_objects_that_cannot_even_be_read_are_counted_and_never_raise(front_ends, caplog):
    # Regression: the processor read the event and the payload outside its safety net, and
    # both front-ends warned about an unreadable payload without counting it as rejected.
    logger, processor, client = front_ends
    with caplog.at_level(logging.WARNING, logger="htevents_logging"):
        processor(None, "info", {"event": Unprintable(), "htevent": {"userId": "u"}})
        processor(None, "info", {"event": "x", "logger": Unprintable(), "htevent": {}})
        processor(None, "info", {"event": "x", "htevent": BrokenMapping()})
        logger.info("Broken", extra={"htevent": BrokenMapping()})
        assert_flushed(client, 5)
    assert client.stats()["rejected_by_reason"] == {"invalid": 4}
    assert client.stats()["sent"] == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "htevents_logging"]
    assert any("no text for you" in m for m in messages)
    assert any("unreadable mapping" in m for m in messages)
