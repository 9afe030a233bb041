"""The batcher's and the sender's timing, exactly: both read an injected clock.

These are unit tests with a fake clock: a wait advances it at once, and records how long it
was asked to be. The answers still come from a real HTTP server on 127.0.0.1; only time is
virtual. (A few real-time integration tests stay in test_transport.py.)
"""

from __future__ import annotations

import random
import threading
from typing import Optional

import pytest

from htevents_logging._encoding import dumps
from htevents_logging._message import build_message
from htevents_logging._settings import Settings
from htevents_logging._transport.batcher import Batcher
from htevents_logging._transport.clock import Closing
from htevents_logging._transport.envelope import Envelope
from htevents_logging._transport.ledger import Ledger
from htevents_logging._transport.sender import Sender
from htevents_logging.collector import Collector, Reply


class FakeClock:
    """A clock that only moves when something waits on it, and records every wait."""

    def __init__(self) -> None:
        self.time = 1_000.0
        self.waits: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.time += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.is_set():
            return True
        self.waits.append(seconds)
        self.time += seconds
        return False


class FixedJitter(random.Random):
    """Backoff jitter pinned to one factor of the 0.5-1.0 range."""

    def __init__(self, factor: float) -> None:
        super().__init__(0)
        self.factor = factor

    def uniform(self, a: float, b: float) -> float:
        return self.factor


def envelope(size: int = 10) -> Envelope:
    """An envelope of ``size`` bytes, for the batcher (which only counts them)."""
    return Envelope(b'"' + b"x" * (size - 2) + b'"')


def message() -> Envelope:
    """A real message, as the collector checks it."""
    return Envelope(dumps(build_message("track", None, {"user_id": "u", "event": "x"})))


# -- the batcher ------------------------------------------------------------------------------


def test_a_batch_is_due_flush_interval_after_its_first_message():
    clock = FakeClock()
    batcher = Batcher(max_events=10, max_bytes=1_000, interval=5.0, envelope_bytes=50, clock=clock)
    assert batcher.time_left() is None  # no batch, no deadline

    batcher.add(envelope())
    assert batcher.time_left() == 5.0
    clock.time += 2.0
    batcher.add(envelope())  # a later message does not move the deadline
    assert batcher.time_left() == 3.0
    clock.time += 3.5
    assert batcher.time_left() == 0.0

    assert len(batcher.take()) == 2
    assert batcher.time_left() is None


def test_the_interval_counts_from_when_the_clock_was_started_not_when_added():
    clock = FakeClock()
    batcher = Batcher(max_events=10, max_bytes=1_000, interval=5.0, envelope_bytes=50, clock=clock)
    batcher.start_clock()  # the first message was taken off the queue
    clock.time += 4.0  # ...and a burst gathered for 4 s before it reached the batcher
    batcher.add(envelope())
    assert batcher.time_left() == 1.0


def test_a_batch_is_cut_at_max_events():
    batcher = Batcher(max_events=3, max_bytes=10_000, interval=5.0, envelope_bytes=50)
    assert not batcher.add(envelope())
    assert not batcher.add(envelope())
    [ready] = batcher.add(envelope())
    assert len(ready) == 3 and len(batcher) == 0


def test_a_body_stays_under_max_bytes_counting_the_envelope_and_commas():
    # 50 bytes of envelope + 10 + (1 + 10) + (1 + 10) = 82: a 4th would make 93 >= 90.
    batcher = Batcher(max_events=100, max_bytes=90, interval=5.0, envelope_bytes=50)
    for _ in range(3):
        assert not batcher.add(envelope())
    [ready] = batcher.add(envelope())
    assert len(ready) == 3 and len(batcher) == 1


# -- the sender -------------------------------------------------------------------------------


KEY = "timing-write-key"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def collector():
    with Collector(write_key=KEY) as running:
        yield running


def make_sender(
    collector: Collector,
    clock: FakeClock,
    closing: Optional[Closing] = None,
    jitter: float = 1.0,
    **settings: object,
) -> tuple[Sender, Ledger, Closing]:
    ledger = Ledger()
    closing = closing or Closing(clock)
    config = Settings.create(write_key=KEY, host=collector.url, **settings)
    return Sender(config, ledger, closing, clock, FixedJitter(jitter)), ledger, closing


def test_backoff_doubles_from_retry_backoff_up_to_its_cap(collector, clock):
    collector.script(*[Reply(500)] * 5)
    sender, ledger, _ = make_sender(
        collector, clock, max_retries=5, retry_backoff=0.5, retry_backoff_max=3.0
    )
    assert sender.send([message()]) is None
    assert clock.waits == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert ledger.snapshot(enqueued=0, queue_depth=0)["retries"] == 5
    sender.close()


