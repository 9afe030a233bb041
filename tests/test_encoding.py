"""One encoder: every value is sent, faithfully when possible, never silently dropped or null."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import json
import uuid

from htevents_logging._encoding import dumps


class Plan(enum.Enum):
    PRO = "pro"


@dataclasses.dataclass
class Item:
    sku: str
    qty: int


def roundtrip(value):
    return json.loads(dumps({"v": value}))["v"]


def test_datetimes_are_sent_as_the_timestamp_is_utc_with_milliseconds_and_z(new_york):
    # Regression: a nested datetime was sent as "...05.678000+00:00", or with no zone when
    # naive; the Node SDK sends "...05.678Z". A naive one is local time, as in Python.
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=dt.timezone.utc)
    assert roundtrip(aware) == "2026-01-02T03:04:05.678Z"
    assert roundtrip(dt.datetime(2026, 1, 2, 3, 4, 5, 678_901)) == "2026-01-02T08:04:05.678Z"
    assert roundtrip({"nested": [aware]}) == {"nested": ["2026-01-02T03:04:05.678Z"]}


def test_dates_and_times_of_day_stay_as_they_are():
    assert roundtrip(dt.date(2026, 1, 2)) == "2026-01-02"
    assert roundtrip(dt.time(3, 4, 5)) == "03:04:05"


def test_decimal_uuid_enum_set_tuple_bytes_dataclass():
    assert roundtrip(decimal.Decimal("29.99")) == 29.99
    assert roundtrip(decimal.Decimal("NaN")) == "NaN"
    assert roundtrip(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"
    assert roundtrip(Plan.PRO) == "pro"
    assert roundtrip({3, 1, 2}) == [1, 2, 3]
    assert roundtrip((1, "a")) == [1, "a"]
    assert roundtrip(b"hello") == "hello"
    assert roundtrip(b"\xff\x00") == "/wA="
    assert roundtrip(Item("A-1", 2)) == {"sku": "A-1", "qty": 2}


def test_anything_else_is_its_repr_never_null():
    class Opaque:
        def __repr__(self):
            return "<Opaque 7>"

    assert roundtrip(Opaque()) == "<Opaque 7>"


def test_non_finite_floats_become_strings_so_the_json_stays_valid():
    assert json.loads(dumps([float("nan"), float("inf"), float("-inf")])) == [
        "NaN",
        "Infinity",
        "-Infinity",
    ]


def test_cycles_and_non_string_keys_do_not_raise():
    loop: list = [1]
    loop.append(loop)
    assert json.loads(dumps({"loop": loop, (1, 2): "t", 3: "i"})) == {
        "loop": [1, "<cycle>"],
        "(1, 2)": "t",
        "3": "i",
    }


def test_output_is_compact_utf8():
    assert dumps({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()


def test_a_lone_surrogate_becomes_the_replacement_character():
    # Regression: it was sent as a \ud800 escape, which the endpoint refuses with a 400 that
    # failed every other message of the batch too.
    data = dumps({"s": "ab\ud800cd"})
    assert json.loads(data) == {"s": "ab\ufffdcd"}
    data.decode("utf-8")  # valid UTF-8


def test_a_surrogate_pair_in_two_code_points_becomes_its_character():
    assert json.loads(dumps({"s": "\ud83d\ude00"})) == {"s": "\U0001f600"}
