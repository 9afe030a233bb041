"""The transport against a real HTTP server on 127.0.0.1: batching, retries, outcomes, deadlines.

Every test scripts the collector (``collector.script(...)``) to answer as the real endpoint can:
2xx, 4xx with any body, 429 with ``Retry-After``, 5xx, a hang past the timeout, or a dropped
connection.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest
from helpers import Outcomes, assert_flushed, transport_threads, wait_until

from htevents_logging import DeliveryError, HtEvents, HtEventsHandler, MessageTooLargeError
from htevents_logging._transport.exporters import DirectExporter
from htevents_logging._transport.sender import Started, is_retryable_status, parse_retry_after
from htevents_logging.collector import Cut, Drop, Hang, Reply


@pytest.fixture
def make_client(collector, closing, write_key):
    """Clients aimed at the test's collector, with fast retries; all closed after the test."""

    def make(**overrides) -> HtEvents:
        settings = {
            "host": collector.url,
            "flush_interval": 0.05,
            "retry_backoff": 0.01,
            "http_request_timeout": 2.0,
            "shutdown_timeout": 1.0,
            **overrides,
        }
        return closing(HtEvents(write_key, **settings))

    return make


def batch_sizes(collector) -> list[int]:
    return [len(r.json["batch"]) for r in collector.requests if r.json]


# -- batching ------------------------------------------------------------------------------


def test_batches_are_cut_by_count(collector, make_client):
    client = make_client(max_events_in_batch=15, flush_interval=60)
    for i in range(35):
        client.track(user_id="u", event=f"e{i}")
    assert_flushed(client, 5)
    assert batch_sizes(collector) == [15, 15, 5]


def test_batches_are_cut_by_real_bytes_under_500000(collector, make_client):
    client = make_client(max_events_in_batch=1000, flush_interval=60)
    big = "é" * 14_000  # 28,000 bytes of UTF-8, 14,000 characters
    for i in range(40):
        client.track(user_id="u", event=f"e{i}", properties={"blob": big})
    assert_flushed(client, 10)
    assert len(collector.events) == 40
    assert all(len(r.body) < 500_000 for r in collector.requests)
    assert len(collector.requests) >= 3
    assert max(len(r.body) for r in collector.requests) > 400_000  # batches are filled


def test_a_lone_event_is_sent_flush_interval_after_it_arrived(collector, make_client):
    client = make_client(flush_interval=0.3)
    start = time.monotonic()
    client.track(user_id="u", event="quiet")
    assert collector.wait_for_events(1, timeout=5)
    assert time.monotonic() - start >= 0.25


def test_flush_interval_counts_from_a_batchs_first_event_even_while_a_burst_gathers(
    collector, make_client
):
    # Regression: the thread let a burst gather (up to 0.5 s) before the first event reached
    # the batcher, whose clock only started then: a batch could wait twice flush_interval.
    client = make_client(flush_interval=0.6, max_events_in_batch=10_000)
    start = time.monotonic()
    pace = threading.Event()
    while not collector.requests and time.monotonic() - start < 5:
        client.track(user_id="u", event="steady")  # a steady trickle keeps the burst going
        pace.wait(0.01)
    first = collector.requests[0]
    assert 0.55 <= first.received_at - start < 1.0  # it was 0.5 s of lingering + 0.6 s


def test_a_message_over_32kb_is_rejected_before_it_is_queued(collector, make_client):
    client = make_client()
    with pytest.raises(MessageTooLargeError, match="32,768"):
        client.track(user_id="u", event="big", properties={"blob": "x" * 40_000})
    assert client.stats()["rejected_by_reason"] == {"oversize": 1}
    assert client.stats()["enqueued"] == 0


def test_a_full_queue_drops_counts_and_reports_without_blocking(collector, make_client):
    outcomes = Outcomes()
    client = make_client(max_queue_size=5, max_events_in_batch=1, http_request_timeout=5)
    collector.script(Hang(10))
    client.track(user_id="u", event="in flight")
    assert collector.wait_for_requests(1, timeout=5)  # the thread is stuck on the hang
    start = time.monotonic()
    for i in range(12):
        client.track(user_id="u", event=f"e{i}", callback=outcomes)
    assert time.monotonic() - start < 2.5  # blocking would wait out the 10 s hang
    stats = client.stats()
    assert stats["dropped_by_reason"] == {"queue_full": 7}
    assert stats["queue_depth"] == 5
    dropped = [e for e in outcomes.errors if e is not None]
    assert len(dropped) == 7
    assert all(isinstance(e, DeliveryError) and e.reason == "queue_full" for e in dropped)


