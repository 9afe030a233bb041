"""The stdlib front-end: ``HtEventsHandler`` turns records that carry ``htevent`` into events."""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
import logging.handlers
import queue
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import _app_events
import pytest
from helpers import run_python, transport_threads, wait_until

from htevents_logging import CaptureIdentity, HtEvents, bind
from htevents_logging._diagnostics import reset_warning_limits
from htevents_logging._frontends.handler import HtEventsHandler
from htevents_logging._frontends.processor import HtEventsProcessor
from htevents_logging.collector import Collector, Hang
from htevents_logging.testing import capture_events

HANDLER_CLASS = "htevents_logging._frontends.handler.HtEventsHandler"


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def _fresh_warning_limits() -> Iterator[None]:
    """Every test sees the first warning of each kind (they are rate-limited process-wide)."""
    reset_warning_limits()
    yield
    reset_warning_limits()


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Undo whatever a test (or its dictConfig) did to the loggers, and close its handlers."""
    manager = logging.root.manager
    loggers = [logging.root] + [
        lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    saved = {lg: (lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers}
    yield
    for lg in [logging.root] + [
        lg for lg in manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]:
        level, handlers, propagate, disabled = saved.get(lg, (logging.NOTSET, [], True, False))
        for handler in list(lg.handlers):
            if handler not in handlers:
                lg.removeHandler(handler)
                handler.close()
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


@pytest.fixture
def make_handler(closing: Callable[[Any], Any]) -> Callable[..., HtEventsHandler]:
    """Build handlers that are closed after the test (transports are shared process-wide)."""
    return lambda **kwargs: closing(HtEventsHandler(**kwargs))


@pytest.fixture
def delivery(collector: Collector, write_key) -> dict[str, Any]:
    """Client settings that deliver to the test's collector within 50 ms."""
    return {
        "write_key": write_key,
        "host": collector.url,
        "flush_interval": 0.05,
        "shutdown_timeout": 2.0,
    }


@pytest.fixture
def app_logger(logging_state: None) -> logging.Logger:
    """The application's logger, at INFO, not propagating to the test runner's handlers."""
    logger = logging.getLogger("app.checkout")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def make_record(
    msg: str, *args: Any, name: str = "app.checkout", level: int = logging.INFO, **attrs: Any
) -> logging.LogRecord:
    """A record as ``logger.info(msg, *args, extra=attrs)`` would make it."""
    record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    for key, value in attrs.items():
        setattr(record, key, value)
    return record


def package_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "htevents_logging" and r.levelno == logging.WARNING
    ]


# --------------------------------------------------------------------------------------------
# Which records are events


def test_records_without_the_payload_are_ignored_before_any_filter_runs(make_handler):
    handler = make_handler(disable=True)
    seen = []
    handler.addFilter(lambda record: seen.append(record) or True)

    with capture_events() as events:
        handled = handler.handle(make_record("just a log line"))

    assert handled is False
    assert seen == []
    assert events == []


def test_a_payload_becomes_a_track_whose_event_is_the_formatted_message(make_handler):
    handler = make_handler(disable=True)
    record = make_record(
        "Order %s completed", "A-42", htevent={"userId": "123", "properties": {"total": 29.99}}
    )

    with capture_events() as events:
        handler.handle(record)

    [event] = events
    assert event["type"] == "track"
    assert event["event"] == "Order A-42 completed"
    assert event["userId"] == "123"
    assert event["properties"] == {"total": 29.99}


def test_the_timestamp_defaults_to_record_created(make_handler):
    handler = make_handler(disable=True)
    record = make_record("Signed up", htevent={"userId": "1"})
    record.created = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z

    with capture_events() as events:
        handler.handle(record)

    assert events[0]["timestamp"] == "2023-11-14T22:13:20.250Z"


