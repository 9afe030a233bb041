"""The message model: both spellings, validation naming the field, and the wire form."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htevents_logging import HtEvents, bind
from htevents_logging._message import build_message, format_timestamp


@pytest.fixture
def htevents():
    return HtEvents(disable=True)


def test_each_call_returns_the_normalized_message_with_a_uuid4_message_id(htevents):
    message = htevents.track(user_id="123", event="Order completed", properties={"total": 29.99})
    assert uuid.UUID(message["messageId"]).version == 4
    assert message["type"] == "track"
    assert message["userId"] == "123"
    assert message["properties"] == {"total": 29.99}
    assert message["integrations"] == {}
    assert message["context"]["library"] == {"name": "htevents-logging", "version": "0.1.0"}


def test_the_seed_mapping_form_and_the_keyword_form_build_the_same_message(htevents):
    seed = htevents.identify({"userId": "1", "traits": {"a": 1}, "messageId": "m"})
    keyword = htevents.identify(user_id="1", traits={"a": 1}, message_id="m")
    assert {**seed, "timestamp": None} == {**keyword, "timestamp": None}


def test_mappings_take_snake_case_too_and_mix_with_keywords(htevents):
    message = htevents.group({"user_id": "1"}, group_id="g")
    assert (message["userId"], message["groupId"]) == ("1", "g")


def test_the_same_field_twice_with_different_values_is_an_error(htevents):
    with pytest.raises(ValueError, match="userId given twice"):
        htevents.track({"userId": "1", "event": "x"}, user_id="2")
    # ...but the same value twice is fine
    assert htevents.track({"userId": "1"}, user_id="1", event="x")["userId"] == "1"


@pytest.mark.parametrize(
    ("call", "kwargs", "error", "field"),
    [
        ("track", {"user_id": "1"}, ValueError, "event"),
        ("group", {"user_id": "1"}, ValueError, "groupId"),
        ("alias", {"user_id": "1"}, ValueError, "previousId"),
        ("alias", {"previous_id": "a"}, ValueError, "userId"),
        ("track", {"event": "x", "properties": 5}, TypeError, "properties"),
        ("identify", {"traits": ["a"]}, TypeError, "traits"),
        ("track", {"event": "x", "user_id": True}, TypeError, "userId"),
        ("track", {"event": "x", "colour": "red"}, ValueError, "colour"),
        ("identify", {"event": "x"}, ValueError, "event"),
        ("track", {"event": "x", "timestamp": "yesterday"}, ValueError, "timestamp"),
        ("page", {"name": 5}, TypeError, "name"),
    ],
)
def test_programming_errors_raise_naming_the_field(htevents, call, kwargs, error, field):
    with pytest.raises(error, match=field):
        getattr(htevents, call)(**kwargs)


def test_bad_calls_are_counted_as_rejected(htevents):
    with pytest.raises(ValueError):
        htevents.track(user_id="1")
    assert htevents.stats()["rejected_by_reason"] == {"invalid": 1}


def test_an_anonymous_id_is_generated_when_both_ids_are_missing(htevents):
    message = htevents.track(event="x")
    assert "userId" not in message
    assert uuid.UUID(message["anonymousId"]).version == 4


def test_absent_ids_are_omitted_and_numeric_ids_become_strings(htevents):
    message = htevents.group(user_id=42, group_id=7)
    assert message["userId"] == "42" and message["groupId"] == "7"
    assert "anonymousId" not in message
    assert None not in message.values()


def test_page_copies_category_into_properties_screen_does_not(htevents):
    page = htevents.page(user_id="1", name="Intro", category="Docs", properties={"url": "/d"})
    assert page["properties"] == {"url": "/d", "category": "Docs"}
    assert page["category"] == "Docs"
    screen = htevents.screen(user_id="1", name="Home", category="Main")
    assert screen["properties"] == {}


def test_the_library_is_merged_into_the_callers_context_which_is_never_mutated(htevents):
    context = {"ip": "203.0.113.5", "library": {"foo": "bar"}}
    properties = {"total": 1}
    message = htevents.track(user_id="1", event="x", context=context, properties=properties)
    assert message["context"] == {
        "ip": "203.0.113.5",
        "library": {"foo": "bar", "name": "htevents-logging", "version": "0.1.0"},
    }
    assert context == {"ip": "203.0.113.5", "library": {"foo": "bar"}}
    message["properties"]["total"] = 2
    assert properties == {"total": 1}


def test_timestamps_are_utc_milliseconds_z():
    assert format_timestamp(0.1234) == "1970-01-01T00:00:00.123Z"
    utc = dt.timezone.utc
    assert (
        format_timestamp(dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=utc))
        == "2024-01-02T03:04:05.678Z"
    )
    aware = dt.datetime(2024, 1, 2, 5, 4, 5, 678000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_timestamp(aware) == "2024-01-02T03:04:05.678Z"
    assert format_timestamp("2024-01-02T03:04:05.678Z") == "2024-01-02T03:04:05.678Z"
    assert format_timestamp("2024-01-02T05:04:05.678+02:00") == "2024-01-02T03:04:05.678Z"


def test_epoch_seconds_keep_their_millisecond_exactly():
    # Regression: 1704164645.678 is 1704164645.6779999... as a float and was sent as .677Z,
    # in about half of all cases.
    wrong = [
        ms
        for ms in range(1000)
        if format_timestamp(1704164645 + ms / 1000) != f"2024-01-02T03:04:05.{ms:03d}Z"
    ]
    assert wrong == []
    assert format_timestamp(1704164645) == "2024-01-02T03:04:05.000Z"


def test_a_naive_datetime_is_local_time_as_everywhere_in_python(new_york):
    # Regression: datetime.now() under TZ=America/New_York was sent 5 hours off (read as UTC).
    naive = dt.datetime(2024, 1, 2, 3, 4, 5, 678000)
    assert format_timestamp(naive) == "2024-01-02T08:04:05.678Z"
    assert format_timestamp(naive) == format_timestamp(naive.timestamp())
    # An ISO-8601 string without an offset is UTC, as the API reads it.
    assert format_timestamp("2024-01-02T03:04:05") == "2024-01-02T03:04:05.000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-02T03:04:05.1Z", "2024-01-02T03:04:05.100Z"),
        ("2024-01-02T03:04:05.123456789Z", "2024-01-02T03:04:05.123Z"),
        ("2024-01-02T03:04:05,678Z", "2024-01-02T03:04:05.678Z"),
        ("2024-01-02T05:04:05.678+0200", "2024-01-02T03:04:05.678Z"),
        ("2024-01-02T01:04:05-02", "2024-01-02T03:04:05.000Z"),
        ("20240102T030405Z", "2024-01-02T03:04:05.000Z"),
        ("2024-01-02 03:04", "2024-01-02T03:04:00.000Z"),
        ("2024-01-02", "2024-01-02T00:00:00.000Z"),
    ],
)
def test_iso_8601_strings_are_read_alike_on_every_python(text, expected):
    # Regression: datetime.fromisoformat refuses most of these before Python 3.11.
    assert format_timestamp(text) == expected


@pytest.mark.parametrize("text", ["2024-13-02T03:04:05Z", "2024-01-02T03:04:05+25:00", "2024"])
def test_an_iso_8601_string_that_is_no_time_is_a_value_error(text):
    with pytest.raises(ValueError, match="not an ISO-8601 time"):
        format_timestamp(text)


def test_timestamp_defaults_to_the_time_of_the_call(htevents):
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    stamp = htevents.track(user_id="1", event="x")["timestamp"]
    parsed = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
    assert abs((parsed - before).total_seconds()) < 2


def test_a_given_message_id_is_kept(htevents):
    assert htevents.alias(user_id="u", previous_id="a", message_id="m-1")["messageId"] == "m-1"


def test_bound_identity_fills_missing_ids_and_context_goes_under_the_messages_own():
    with bind(user_id="u-1", context={"ip": "1.2.3.4", "locale": "fr"}):
        message = build_message("track", {"event": "x", "context": {"locale": "en"}})
        explicit = build_message("track", {"event": "x", "anonymousId": "a"})
    assert message["userId"] == "u-1"
    assert message["context"]["ip"] == "1.2.3.4" and message["context"]["locale"] == "en"
    assert explicit["anonymousId"] == "a" and "userId" not in explicit


@pytest.mark.parametrize(
    "stamp",
    [1e20, float("nan"), float("inf"), -1e12, dt.datetime(1, 1, 1, tzinfo=dt.timezone.max)],
)
def test_a_timestamp_out_of_range_is_a_value_error_naming_it(htevents, stamp):
    """Regression: epoch seconds past year 9999 raised OSError (EOVERFLOW) from gmtime, which
    the logging front-ends reported but did not count as rejected."""
    with pytest.raises(ValueError, match="timestamp"):
        htevents.track(user_id="1", event="x", timestamp=stamp)
    assert htevents.stats()["rejected_by_reason"] == {"invalid": 1}


def test_early_years_are_zero_padded():
    assert format_timestamp(dt.datetime(5, 1, 2)) == "0005-01-02T00:00:00.000Z"
    assert format_timestamp(-61_000_000_000) == "0036-12-26T11:33:20.000Z"
    assert format_timestamp(dt.date(33, 3, 3)) == "0033-03-03T00:00:00.000Z"


def test_ids_may_be_uuids_and_are_sent_as_strings():
    # Regression: track(user_id=UUID) raised TypeError, and bind(user_id=UUID) in a
    # middleware failed the request.
    user, group = uuid.UUID(int=1), uuid.UUID(int=2)
    message = build_message("group", {"userId": user, "groupId": group})
    assert message["userId"] == "00000000-0000-0000-0000-000000000001"
    assert message["groupId"] == "00000000-0000-0000-0000-000000000002"
    with bind(user_id=user):
        assert build_message("track", {"event": "e"})["userId"] == str(user)
    with pytest.raises(TypeError, match="userId must be a str, a number or a UUID"):
        build_message("track", {"event": "e", "userId": ["x"]})


def test_made_ids_are_distinct_rfc_4122_version_4_uuids_across_refills():
    from htevents_logging._message import new_message_id

    ids = [new_message_id() for _ in range(3 * 256 + 7)]  # several reads of the random source
    assert len(set(ids)) == len(ids)
    for made in ids:
        parsed = uuid.UUID(made)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, made)


def test_every_random_digit_of_a_made_id_is_its_own():
    """The ids are laid out column by column: each of the 30 random places takes all 16 hex
    digits, the variant place 8, 9, a or b, and no two places carry the same digit."""
    from htevents_logging._message import new_message_id

    ids = [new_message_id() for _ in range(4096)]
    columns = ["".join(made[at] for made in ids) for at in range(36)]
    fixed = {8: {"-"}, 13: {"-"}, 18: {"-"}, 23: {"-"}, 14: {"4"}, 19: set("89ab")}
    for at, column in enumerate(columns):
        assert set(column) == fixed.get(at, set("0123456789abcdef")), at
    random_places = [column for at, column in enumerate(columns) if at not in fixed]
    assert len(set(random_places)) == len(random_places)


@settings(max_examples=2000, deadline=None)
@given(
    st.datetimes(
        min_value=dt.datetime(1, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [
                dt.timezone.utc,
                dt.timezone(dt.timedelta(hours=5, minutes=30)),
                dt.timezone(-dt.timedelta(hours=8)),
            ]
        ),
    )
)
def test_an_aware_datetime_is_formatted_exactly_whatever_the_path(value):
    # Most aware datetimes go by their epoch seconds (faster); the millisecond must be the
    # one converting to UTC gives, in every year.
    utc = value.astimezone(dt.timezone.utc)
    expected = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    assert format_timestamp(value) == expected.rjust(24, "0")


def test_times_in_the_same_millisecond_or_the_next_read_alike_from_the_kept_text():
    """The text of the last millisecond is kept (a burst logs many per millisecond): each
    time still gets its own millisecond, second and day."""
    base = 1704239999.998  # 2024-01-02T23:59:59.998Z
    expected = [
        (base, "2024-01-02T23:59:59.998Z"),
        (base + 0.0004, "2024-01-02T23:59:59.998Z"),
        (base + 0.001, "2024-01-02T23:59:59.999Z"),
        (base + 0.002, "2024-01-03T00:00:00.000Z"),
        (base, "2024-01-02T23:59:59.998Z"),
        (-0.0005, "1969-12-31T23:59:59.999Z"),
        (-0.0005, "1969-12-31T23:59:59.999Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
    ]
    assert [(stamp, format_timestamp(stamp)) for stamp, _ in expected] == expected


@pytest.mark.parametrize(
    "message",
    [
        {"userId": "u", "properties": {"total": 9.5, "name": "caf\u00e9"}},
        {"userId": "u", "context": {"ip": "1.2.3.4"}},
        {"userId": "u", "integrations": {"All": False}},
        {"userId": "u", "context": {"library": {"name": "mine"}}},
        {"userId": "u", "properties": {"bad": "\ud800"}},  # a lone surrogate, replaced
    ],
)
def test_a_built_message_is_encoded_to_the_same_bytes_as_any_other_value(message):
    from htevents_logging._encoding import dumps
    from htevents_logging._message import encode_message

    built = build_message("track", message, event_default="Order", identity=None)
    expected = dumps(built)
    assert encode_message(built) == expected
    assert json.loads(expected)["context"]["library"]["name"] == "htevents-logging"
    assert dumps(built) == expected  # the message is left as it was, fields in order


def test_the_fields_checked_without_a_call_keep_their_rules():
    """Ids that are non-empty strs, a str event and absent context and integrations are taken
    as they are (no checking call for them); everything else is still checked and converted."""
    made = build_message(
        "track",
        {"userId": "", "anonymousId": 7, "event": "", "context": {"library": "not a mapping"}},
        event_default="From the log",
        identity=None,
    )
    assert "userId" not in made and made["anonymousId"] == "7"  # "" is no id; 7 becomes "7"
    assert made["event"] == "From the log"  # an empty event takes the default
    assert made["context"]["library"] == {"name": "htevents-logging", "version": "0.1.0"}
    assert made["integrations"] == {}
    with pytest.raises(TypeError, match="track: userId must be a str"):
        build_message("track", {"userId": ["u"], "event": "E"}, identity=None)
    with pytest.raises(TypeError, match="track: event must be a str"):
        build_message("track", {"userId": "u", "event": 3}, identity=None)
    with pytest.raises(TypeError, match="track: integrations must be a mapping"):
        build_message("track", {"userId": "u", "event": "E", "integrations": 1}, identity=None)