def test_batches_go_one_at_a_time_in_order(collector, make_client):
    client = make_client(max_events_in_batch=5, flush_interval=60)
    sent = [client.track(user_id="u", event=f"e{i}")["messageId"] for i in range(23)]
    assert_flushed(client, 5)
    assert [e["messageId"] for e in collector.events] == sent


# -- pipelining: the next batch is built while the server reads one --------------------------


class RecordingSender:
    """A sender that notes when each batch's request goes out and when its answer is read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def start(self, batch):
        self.calls.append(("sent", batch[0]))
        return Started(batch)

    def finish(self, started):
        self.calls.append(("answer read", started.batch[0]))
        return None

    def close(self) -> None:
        self.calls.append(("closed", ""))


class RecordingLedger:
    def __init__(self) -> None:
        self.settled: list[str] = []

    def settle(self, batch, error) -> None:
        self.settled.append(batch[0])


def test_a_batchs_answer_is_read_when_the_next_batch_goes_or_when_there_is_nothing_else_to_do():
    sender, ledger = RecordingSender(), RecordingLedger()
    exporter = DirectExporter(sender, ledger)  # type: ignore[arg-type]

    exporter.export(["first"])
    assert sender.calls == [("sent", "first")] and ledger.settled == []
    assert exporter.next_poll() == 0.0  # the worker, with nothing queued, polls at once

    exporter.export(["second"])  # built while the server read "first"
    assert sender.calls[1:] == [("answer read", "first"), ("sent", "second")]
    assert ledger.settled == ["first"]

    assert exporter.poll(False)
    assert sender.calls[-1] == ("answer read", "second") and ledger.settled == ["first", "second"]
    assert exporter.next_poll() is None
    exporter.shutdown()
    assert sender.calls[-1] == ("closed", "")


def test_a_lone_batchs_answer_is_read_at_once_without_another_batch_or_a_flush(
    collector, make_client
):
    outcomes = Outcomes()
    client = make_client(max_events_in_batch=2, flush_interval=60)  # a full batch goes at once
    for name in ("First", "Second"):
        client.track(user_id="u", event=name, callback=outcomes)
    assert outcomes.wait(2), client.stats()
    assert outcomes.errors == [None, None] and client.stats()["sent"] == 2


def test_a_failed_answer_read_late_is_retried_and_every_batch_still_arrives_once_in_order(
    collector, make_client
):
    collector.script(Reply(500), Drop())
    client = make_client(max_events_in_batch=5, flush_interval=60)
    sent = [client.track(user_id="u", event=f"e{i}")["messageId"] for i in range(23)]
    assert_flushed(client, 10)
    assert [e["messageId"] for e in collector.events] == sent
    assert client.stats()["retries"] == 2 and client.stats()["sent"] == 23


# -- the wire ------------------------------------------------------------------------------


def test_the_request_carries_basic_auth_the_write_key_field_and_our_user_agent(
    collector, make_client, write_key
):
    client = make_client()
    client.track(user_id="u", event="x")
    assert_flushed(client, 5)
    request = collector.requests[0]
    assert request.method == "POST" and request.path == "/v1/batch"
    assert request.header("Authorization") == "Basic dGVzdC13cml0ZS1rZXk6"
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == "htevents-logging/0.1.0"
    assert request.header("Content-Encoding") is None
    assert request.json["writeKey"] == write_key
    assert request.body.startswith(b'{"batch":[{')  # compact JSON


def test_gzip_compresses_the_body(collector, make_client):
    client = make_client(gzip=True)
    client.track(user_id="u", event="zipped")
    assert_flushed(client, 5)
    request = collector.requests[0]
    assert request.header("Content-Encoding") == "gzip"
    assert request.body[:2] == b"\x1f\x8b"
    assert collector.events[0]["event"] == "zipped"


def test_batches_and_retries_reuse_one_kept_alive_connection(collector, make_client):
    # Regression: a 2xx answer was closed unread, which closes its connection, so every batch
    # opened a new one (a TLS handshake each, against the real endpoint).
    client = make_client(max_events_in_batch=1)
    collector.script(Reply(503), Reply(500, body=b'{"error": "try again"}'))
    for i in range(5):
        client.track(user_id="u", event=f"e{i}")
    assert_flushed(client, 5)
    assert [r.status for r in collector.requests] == [503, 500, 200, 200, 200, 200, 200]
    assert len({r.client_port for r in collector.requests}) == 1


# -- responses and retries -------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
def test_any_2xx_is_success_and_is_not_retried(collector, make_client, status):
    outcomes = Outcomes()
    client = make_client()
    collector.script(Reply(status, body=b"" if status == 204 else b"{}"))
    client.track(user_id="u", event="x", callback=outcomes)
    assert_flushed(client, 5)
    assert len(collector.requests) == 1
    assert outcomes.errors == [None]
    assert client.stats()["sent"] == 1 and client.stats()["retries"] == 0


def test_a_2xx_cut_off_mid_body_is_still_a_success(collector, make_client):
    client = make_client()
    collector.script(Cut(200, body=b'{"ok": true}'))
    client.track(user_id="u", event="x")
    assert_flushed(client, 5)
    assert len(collector.requests) == 1  # not retried: the server said it took the batch
    assert client.stats()["sent"] == 1 and client.stats()["retries"] == 0


def test_a_4xx_cut_off_mid_body_is_still_decided_by_its_status(collector, make_client):
    # Regression: the body of an error answer was read outside the attempt's error handling, so
    # a connection cut mid-body raised out of the sender and the batch vanished uncounted.
    outcomes = Outcomes()
    client = make_client()
    collector.script(Cut(400))
    client.track(user_id="u", event="x", callback=outcomes)
    assert_flushed(client, 5)
    assert len(collector.requests) == 1  # a 400 is not retried, even without its body
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError) and error.reason == "http_4xx"
    assert "cut off" in str(error)
    assert client.stats()["failed_by_reason"] == {"http_4xx": 1}


@pytest.mark.parametrize(
    "reply",
    [
        Reply(400, body=b'{"error": "bad request"}'),
        Reply(400, body=b"{}"),
        Reply(400, body=b"<html><body>Bad Request</body></html>", content_type="text/html"),
        Reply(401),
        Reply(413),
        Reply(501),
        Reply(505),
    ],
    ids=["400-json", "400-empty", "400-html", "401", "413", "501", "505"],
)
def test_other_4xx_and_501_505_fail_at_once_whatever_the_body(
    collector, make_client, reply, write_key
):
    outcomes = Outcomes()
    failures = []
    client = make_client(on_error=lambda error, messages: failures.append((error, messages)))
    collector.script(reply)
    message = client.track(user_id="u", event="x", callback=outcomes)
    assert_flushed(client, 5)
    assert len(collector.requests) == 1
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError)
    assert error.status == reply.status and error.attempts == 1
    assert error.reason == f"http_{reply.status // 100}xx"
    assert write_key not in str(error)
    [(reported, messages)] = failures
    assert reported is error and [m["messageId"] for m in messages] == [message["messageId"]]
    assert client.stats()["failed_by_reason"] == {error.reason: 1}


@pytest.mark.parametrize(
    "failure",
    [
        Reply(500),
        Reply(502),
        Reply(503),
        Reply(504),
        Reply(408),
        Reply(429),
        Drop(),
        Hang(5),
        Cut(503),
    ],
    ids=["500", "502", "503", "504", "408", "429", "dropped-connection", "hang", "503-cut-off"],
)
def test_transient_failures_are_retried_with_the_same_message_id(collector, make_client, failure):
    client = make_client(http_request_timeout=1.0)
    collector.script(failure)
    message = client.track(user_id="u", event="x")
    assert_flushed(client, 5)
    requests = collector.requests
    assert len(requests) == 2
    assert [e["messageId"] for e in collector.events] == [message["messageId"]]
    first = json.loads(requests[0].body)
    assert first["batch"][0]["messageId"] == message["messageId"]
    assert client.stats()["retries"] == 1


def test_sent_at_is_refreshed_on_every_attempt(collector, make_client):
    client = make_client(retry_backoff=0.05)
    collector.script(Reply(500))
    client.track(user_id="u", event="x")
    assert_flushed(client, 5)
    first, second = (json.loads(r.body)["sentAt"] for r in collector.requests)
    assert first < second


def test_retries_stop_after_max_retries_and_are_reported(collector, make_client):
    outcomes = Outcomes()
    client = make_client(max_retries=2)
    collector.script(Reply(500), Reply(503), Reply(500), Reply(200))
    client.track(user_id="u", event="x", callback=outcomes)
    assert_flushed(client, 5)
    assert len(collector.requests) == 3  # 1 attempt + 2 retries
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError)
    assert error.reason == "retries_exhausted" and error.attempts == 3 and error.status == 500
    assert client.stats()["failed_by_reason"] == {"retries_exhausted": 1}


def test_retry_after_sets_the_wait(collector, make_client):
    # Real time, end to end; the exact waits are unit-tested in test_timing.py.
    client = make_client()
    collector.script(Reply(429, headers={"Retry-After": "1"}))
    client.track(user_id="u", event="x")
    assert_flushed(client, 5)
    first, second = collector.requests
    assert second.received_at - first.received_at >= 0.9


def test_retry_policy_matches_the_wire_contract():
    assert all(is_retryable_status(s) for s in (408, 429, 500, 502, 503, 504, 599))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 413, 422, 501, 505))
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.0  # in the past -> 0
    future = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= parse_retry_after(future) <= 31


def test_a_bug_while_sending_fails_the_batch_instead_of_losing_it(
    collector, make_client, monkeypatch, caplog
):
    outcomes = Outcomes()
    client = make_client()
    sender = client._transport._exporter._sender

    def broken_body(batch):
        raise RuntimeError("a bug in building the body")

    monkeypatch.setattr(sender, "body", broken_body)
    client.track(user_id="u", event="x", callback=outcomes)
    assert_flushed(client, 5)
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError) and error.reason == "internal_error"
    assert "RuntimeError" in str(error)
    assert client.stats()["failed_by_reason"] == {"internal_error": 1}
    assert "a bug in building the body" in caplog.text  # the traceback is logged
    monkeypatch.undo()
    client.track(user_id="u", event="after")  # the thread lives on
    assert client.flush(5) and [e["event"] for e in collector.events] == ["after"]


def test_a_raising_callback_or_on_error_never_kills_the_thread(collector, make_client):
    def bad_callback(error, message):
        raise RuntimeError("callback bug")

    def bad_on_error(error, messages):
        raise RuntimeError("on_error bug")

    client = make_client(on_error=bad_on_error)
    collector.script(Reply(400))
    client.track(user_id="u", event="refused", callback=bad_callback)
    assert_flushed(client, 5)
    client.track(user_id="u", event="later", callback=bad_callback)
    assert_flushed(client, 5)
    assert [e["event"] for e in collector.events] == ["later"]


def test_stats_count_every_outcome(collector, make_client):
    client = make_client(max_events_in_batch=2, max_retries=0)
    collector.script(Reply(200), Reply(500))
    for i in range(4):
        client.track(user_id="u", event=f"e{i}")
    assert_flushed(client, 5)
    stats = client.stats()
    assert (stats["enqueued"], stats["sent"], stats["failed"], stats["batches"]) == (4, 2, 2, 1)
    assert stats["queue_depth"] == 0


# -- deadlines -------------------------------------------------------------------------------


def test_flush_returns_by_its_deadline_when_the_server_hangs(collector, make_client):
    client = make_client(http_request_timeout=30)
    collector.script(Hang(20))
    client.track(user_id="u", event="x")
    start = time.monotonic()
    assert client.flush(0.5) is False
    assert time.monotonic() - start < 5  # the server hangs for 20 s


def test_close_returns_by_its_deadline_and_reports_what_was_not_delivered(collector, make_client):
    outcomes = Outcomes()
    client = make_client(http_request_timeout=30)
    collector.script(Hang(20))
    client.track(user_id="u", event="x", callback=outcomes)
    assert collector.wait_for_requests(1, 5)
    start = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - start < 5  # the server hangs for 20 s
    assert outcomes.wait(1, timeout=3)
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError) and error.reason == "shutdown_timeout"


def test_close_cuts_a_backoff_sleep_short(collector, make_client):
    client = make_client(retry_backoff=30, retry_backoff_max=30)
    collector.script(Reply(500))
    client.track(user_id="u", event="x")
    assert collector.wait_for_requests(1, 5)
    start = time.monotonic()
    assert client.close(timeout=20) is True
    assert time.monotonic() - start < 10  # the backoff was 15-30 s
    assert [e["event"] for e in collector.events] == ["x"]


def test_while_closing_a_servers_retry_after_is_still_honoured(collector, make_client):
    # Regression: close() set the event the backoff waited on, so every retry after it went
    # out at once, back to back, whatever the server had asked.
    retry_soon = {"Retry-After": "0.5"}
    collector.script(Reply(503, headers=retry_soon), Reply(503, headers=retry_soon))
    client = make_client()
    client.track(user_id="u", event="x")
    assert collector.wait_for_requests(1, 5)
    assert client.close(timeout=5) is True
    first, second, third = collector.requests
    assert second.received_at - first.received_at >= 0.3  # back to back took milliseconds
    assert third.received_at - second.received_at >= 0.3
    assert [e["event"] for e in collector.events] == ["x"]


def test_a_wait_that_would_end_past_the_close_deadline_fails_the_batch_at_once(
    collector, make_client
):
    outcomes = Outcomes()
    collector.script(Reply(503, headers={"Retry-After": "20"}))
    client = make_client()
    client.track(user_id="u", event="x", callback=outcomes)
    assert collector.wait_for_requests(1, 5)
    start = time.monotonic()
    # The deadline cut it off (its retry would have come too late): False, although close()
    # did not have to wait for the deadline to know. (Regression: it said True when the
    # transport thread failed the message in time, False when close() gave up on it at the
    # deadline; with a server that hangs, which of them came first was a race.)
    assert client.close(timeout=10) is False
    assert time.monotonic() - start < 5  # not waiting out the deadline
    assert len(collector.requests) == 1
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError) and error.reason == "shutdown_timeout"


def test_no_attempt_starts_after_close_gave_up_on_a_batch(collector, make_client):
    # Regression: a batch already being sent when close() came kept the deadline it started
    # with (none), and went on retrying after close() had reported it as failed.
    outcomes = Outcomes()
    collector.script(*[Hang(2)] * 20)
    client = make_client(http_request_timeout=0.3, retry_backoff=0.01, max_retries=20)
    client.track(user_id="u", event="x", callback=outcomes)
    assert collector.wait_for_requests(1, 5)
    # Whether close() gave up first or the thread failed the batch itself just in time (the
    # attempt in flight ends at the deadline), the deadline cut it off.
    assert client.close(timeout=0.5) is False
    assert outcomes.wait(1) and outcomes.errors[0].reason == "shutdown_timeout"
    seen = len(collector.requests)
    assert not collector.wait_for_requests(seen + 1, timeout=1.0)


def test_after_close_calls_send_nothing_and_count_as_dropped(collector, make_client):
    outcomes = Outcomes()
    client = make_client()
    client.track(user_id="u", event="before")
    assert client.close(timeout=5)
    message = client.track(user_id="u", event="after", callback=outcomes)
    assert message["event"] == "after"  # still validated and returned
    assert client.stats()["dropped_by_reason"] == {"after_close": 1}
    assert [e["event"] for e in collector.events] == ["before"]
    assert outcomes.errors[0].reason == "after_close"


# -- sharing ---------------------------------------------------------------------------------


def test_clients_with_the_same_settings_share_one_transport(collector, make_client):
    before = transport_threads()
    first, second = make_client(), make_client()
    other = make_client(max_events_in_batch=3)
    assert first._transport is second._transport
    assert other._transport is not first._transport
    for client in (first, second, other):
        client.track(user_id="u", event="x")
    assert wait_until(lambda: len(collector.events) == 3)
    assert len(transport_threads() - before) == 2


def test_closing_one_sharer_leaves_the_other_working(collector, make_client):
    first, second = make_client(), make_client()
    assert first.close(5)
    second.track(user_id="u", event="still works")
    assert_flushed(second, 5)
    assert [e["event"] for e in collector.events] == ["still works"]


# -- every message gets one outcome, whatever the timing ----------------------------------------


class PausingQueue:
    """The transport's queue, but ``qsize()`` on the thread named "app" waits to be resumed:
    it opens the window between enqueue()'s checks and its put."""

    def __init__(self, inner):
        self.inner = inner
        self.paused = threading.Event()
        self.resume = threading.Event()

    def qsize(self):
        if threading.current_thread().name == "app":
            self.paused.set()
            self.resume.wait(5)
        return self.inner.qsize()

    def put(self, item):
        self.inner.put(item)

    def get(self, *args, **kwargs):
        return self.inner.get(*args, **kwargs)

    def get_nowait(self):
        return self.inner.get_nowait()


