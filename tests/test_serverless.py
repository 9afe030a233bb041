"""Serverless: the process is frozen, then killed, as soon as the handler returns.

AWS Lambda, Cloud Run and Cloud Functions stop giving a process CPU once its handler has
answered, and later kill it without running ``atexit``. Two ways keep every event:
``@flush_after`` on the handler (the background thread delivers before the handler returns),
and ``sync_mode`` (each call sends before it returns, with no thread at all). The subprocess
tests below freeze a real process with SIGSTOP right after its handler returned, kill it with
SIGKILL, and count what reached the collector.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from helpers import REPO, SETTINGS_ENV, Outcomes

from htevents_logging import DeliveryError, HtEvents, HtEventsHandler
from htevents_logging.collector import Reply

N = 25

#: A Lambda-style function: the handler logs N events and returns; the "platform" then prints
#: that it returned and waits to be frozen and killed (it never exits on its own).
FUNCTION = """
import logging, sys, threading
threads_before = threading.active_count()
from htevents_logging import HtEventsHandler, flush_after

logger = logging.getLogger("function")
logger.setLevel(logging.INFO)
logger.addHandler(HtEventsHandler(write_key="test-write-key", host=sys.argv[1], {settings}))

{decorator}
def handler(event, context):
    for i in range(event["n"]):
        logger.info("Order completed", extra={{"htevent": {{"userId": f"u{{i}}"}}}})
    return {{"statusCode": 200}}

status = handler({{"n": int(sys.argv[2])}}, None)["statusCode"]
print(status, threading.active_count() - threads_before, flush=True)
sys.stdin.read()  # the platform freezes the process here, then kills it
"""


def _invoke_then_freeze_and_kill(collector, *, settings: str, decorator: str) -> tuple[int, int]:
    """Run the function until its handler has returned, SIGSTOP it, SIGKILL it; return how
    many events reached the collector, and how many threads the function had started."""
    code = textwrap.dedent(FUNCTION.format(settings=settings, decorator=decorator))
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    process = subprocess.Popen(
        [sys.executable, "-c", code, collector.url, str(N)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )
    try:
        assert process.stdout is not None
        status, started_threads = process.stdout.readline().split()
        assert status == "200"
        process.send_signal(signal.SIGSTOP)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    collector.wait_for_events(N, timeout=0.5)  # nothing more can come: the process is gone
    return len(collector.events), int(started_threads)


@pytest.mark.parametrize(
    ("settings", "decorator"),
    [("flush_interval=60", "@flush_after"), ("sync_mode=True", "")],
    ids=["flush_after", "sync_mode"],
)
def test_no_event_is_lost_when_the_process_is_frozen_and_killed_after_the_handler(
    collector, settings, decorator
):
    arrived, threads = _invoke_then_freeze_and_kill(
        collector, settings=settings, decorator=decorator
    )
    assert arrived == N
    assert threads == (0 if "sync_mode" in settings else 1)  # sync_mode: threads unchanged
    assert sorted(e["userId"] for e in collector.events) == sorted(f"u{i}" for i in range(N))


def test_without_either_the_frozen_process_loses_its_events(collector):
    # The control: what the two above prevent (the batch waits for its interval, which never
    # comes for a frozen process). Batches of 100, so that no batch of the 25 events is full:
    # a full batch of 15 goes at once, and under load it could reach the collector before the
    # process is frozen (it did, once: 15 arrived).
    arrived, _ = _invoke_then_freeze_and_kill(
        collector, settings="flush_interval=60, max_events_in_batch=100", decorator=""
    )
    assert arrived == 0


# -- sync_mode in this process ---------------------------------------------------------------


@pytest.fixture
def started_here(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads started from the test's own thread from now on (the test collector starts
    its request threads from its server thread: those are not counted)."""
    started: list[threading.Thread] = []
    test_thread = threading.current_thread()
    original = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if threading.current_thread() is test_thread:
            started.append(thread)
        original(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    return started


@pytest.fixture
def sync_client(collector, write_key, closing):
    return closing(HtEvents(write_key, host=collector.url, sync_mode=True, max_retries=1))


def test_sync_mode_delivers_before_the_call_returns_and_starts_no_thread(
    collector, write_key, closing, started_here
):
    client = closing(HtEvents(write_key, host=collector.url, sync_mode=True))
    outcomes = Outcomes()
    client.track(user_id="1", event="Order completed", callback=outcomes)
    assert len(collector.events) == 1  # no wait: it arrived before track() returned
    assert outcomes.errors == [None]
    assert started_here == []
    assert client.stats()["sent"] == 1
    assert client.stats()["enqueued"] == 1


def test_sync_mode_reports_a_5xx_before_the_call_returns(collector, write_key, closing):
    failures: list[tuple[BaseException, list[dict]]] = []
    client = closing(
        HtEvents(
            write_key,
            host=collector.url,
            sync_mode=True,
            max_retries=1,
            retry_backoff=0,
            on_error=lambda error, messages: failures.append((error, messages)),
        )
    )
    collector.script(Reply(503), Reply(503))
    outcomes = Outcomes()
    message = client.track(user_id="1", event="Order completed", callback=outcomes)
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError)
    assert error.status == 503
    assert error.attempts == 2
    assert [(e, [m["messageId"] for m in ms]) for e, ms in failures] == [
        (error, [message["messageId"]])
    ]
    assert client.stats()["failed"] == 1
    assert not client.healthy()


def test_sync_mode_through_the_handler_sends_each_logged_event_at_once(
    collector, write_key, closing, started_here
):
    import logging

    handler = closing(HtEventsHandler(write_key=write_key, host=collector.url, sync_mode=True))
    logger = logging.getLogger("tests.serverless.handler")
    logger.addHandler(handler)
    try:
        logger.warning("Signed up", extra={"htevent": {"userId": "7"}})
        assert [e["event"] for e in collector.events] == ["Signed up"]
        logger.warning("not an event")
        assert len(collector.events) == 1
    finally:
        logger.removeHandler(handler)
    assert started_here == []


def test_a_callback_that_sends_again_is_served_after_it_not_inside_it(sync_client, collector):
    depth = []

    def send_another(error, message):
        depth.append(len(collector.events))
        if len(depth) < 3:
            sync_client.track(user_id="1", event=f"Follow-up {len(depth)}", callback=send_another)

    sync_client.track(user_id="1", event="First", callback=send_another)
    assert [e["event"] for e in collector.events] == ["First", "Follow-up 1", "Follow-up 2"]
    assert depth == [1, 2, 3]  # each callback ran after its own message, not nested in another


def test_after_close_sync_mode_drops_and_tells_the_callback(sync_client, collector):
    assert sync_client.close() is True
    outcomes = Outcomes()
    sync_client.track(user_id="1", event="Late", callback=outcomes)
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError) and error.reason == "after_close"
    assert collector.events == []


def test_sync_mode_clients_with_equal_settings_share_one_connection_pool(
    collector, write_key, closing
):
    first = closing(HtEvents(write_key, host=collector.url, sync_mode=True))
    second = closing(HtEvents(write_key, host=collector.url, sync_mode=True))
    threaded = closing(HtEvents(write_key, host=collector.url))
    assert first._transport is second._transport
    assert threaded._transport is not first._transport
