"""The one background thread: a ``QueueListener`` that drains the queue into batches.

The worker owns the queue, the message in hand and the batch being built; nothing else reads
or writes them. It cuts batches (with the :class:`Batcher`) and hands each to its exporter.
It keeps ``QueueListener``'s shape and uses only its documented override points:
``dequeue`` waits no longer than the current batch may wait (so time-based cuts need no
timer thread), ``prepare`` builds a logged event off the calling thread, ``handle`` takes one
item, ``enqueue_sentinel`` wakes the thread to close, and ``start``/``stop`` run it.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import threading
import time
from contextvars import ContextVar
from typing import Any, Callable, Optional, Union

from .._diagnostics import log
from .batcher import Batcher
from .clock import Closing
from .envelope import Envelope, Queueable
from .exporters import Exporter
from .ledger import Ledger

__all__ = ["BatchWorker", "FlushRequest", "forget_threads", "is_transport_thread"]

#: While messages keep arriving, the thread lets them gather, in steps of this many seconds
#: (GIL-free, cut short by flush and close), before it builds and sends them: a service logging
#: in a burst is not interleaved with the thread's work message by message, and the work then
#: goes in large batches. It stops lingering once arrivals pause, after ``MAX_LINGER`` seconds
#: (and never past ``flush_interval``), or when the queue holds a quarter of its bound.
LINGER = 0.02
MAX_LINGER = 0.5

# True in a transport thread's own context only: a thread starts with a context of its own, so
# no other thread sees it set (a context copied on the transport thread, by a callback, does).
_ON_TRANSPORT_THREAD: ContextVar[bool] = ContextVar("htevents_on_transport_thread", default=False)

#: True on a transport thread: the logging front-ends never turn its records into events. (The
#: context variable's own ``get``, called with no argument: one C call, which every logged
#: event makes, about 0.06 µs less than looking the thread's ident up in a set.)
is_transport_thread: Callable[[], bool] = _ON_TRANSPORT_THREAD.get


def forget_threads() -> None:
    """In a forked child: the parent's transport threads do not exist here (the child's one
    thread may be the one that forked, a transport thread running a callback)."""
    _ON_TRANSPORT_THREAD.set(False)


class FlushRequest:
    """A marker put on the queue by ``flush()``: ``done`` is set once everything before it was
    sent, and ``ok`` says whether all of it was delivered or failed for good (False when some
    is kept in the spool for a later try)."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = True


class _Wake:
    """A marker that wakes the thread without asking anything of it (closing, or a tick)."""


_WAKE = _Wake()


class _Stop:
    """What ``dequeue`` returns once closing and drained: the thread ends."""


_STOP = _Stop()

_Marker = Union[FlushRequest, _Wake]


def timed_get(q: queue.SimpleQueue[Any], timeout: Optional[float]) -> Any:
    """``q.get(True, timeout)``, working around a CPython bug that can block it forever.

    ``SimpleQueue`` keeps an internal lock that is held while the queue is empty. A ``get()``
    that finds an item leaves that lock free; the next timed ``get()`` on the now empty queue
    takes it at once, recomputes its timeout, and when that is already past (a timeout of 0,
    or a few microseconds) passes a negative wait on, which means "wait forever" (seen on
    3.9, 3.10 and 3.12: the transport thread then slept with a batch due, until the next
    message). A ``get_nowait()`` first leaves the lock held, and the timed wait on it is then
    correct.
    """
    try:
        return q.get_nowait()
    except queue.Empty:
        if timeout is not None and timeout <= 0:
            raise
    return q.get(True, timeout)