def test_the_payload_s_own_event_and_timestamp_win(make_handler):
    handler = make_handler(disable=True)
    record = make_record(
        "log text", htevent={"event": "Order completed", "timestamp": "2024-01-02T03:04:05Z"}
    )

    with capture_events() as events:
        handler.handle(record)

    assert events[0]["event"] == "Order completed"
    assert events[0]["timestamp"] == "2024-01-02T03:04:05.000Z"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"type": "identify", "userId": "1", "traits": {"plan": "pro"}},
            {"traits": {"plan": "pro"}},
        ),
        ({"type": "page", "userId": "1", "name": "Home"}, {"name": "Home"}),
        ({"type": "screen", "userId": "1", "name": "Cart"}, {"name": "Cart"}),
        ({"type": "group", "userId": "1", "group_id": "g"}, {"groupId": "g"}),
        ({"type": "alias", "userId": "1", "previousId": "anon"}, {"previousId": "anon"}),
    ],
)
def test_the_payload_type_chooses_the_message_type(make_handler, payload, expected):
    handler = make_handler(disable=True)

    with capture_events() as events:
        handler.handle(make_record("the log message", htevent=payload))

    [event] = events
    assert event["type"] == payload["type"]
    assert expected.items() <= event.items()
    assert "event" not in event  # the log message is only the default of a track's event


def test_through_a_logger_with_extra(make_handler, app_logger):
    app_logger.addHandler(make_handler(disable=True))

    with capture_events() as events:
        app_logger.info("Order %s completed", "A-42", extra={"htevent": {"userId": "123"}})
        app_logger.info("a plain line")

    assert [e["event"] for e in events] == ["Order A-42 completed"]


def test_payload_key_renames_the_attribute(make_handler, app_logger):
    app_logger.addHandler(make_handler(disable=True, payload_key="analytics"))

    with capture_events() as events:
        app_logger.info("Renamed", extra={"analytics": {"userId": "1"}})
        app_logger.info("Old name", extra={"htevent": {"userId": "1"}})

    assert [e["event"] for e in events] == ["Renamed"]


def test_level_and_filters_apply_to_events(make_handler, app_logger):
    handler = make_handler(disable=True, level=logging.WARNING)
    handler.addFilter(lambda record: not getattr(record, "htevent", {}).get("internal"))
    app_logger.addHandler(handler)

    with capture_events() as events:
        app_logger.info("below the handler's level", extra={"htevent": {}})
        app_logger.warning("filtered out", extra={"htevent": {"internal": True}})
        app_logger.warning("Refund issued", extra={"htevent": {"userId": "1"}})

    assert [e["event"] for e in events] == ["Refund issued"]


def test_bad_percent_args_fall_back_to_the_unformatted_message(make_handler):
    handler = make_handler(disable=True)

    with capture_events() as events:
        handler.handle(make_record("Order %s %s", "only-one", htevent={"userId": "1"}))

    assert events[0]["event"] == "Order %s %s"


def test_records_of_the_package_s_own_loggers_are_never_events(make_handler):
    handler = make_handler(disable=True)

    with capture_events() as events:
        handler.handle(make_record("x", name="htevents_logging", htevent={"userId": "1"}))
        handler.handle(make_record("x", name="htevents_logging._transport", htevent={}))
        handler.handle(make_record("Kept", name="htevents_logging_app", htevent={"userId": "1"}))

    assert [e["event"] for e in events] == ["Kept"]


# --------------------------------------------------------------------------------------------
# Invalid payloads: dropped, one warning, counted, never raised


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ("Order completed", "must be a mapping, not str"),
        ({"properties": 5}, "properties"),
        ({"userId": "1", "colour": "red"}, "'colour'"),
        ({"type": "purchase"}, "'purchase'"),
        ({"type": "group", "userId": "1"}, "groupId"),
    ],
)
def test_an_invalid_payload_is_dropped_with_one_warning_naming_logger_and_field(
    make_handler, app_logger, caplog, payload, named
):
    handler = make_handler(disable=True)
    app_logger.addHandler(handler)

    with capture_events() as events, caplog.at_level(logging.WARNING, "htevents_logging"):
        app_logger.info("Before", extra={"htevent": {"userId": "1"}})
        app_logger.info("Bad", extra={"htevent": payload})  # must not raise
        app_logger.info("After", extra={"htevent": {"userId": "1"}})

    assert [e["event"] for e in events] == ["Before", "After"]
    [warning] = package_warnings(caplog)
    assert "'app.checkout'" in warning
    assert named in warning
    assert handler.client.stats()["rejected"] == 1


