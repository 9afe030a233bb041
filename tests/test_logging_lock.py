"""flush()/close() called under the logging module's lock (as dictConfig does) never stall.

dictConfig holds that lock while it flushes and closes the old handlers, after clearing every
logger's level cache; a library logging on the transport thread (urllib3 does, at DEBUG) then
needs the same lock. Waiting for that thread there would deadlock until the timeout.
"""

from __future__ import annotations

import logging
import time

from helpers import assert_flushed

from htevents_logging import HtEvents
from htevents_logging._diagnostics import log
from htevents_logging.collector import Reply


def test_flush_under_the_logging_lock_returns_at_once_and_delivery_carries_on(collector, write_key):
    client = HtEvents(write_key, host=collector.url, flush_interval=60)
    try:
        client.track(user_id="u", event="queued")
        with logging._lock:
            logging.Logger.manager._clear_cache()
            start = time.monotonic()
            client.flush(timeout=3)
            assert time.monotonic() - start < 2  # a deadlock would last the whole 3 s
        assert_flushed(client, timeout=5)
        assert [e["event"] for e in collector.events] == ["queued"]
    finally:
        client.close(1)


def test_close_under_the_logging_lock_returns_at_once_and_the_thread_still_delivers(
    collector, write_key
):
    client = HtEvents(write_key, host=collector.url, flush_interval=60)
    client.track(user_id="u", event="queued")
    with logging._lock:
        logging.Logger.manager._clear_cache()
        start = time.monotonic()
        client.close(timeout=3)
        assert time.monotonic() - start < 2  # a deadlock would last the whole 3 s
    assert collector.wait_for_events(1, timeout=5)


def test_the_transport_threads_own_warnings_wait_for_the_lock_instead_of_blocking(
    collector, caplog, write_key
):
    client = HtEvents(write_key, host=collector.url, flush_interval=60)
    try:
        # One request first, outside the lock: urllib3 then has its logger's level cached and
        # the connection open, so only this package's own logging runs under the lock (this
        # test once passed only when the test before it had warmed that cache).
        client.track(user_id="u", event="warm-up")
        assert_flushed(client, timeout=5)
        collector.script(Reply(400))
        client.track(user_id="u", event="refused")
        with logging._lock:
            client.flush(timeout=0)
            assert collector.wait_for_requests(2, timeout=5)
        assert_flushed(client, timeout=5)
        with caplog.at_level(logging.DEBUG, logger="htevents_logging"):
            log(logging.DEBUG, "next")  # deferred records come out with the next one
        assert any("refused by" in r.getMessage() for r in caplog.records)
    finally:
        client.close(1)