def test_a_message_that_races_close_is_dropped_and_reported_never_stranded(collector, make_client):
    # Regression: a call that passed the "closed?" check just before close() put its message
    # after the thread had taken its last one: never sent, never counted, close() said True.
    client = make_client()
    client.track(user_id="u", event="warm-up")
    assert_flushed(client, 5)
    transport = client._transport
    paused = PausingQueue(transport._worker.queue)
    transport._worker.queue = paused  # the worker owns the queue: one attribute to patch
    outcomes = Outcomes()
    app = threading.Thread(
        name="app", target=lambda: client.track(user_id="u", event="late", callback=outcomes)
    )
    app.start()
    assert paused.paused.wait(5)
    assert client.close(5) is True  # nothing was queued yet when it closed
    paused.resume.set()
    app.join(5)
    [error] = outcomes.errors
    assert isinstance(error, DeliveryError) and error.reason == "after_close"
    assert client.stats()["dropped_by_reason"] == {"after_close": 1}


def test_a_callback_that_raises_systemexit_does_not_end_the_thread(collector, make_client):
    # Regression: callbacks were guarded against Exception only; SystemExit ended the thread
    # silently, and every later message waited for nobody.
    def exits(error, message):
        raise SystemExit("a callback called sys.exit()")

    client = make_client()
    client.track(user_id="u", event="first", callback=exits)
    assert_flushed(client, 5)
    client.track(user_id="u", event="second")
    assert_flushed(client, 5)
    assert [e["event"] for e in collector.events] == ["first", "second"]