def test_logged_nan_and_infinity_arrive_as_strings_never_as_null(
    make_handler, app_logger, delivery, collector
):
    handler = make_handler(**delivery)
    app_logger.addHandler(handler)

    app_logger.info(
        "Scored",
        extra={"htevent": {"userId": "1", "properties": {"a": float("nan"), "b": -float("inf")}}},
    )

    assert handler.client.flush(5)
    assert collector.wait_for_events(1, 5)
    assert collector.events[0]["properties"] == {"a": "NaN", "b": "-Infinity"}


def test_a_logged_message_over_32_kb_of_utf8_is_rejected_by_its_bytes_not_its_characters(
    make_handler, app_logger, delivery, collector, caplog
):
    # 11,000 euro signs are 11,000 characters but 33,000 bytes of UTF-8: over the limit.
    handler = make_handler(**delivery)
    app_logger.addHandler(handler)

    with caplog.at_level(logging.WARNING, "htevents_logging"):
        app_logger.info(
            "Noted", extra={"htevent": {"userId": "1", "properties": {"n": "€" * 11_000}}}
        )
        app_logger.info(
            "Kept", extra={"htevent": {"userId": "1", "properties": {"n": "e" * 11_000}}}
        )
        assert handler.client.flush(5)

    assert collector.wait_for_events(1, 5)
    assert [event["event"] for event in collector.events] == ["Kept"]
    assert handler.client.stats()["rejected_by_reason"] == {"oversize": 1}
    [warning] = package_warnings(caplog)
    assert "'app.checkout'" in warning


def test_a_payload_too_big_for_a_message_is_sent_when_before_send_takes_the_excess_out(
    make_handler, app_logger, delivery, collector
):
    # Regression: a copied payload (a date in it) with more values than a message has bytes
    # was rejected at the call, before before_send could take them out; track() sent it.
    def without_rows(message: dict[str, Any]) -> dict[str, Any]:
        del message["properties"]["rows"]
        return message

    handler = make_handler(**delivery, before_send=without_rows)
    app_logger.addHandler(handler)
    properties = {"at": dt.date(2026, 12, 4), "rows": list(range(100_000))}

    app_logger.info("Exported", extra={"htevent": {"userId": "1", "properties": properties}})

    assert handler.client.flush(5)
    assert collector.wait_for_events(1, 5)
    assert collector.events[0]["properties"] == {"at": "2026-12-04"}
    assert handler.client.stats()["rejected"] == 0


def test_a_flood_of_bad_records_gives_one_warning_and_counts_each(make_handler, app_logger, caplog):
    handler = make_handler(disable=True)
    app_logger.addHandler(handler)

    with caplog.at_level(logging.WARNING, "htevents_logging"):
        for _ in range(1000):
            app_logger.info("Bad", extra={"htevent": {"properties": 5}})

    assert len(package_warnings(caplog)) == 1
    assert handler.client.stats()["rejected"] == 1000


def test_two_different_typos_each_get_their_warning(make_handler, app_logger, caplog):
    # Regression: the rate limit was keyed by the kind of mistake only, so a userID typo went
    # unreported 10 s after a propertys typo on the same logger.
    handler = make_handler(disable=True)
    app_logger.addHandler(handler)

    with caplog.at_level(logging.WARNING, "htevents_logging"):
        for _ in range(3):
            app_logger.info("Bad", extra={"htevent": {"propertys": {}}})
            app_logger.info("Bad", extra={"htevent": {"userID": "1"}})

    warnings = package_warnings(caplog)
    assert len(warnings) == 2
    assert "propertys" in warnings[0] and "userID" in warnings[1]


def test_an_unexpected_error_is_reported_not_raised(make_handler, caplog):
    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("boom")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("boom")

        def __len__(self) -> int:
            return 1

    handler = make_handler(disable=True)

    with caplog.at_level(logging.WARNING, "htevents_logging"):
        handler.handle(make_record("x", htevent=Exploding()))

    [warning] = package_warnings(caplog)
    assert "RuntimeError: boom" in warning
    assert "'app.checkout'" in warning


