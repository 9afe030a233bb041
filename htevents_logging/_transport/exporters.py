"""The exporter seam: what the worker does with a batch once it is cut.

The worker only cuts batches; an :class:`Exporter` decides what becomes of them, as
OpenTelemetry's ``LogRecordExporter`` does. :class:`DirectExporter` sends each batch over HTTP;
:class:`SpooledExporter` stores it in the SQLite spool first and sends from there;
:class:`CapturingExporter` (installed by ``capture_events()``) keeps the messages in lists. A
new way of exporting is a new class here, not a branch in the worker.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import Optional

from typing_extensions import Protocol

from .._diagnostics import log, warn_limited
from .._encoding import MAX_BATCH_BYTES
from .._settings import Settings
from ..errors import DeliveryError, Reason
from ..typing import Message
from .awaiting import Awaiting
from .clock import MONOTONIC, Clock, Closing
from .envelope import Envelope, Queueable
from .ledger import Ledger
from .sender import Sender, Started
from .spool import Spool, SpooledMessage, Trouble, trouble_of

__all__ = [
    "KEPT_REASONS",
    "CapturingExporter",
    "DirectExporter",
    "Exporter",
    "SpooledExporter",
    "make_exporter",
    "warn_unusable_spool",
]

#: Failures after which the spool keeps a batch rather than failing it.
KEPT_REASONS = frozenset({Reason.RETRIES_EXHAUSTED, Reason.SHUTDOWN_TIMEOUT})


class Exporter(Protocol):
    """Takes the batches the worker cuts. Every message it is given ends with exactly one
    outcome in the ledger, or stays kept (in the spool) for a later try."""

    def export(self, batch: Sequence[Envelope]) -> None:
        """Deliver or keep ``batch`` (on the worker thread). Never raises."""
        ...

    def poll(self, flushing: bool) -> bool:
        """Do any periodic work (the spool's retries), at once when ``flushing``; True when
        nothing is left over."""
        ...

    def next_poll(self) -> Optional[float]:
        """Seconds until :meth:`poll` wants to run, or ``None``."""
        ...

    def take_in_flight(self) -> list[Envelope]:
        """The batch being sent, taken over by the closing thread at the close deadline (its
        late result is then ignored)."""
        ...

    def give_up(self, left: Sequence[Queueable]) -> None:
        """The close deadline came first (on the closing thread): fail ``left`` with
        ``shutdown_timeout``, or keep it for a later process."""
        ...

    def kept(self) -> int:
        """Messages kept for a later try."""
        ...

    def shutdown(self) -> None:
        """Release what the exporter holds (connections)."""
        ...


class DirectExporter:
    """Sends each batch through the :class:`Sender` and settles it in the ledger.

    A batch's request goes out when it is exported, and its answer is read when the next
    batch is ready to go, or as soon as the worker has nothing else to do (``next_poll`` is
    then due at once): while the server reads one batch, the thread builds the next, instead of
    waiting for each answer before it takes another message off the queue. A quiet service
    reads each answer at once, as before. Retries, after a failed answer, wait as they always
    did.
    """

    def __init__(self, sender: Sender, ledger: Ledger) -> None:
        self._sender = sender
        self._ledger = ledger
        self._lock = threading.Lock()
        self._in_flight: Optional[Sequence[Envelope]] = None
        self._started: Optional[Started] = None  # sent, its answer not read yet

    def export(self, batch: Sequence[Envelope]) -> None:
        """Finish the batch sent before (its answer is in by now, as a rule), then send
        ``batch``."""
        self._finish()
        with self._lock:
            self._in_flight = batch
        self._started = self._sender.start(batch)  # never raises

    def _finish(self) -> None:
        """Read the answer to the batch sent last and settle it, unless ``close()`` took it
        over meanwhile."""
        started, self._started = self._started, None
        if started is None:
            return
        error = self._sender.finish(started)  # never raises
        with self._lock:
            if self._in_flight is not started.batch:
                return  # close() gave up waiting for it and has reported it already
            self._in_flight = None
        self._ledger.settle(started.batch, error)

    def poll(self, flushing: bool) -> bool:
        """Finish the batch sent last: nothing is left over after that."""
        self._finish()
        return True

    def next_poll(self) -> Optional[float]:
        """At once while a batch's answer is still to be read; else never."""
        return None if self._started is None else 0.0

    def take_in_flight(self) -> list[Envelope]:
        """The batch being sent, if any."""
        with self._lock:
            left = list(self._in_flight or ())
            self._in_flight = None
        return left

    def give_up(self, left: Sequence[Queueable]) -> None:
        """Fail ``left`` with ``shutdown_timeout`` (building only what someone is told of)."""
        if left:
            self._ledger.settle_unbuilt(
                left,
                DeliveryError(
                    f"{len(left)} message(s) not delivered before the shutdown deadline (the "
                    "server did not answer in time); raise shutdown_timeout or configure "
                    "spool_path to keep them",
                    reason=Reason.SHUTDOWN_TIMEOUT,
                ),
            )

    def kept(self) -> int:
        """None: a direct exporter keeps nothing."""
        return 0

    def shutdown(self) -> None:
        """Finish the batch sent last, then close the connections."""
        self._finish()
        self._sender.close()


#: How long the transport thread waits for the spool while another process holds it. Past it a
#: batch is sent directly (or the drain is tried later), so a stuck process sharing the file
#: never stalls delivery, a flush, or a close.
SPOOL_PATIENCE = 1.0


def warn_unusable_spool(path: str, error: BaseException) -> None:
    """The one WARNING for a ``spool_path`` that cannot be used: it names the setting, the
    path, why, and what happens instead."""
    log(
        logging.WARNING,
        "htevents-logging: cannot use spool_path=%r (%s: %s); sending directly, without a "
        "spool, so events are not kept through an outage or a crash",
        path,
        type(error).__name__,
        error,
    )


class SpooledExporter:
    """Stores each batch in the spool (durable from then on), then drains the spool.

    Rows are claimed oldest first, sent, and deleted once delivered or refused for good. A
    failure that may pass (the server is down, or a close deadline came first) releases the
    rows instead: they stay for the next try, one ``flush_interval`` later, or for the next
    process with the same ``spool_path`` and the same destination (write key, host and path:
    the spool is bound to it, see :func:`~.pipeline._open_spool`).

    The spool fails open. Each failure is sorted (:func:`~.spool.trouble_of`) and met one way:
    busy (another process holds it past ``SPOOL_PATIENCE``): the batch is sent directly and
    the drain tried later; full (no room to write a claim): kept rows are read and sent
    without a lease; damaged: the file is moved aside, what this process kept in it is
    failed (``spool_damaged``), and a fresh file takes its place; unusable: every batch is sent
    directly from then on, after one WARNING that names ``spool_path``.
    """

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        sender: Sender,
        ledger: Ledger,
        closing: Closing,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._settings = settings
        self._spool = spool
        self._sender = sender
        self._direct = DirectExporter(sender, ledger)
        self._ledger = ledger
        self._closing = closing
        self._clock = clock
        self._awaiting = Awaiting()
        self._usable = True
        self._busy_until: Optional[float] = None  # the spool was busy: straight to the sender
        # With no room to lease (a full disk): rows sent unleased up to this id, and sent rows
        # whose delete failed, deleted as soon as there is room.
        self._peeked_through = 0
        self._undeleted: list[int] = []
        # A first drain is due as soon as the thread runs: what an earlier process kept goes
        # first. (Not looked up here: in a forked child this runs in the fork hook, no I/O.)
        self._retry_at: Optional[float] = clock.now()
        self._kept_at_shutdown: Optional[int] = None

    def export(self, batch: Sequence[Envelope]) -> None:
        """Keep ``batch`` in the spool and drain it (or send it directly if the spool failed).
        A bug here fails the batch with ``internal_error``, unless it is safe in the spool."""
        kept = False
        try:
            kept = self._keep(batch)
            if kept:
                self._drain(self._closing.is_set())
            else:
                self._direct.export(batch)
                self._direct.poll(False)  # its answer now: a spooling exporter does not overlap
        except Exception as exc:
            log(logging.ERROR, "htevents-logging: internal error exporting a batch", exc_info=True)
            if not kept:
                self._ledger.settle(batch, DeliveryError.internal(len(batch), exc))

    def poll(self, flushing: bool) -> bool:
        """Drain the spool if a retry is due (at once when flushing or closing)."""
        return self._drain(flushing or self._closing.is_set())

    def next_poll(self) -> Optional[float]:
        """Seconds until the next drain is due, or ``None`` when none is scheduled."""
        if self._retry_at is None:
            return None
        return max(0.0, self._retry_at - self._clock.now())

    def take_in_flight(self) -> list[Envelope]:
        """The batch being sent directly (the spool had failed), if any; spooled rows stay
        in the spool."""
        return self._direct.take_in_flight()

    def give_up(self, left: Sequence[Queueable]) -> None:
        """Keep ``left`` in the spool for a later process (or fail it if the spool fails)."""
        built = []
        for item in left:
            envelope = item.prepare()
            if envelope is None:
                self._ledger.discarded()
            else:
                built.append(envelope)
        if built and not self._keep(built):
            self._direct.give_up(built)

    def kept(self) -> int:
        """Messages the spool holds for this client's destination (from every process that
        shares it, and rows of the old layout, which are anyone's); after :meth:`shutdown`,
        what it held then. Rows kept for other keys or hosts in the same file are not ours
        to send, so they do not hold up a flush or a close."""
        if self._kept_at_shutdown is not None:
            return self._kept_at_shutdown
        if not self._usable:
            return 0
        try:
            return self._spool.count(timeout=self._patience())
        except sqlite3.Error:
            return 0

    def shutdown(self) -> None:
        """Close the connection pool and the spool (its rows stay in the file for the next
        process). Idempotent."""
        if self._kept_at_shutdown is None:
            self._kept_at_shutdown = self.kept()
            self._spool.close(timeout=self._patience())
        self._direct.shutdown()

    def _patience(self) -> float:
        """How long a spool call may wait: ``SPOOL_PATIENCE``, and while closing at most half
        the time left, so that a batch the spool cannot take still has time to be sent."""
        deadline = self._closing.deadline
        if deadline is None:
            return SPOOL_PATIENCE
        return max(0.0, min(SPOOL_PATIENCE, (deadline - self._clock.now()) / 2))

    def _keep(self, batch: Sequence[Envelope]) -> bool:
        """Store a batch; False (send it as is) if the spool failed, or was busy less than a
        ``flush_interval`` ago (each batch would wait for it again)."""
        if not self._usable:
            return False
        if self._busy_until is not None:
            if self._clock.now() < self._busy_until:
                return False
            self._busy_until = None
        try:
            appended = self._spool.append(
                [envelope.data for envelope in batch], timeout=self._patience(), evicted_data=True
            )
        except sqlite3.Error as error:
            self._met(error, "storing a batch, which is sent directly")
            return False
        awaiting = self._awaiting
        awaiting.remember(appended.stored, batch)
        if appended.evicted:
            evicted = awaiting.envelopes(
                [SpooledMessage(*row) for row in zip(appended.evicted, appended.evicted_data)]
            )
            ours = awaiting.ours(appended.evicted)
            awaiting.settled(appended.evicted)
            why = (
                f"the spool is full (spool_max_bytes={self._settings.spool_max_bytes}): "
                f"dropped the {len(appended.evicted)} oldest message(s) it kept"
            )
            told = [e for e in evicted if e.callback is not None or e.on_error is not None]
            # Counted here are this process's messages; an earlier one's are only warned of.
            self._ledger.drop(told, Reason.SPOOL_FULL, why, count=ours, queued=True)
        return True

    def _drain(self, now: bool) -> bool:
        """Send what the spool holds, oldest first, if a drain is due (or ``now``); True when
        nothing is left."""
        clock = self._clock
        if not self._usable:
            return True
        if not now and self._retry_at is not None and clock.now() < self._retry_at:
            return False
        self._retry_at = None
        settings = self._settings
        while True:
            rows, leased = self._next_rows()
            if rows is None or (not rows and self._still_kept()):
                self._retry_at = clock.now() + settings.flush_interval
                return False
            if not rows:
                self._awaiting.clear()  # sent by another process sharing the file
                return True
            ids = [row.row_id for row in rows]
            batch = self._awaiting.envelopes(rows)
            error = self._sender.send(batch)
            if error is not None and error.reason in KEPT_REASONS:
                if leased:
                    self._spool_call(self._spool.release, ids, "releasing a batch")
                self._retry_at = clock.now() + settings.flush_interval
                self._ledger.kept(error, settings.flush_interval)
                return False
            self._awaiting.settled(ids)
            self._peeked_through = max(self._peeked_through, ids[-1]) if not leased else 0
            if not self._spool_call(self._spool.delete, ids, "deleting a sent batch"):
                self._undeleted.extend(ids)
            self._ledger.settle(batch, error)

    def _next_rows(self) -> tuple[Optional[list[SpooledMessage]], bool]:
        """The next batch and whether it is leased; ``None`` when the spool failed (and the
        failure was met). A damaged file is replaced at once, and the fresh one read."""
        if self._undeleted and self._spool_call(self._spool.delete, self._undeleted, ""):
            self._undeleted.clear()
        for _ in range(2):
            if self._peeked_through:
                trouble = Trouble.FULL
            else:
                try:
                    return self._claim(), True
                except sqlite3.Error as error:
                    trouble = self._met(error, "claiming a batch")
            if trouble is Trouble.FULL:
                return self._peek(), False
            if trouble is not Trouble.DAMAGED:
                return None, False
        return None, False

    def _claim(self) -> list[SpooledMessage]:
        return self._spool.claim(
            self._settings.max_events_in_batch,
            MAX_BATCH_BYTES,
            envelope_bytes=self._sender.envelope_bytes(),
            timeout=self._patience(),
        )

    def _peek(self) -> Optional[list[SpooledMessage]]:
        """No room to write a lease: the next rows, read to be sent unleased."""
        try:
            peeked = self._spool.peek(
                self._settings.max_events_in_batch,
                MAX_BATCH_BYTES,
                after=self._peeked_through,
                envelope_bytes=self._sender.envelope_bytes(),
                timeout=self._patience(),
            )
        except sqlite3.Error as error:
            self._met(error, "reading a batch")
            return None
        if not peeked and not self._undeleted:
            self._peeked_through = 0  # all sent and deleted: claim again
        return peeked

    def _still_kept(self) -> bool:
        """True when rows of this destination are left that this process cannot claim now
        (another live process holds them, or they were sent and wait for room to be
        deleted)."""
        try:
            return self._spool.count(timeout=self._patience()) > 0
        except sqlite3.Error as error:
            self._met(error, "counting what it keeps")
            return True

    def _spool_call(self, call: Callable[..., object], ids: Sequence[int], doing: str) -> bool:
        """``call(ids)`` with the usual patience; False when the spool failed (and the failure
        was met, with a warning saying ``doing`` unless it is empty)."""
        try:
            call(ids, timeout=self._patience())
        except sqlite3.Error as error:
            self._met(error, doing)
            return False
        return True

    def _met(self, error: sqlite3.Error, doing: str) -> Trouble:
        """Meet a spool failure the one way its kind calls for; return the kind."""
        trouble = trouble_of(error)
        path = self._spool.path
        if trouble is Trouble.UNUSABLE:
            if self._usable:
                self._usable = False
                warn_unusable_spool(path, error)
        elif trouble is Trouble.DAMAGED:
            self._quarantine(error)
        elif trouble is Trouble.BUSY:
            self._busy_until = self._clock.now() + self._settings.flush_interval
        if doing and trouble in (Trouble.BUSY, Trouble.FULL):
            warn_limited(
                f"spool-{trouble.value}",
                "htevents-logging: the spool at %r failed %s (%s: %s)",
                path,
                doing,
                type(error).__name__,
                error,
            )
        return trouble

    def _quarantine(self, error: sqlite3.Error) -> None:
        """The file is damaged: move it aside, start a fresh one, and fail what this process
        kept in it (``spool_damaged``)."""
        path = self._spool.path
        try:
            moved = self._spool.quarantine(timeout=self._patience())
        except sqlite3.Error as failure:
            moved = None
            self._met(failure, "moving the damaged file aside")
        log(
            logging.WARNING,
            "htevents-logging: the spool file at spool_path=%r is damaged (%s); moved it to %r "
            "and started a fresh one",
            path,
            error,
            moved,
        )
        told, lost = self._awaiting.unsettled()
        self._awaiting.clear()
        self._peeked_through = 0
        self._undeleted.clear()
        if lost:
            self._ledger.settle_untold(
                told,
                lost - len(told),
                DeliveryError(
                    f"{lost} message(s) lost: the spool file at {path!r} was damaged, and was "
                    f"moved to {moved!r}",
                    reason=Reason.SPOOL_DAMAGED,
                ),
            )


class CapturingExporter:
    """Appends every message to ``sink``, in the form it would be sent, and sends none.

    What :func:`htevents_logging.testing.capture_events` installs: a user's tests then run the
    front-ends' real path (building, checking, encoding) up to the network.
    """

    def __init__(self, sink: list[Message]) -> None:
        self.sink = sink

    def export(self, batch: Sequence[Envelope]) -> None:
        """Append the batch's messages to the sink."""
        self.sink.extend(envelope.as_message() for envelope in batch)

    def poll(self, flushing: bool) -> bool:
        """Nothing is ever left over."""
        return True

    def next_poll(self) -> Optional[float]:
        """Never."""
        return None

    def take_in_flight(self) -> list[Envelope]:
        """Nothing is ever in flight."""
        return []

    def give_up(self, left: Sequence[Queueable]) -> None:
        """Nothing to give up: capturing is immediate."""

    def kept(self) -> int:
        """Nothing is kept."""
        return 0

    def shutdown(self) -> None:
        """Nothing to release."""


def make_exporter(
    settings: Settings,
    spool: Optional[Spool],
    ledger: Ledger,
    closing: Closing,
    clock: Clock = MONOTONIC,
) -> tuple[Exporter, Sender]:
    """The exporter a transport with these settings uses (spooled when there is a spool),
    and its sender (the batcher sizes batches by its request envelope)."""
    sender = Sender(settings, ledger, closing, clock)
    if spool is not None:
        return SpooledExporter(settings, spool, sender, ledger, closing, clock), sender
    return DirectExporter(sender, ledger), sender