def test_if_the_thread_dies_close_reports_what_it_left_and_says_false(
    collector, make_client, monkeypatch
):
    outcomes = Outcomes()
    client = make_client(flush_interval=60)
    transport = client._transport
    client.track(user_id="u", event="held", callback=outcomes)  # in the batch being built
    assert wait_until(lambda: len(transport._worker._batcher) == 1)

    def crash(record):
        raise SystemExit("a bug that ends the thread")

    monkeypatch.setattr(transport._worker, "handle", crash)
    client.track(user_id="u", event="queued", callback=outcomes)
    assert wait_until(lambda: not transport._worker.is_alive())
    client.track(user_id="u", event="after", callback=outcomes)
    assert client.close(2) is False
    assert sorted(m["event"] for _, m in outcomes.results) == ["after", "held", "queued"]
    assert {e.reason for e in outcomes.errors} == {"internal_error"}
    assert client.stats()["failed_by_reason"] == {"internal_error": 3}


def test_flush_requests_are_not_messages(collector, make_client):
    # Regression: every flush() that timed out left its request in the queue, counted as a
    # message in enqueued and queue_depth, and taking a place under max_queue_size.
    collector.script(Hang(3))
    client = make_client(max_queue_size=4, max_retries=0, http_request_timeout=5)
    client.track(user_id="u", event="stuck")
    assert collector.wait_for_requests(1, 5)
    for _ in range(4):
        assert client.flush(0.01) is False
    stats = client.stats()
    assert (stats["enqueued"], stats["queue_depth"]) == (1, 0)
    client.track(user_id="u", event="fits")
    assert client.stats()["dropped"] == 0 and client.stats()["queue_depth"] == 1