# --------------------------------------------------------------------------------------------
# Construction and dictConfig


def test_client_and_settings_together_are_refused():
    with pytest.raises(TypeError, match=r"either client=\.\.\. or client settings.*host"):
        HtEventsHandler(client=HtEvents(disable=True), host="http://127.0.0.1:1")


def test_client_must_be_an_htevents():
    with pytest.raises(TypeError, match=r"client must be an htevents_logging\.HtEvents"):
        HtEventsHandler(client="ext://not.resolved")  # type: ignore[arg-type]


def test_dictconfig_with_settings_keys_delivers(logging_state, delivery, collector):
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"htevents": {"class": HANDLER_CLASS, "level": "INFO", **delivery}},
            "loggers": {"shop": {"handlers": ["htevents"], "level": "INFO", "propagate": False}},
        }
    )
    [handler] = logging.getLogger("shop").handlers
    assert isinstance(handler, HtEventsHandler)
    assert handler.client.settings.flush_interval == 0.05

    logging.getLogger("shop").info("Order completed", extra={"htevent": {"userId": "123"}})

    assert collector.wait_for_events(1, timeout=5)
    [event] = collector.events
    assert (event["event"], event["userId"]) == ("Order completed", "123")


def test_dictconfig_with_an_ext_client_uses_it_and_leaves_it_open(
    logging_state, delivery, collector, monkeypatch
):
    client = HtEvents(**delivery)
    monkeypatch.setattr(_app_events, "htevents", client)
    try:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "handlers": {
                    "htevents": {"class": HANDLER_CLASS, "client": "ext://_app_events.htevents"}
                },
                "loggers": {"shop": {"handlers": ["htevents"], "level": "INFO"}},
            }
        )
        [handler] = logging.getLogger("shop").handlers
        assert handler.client is client

        logging.getLogger("shop").info("From logging", extra={"htevent": {"userId": "1"}})
        handler.close()  # flushes a client it was given, without closing it
        assert collector.wait_for_events(1, timeout=5)

        client.track(user_id="1", event="Still open")
        assert collector.wait_for_events(2, timeout=5)
        assert [e["event"] for e in collector.events] == ["From logging", "Still open"]
    finally:
        client.close()


def test_dictconfig_with_client_and_settings_fails_naming_the_conflict(logging_state, monkeypatch):
    monkeypatch.setattr(_app_events, "htevents", HtEvents(disable=True))
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "htevents": {
                "class": HANDLER_CLASS,
                "client": "ext://_app_events.htevents",
                "write_key": "k",
            }
        },
    }
    with pytest.raises(ValueError, match="htevents") as info:
        logging.config.dictConfig(config)
    assert "not both" in str(info.value.__cause__)


RECONFIGURED = """
import logging, logging.config, sys

config = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"htevents": {
        "class": "htevents_logging.HtEventsHandler",
        "write_key": sys.argv[1], "host": sys.argv[2], "flush_interval": 10,
    }},
    "root": {"level": "INFO", "handlers": ["htevents"]},
}
for round in range(3):
    logging.config.dictConfig(config)  # closes the last round's handler, under the lock
    for i in range(5):
        logging.info("Order completed", extra={"htevent": {"userId": f"{round}-{i}"}})
"""


def test_running_dictconfig_again_loses_nothing(collector, write_key):
    # Regression: on 3.9-3.11, logging.shutdown() inside dictConfig calls flush() then close()
    # under the logging lock; flush() returned at once and close() then used a deadline of 0,
    # so 5 of 15 events arrived. Each round's events wait in a partial batch (flush_interval
    # 10 s) when the next round replaces the handler.
    done = run_python("-c", RECONFIGURED, write_key, collector.url)
    assert done.returncode == 0, done.stderr
    assert collector.wait_for_events(15, 10), done.stderr
    assert sorted(e["userId"] for e in collector.events) == sorted(
        f"{r}-{i}" for r in range(3) for i in range(5)
    )


