"""The package's warnings reach a person, whatever the logging configuration; and a missing
write key never stops an application from starting.

Each case runs in a fresh interpreter, configured as a user's application would be, and reads
what it printed on stderr.
"""

from __future__ import annotations

import logging

import pytest
from helpers import Outcomes, run_python

from htevents_logging import HtEvents, HtEventsHandler, HtEventsProcessor

TYPO = 'logging.getLogger("app").info("Order completed", extra={"htevent": {"userID": "1"}})'


def configured(disable_existing_loggers: bool, extra: str = "") -> str:
    """An application that configures logging with the handler as the root's only handler,
    then logs a payload with a typo (a warning the user must see)."""
    return f"""
import logging, logging.config, sys
import htevents_logging  # imported first, as an app's settings module would
logging.config.dictConfig({{
    "version": 1,
    "disable_existing_loggers": {disable_existing_loggers},
    "handlers": {{"htevents": {{
        "class": "htevents_logging.HtEventsHandler", "write_key": "k",
        "host": "http://127.0.0.1:9", "disable": True,
    }}}},
    "root": {{"level": "INFO", "handlers": ["htevents"]}},
}})
{extra}
{TYPO}
"""


@pytest.mark.parametrize(
    "disable_existing_loggers", [True, False], ids=["loggers-disabled", "handler-only"]
)
def test_a_warning_reaches_stderr_when_the_configuration_hides_it(disable_existing_loggers):
    # Regression: the README's dictConfig left out disable_existing_loggers, so the package's
    # logger was disabled and a userID typo (or a 401, or a server that was down) gave no output
    # at all; with HtEventsHandler the root's only handler, the warnings vanished too.
    done = run_python("-c", configured(disable_existing_loggers))
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "userID" in line]
    assert line.startswith("htevents-logging WARNING")


def test_a_level_set_on_purpose_is_respected():
    silenced = 'logging.getLogger("htevents_logging").setLevel(logging.CRITICAL)'
    done = run_python("-c", configured(False, extra=silenced))
    assert done.returncode == 0, done.stderr
    assert "userID" not in done.stderr


def test_the_stderr_fallback_is_rate_limited():
    flood = "\n".join(
        f'logging.getLogger("app").info("x", extra={{"htevent": {{"field{i}": 1}}}})'
        for i in range(50)
    )
    done = run_python("-c", configured(False, extra=flood))
    assert done.returncode == 0, done.stderr
    assert 0 < done.stderr.count("htevents-logging WARNING") <= 10


# -- a missing write key -------------------------------------------------------------------------

NO_KEY = """
import logging, logging.config
logging.config.dictConfig({
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"htevents": {"class": "htevents_logging.HtEventsHandler"}},
    "root": {"level": "INFO", "handlers": ["htevents"]},
})
for i in range(3):
    logging.info("Order completed", extra={"htevent": {"userId": "1"}})
print("the application started")
"""


def test_a_handler_without_a_write_key_never_stops_the_application():
    # Regression: a missing key stopped every Django manage.py command with "Unable to
    # configure handler 'htevents'", and in a pytest conftest the cause was not even shown.
    done = run_python("-c", NO_KEY)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "the application started\n"
    errors = [line for line in done.stderr.splitlines() if "has no write key" in line]
    assert len(errors) == 1
    assert "HT_WRITE_KEY" in errors[0] and "disable=True" in errors[0]
    assert "3 event(s) were dropped: no write key was set" in done.stderr


def test_without_a_key_each_event_is_counted_as_dropped(monkeypatch, closing):
    monkeypatch.delenv("HT_WRITE_KEY", raising=False)
    for front_end in (closing(HtEventsHandler()), closing(HtEventsProcessor())):
        client = front_end.client
        outcomes = Outcomes()
        client.track(user_id="1", event="e", callback=outcomes)
        stats = client.stats()
        assert stats["dropped_by_reason"] == {"no_write_key": 1}
        assert stats["enqueued"] == 0
        assert [error.reason for error in outcomes.errors] == ["no_write_key"]


def test_a_client_made_directly_without_a_key_still_raises(monkeypatch):
    monkeypatch.delenv("HT_WRITE_KEY", raising=False)
    with pytest.raises(ValueError, match="write_key is required"):
        HtEvents()


def test_disable_is_the_way_to_send_nothing_in_tests(monkeypatch, caplog, closing):
    monkeypatch.delenv("HT_WRITE_KEY", raising=False)
    with caplog.at_level(logging.ERROR, "htevents_logging"):
        closing(HtEventsHandler(disable=True))
    assert not caplog.records