def test_flush_and_close_from_a_callback_return_at_once(collector, make_client):
    # Regression: flush() from on_error blocked the transport thread for its whole timeout, and
    # close() raised RuntimeError("cannot join current thread").
    seen = {}

    def on_error(error, messages):
        started = time.monotonic()
        seen["flush"] = client.flush(3)
        seen["close"] = client.close(3)
        seen["took"] = time.monotonic() - started

    collector.script(Reply(401))
    client = make_client(on_error=on_error)
    client.track(user_id="u", event="x")
    assert wait_until(lambda: "took" in seen)
    assert seen["flush"] is False and seen["close"] is False
    assert seen["took"] < 2


def test_a_thread_that_cannot_start_drops_the_message_and_says_why(make_client, monkeypatch):
    # Regression: "can't start new thread" (a container's process limit) was raised out of
    # track(), and a logged event was lost uncounted.
    real_start = threading.Thread.start

    def refuse(thread):
        if thread.name == "htevents-transport":
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    failures = []
    client = make_client(on_error=lambda error, messages: failures.append(error))
    client.track(user_id="u", event="x")  # does not raise
    assert client.stats()["dropped_by_reason"] == {"no_thread": 1}
    [error] = failures
    assert error.reason == "no_thread" and "can't start new thread" in str(error)
    monkeypatch.undo()
    client.track(user_id="u", event="y")  # the next call starts it
    assert_flushed(client, 5)


