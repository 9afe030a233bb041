"""The one background thread: a ``QueueListener`` that drains the queue into the batcher."""

from __future__ import annotations

import logging.handlers
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Optional

from .._diagnostics import log
from .batcher import Batcher
from .envelope import Draft, Envelope, FlushRequest

__all__ = ["TICK", "BatchListener", "is_transport_thread"]

#: Put on the queue to wake the thread without asking anything of it.
TICK = object()

#: While messages keep arriving, the thread lets them gather, in steps of this many seconds
#: (GIL-free, cut short by flush and close), before it builds and sends them: a service logging
#: in a burst is not interleaved with the thread's work message by message, and the work then
#: goes in large batches. It stops lingering once arrivals pause, after ``MAX_LINGER`` seconds
#: (and never past ``flush_interval``), or when the queue holds a quarter of its bound.
LINGER = 0.02
MAX_LINGER = 0.5

# The idents of the running transport threads (a set lookup is the cheapest check a logging
# call can make). Forgotten in a forked child, where those threads do not exist.
_transport_threads: set[int] = set()
# What QueueListener._monitor stops on.
_SENTINEL = logging.handlers.QueueListener._sentinel  # type: ignore[attr-defined]


def is_transport_thread() -> bool:
    """True on a transport thread: the logging front-ends never turn its records into events."""
    return threading.get_ident() in _transport_threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_transport_threads.clear)


class BatchListener(logging.handlers.QueueListener):
    """Drains the queue: envelopes into the batcher, due batches out to ``export``.

    ``idle(flushing)``, when given, runs on each tick and flush (the spool's retries: it
    returns whether nothing is left over), and ``idle_time_left()`` says when it next wants a
    tick. It keeps ``QueueListener``'s shape and override points: ``dequeue`` waits no longer than
    the current batch may wait (so time-based cuts happen with no extra timer thread), and
    ``handle`` takes one item: an envelope, a draft (built by ``prepare``, as a
    ``QueueListener`` prepares records), a flush request, or a tick.
    """

    def __init__(
        self,
        queue: queue.SimpleQueue[Any],
        batcher: Batcher,
        export: Callable[[Sequence[Envelope]], None],
        closing: threading.Event,
        discard: Callable[[], None],
        hurry: Optional[threading.Event] = None,
        max_backlog: int = 0,
        idle: Optional[Callable[[bool], bool]] = None,
        idle_time_left: Optional[Callable[[], Optional[float]]] = None,
        marker_taken: Optional[Callable[[], None]] = None,
    ) -> None:
        super().__init__(queue)
        self._queue = queue
        self._discard = discard
        self._hurry = hurry or threading.Event()
        self._linger = min(LINGER, batcher.interval)
        self._max_linger = min(MAX_LINGER, batcher.interval)
        self._max_backlog = max(batcher.max_events, max_backlog)
        self._idle = idle
        self._idle_time_left = idle_time_left
        self._marker_taken = marker_taken or (lambda: None)
        #: Messages taken off the queue so far (by this thread, or by ``close()`` once this
        #: thread is stuck or gone).
        self.taken = 0
        #: Set, once closing, when the queue was found empty for the last time: a message put
        #: after that is nobody's to send (see ``Transport.enqueue``).
        self.finished = False
        #: Set if the thread died of an exception (a bug of ours): ``close()`` then reports
        #: what it left behind.
        self.crashed = False
        #: The message taken off the queue and not yet in a batch (what a crash would drop).
        self.in_hand: Any = None
        self._batcher = batcher
        # Guards the batch being built: close() takes it when the thread is stuck in a request.
        self._batch_lock = threading.Lock()
        self._export = export
        self._closing = closing

    def start(self) -> None:
        """Start the daemon thread, named ``htevents-transport``."""
        self._thread = thread = threading.Thread(
            target=self._run, name="htevents-transport", daemon=True
        )
        thread.start()

    def is_alive(self) -> bool:
        """Whether the thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; True when it has."""
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, timeout))
        return not self.is_alive()

    def _run(self) -> None:
        ident = threading.get_ident()
        _transport_threads.add(ident)
        try:
            self._monitor()  # type: ignore[attr-defined]
        except BaseException:
            self.crashed = True
            log(logging.ERROR, "htevents-logging: the transport thread died", exc_info=True)
        finally:
            _transport_threads.discard(ident)

    def take_held(self) -> list[Envelope]:
        """Take the batch being built (for ``close()``, when the thread is stuck or gone)."""
        with self._batch_lock:
            return self._batcher.take()

    def dequeue(self, block: bool) -> Any:
        """Next item (letting a burst gather first, see ``LINGER``); a tick when the current
        batch falls due first; the sentinel once closed and drained."""
        try:
            if self._closing.is_set():
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    if len(self._batcher):
                        return TICK
                    self.finished = True
                    item = self._queue.get_nowait()  # one put may have raced the flag
            else:
                item = self._queue.get(block, self._time_left())
        except queue.Empty:
            return TICK if not self.finished else _SENTINEL
        if item is TICK or isinstance(item, FlushRequest):
            self._marker_taken()
            return item
        self.taken += 1
        self.in_hand = item
        if not len(self._batcher) and not self._closing.is_set():
            self._batcher.start_clock()  # flush_interval counts from here, lingering included
            if self._queue.qsize() < self._batcher.max_events:
                self._linger_while_busy()
        return item

    def _linger_while_busy(self) -> None:
        """Let a burst gather (see ``LINGER``), waiting without the GIL."""
        started = time.monotonic()
        queued = self._queue.qsize()
        while not self._hurry.wait(self._linger):
            before, queued = queued, self._queue.qsize()
            if (
                queued == before
                or queued >= self._max_backlog
                or time.monotonic() - started >= self._max_linger
            ):
                return

    def _time_left(self) -> Optional[float]:
        left = self._batcher.time_left()
        if self._idle_time_left is not None:
            idle = self._idle_time_left()
            if idle is not None:
                left = idle if left is None else min(left, idle)
        return left

    def prepare(self, record: Any) -> Optional[Envelope]:
        """Turn a queued message into an envelope: drafts from the logging front-ends are
        built here, off the calling thread; ``None`` for one that was rejected."""
        if isinstance(record, Envelope):
            return record
        draft: Draft = record
        return draft.prepare()

    def handle(self, record: Any) -> None:
        """Take one item off the queue. Never raises: an error here is logged, not fatal."""
        try:
            if record is TICK:
                if self._closing.is_set() or self._batcher.time_left() == 0.0:
                    self._send_pending()
                if self._idle is not None:
                    self._idle(False)
            elif isinstance(record, FlushRequest):
                try:
                    self._hurry.clear()
                    self._send_pending()
                    if self._idle is not None:
                        record.ok = self._idle(True)
                except Exception:
                    record.ok = False
                    raise
                finally:
                    record.done.set()
            else:
                envelope = self.prepare(record)
                if envelope is None:
                    self.in_hand = None
                    self._discard()
                    return
                with self._batch_lock:
                    ready = self._batcher.add(envelope)
                    self.in_hand = None
                for batch in ready:
                    self._export(batch)
        except Exception:
            log(
                logging.ERROR,
                "htevents-logging transport error (the thread carries on)",
                exc_info=True,
            )

    def _send_pending(self) -> None:
        with self._batch_lock:
            batch = self._batcher.take()  # also stops the clock of a batch left empty
        if batch:
            self._export(batch)
