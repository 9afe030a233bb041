"""The transport: one bounded queue, one listener thread, one sender, and the outcomes.

Front-ends call :meth:`Transport.enqueue` and never wait: a full queue drops the message, and
counts and reports it. Everything slow (batching, HTTP, retries, callbacks) happens on the
listener thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, Optional

from .._diagnostics import holds_logging_lock, log, warn_limited
from .._encoding import MAX_BATCH_BYTES
from .._settings import Settings
from ..errors import DeliveryError
from .batcher import Batcher
from .envelope import Envelope, FlushRequest, Queueable, messages_of
from .listener import TICK, BatchListener, is_transport_thread
from .sender import Sender
from .spool import Spool
from .spooled import SpooledDelivery
from .stats import Stats

__all__ = ["Transport"]

_AFTER_CLOSE = "after_close"


class Transport:
    """Queue, batch and export for one set of transport settings, shared by the front-ends."""

    def __init__(self, settings: Settings, on_start: Optional[Callable[[], None]] = None) -> None:
        self.settings = settings
        self._on_start = on_start
        self.users = 0
        self.stats = Stats()
        self._start_lock = threading.Lock()
        self._spool: Optional[Spool] = None
        if settings.spool_path is not None:
            # A lease must outlast the longest send of a batch (every attempt and every wait).
            longest = (settings.max_retries + 1) * settings.http_request_timeout + (
                settings.max_retries * max(settings.retry_backoff_max, settings.retry_after_max)
            )
            self._spool = Spool(
                settings.spool_path,
                max_bytes=settings.spool_max_bytes,
                lease_seconds=max(60.0, longest + 10.0),
            )
        self._setup()
        if self._spool is not None and self._spool.count():
            self._start()  # what an earlier process kept goes now, not with the first event

    def _setup(self) -> None:
        """Make the queue, the thread (not started) and the sender: at construction, and in a
        forked child. No I/O here: in a child it runs inside the fork hook."""
        settings = self.settings
        self._started = False
        self._closing = threading.Event()
        self._hurry = threading.Event()  # flush() and close(): stop lingering
        self._closed = False
        self._deadline: Optional[float] = None
        # A SimpleQueue is several times cheaper to put to than a queue.Queue; its bound is
        # kept by enqueue() with qsize(), exact but for a few concurrent puts.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._markers = 0  # flush and close requests in the queue: no messages, not counted
        self._markers_lock = threading.Lock()
        self._discarded = 0  # drafts the listener rejected (written by the listener only)
        self._sender = Sender(settings, self.stats, self._closing, self._get_deadline)
        self._spooled: Optional[SpooledDelivery] = None
        if self._spool is not None:
            self._spooled = SpooledDelivery(
                settings, self._spool, self._sender, self.stats, self._settle, self._report
            )
        self._batcher = Batcher(
            settings.max_events_in_batch,
            MAX_BATCH_BYTES,
            settings.flush_interval,
            self._sender.envelope_bytes(),
        )
        self._listener = BatchListener(
            self._queue,
            self._batcher,
            self._export,
            self._closing,
            self._discard,
            hurry=self._hurry,
            max_backlog=settings.max_queue_size // 4,
            idle=self._drain_spool if self._spooled is not None else None,
            idle_time_left=self._spooled.time_left if self._spooled is not None else None,
            marker_taken=self._marker_taken,
        )
        self._abandoned = False
        self._settle_lock = threading.Lock()
        self._in_flight: Optional[Sequence[Envelope]] = None

    # -- the calling thread ---------------------------------------------------------------

    def enqueue(self, item: Queueable) -> bool:
        """Queue one message without waiting; False (and reported) when it is dropped."""
        if self._closed:
            self.drop(item, _AFTER_CLOSE, "the client was closed; nothing more is sent")
            return False
        if not self._started:
            error = self._start()
            if error is not None:
                self.drop(
                    item,
                    "no_thread",
                    f"the background thread could not start ({error}): the process is out of "
                    "threads or memory",
                )
                return False
        if self._queue.qsize() - self._markers >= self.settings.max_queue_size:
            self.drop(
                item,
                "queue_full",
                f"the queue is full ({self.settings.max_queue_size} messages): the server is "
                "slow or down; raise max_queue_size or configure spool_path",
            )
            return False
        self._queue.put(item)
        if self._closed and self._listener.finished:
            self._drop_leftovers()  # close() came in between, and the thread has gone
        return True

    def _start(self) -> Optional[Exception]:
        """Start the thread (once); the error when it cannot be started."""
        with self._start_lock:
            if not self._started:
                try:
                    if self._on_start is not None:
                        self._on_start()
                    self._listener.start()
                except Exception as error:  # RuntimeError: can't start new thread
                    return error
                self._started = True
        return None

    def _put_marker(self, marker: Any) -> None:
        with self._markers_lock:
            self._markers += 1
        self._queue.put(marker)

    def _marker_taken(self) -> None:
        with self._markers_lock:
            self._markers -= 1

    def drop(self, item: Queueable, reason: str, why: str) -> None:
        """Count a message as dropped, warn (rate-limited), and tell its callback and on_error."""
        envelope: Optional[Envelope] = None
        if isinstance(item, Envelope):
            envelope = item
        elif item.on_error is not None:
            envelope = item.prepare()  # only built when someone is to be told
            if envelope is None:
                return  # invalid: counted and reported as rejected instead
        self.stats.add("dropped", reason=reason)
        warn_limited(f"dropped:{reason}", "htevents-logging dropped a message: %s", why)
        if envelope is not None:
            self._report([envelope], DeliveryError(f"message dropped: {why}", reason=reason))

    def _discard(self) -> None:
        self._discarded += 1

    # -- the listener thread --------------------------------------------------------------

    def _export(self, batch: Sequence[Envelope]) -> None:
        """Send a batch (through the spool, when there is one). Never raises: a bug here fails
        the batch with reason ``internal_error`` rather than losing it."""
        kept = False
        try:
            if self._spooled is not None:
                kept = self._spooled.keep(batch)
            if kept:
                self._drain_spool(False)
            else:
                self._send(batch)
        except Exception as exc:
            log(logging.ERROR, "htevents-logging: internal error exporting a batch", exc_info=True)
            if not kept:  # a kept batch is safe in the spool
                self._settle(batch, DeliveryError.internal(len(batch), exc))

    def _send(self, batch: Sequence[Envelope]) -> None:
        with self._settle_lock:
            self._in_flight = batch
        error = self._sender.send(batch)
        with self._settle_lock:
            if self._in_flight is not batch:
                return  # close() gave up waiting for it and has reported it already
            self._in_flight = None
        self._settle(batch, error)

    def _drain_spool(self, flushing: bool) -> bool:
        assert self._spooled is not None
        return self._spooled.drain(flushing or self._closing.is_set())

    def _get_deadline(self) -> Optional[float]:
        return self._deadline

    def kept_in_spool(self) -> int:
        """Messages the spool holds (from every process that shares it)."""
        return self._spooled.kept() if self._spooled is not None else 0

    def _settle(self, batch: Sequence[Envelope], error: Optional[DeliveryError]) -> None:
        if error is None:
            self.stats.add("sent", len(batch))
            self.stats.add("batches")
        else:
            self.stats.add("failed", len(batch), reason=error.reason)
            log(logging.WARNING, "htevents-logging: %s", error)
        self._report(batch, error)

    def _drain_queue(self) -> Iterator[Queueable]:
        """Take the messages still queued, from the closing thread (the transport thread is
        stuck in a request, or gone); the markers among them are just taken away."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, FlushRequest) or item is TICK:
                self._marker_taken()
            else:
                yield item

    def _prepare_all(self, items: Iterable[Queueable]) -> list[Envelope]:
        """Build what the transport thread did not get to (the invalid ones are discarded)."""
        envelopes: list[Envelope] = []
        for item in items:
            envelope = self._listener.prepare(item)
            if envelope is None:
                self._discard()
            else:
                envelopes.append(envelope)
        return envelopes

    def _take_everything(self) -> list[Envelope]:
        """The batch in flight, the batch being built, and everything queued."""
        with self._settle_lock:
            left: list[Envelope] = list(self._in_flight or ())
            self._in_flight = None
        queued = list(self._drain_queue())
        self._listener.taken += len(queued)
        return left + self._listener.take_held() + self._prepare_all(queued)

    def _abandon(self) -> None:
        """At the close deadline, with the thread still stuck in a request: report all it
        holds as failed (or keep it in the spool), from the closing thread."""
        self._abandoned = True
        left = self._take_everything()
        if left and self._spooled is not None and self._spooled.keep(left):
            return  # kept for a later process, not failed
        if left:
            self._settle(
                left,
                DeliveryError(
                    f"{len(left)} message(s) not delivered before the shutdown deadline (the "
                    "server did not answer in time); raise shutdown_timeout or configure "
                    "spool_path to keep them",
                    reason="shutdown_timeout",
                ),
            )

    def _settle_after_crash(self) -> bool:
        """After the thread died of a bug of ours: fail all it left, the message it had in
        hand first (reason ``internal_error``); True when it left nothing."""
        in_hand, self._listener.in_hand = self._listener.in_hand, None
        left = self._prepare_all([in_hand] if in_hand is not None else [])
        left += self._take_everything()
        if left:
            self._settle(left, DeliveryError.internal(len(left), RuntimeError("thread died")))
        return not left

    def _drop_leftovers(self) -> bool:
        """Drop (``after_close``) what was queued after the thread took its last message: a
        call that raced ``close()``. True when there was none."""
        clean = True
        for item in self._drain_queue():
            clean = False
            self.drop(item, _AFTER_CLOSE, "the client was closed; nothing more is sent")
        return clean

    def _report(self, batch: Sequence[Envelope], error: Optional[DeliveryError]) -> None:
        """Tell each message's callback, and on failure each distinct ``on_error``, once."""
        if error is not None:
            by_handler: dict[int, tuple[Any, list[Envelope]]] = {}
            for envelope in batch:
                if envelope.on_error is not None:
                    entry = by_handler.setdefault(id(envelope.on_error), (envelope.on_error, []))
                    entry[1].append(envelope)
            for on_error, envelopes in by_handler.values():
                try:
                    on_error(error, messages_of(envelopes))
                except BaseException:  # even SystemExit: it would end the transport thread
                    log(logging.ERROR, "htevents-logging: on_error raised (ignored)", exc_info=True)
        for envelope in batch:
            if envelope.callback is not None:
                try:
                    envelope.callback(error, envelope.as_message())
                except BaseException:  # even SystemExit: it would end the transport thread
                    log(
                        logging.ERROR,
                        "htevents-logging: a message callback raised (ignored)",
                        exc_info=True,
                    )

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def queue_depth(self) -> int:
        """Messages waiting in the queue (not counting the batch being built or sent)."""
        return max(0, self._queue.qsize() - self._markers)

    def enqueued(self) -> int:
        """Messages accepted into the queue so far (counted without a lock on the calling
        thread: those taken off it, plus those waiting)."""
        return self._listener.taken + self.queue_depth()

    def snapshot(self) -> dict[str, Any]:
        """The counts of :meth:`HtEvents.stats`."""
        counts = self.stats.snapshot(self.queue_depth())
        counts["enqueued"] = self.enqueued()
        return counts

    def pending(self) -> int:
        """Messages accepted but not yet delivered or failed."""
        stats = self.stats
        settled = stats.get("sent") + stats.get("failed") + self._discarded
        return self.enqueued() - settled

    def failed_at_deadline(self) -> int:
        """Messages that failed because a close deadline came first."""
        failed: int = self.stats.snapshot(0)["failed_by_reason"].get("shutdown_timeout", 0)
        return failed

    @property
    def finishing(self) -> bool:
        """Closed without waiting (under the logging lock) and the thread is still at work."""
        return self._closed and self._started and self._listener.is_alive() and not self._abandoned

    def flush(self, timeout: float) -> bool:
        """Send everything queued before the call; True when all of it is settled in time.

        Under the logging module's lock (``dictConfig`` flushing the old handlers) it asks for
        the flush and returns False at once: waiting there could deadlock. On the transport
        thread itself (a callback or ``on_error`` calling it) it returns False at once too:
        the thread cannot wait for itself.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._started or not self._listener.is_alive():
            return self.pending() <= 0 and not self.kept_in_spool()
        if is_transport_thread():
            return False
        request = FlushRequest()
        self._put_marker(request)
        self._hurry.set()
        if holds_logging_lock():
            return False
        return request.done.wait(max(0.0, deadline - time.monotonic())) and request.ok

    def close(self, timeout: float) -> bool:
        """Flush within ``timeout``, then stop the thread; later messages are dropped.

        No request starts and no backoff wait ends past the deadline (see ``Sender``); what
        is not delivered by then fails with reason ``shutdown_timeout`` and is reported (or is
        kept in the spool). Returns True when everything was delivered or failed for good in
        time (False when some is only kept in the spool). Under the logging module's lock, or
        on the transport thread itself, it does not wait (see :meth:`flush`): the thread
        finishes on its own, and the exit hook waits for it.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if not self._closed:
            self._closed = True
            self._deadline = deadline
            self._closing.set()
            self._hurry.set()
            if self._started:
                self._put_marker(TICK)  # wake the thread if it waits for work
        if not self._started:
            return True
        if holds_logging_lock() or is_transport_thread():
            return False
        if not self._listener.join(deadline - time.monotonic()):
            self._abandon()
            return False
        self._sender.close()
        crashed = self._listener.crashed
        clean = self._settle_after_crash() if crashed else self._drop_leftovers()
        return clean and not self.kept_in_spool()

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh queue, thread and connection pool; the parent's queue
        stays the parent's to send (a shared spool file is shared, under its leases)."""
        self.stats = Stats()
        self._start_lock = threading.Lock()
        if self._spool is not None:
            self._spool.reopen_after_fork()
        self._setup()