def test_a_dropped_invalid_payload_is_counted_once_as_rejected(make_client):
    # Regression: with on_error set, a logged payload dropped after close was also built to be
    # reported; an invalid one then counted as both dropped and rejected.
    client = make_client(on_error=lambda error, messages: None)
    handler = HtEventsHandler(client=client)
    logger = logging.getLogger("test.dropped.invalid")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        client.close(1)
        logger.warning("bad", extra={"htevent": {"type": "no-such-type", "userId": "u"}})
        stats = client.stats()
        assert (stats["dropped"], stats["rejected"]) == (0, 1)
    finally:
        logger.removeHandler(handler)


def test_a_second_close_says_what_the_first_did(collector, make_client):
    collector.script(Hang(5))
    client = make_client(http_request_timeout=10)
    client.track(user_id="u", event="x")
    assert collector.wait_for_requests(1, 5)
    assert client.close(0.3) is False
    assert client.close(0.3) is False


def test_enqueued_counts_a_message_the_thread_holds_while_a_burst_gathers(make_client, monkeypatch):
    client = make_client(flush_interval=60)
    lingering, done = threading.Event(), threading.Event()

    def linger():  # hold the message, as the thread does while a burst gathers
        lingering.set()
        done.wait(5)

    monkeypatch.setattr(client._transport._worker, "_linger_while_busy", linger)
    client.track(user_id="u", event="x")
    assert lingering.wait(5)
    try:
        assert client.stats()["enqueued"] == 1  # it was 0: taken off the queue, not counted
    finally:
        done.set()


