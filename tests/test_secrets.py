"""The write key is never shown in full: not in logs, debug output, errors, reprs or `collect`.

(conftest.py also fails any test whose captured output shows the key, across the suite.)
"""

from __future__ import annotations

import logging

import pytest
from helpers import Outcomes, assert_flushed

from htevents_logging import HtEvents, HtEventsHandler, HtEventsProcessor
from htevents_logging._diagnostics import disable_debug_output
from htevents_logging.collector import Drop, Reply


@pytest.fixture(autouse=True)
def _no_debug_output_after_the_test():
    yield
    disable_debug_output()


def test_debug_output_errors_and_reprs_never_show_the_key(collector, capfd, caplog, write_key):
    outcomes = Outcomes()
    echoed = f'{{"error": "bad key {write_key}"}}'  # a server that echoes the key back
    collector.script(Reply(500), Drop(), Reply(401, body=echoed))
    with caplog.at_level(logging.DEBUG):
        client = HtEvents(
            write_key, host=collector.url, debug=True, retry_backoff=0.01, max_retries=3
        )
        handler = HtEventsHandler(client=client)
        processor = HtEventsProcessor(client=client)
        client.track(user_id="u", event="x", callback=outcomes)
        assert_flushed(client, 5)
        texts = [
            repr(client),
            repr(client.settings),
            repr(handler),
            repr(processor),
            repr(collector),
            str(client.stats()),
            *(str(error) for error in outcomes.errors),
            *(repr(error) for error in outcomes.errors),
            *(r.getMessage() for r in caplog.records),
        ]
        client.close(1)
    out, err = capfd.readouterr()
    assert "attempt 1 failed" in err  # debug=True printed the retries to stderr...
    assert outcomes.errors[0].status == 401
    for text in [*texts, out, err]:
        assert write_key not in text  # ...and never the key
    assert any("test…" in text for text in texts)


def test_a_short_key_echoed_by_the_server_is_left_out_with_the_text_around_it(
    collector, closing, caplog
):
    # Regression: a key under 6 characters was thought too short to replace, so an error
    # answer that echoed it showed it in full.
    short = "k3y9z"
    outcomes = Outcomes()
    collector.script(Reply(401, body=f'{{"error": "bad key {short}"}}'))
    client = closing(HtEvents(short, host=collector.url))
    client.track(user_id="u", event="x", callback=outcomes)
    assert_flushed(client, 5)
    [error] = outcomes.errors
    assert error.status == 401 and "left out: it contains the write key" in str(error)
    for text in [str(error), *(r.getMessage() for r in caplog.records)]:
        assert short not in text


def test_a_missing_or_bad_setting_error_never_shows_the_key(write_key):
    try:
        HtEvents(write_key, host="not-a-url")
    except ValueError as error:
        assert write_key not in str(error)
    else:
        raise AssertionError("a bad host must be refused")


def test_debug_output_follows_the_current_stderr(monkeypatch):
    """Regression: debug=True bound the stderr of the moment; once a test runner (or a daemon)
    replaced and closed it, every later package log line failed with 'I/O operation on closed
    file'."""
    import io

    from htevents_logging._diagnostics import enable_debug_output, log

    enable_debug_output()
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    log(logging.DEBUG, "one")
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    log(logging.DEBUG, "two")
    assert "two" in second.getvalue()