def test_closing_a_handler_closes_the_client_it_made(make_handler, caplog):
    handler = make_handler(write_key="k", host="http://127.0.0.1:9")
    handler.close()
    assert "closed" in repr(handler.client)

    with caplog.at_level(logging.WARNING, "htevents_logging"):
        handler.handle(make_record("Too late", htevent={"userId": "1"}))

    assert handler.client.stats()["dropped_by_reason"] == {"after_close": 1}


def test_flush_delivers_what_is_queued(make_handler, app_logger, delivery, collector):
    handler = make_handler(**{**delivery, "flush_interval": 60.0})
    app_logger.addHandler(handler)
    app_logger.info("Order completed", extra={"htevent": {"userId": "1"}})

    handler.flush()

    assert len(collector.events) == 1  # delivered when flush() returned


def test_the_repr_shows_no_write_key(make_handler):
    handler = make_handler(write_key="secret-write-key", host="http://127.0.0.1:9")
    assert "secret-write-key" not in repr(handler)
    assert "HtEventsHandler" in repr(handler)


# --------------------------------------------------------------------------------------------
# No feedback loop: the handler on the root logger, everything at DEBUG


def test_on_the_root_logger_with_debug_everywhere_only_the_intended_events_arrive(
    logging_state, make_handler, delivery, collector
):
    root = logging.getLogger()
    root.addHandler(make_handler(**delivery))
    root.setLevel(logging.DEBUG)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    logging.getLogger("htevents_logging").setLevel(logging.DEBUG)
    app = logging.getLogger("app")

    done = threading.Event()

    def on_delivered(error: Any, message: Any) -> None:
        # Runs on the transport thread: whatever it logs, events included, stays a log line.
        app.info("Logged on the transport thread", extra={"htevent": {"userId": "loop"}})
        done.set()

    sibling = HtEvents(**delivery)  # same settings: the same transport and thread
    try:
        app.info("Order completed", extra={"htevent": {"userId": "1"}})
        app.debug("a debug line without a payload")
        sibling.track(user_id="2", event="Direct", callback=on_delivered)
        logging.getLogger("htevents_logging.x").warning("own", extra={"htevent": {}})

        assert collector.wait_for_events(2, timeout=5)
        assert done.wait(5)
        assert sibling.flush(5)  # anything the callback had queued would be sent by now
    finally:
        sibling.close()

    assert sorted(e["event"] for e in collector.events) == ["Direct", "Order completed"]
    # Not silently: counted as dropped (and warned about, rate-limited).
    assert sibling.stats()["dropped_by_reason"] == {"transport_thread": 1}


def test_a_thread_a_callback_starts_is_not_the_transport_thread(
    logging_state, make_handler, delivery, collector
):
    # The transport thread is told by a context variable set in its own context: a thread it
    # starts (in a callback) has a context of its own, and what it logs is sent.
    logger = logging.getLogger("app.started_by_a_callback")
    handler = make_handler(**delivery)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    started: list[threading.Thread] = []

    def on_delivered(error: Any, message: Any) -> None:
        thread = threading.Thread(
            target=logger.info, args=("From a thread",), kwargs={"extra": {"htevent": {}}}
        )
        thread.start()
        started.append(thread)

    handler.client.track(user_id="1", event="Direct", callback=on_delivered)
    assert wait_until(lambda: started, 5)
    started[0].join(5)
    assert handler.client.flush(5)
    assert sorted(e["event"] for e in collector.events) == ["Direct", "From a thread"]
    assert handler.client.stats()["dropped"] == 0


# --------------------------------------------------------------------------------------------
# One transport for every front-end with the same settings


def test_handlers_processor_and_client_with_equal_settings_share_one_thread(
    logging_state, make_handler, delivery, collector
):
    before = transport_threads()
    first, second = make_handler(**delivery), make_handler(**delivery)
    processor = HtEventsProcessor(**delivery)
    client = HtEvents(**delivery)
    try:
        first.handle(make_record("One", htevent={"userId": "1"}))
        second.handle(make_record("Two", htevent={"userId": "1"}))
        processor(None, "info", {"event": "Three", "htevent": {"userId": "1"}})
        client.track(user_id="1", event="Four")

        assert len(transport_threads() - before) == 1
        assert collector.wait_for_events(4, timeout=5)
    finally:
        processor.close()
        client.close()
    assert sorted(e["event"] for e in collector.events) == ["Four", "One", "Three", "Two"]