def test_close_at_its_deadline_reports_the_batch_being_built_too(collector, make_client):
    # Regression: close() gave up on the batch in flight and the queue, but not on a message
    # left in the batch being built (here the 17th, cut off by size): never reported.
    outcomes = Outcomes()
    collector.script(Hang(20))
    client = make_client(flush_interval=30, max_events_in_batch=100, http_request_timeout=30)
    big = "x" * 30_000
    for i in range(17):  # 16 of ~30 KB fill a request; the 17th waits for the next
        client.track(user_id="u", event=f"e{i}", properties={"p": big}, callback=outcomes)
    assert collector.wait_for_requests(1, 5)
    assert client.close(0.5) is False
    assert outcomes.wait(17, timeout=5)
    assert {e.reason for e in outcomes.errors} == {"shutdown_timeout"}
    assert client.stats()["failed_by_reason"] == {"shutdown_timeout": 17}


def test_assert_flushed_shows_the_stats_when_delivery_is_not_done(collector, make_client):
    collector.script(Hang(3))
    client = make_client(http_request_timeout=5)
    client.track(user_id="u", event="stuck")
    assert collector.wait_for_requests(1, 5)
    with pytest.raises(AssertionError, match=r"returned False; stats: \{'enqueued': 1"):
        assert_flushed(client, 0.1)


def test_a_disabled_client_tells_each_callback_there_was_no_error():
    # Regression: with disable=True a callback was never called, so code waiting on it hung.
    # The Node SDK calls it; so does this port, with the message as it would have been sent.
    outcomes = Outcomes()
    client = HtEvents(disable=True)
    message = client.track(user_id="u", event="Order completed", callback=outcomes)
    assert outcomes.results == [(None, message)]
    assert client.stats()["sent"] == 0  # nothing was sent, nor counted as sent