def test_backoff_jitter_takes_between_half_and_all_of_the_step(collector, clock):
    collector.script(*[Reply(500)] * 3)
    sender, _, _ = make_sender(collector, clock, jitter=0.5, retry_backoff=1.0)
    assert sender.send([message()]) is None
    assert clock.waits == [0.5, 1.0, 2.0]
    sender.close()


def test_retry_after_sets_the_wait_exactly_and_is_capped(collector, clock):
    collector.script(
        Reply(503, headers={"Retry-After": "7"}), Reply(429, headers={"Retry-After": "500"})
    )
    sender, _, _ = make_sender(collector, clock, retry_after_max=60.0)
    assert sender.send([message()]) is None
    assert clock.waits == [7.0, 60.0]
    sender.close()


def test_after_the_last_retry_the_batch_fails_without_waiting_again(collector, clock):
    collector.script(*[Reply(500)] * 3)
    sender, _, _ = make_sender(collector, clock, max_retries=2, retry_backoff=1.0)
    error = sender.send([message()])
    assert error is not None and error.reason == "retries_exhausted" and error.attempts == 3
    assert clock.waits == [1.0, 2.0]
    sender.close()


def test_while_closing_the_first_own_backoff_is_skipped_and_later_ones_kept(collector, clock):
    collector.script(*[Reply(500)] * 3)
    closing = Closing(clock)
    closing.begin(clock.now() + 100)
    sender, _, _ = make_sender(
        collector, clock, closing, max_retries=5, retry_backoff=0.4, retry_backoff_max=0.4
    )
    assert sender.send([message()]) is None
    assert clock.waits == pytest.approx([0.4, 0.4])  # attempt 2 went at once; 3, 4 waited
    sender.close()


def test_while_closing_a_servers_retry_after_is_honoured(collector, clock):
    collector.script(*[Reply(503, headers={"Retry-After": "0.5"})] * 2)
    closing = Closing(clock)
    closing.begin(clock.now() + 100)
    sender, _, _ = make_sender(collector, clock, closing)
    assert sender.send([message()]) is None
    assert clock.waits == pytest.approx([0.5, 0.5])
    sender.close()


def test_a_wait_that_would_end_past_the_close_deadline_fails_at_once(collector, clock):
    collector.script(Reply(503, headers={"Retry-After": "20"}))
    closing = Closing(clock)
    closing.begin(clock.now() + 10)
    sender, _, _ = make_sender(collector, clock, closing)
    error = sender.send([message()])
    assert error is not None and error.reason == "shutdown_timeout" and error.attempts == 1
    assert clock.waits == []
    assert len(collector.requests) == 1
    sender.close()


def test_no_attempt_starts_at_or_past_the_close_deadline(collector, clock):
    closing = Closing(clock)
    closing.begin(clock.now())
    sender, _, _ = make_sender(collector, clock, closing)
    error = sender.send([message()])
    assert error is not None and error.reason == "shutdown_timeout" and error.attempts == 0
    assert collector.requests == []
    sender.close()


def test_closing_wakes_a_backoff_wait_so_it_can_look_at_the_deadline(collector):
    # The real clock: a 30 s backoff is cut short as soon as closing begins.
    collector.script(Reply(500))
    closing = Closing()
    ledger = Ledger()
    config = Settings.create(
        write_key=KEY, host=collector.url, retry_backoff=30, retry_backoff_max=30
    )
    sender = Sender(config, ledger, closing)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(sender.send([message()])))
    worker.start()
    assert collector.wait_for_requests(1, 5)
    closing.begin(float("inf"))
    worker.join(5)
    assert not worker.is_alive() and result == [None]  # one more attempt, at once
    sender.close()


def test_a_timed_wait_on_an_empty_queue_ends_even_when_it_is_already_due():
    # Regression: with a batch already due (a wait of 0 s) right after a get() had emptied the
    # queue, SimpleQueue.get(True, 0.0) blocked forever on 3.9, 3.10 and 3.12 (a CPython bug),
    # so the transport thread slept on a due batch until the next message came.
    import queue

    from htevents_logging._transport.worker import timed_get

    q: queue.SimpleQueue[int] = queue.SimpleQueue()
    finished = threading.Event()

    def waits() -> None:
        for timeout in (0.0, 1e-9, 1e-6) * 1000:
            q.put(1)
            assert timed_get(q, timeout) == 1  # leaves the queue's lock free, queue empty
            with pytest.raises(queue.Empty):
                timed_get(q, timeout)
        finished.set()

    threading.Thread(target=waits, daemon=True).start()
    assert finished.wait(10), "a timed get on an empty queue never returned"