# --------------------------------------------------------------------------------------------
# Behind a QueueHandler


def test_behind_a_queue_handler_the_payload_survives_and_event_defaults(make_handler, app_logger):
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    handler = make_handler(disable=True)
    listener = logging.handlers.QueueListener(records, handler, respect_handler_level=True)
    app_logger.addHandler(logging.handlers.QueueHandler(records))
    listener.start()
    try:
        with capture_events() as events:
            app_logger.info("Order %s completed", "A-42", extra={"htevent": {"userId": "1"}})
            app_logger.info("no payload")
            listener.stop()  # drains the queue
    finally:
        if listener._thread is not None:  # type: ignore[attr-defined]
            listener.stop()

    [event] = events
    assert (event["event"], event["userId"]) == ("Order A-42 completed", "1")


def queued_through(handler: HtEventsHandler, logger: logging.Logger, *filters: logging.Filter):
    """Put ``handler`` behind a QueueHandler (with ``filters``) and a started QueueListener;
    return the listener (stop it to hand over what is queued)."""
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    queue_handler = logging.handlers.QueueHandler(records)
    for capture in filters:
        queue_handler.addFilter(capture)
    logger.addHandler(queue_handler)
    listener = logging.handlers.QueueListener(records, handler)
    listener.start()
    return listener


@pytest.mark.parametrize("bound_with", ["bind", "structlog"])
def test_behind_a_queue_handler_capture_identity_keeps_the_logging_threads_identity(
    make_handler, app_logger, bound_with
):
    # Regression: the README's QueueHandler recipe sent events logged inside bind(user_id=...)
    # with random anonymousIds: the identity was read on the listener's thread.
    structlog = pytest.importorskip("structlog")
    listener = queued_through(make_handler(disable=True), app_logger, CaptureIdentity())
    with capture_events() as events:
        if bound_with == "bind":
            with bind(user_id="u-7"):
                app_logger.info("Order completed", extra={"htevent": {}})
        else:
            with structlog.contextvars.bound_contextvars(user_id="u-7"):
                app_logger.info("Order completed", extra={"htevent": {}})
        listener.stop()
    [event] = events
    assert event["userId"] == "u-7"


def test_without_capture_identity_the_listener_thread_knows_no_identity(make_handler, app_logger):
    listener = queued_through(make_handler(disable=True), app_logger)
    with capture_events() as events:
        with bind(user_id="u-7"):
            app_logger.info("Order completed", extra={"htevent": {}})
        listener.stop()
    [event] = events
    assert "userId" not in event  # what CaptureIdentity is for


def test_structlog_contextvars_give_the_ids_to_a_logged_event_too(make_handler, app_logger):
    structlog = pytest.importorskip("structlog")
    app_logger.addHandler(make_handler(disable=True))
    bound = structlog.contextvars.bound_contextvars(user_id="u-8")
    with capture_events() as events, bound, bind(anonymous_id="a-1"):
        app_logger.info("Order completed", extra={"htevent": {}})
        app_logger.info("Order completed", extra={"htevent": {"userId": "own"}})
    assert [(e.get("userId"), e.get("anonymousId")) for e in events] == [
        ("u-8", "a-1"),  # structlog's user_id over bind()'s, as the processor reads them
        ("own", None),  # a message that names an id takes none of the bound ones
    ]


