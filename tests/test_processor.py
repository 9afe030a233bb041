"""The structlog front-end: ``HtEventsProcessor`` pops ``htevent`` and sends it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from helpers import assert_flushed, run_python

from htevents_logging import HtEvents
from htevents_logging._diagnostics import reset_warning_limits
from htevents_logging._frontends.handler import HtEventsHandler
from htevents_logging._frontends.processor import HtEventsProcessor
from htevents_logging.collector import Collector
from htevents_logging.testing import capture_events

structlog = pytest.importorskip("structlog")


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
def _fresh_structlog_and_warnings() -> Iterator[None]:
    reset_warning_limits()
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    reset_warning_limits()


@pytest.fixture
def make_processor(closing: Callable[[Any], Any]) -> Callable[..., HtEventsProcessor]:
    """Build processors that are closed after the test (transports are shared process-wide)."""
    return lambda **kwargs: closing(HtEventsProcessor(**kwargs))


@pytest.fixture
def output() -> io.StringIO:
    """What the renderer printed."""
    return io.StringIO()


@pytest.fixture
def configure(output: io.StringIO) -> Callable[[HtEventsProcessor], Any]:
    """Configure structlog as the README shows, printing JSON lines into ``output``."""

    def configure(processor: HtEventsProcessor) -> Any:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                processor,
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(file=output),
            cache_logger_on_first_use=False,
        )
        return structlog.get_logger()

    return configure


def rendered(output: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


def package_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "htevents_logging" and r.levelno == logging.WARNING
    ]


# --------------------------------------------------------------------------------------------
# Events


def test_the_payload_is_sent_and_never_rendered(make_processor, configure, output):
    log = configure(make_processor(disable=True))

    with capture_events() as events:
        log.info("Order completed", htevent={"userId": "123", "properties": {"total": 29.99}})

    [event] = events
    assert event["type"] == "track"
    assert event["event"] == "Order completed"
    assert (event["userId"], event["properties"]) == ("123", {"total": 29.99})
    assert rendered(output) == [{"event": "Order completed"}]
    assert "htevent" not in output.getvalue()


def test_a_call_without_payload_passes_through_untouched(make_processor):
    processor = make_processor(disable=True)
    event_dict = {"event": "just a log line", "user_id": "1"}

    with capture_events() as events:
        returned = processor(None, "info", event_dict)

    assert returned is event_dict
    assert returned == {"event": "just a log line", "user_id": "1"}
    assert events == []


def test_the_payload_type_chooses_the_message_type(make_processor, configure):
    log = configure(make_processor(disable=True))

    with capture_events() as events:
        log.info("user identified", htevent={"type": "identify", "traits": {"plan": "pro"}})

    [event] = events
    assert (event["type"], event["traits"]) == ("identify", {"plan": "pro"})
    assert "event" not in event


def test_payload_key_renames_the_key(make_processor, configure, output):
    log = configure(make_processor(disable=True, payload_key="analytics"))

    with capture_events() as events:
        log.info("Renamed", analytics={"userId": "1"})
        log.info("Old name", htevent={"userId": "1"})

    assert [e["event"] for e in events] == ["Renamed"]
    assert "analytics" not in output.getvalue()
    assert rendered(output)[1]["htevent"] == {"userId": "1"}  # just another key now


def test_the_timestamp_is_the_time_of_the_call(make_processor):
    processor = make_processor(disable=True)

    with capture_events() as events:
        processor(None, "info", {"event": "e", "htevent": {"userId": "1"}})
        processor(None, "info", {"event": "e", "htevent": {"timestamp": "2024-01-02T03:04:05Z"}})

    assert events[0]["timestamp"].endswith("Z")
    assert events[0]["timestamp"][:4] >= "2024"
    assert events[1]["timestamp"] == "2024-01-02T03:04:05.000Z"


# --------------------------------------------------------------------------------------------
# Identity from structlog's context


def test_user_id_bound_with_structlog_contextvars_identifies_the_event(
    make_processor, configure, output
):
    log = configure(make_processor(disable=True))
    structlog.contextvars.bind_contextvars(user_id="u-7", anonymous_id="a-7")

    with capture_events() as events:
        log.info("Order completed", htevent={"properties": {"total": 1}})

    assert (events[0]["userId"], events[0]["anonymousId"]) == ("u-7", "a-7")
    assert rendered(output)[0]["user_id"] == "u-7"  # left in the event dict for the renderer


def test_the_payload_s_own_id_wins_over_the_event_dict(make_processor, configure):
    log = configure(make_processor(disable=True))
    structlog.contextvars.bind_contextvars(user_id="from-context")

    with capture_events() as events:
        log.info("e1", htevent={"anonymousId": "anon-1"})
        log.info("e2", htevent={"user_id": "explicit"})

    assert "userId" not in events[0]
    assert events[0]["anonymousId"] == "anon-1"
    assert events[1]["userId"] == "explicit"


# --------------------------------------------------------------------------------------------
# Invalid payloads


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (["not", "a", "mapping"], "must be a mapping, not list"),
        ({"properties": 5}, "properties"),
        ({"colour": "red"}, "'colour'"),
    ],
)
def test_an_invalid_payload_is_dropped_with_one_warning_and_never_raises(
    make_processor, configure, output, caplog, payload, named
):
    processor = make_processor(disable=True)
    log = configure(processor)
    log = log.bind(logger="app.checkout")

    with capture_events() as events, caplog.at_level(logging.WARNING, "htevents_logging"):
        log.info("Before", htevent={"userId": "1"})
        log.info("Bad", htevent=payload)
        log.info("After", htevent={"userId": "1"})

    assert [e["event"] for e in events] == ["Before", "After"]
    [warning] = package_warnings(caplog)
    assert "'app.checkout'" in warning and "'Bad'" in warning
    assert named in warning
    assert processor.client.stats()["rejected"] == 1
    assert [line["event"] for line in rendered(output)] == ["Before", "Bad", "After"]
    assert "htevent" not in output.getvalue()


def test_a_flood_of_bad_calls_gives_one_warning_and_counts_each(make_processor, configure, caplog):
    processor = make_processor(disable=True)
    log = configure(processor)

    with caplog.at_level(logging.WARNING, "htevents_logging"):
        for _ in range(1000):
            log.info("Bad", htevent={"properties": 5})

    assert len(package_warnings(caplog)) == 1
    assert processor.client.stats()["rejected"] == 1000


# --------------------------------------------------------------------------------------------
# Together with the stdlib handler: each event is sent once


@pytest.fixture
def stdlib_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("structlog.app")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def through_stdlib(*processors: Any) -> None:
    """structlog configured to hand its events to the stdlib ``logging`` module."""
    structlog.configure(
        processors=list(processors),
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def order_completed_events() -> list[dict[str, Any]]:
    """Log one event with structlog; return what every front-end together would send."""
    with capture_events() as events:
        structlog.get_logger("structlog.app").info("Order completed", htevent={"userId": "1"})
    return events


def test_rendering_through_processor_formatter_sends_each_event_once(make_processor, stdlib_logger):
    stream = io.StringIO()
    formatted = logging.StreamHandler(stream)
    formatted.setFormatter(
        structlog.stdlib.ProcessorFormatter(processor=structlog.processors.JSONRenderer())
    )
    stdlib_logger.addHandler(formatted)
    stdlib_logger.addHandler(HtEventsHandler(disable=True))
    through_stdlib(
        structlog.contextvars.merge_contextvars,
        make_processor(disable=True),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    )

    events = order_completed_events()

    assert [e["event"] for e in events] == ["Order completed"]
    assert json.loads(stream.getvalue()) == {"event": "Order completed"}


def test_rendering_to_log_kwargs_sends_each_event_once(make_processor, stdlib_logger):
    stdlib_logger.addHandler(HtEventsHandler(disable=True))
    through_stdlib(make_processor(disable=True), structlog.stdlib.render_to_log_kwargs)

    assert [e["event"] for e in order_completed_events()] == ["Order completed"]


def test_without_the_processor_the_stdlib_handler_picks_the_payload_up(stdlib_logger):
    # render_to_log_kwargs turns the event dict into `extra`: the handler alone suffices.
    stdlib_logger.addHandler(HtEventsHandler(disable=True))
    through_stdlib(structlog.stdlib.render_to_log_kwargs)

    assert [e["event"] for e in order_completed_events()] == ["Order completed"]


# --------------------------------------------------------------------------------------------
# Delivery, construction, lifecycle


def test_events_are_delivered(make_processor, configure, collector: Collector, write_key):
    processor = make_processor(write_key=write_key, host=collector.url, flush_interval=60.0)
    log = configure(processor)

    log.info("Order completed", htevent={"userId": "1"})
    assert processor.flush(5)

    [event] = collector.events
    assert (event["event"], event["userId"]) == ("Order completed", "1")


def test_a_given_client_is_flushed_not_closed_by_close(collector: Collector, write_key):
    with HtEvents(write_key, host=collector.url, flush_interval=60.0) as client:
        processor = HtEventsProcessor(client=client)
        processor(None, "info", {"event": "Via processor", "htevent": {"userId": "1"}})

        assert processor.close(5)
        assert len(collector.events) == 1

        client.track(user_id="1", event="Still open")
        assert_flushed(client, 5)
        assert [e["event"] for e in collector.events] == ["Via processor", "Still open"]


def test_close_closes_a_client_the_processor_made(make_processor):
    processor = make_processor(write_key="k", host="http://127.0.0.1:9")
    assert processor.close(1)
    assert "closed" in repr(processor.client)


def test_client_and_settings_together_are_refused():
    with pytest.raises(TypeError, match=r"HtEventsProcessor: pass either client=.*write_key"):
        HtEventsProcessor(client=HtEvents(disable=True), write_key="k")


def test_the_module_imports_without_structlog():
    code = (
        "import sys; sys.modules['structlog'] = None\n"
        "from htevents_logging._frontends.processor import HtEventsProcessor\n"
        "p = HtEventsProcessor(disable=True)\n"
        "print(p(None, 'info', {'event': 'e'}))\n"
    )
    result = run_python("-c", code, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'event': 'e'}"


def test_an_event_logged_on_the_transport_thread_is_counted_not_sent(collector, write_key):
    # Regression: it was neither sent, nor counted, nor warned about.
    client = HtEvents(write_key, host=collector.url, flush_interval=0.05)
    processor = HtEventsProcessor(client=client)
    seen: list[Any] = []

    def log_from_the_callback(error: Any, message: Any) -> None:  # on the transport thread
        seen.append(processor(None, "info", {"event": "Looped", "htevent": {"userId": "u"}}))

    try:
        client.track(user_id="u", event="Direct", callback=log_from_the_callback)
        assert_flushed(client)
        assert seen == [{"event": "Looped"}]  # the payload is still popped, never rendered
        assert client.stats()["dropped_by_reason"] == {"transport_thread": 1}
        assert [event["event"] for event in collector.events] == ["Direct"]
    finally:
        client.close()


def test_after_a_renderer_it_never_raises_and_says_once_where_it_belongs(
    make_processor, output, caplog
):
    # Regression: placed after JSONRenderer it raised AttributeError ('str' object has no
    # attribute 'pop') from the log call.
    processor = make_processor(disable=True)
    structlog.configure(
        processors=[structlog.processors.JSONRenderer(), processor],
        logger_factory=structlog.PrintLoggerFactory(file=output),
        cache_logger_on_first_use=False,
    )
    log = structlog.get_logger()
    log.info("Order completed", htevent={"user_id": "u", "event": "Order completed"})
    log.info("Order completed", htevent={"user_id": "u", "event": "Order completed"})

    assert len(rendered(output)) == 2  # the log lines still go out
    warnings = [w for w in package_warnings(caplog) if "after a renderer" in w]
    assert len(warnings) == 1 and "before the renderer" in warnings[0]
