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
from collections.abc import Sequence
from typing import Optional

from typing_extensions import Protocol

from .._diagnostics import log, warn_limited
from .._encoding import MAX_BATCH_BYTES
from .._settings import Settings
from ..errors import DeliveryError, Reason
from ..typing import Message
from .clock import MONOTONIC, Clock, Closing
from .envelope import Envelope, Queueable
from .ledger import Ledger
from .sender import Sender
from .spool import Spool

__all__ = [
    "KEPT_REASONS",
    "CapturingExporter",
    "DirectExporter",
    "Exporter",
    "SpooledExporter",
    "make_exporter",
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
    """Sends each batch at once through the :class:`Sender` and settles it in the ledger."""

    def __init__(self, sender: Sender, ledger: Ledger) -> None:
        self._sender = sender
        self._ledger = ledger
        self._lock = threading.Lock()
        self._in_flight: Optional[Sequence[Envelope]] = None

    def export(self, batch: Sequence[Envelope]) -> None:
        """Send ``batch``; settle it, unless ``close()`` took it over meanwhile."""
        with self._lock:
            self._in_flight = batch
        error = self._sender.send(batch)  # never raises
        with self._lock:
            if self._in_flight is not batch:
                return  # close() gave up waiting for it and has reported it already
            self._in_flight = None
        self._ledger.settle(batch, error)

    def poll(self, flushing: bool) -> bool:
        """Nothing to do: nothing is ever left over."""
        return True

    def next_poll(self) -> Optional[float]:
        """Never."""
        return None

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
        """Close the connection pool."""
        self._sender.close()


def _spool_failed(error: sqlite3.Error, what: str = "") -> None:
    warn_limited("spool-error", "htevents-logging: the spool failed (%s)%s", error, what)


class SpooledExporter:
    """Stores each batch in the spool (durable from then on), then drains the spool.

    Rows are claimed oldest first, sent, and deleted once delivered or refused for good. A
    failure that may pass (the server is down, or a close deadline came first) releases the
    rows instead: they stay for the next try, one ``flush_interval`` later, or for the next
    process with the same ``spool_path``. When the spool itself fails, a batch is sent
    directly rather than lost.
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
        # Stored envelopes someone is to be told about, by row id (rows carry only the bytes).
        self._awaiting: dict[int, Envelope] = {}
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
        """Messages the spool holds (from every process that shares it); after
        :meth:`shutdown`, what it held then."""
        if self._kept_at_shutdown is not None:
            return self._kept_at_shutdown
        try:
            return self._spool.count()
        except sqlite3.Error:
            return 0

    def shutdown(self) -> None:
        """Close the connection pool and the spool (its rows stay in the file for the next
        process). Idempotent."""
        if self._kept_at_shutdown is None:
            self._kept_at_shutdown = self.kept()
            self._spool.close()
        self._direct.shutdown()

    def _keep(self, batch: Sequence[Envelope]) -> bool:
        """Store a batch; False (send it as is) if the spool failed."""
        try:
            appended = self._spool.append([envelope.data for envelope in batch])
        except sqlite3.Error as error:
            _spool_failed(error, "; sending directly")
            return False
        self._remember(appended.stored, batch)
        if appended.evicted:
            why = (
                f"the spool is full (spool_max_bytes={self._settings.spool_max_bytes}): "
                f"dropped the {len(appended.evicted)} oldest message(s) it kept"
            )
            awaiting = self._awaiting
            told = [awaiting.pop(i) for i in appended.evicted if i in awaiting]
            self._ledger.drop(told, Reason.SPOOL_FULL, why, count=len(appended.evicted))
        return True

    def _remember(self, row_ids: Sequence[int], batch: Sequence[Envelope]) -> None:
        for row_id, envelope in zip(row_ids, batch):
            if envelope.callback is not None or envelope.on_error is not None:
                self._awaiting[row_id] = envelope

    def _drain(self, now: bool) -> bool:
        """Send what the spool holds, oldest first, if a drain is due (or ``now``); True when
        nothing is left."""
        clock = self._clock
        if not now and self._retry_at is not None and clock.now() < self._retry_at:
            return False
        self._retry_at = None
        settings = self._settings
        envelope_bytes = self._sender.envelope_bytes()
        while True:
            try:
                rows = self._spool.claim(
                    settings.max_events_in_batch, MAX_BATCH_BYTES, envelope_bytes=envelope_bytes
                )
                if not rows and self._spool.count():  # held by another process
                    self._retry_at = clock.now() + settings.flush_interval
                    return False
            except sqlite3.Error as spool_error:
                _spool_failed(spool_error)
                self._retry_at = clock.now() + settings.flush_interval
                return False
            if not rows:
                # Empty: what is still awaited was sent by another process sharing the file,
                # which had no callbacks to call; forget it rather than hold it forever.
                self._awaiting.clear()
                return True
            ids = [row.row_id for row in rows]
            awaiting = self._awaiting
            batch = [
                awaiting.pop(row.row_id) if row.row_id in awaiting else Envelope(row.data)
                for row in rows
            ]
            error = self._sender.send(batch)
            kept = error is not None and error.reason in KEPT_REASONS
            try:
                if kept:
                    self._spool.release(ids)
                else:
                    self._spool.delete(ids)
            except sqlite3.Error as spool_error:
                _spool_failed(spool_error)
            if kept:
                assert error is not None
                self._remember(ids, batch)
                self._retry_at = clock.now() + settings.flush_interval
                self._ledger.kept(error, settings.flush_interval)
                return False
            self._ledger.settle(batch, error)


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