class BatchWorker(logging.handlers.QueueListener):
    """Drains the queue: messages into the batcher, due batches out to the exporter.

    The calling threads :meth:`put` messages (bounded by ``max_queue_size``) and markers; the
    worker thread takes them off in :meth:`dequeue` and :meth:`handle`. When closing, the
    closing thread may take over what the worker thread left (:meth:`take_everything`,
    :meth:`take_late`) once that thread is stuck in a request or gone.
    """

    def __init__(
        self,
        batcher: Batcher,
        exporter: Exporter,
        ledger: Ledger,
        closing: Closing,
        *,
        max_queue_size: int,
    ) -> None:
        # A SimpleQueue is several times cheaper to put to than a queue.Queue; its bound is
        # kept by put() with qsize(), exact but for a few concurrent puts.
        self.queue: queue.SimpleQueue[Any]
        super().__init__(queue.SimpleQueue())
        self._batcher = batcher
        self._exporter = exporter
        self._ledger = ledger
        self._closing = closing
        self._max_queue_size = max_queue_size
        self._max_backlog = max(batcher.max_events, max_queue_size // 4)
        self._linger = min(LINGER, batcher.interval)
        self._max_linger = min(MAX_LINGER, batcher.interval)
        self._hurry = threading.Event()  # flush() and close(): stop lingering
        self._markers = 0  # flush and close markers in the queue: no messages, not counted
        # Re-entrant, like every lock a calling thread takes: a signal handler that logs or
        # flushes may run while its own thread holds it (as the stdlib logging locks are).
        self._markers_lock = threading.RLock()
        self._taken = 0  # messages taken off the queue (by the thread, or by close())
        self._in_hand: Optional[Queueable] = None  # taken off, not yet in a batch
        # Guards the batch being built: close() takes it when the thread is stuck in a request.
        self._batch_lock = threading.Lock()
        self._runner: Optional[threading.Thread] = None
        self._finished = False
        self._crashed = False

    # -- the calling threads ------------------------------------------------------------------

    def put(self, item: Queueable, wait: float = 0.0) -> bool:
        """Queue a message; False when the queue is full (after waiting up to ``wait`` seconds
        for room: the ``block_on_full`` setting)."""
        q = self.queue
        if q.qsize() - self._markers < self._max_queue_size:
            q.put(item)
            return True
        return wait > 0 and self._put_when_room(item, wait)

    def _put_when_room(self, item: Queueable, wait: float) -> bool:
        """Wait for room (polling, from 0.5 ms up to 10 ms apart) until ``wait`` has passed."""
        deadline = time.monotonic() + wait
        pause = 0.0005
        idle = threading.Event()  # never set: a GIL-free pause
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            idle.wait(min(pause, left))
            pause = min(pause * 2, 0.01)
            if self.queue.qsize() - self._markers < self._max_queue_size:
                self.queue.put(item)
                return True

    def _put_marker(self, marker: _Marker) -> None:
        with self._markers_lock:
            self._markers += 1
        self.queue.put(marker)

    def request_flush(self) -> FlushRequest:
        """Ask the thread to send everything queued before now; wait on the result's ``done``."""
        request = FlushRequest()
        self._put_marker(request)
        self._hurry.set()
        return request

    def enqueue_sentinel(self) -> None:
        """Wake the thread so that it sees the close signal, drains the queue and ends."""
        self._hurry.set()
        self._put_marker(_WAKE)

    def depth(self) -> int:
        """Messages waiting in the queue (not counting the batch being built or sent)."""
        return max(0, self.queue.qsize() - self._markers)

    def taken(self) -> int:
        """Messages taken off the queue so far."""
        return self._taken

    @property
    def finished(self) -> bool:
        """True once, closing, the thread found the queue empty for the last time: a message
        put after that is nobody's to send."""
        return self._finished

    @property
    def crashed(self) -> bool:
        """True if the thread died of an exception (a bug of ours)."""
        return self._crashed

    def start(self) -> None:
        """Start the daemon thread, named ``htevents-transport``."""
        runner = threading.Thread(target=self._run, name="htevents-transport", daemon=True)
        runner.start()
        self._runner = runner

    def stop(self) -> None:
        """Wake the thread to close and wait for it to end (the transport's ``close()`` sets
        the close signal first and bounds the wait with :meth:`join`)."""
        self.enqueue_sentinel()
        self.join(None)

    def join(self, timeout: Optional[float]) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; True when it has."""
        runner = self._runner
        if runner is not None:
            runner.join(None if timeout is None else max(0.0, timeout))
        return not self.is_alive()

    def is_alive(self) -> bool:
        """Whether the thread is running."""
        runner = self._runner
        return runner is not None and runner.is_alive()

    # -- the worker thread --------------------------------------------------------------------

    def _run(self) -> None:
        _ON_TRANSPORT_THREAD.set(True)
        try:
            while True:
                item = self.dequeue(True)
                if item is _STOP:
                    break
                self.handle(item)
            # Closed and drained: give back the connections (and the spool) now, even when
            # close() could not wait for this (under the logging lock, or past its deadline).
            self._exporter.shutdown()
        except BaseException:
            self._crashed = True
            log(logging.ERROR, "htevents-logging: the transport thread died", exc_info=True)

    def _marker_taken(self) -> None:
        with self._markers_lock:
            self._markers -= 1

    def dequeue(self, block: bool) -> Any:
        """The next item (letting a burst gather first, see ``LINGER``); a wake-up when the
        current batch or the exporter's next poll falls due first; the stop once closed and
        drained."""
        q = self.queue
        try:
            item = q.get_nowait()  # a backlog: no clock to read, no flag to look at
        except queue.Empty:
            try:
                item = self._when_empty(q, block)
            except queue.Empty:
                return _WAKE if not self._finished else _STOP
            if item is None:
                return _WAKE
        if isinstance(item, (_Wake, FlushRequest)):
            self._marker_taken()
            return item
        self._taken += 1
        self._in_hand = item
        if not len(self._batcher) and not self._closing.is_set():
            self._batcher.start_clock()  # flush_interval counts from here, lingering included
            if q.qsize() < self._batcher.max_events:
                self._linger_while_busy()
        return item

    def _when_empty(self, q: queue.SimpleQueue[Any], block: bool) -> Any:
        """The next item once the queue was found empty: waited for until the current batch
        or the exporter's next poll falls due (``None`` when closing with a batch to send)."""
        if self._closing.is_set():
            if len(self._batcher):
                return None
            self._finished = True
            return q.get_nowait()  # one put may have raced the flag
        return timed_get(q, self._time_left()) if block else q.get_nowait()

    def _linger_while_busy(self) -> None:
        """Let a burst gather (see ``LINGER``), waiting without the GIL."""
        started = time.monotonic()
        queued = self.queue.qsize()
        while not self._hurry.wait(self._linger):
            before, queued = queued, self.queue.qsize()
            if (
                queued == before
                or queued >= self._max_backlog
                or time.monotonic() - started >= self._max_linger
            ):
                return

    def _time_left(self) -> Optional[float]:
        left = self._batcher.time_left()
        poll = self._exporter.next_poll()
        if poll is not None:
            left = poll if left is None else min(left, poll)
        return left

    def prepare(self, record: Queueable) -> Optional[Envelope]:  # type: ignore[override]
        """Build a queued message (a logged event is built here, off the calling thread);
        ``None`` for one that was rejected, which is then settled as discarded. (The queue
        carries messages, not log records: hence the narrower argument type.)"""
        envelope = record.prepare()
        if envelope is None:
            self._ledger.discarded()
        return envelope

    def handle(self, record: Any) -> None:
        """Take one item off the queue. Never raises: an error here is logged, not fatal."""
        try:
            if isinstance(record, _Wake):
                if self._closing.is_set() or self._batcher.time_left() == 0.0:
                    self._export_pending()
                self._exporter.poll(False)
            elif isinstance(record, FlushRequest):
                try:
                    self._hurry.clear()
                    self._export_pending()
                    record.ok = self._exporter.poll(True)
                except Exception:
                    record.ok = False
                    raise
                finally:
                    record.done.set()
            else:
                envelope = self.prepare(record)
                with self._batch_lock:
                    ready = self._batcher.add(envelope) if envelope is not None else ()
                    self._in_hand = None
                for batch in ready:
                    self._exporter.export(batch)
        except Exception:
            log(
                logging.ERROR,
                "htevents-logging transport error (the thread carries on)",
                exc_info=True,
            )

    def _export_pending(self) -> None:
        with self._batch_lock:
            batch = self._batcher.take()  # also stops the clock of a batch left empty
        if batch:
            self._exporter.export(batch)

    # -- the closing thread, once the worker thread is stuck or gone ---------------------------

    def _drain(self) -> list[Queueable]:
        """Take the messages still queued; the markers among them are just taken away."""
        items: list[Queueable] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return items
            if isinstance(item, (_Wake, FlushRequest)):
                self._marker_taken()
            else:
                items.append(item)

    def take_everything(self) -> list[Queueable]:
        """The batch being built and everything queued, as they are (not built: at a deadline
        there is no time to build 100,000 logged events); after a crash, the message the
        thread had in hand first."""
        taken: list[Queueable] = []
        if self._crashed and self._in_hand is not None:
            taken.append(self._in_hand)
            self._in_hand = None
        queued = self._drain()
        self._taken += len(queued)
        with self._batch_lock:
            held: list[Queueable] = list(self._batcher.take())
        return held + taken + queued

    def take_late(self) -> list[Queueable]:
        """What was queued after the thread took its last message (a call that raced
        ``close()``): nobody's to send."""
        return self._drain()