def test_structlog_ids_are_read_as_they_change_within_one_context(make_handler, app_logger):
    # The handler reads just the two variables (not every bound one) and keeps the last
    # identity it made: each change must still be seen, and an unbound id must be gone.
    structlog = pytest.importorskip("structlog")
    app_logger.addHandler(make_handler(disable=True))
    contextvars = structlog.contextvars
    seen = []
    with capture_events() as events, contextvars.bound_contextvars(request_id="r", path="/x"):
        for change in (
            {"user_id": "u-1"},
            {"user_id": "u-1"},
            {"user_id": 2},
            {"anonymous_id": "a-1"},
            {"user_id": None},
        ):
            contextvars.bind_contextvars(**change)
            app_logger.info("Order completed", extra={"htevent": {}})
        contextvars.unbind_contextvars("user_id", "anonymous_id")
        app_logger.info("Order completed", extra={"htevent": {}})
    seen = [(e.get("userId"), e.get("anonymousId")) for e in events]
    assert seen[:5] == [("u-1", None), ("u-1", None), ("2", None), ("2", "a-1"), (None, "a-1")]
    assert seen[5][0] is None and seen[5][1] not in (None, "a-1")  # a fresh anonymous id


@pytest.mark.skipif(sys.version_info < (3, 12), reason="dictConfig QueueHandler listener: 3.12+")
def test_behind_dictconfig_queue_handler_and_listener(logging_state, delivery, collector):
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {"identity": {"()": "htevents_logging.CaptureIdentity"}},
            "handlers": {
                "htevents": {"class": HANDLER_CLASS, **delivery},
                "queued": {
                    "class": "logging.handlers.QueueHandler",
                    "handlers": ["htevents"],
                    "respect_handler_level": True,
                    "filters": ["identity"],
                },
            },
            "loggers": {"shop": {"handlers": ["queued"], "level": "INFO", "propagate": False}},
        }
    )
    queued = logging.getHandlerByName("queued")  # type: ignore[attr-defined]
    htevents = logging.getHandlerByName("htevents")  # type: ignore[attr-defined]
    queued.listener.start()  # dictConfig makes the listener; the application starts it
    try:
        with bind(user_id="u-42"):  # read on this thread, not the listener's
            logging.getLogger("shop").info("Order %s", "A-42", extra={"htevent": {}})
            logging.getLogger("shop").info("no payload")
    finally:
        queued.listener.stop()  # hands over what is queued, then stops
        htevents.close()

    assert collector.wait_for_events(1, timeout=5)
    [event] = collector.events
    assert (event["event"], event["userId"]) == ("Order A-42", "u-42")


# --------------------------------------------------------------------------------------------
# logging.shutdown() at exit, in a real interpreter

SHUTDOWN_SCRIPT = """
import logging, os, sys, time
from htevents_logging._frontends.handler import HtEventsHandler

url, mode, shutdown_timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
handler = HtEventsHandler(
    write_key="test-write-key", host=url, flush_interval=60, shutdown_timeout=shutdown_timeout
)
log = logging.getLogger("app")
log.setLevel(logging.INFO)
log.addHandler(handler)
for i in range(3):
    log.info("Order %d", i, extra={"htevent": {"userId": "u"}})
if mode == "explicit":
    # logging.shutdown() alone must deliver: os._exit skips every other exit hook.
    started = time.monotonic()
    logging.shutdown()
    print(f"shutdown took {time.monotonic() - started:.3f}", flush=True)
    os._exit(0)
"""


def run_script(url: str, mode: str, shutdown_timeout: float) -> subprocess.CompletedProcess[str]:
    return run_python(
        "-c", textwrap.dedent(SHUTDOWN_SCRIPT), url, mode, str(shutdown_timeout), timeout=30
    )


@pytest.mark.parametrize("mode", ["exit", "explicit"])
def test_logging_shutdown_delivers_what_is_queued(collector, mode):
    result = run_script(collector.url, mode, 5.0)

    assert result.returncode == 0, result.stderr
    assert collector.wait_for_events(3, timeout=5)
    assert [e["event"] for e in collector.events] == ["Order 0", "Order 1", "Order 2"]


def test_logging_shutdown_waits_at_most_shutdown_timeout_for_a_server_that_hangs(collector):
    collector.script(Hang(30))

    result = run_script(collector.url, "explicit", 2.0)

    assert result.returncode == 0, result.stderr
    took = float(result.stdout.split("shutdown took ")[1])
    # flush() then close() share one shutdown_timeout: waiting for each would take 4 s.
    assert 1.6 <= took < 3.5
