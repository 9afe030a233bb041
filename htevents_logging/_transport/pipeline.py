"""The transport: admission into the bounded queue, drops, and the flush and close deadlines.

Front-ends call :meth:`Transport.submit` and never wait: a full queue drops the message, and
the ledger counts and reports it. Everything slow (batching, HTTP, retries, callbacks) happens
on the worker thread. :class:`InlineTransport` is the same contract with no thread (a disabled
client). While an exporter is installed process-wide (:func:`install`, which
``capture_events()`` uses), every transport hands each message to it at once instead.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, Optional

from typing_extensions import Protocol

from .._diagnostics import holds_logging_lock
from .._encoding import MAX_BATCH_BYTES
from .._settings import Settings
from ..errors import DeliveryError, Reason
from .batcher import Batcher
from .clock import MONOTONIC, Clock, Closing
from .envelope import Queueable
from .exporters import SPOOL_PATIENCE, Exporter, make_exporter, warn_unusable_spool
from .ledger import Ledger
from .spool import Spool, destination_of
from .worker import BatchWorker, is_transport_thread

__all__ = [
    "AFTER_CLOSE_WHY",
    "InlineTransport",
    "KeylessTransport",
    "Outlet",
    "OutletBase",
    "Transport",
    "install",
    "uninstall",
]

#: Why a message handed over after ``close()`` is dropped.
AFTER_CLOSE_WHY = "the client was closed; nothing more is sent"

# Exporters that take every message of every transport instead of its own (capture_events()).
_installed: list[Exporter] = []


def install(exporter: Exporter) -> None:
    """Hand every message of every transport in the process to ``exporter``, at once and on
    the calling thread, until :func:`uninstall`; nothing is queued or sent meanwhile."""
    _installed.append(exporter)


def uninstall(exporter: Exporter) -> None:
    """Undo :func:`install` (by identity)."""
    for index, active in enumerate(_installed):
        if active is exporter:
            del _installed[index]
            return


class Outlet(Protocol):
    """What a client holds: a shared :class:`Transport`, or an :class:`InlineTransport`."""

    settings: Settings

    @property
    def ledger(self) -> Ledger:
        """Where the outcomes are recorded."""
        ...

    @property
    def closed(self) -> bool:
        """True once closed."""
        ...

    @property
    def finishing(self) -> bool:
        """Closed without waiting, and still at work."""
        ...

    def submit(self, item: Queueable) -> bool:
        """Hand over one message without waiting."""
        ...

    def drop(self, item: Queueable, reason: Reason, why: str) -> None:
        """Drop one message before it is queued, and report it."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The counts of ``stats()``."""
        ...

    def pending(self) -> int:
        """Messages accepted but not yet settled."""
        ...

    def failed_at_deadline(self) -> int:
        """Messages failed because a close deadline came first."""
        ...

    def kept_in_spool(self) -> int:
        """Messages kept in the spool."""
        ...

    def flush(self, timeout: float) -> bool:
        """Send what is queued, within ``timeout``."""
        ...

    def close(self, timeout: float) -> bool:
        """Flush within ``timeout`` and stop."""
        ...


def _export_to_installed(item: Queueable) -> None:
    envelope = item.prepare()  # an invalid one was counted and reported
    if envelope is not None:
        for exporter in list(_installed):
            exporter.export([envelope])


def _open_spool(settings: Settings) -> tuple[Optional[Spool], bool]:
    """The spool, and whether it may keep messages already (an earlier process's, to be sent
    now); ``(None, False)`` when it cannot be used (a directory, a file that is not a spool, no
    permission): then batches are sent directly, and one WARNING names ``spool_path`` and why,
    instead of failing the logging setup. Never waits long on another process (see
    :class:`~.spool.Spool`).

    The spool is bound to this client's destination (a digest of the write key and the
    endpoint URL, never the key itself): clients with other keys or hosts may share the file,
    and each claims, counts and evicts only its own rows."""
    if settings.spool_path is None:
        return None, False
    # A lease must outlast the longest send of a batch (every attempt and every wait).
    longest = (settings.max_retries + 1) * settings.http_request_timeout + (
        settings.max_retries * max(settings.retry_backoff_max, settings.retry_after_max)
    )
    try:
        spool = Spool(
            settings.spool_path,
            max_bytes=settings.spool_max_bytes,
            lease_seconds=max(60.0, longest + 10.0),
            destination=destination_of(settings.write_key, settings.url),
        )
    except (sqlite3.Error, OSError) as error:
        warn_unusable_spool(settings.spool_path, error)
        return None, False
    try:
        return spool, spool.count(timeout=SPOOL_PATIENCE) > 0
    except sqlite3.Error:
        return spool, True  # busy: the thread finds out


class OutletBase:
    """What both transports share: the ledger, and handing every message to the installed
    exporters instead while there are any (``capture_events()``)."""

    settings: Settings
    _ledger: Ledger

    @property
    def ledger(self) -> Ledger:
        """Where this transport's outcomes are recorded (a new one in a forked child)."""
        return self._ledger

    def submit(self, item: Queueable) -> bool:
        """Hand over one message without waiting; False (and reported) when it is dropped."""
        if _installed:
            _export_to_installed(item)
            return True
        return self._accept(item)

    def _accept(self, item: Queueable) -> bool:
        raise NotImplementedError


class Transport(OutletBase):
    """Queue, batch and export for one set of settings, shared by the front-ends.

    It owns the lifecycle flags (started, closed) and the close signal; the worker owns the
    queue and the batch, the exporter what happens to a batch, the ledger the outcomes.
    """

    def __init__(self, settings: Settings, clock: Clock = MONOTONIC) -> None:
        self.settings = settings
        self._clock = clock
        self._spool, keeps = _open_spool(settings)
        self._setup()
        if keeps:
            self._start()  # what an earlier process kept goes now, not with the first event

    def _setup(self) -> None:
        """Make the ledger, the exporter and the worker (not started): at construction, and
        in a forked child. No I/O here: in a child it runs inside the fork hook."""
        settings = self.settings
        self._start_lock = threading.RLock()  # re-entrant: see worker._markers_lock
        self._started = False
        self._closed = False
        self._abandoned = False
        self._ledger = Ledger()
        self._closing = Closing(self._clock)
        self._exporter, sender = make_exporter(
            settings, self._spool, self._ledger, self._closing, self._clock
        )
        batcher = Batcher(
            settings.max_events_in_batch,
            MAX_BATCH_BYTES,
            settings.flush_interval,
            sender.envelope_bytes(),
            self._clock,
        )
        self._worker = BatchWorker(
            batcher,
            self._exporter,
            self._ledger,
            self._closing,
            max_queue_size=settings.max_queue_size,
        )

    # -- the calling thread ---------------------------------------------------------------

    def submit(self, item: Queueable) -> bool:
        """Hand over one message without waiting; False (and reported) when it is dropped.
        (The common case, a running transport, nothing installed and room in the queue,
        straight onto the queue; anything else takes the long way, which may start the
        thread, wait for room as ``block_on_full`` allows, or drop and report.)"""
        if self._started and not self._closed and not _installed and self._worker.put(item):
            if self._closed and self._worker.finished:
                self._drop_late()  # close() came in between, and the thread has gone
            return True
        return super().submit(item)

    def _accept(self, item: Queueable) -> bool:
        """Queue one message without waiting; False (and reported) when it is dropped."""
        if self._closed:
            self.drop(item, Reason.AFTER_CLOSE, AFTER_CLOSE_WHY)
            return False
        if not self._started:
            why = self._start()
            if why is not None:
                self.drop(item, Reason.NO_THREAD, f"the background thread could not start ({why})")
                return False
        return self._put(item)

    def _put(self, item: Queueable) -> bool:
        """Put one message on the started transport's queue (waiting for room only as
        ``block_on_full`` allows); False (and reported) when it is dropped."""
        worker = self._worker
        if not worker.put(item) and not worker.put(item, self._patience()):
            self.drop(
                item,
                Reason.QUEUE_FULL,
                f"the queue is full ({self.settings.max_queue_size} messages): the server is "
                "slow or down; raise max_queue_size, set block_on_full, or configure spool_path",
            )
            return False
        if self._closed and worker.finished:
            self._drop_late()  # close() came in between, and the thread has gone
        return True

    def _patience(self) -> float:
        """How long a call may wait for room in a full queue: ``block_on_full``, but never on
        the transport thread (it is the one making room) nor under the logging module's lock."""
        wait = self.settings.block_on_full
        if wait > 0 and (is_transport_thread() or holds_logging_lock()):
            return 0.0
        return wait

    def _start(self) -> Optional[str]:
        """Start the thread (once); why it cannot be started, if it cannot."""
        with self._start_lock:
            if not self._started:
                # Imported here: the lifecycle module imports the registry, which imports this.
                from .._lifecycle import no_thread_here, watch_exit, watch_sigterm

                forbidden = no_thread_here()
                if forbidden is not None:
                    return forbidden
                try:
                    watch_exit()
                    watch_sigterm()
                    self._worker.start()
                except Exception as error:  # RuntimeError: can't start new thread
                    return f"{error}: the process is out of threads or memory"
                self._started = True
        return None

    def drop(self, item: Queueable, reason: Reason, why: str) -> None:
        """Drop a message before it is queued: counted, warned about (rate-limited), and told
        to its callback and ``on_error``. A logged event is built only when someone is to be
        told (an invalid one is then counted as rejected instead)."""
        if item.on_error is None and item.callback is None:
            self._ledger.drop([], reason, why)
            return
        envelope = item.prepare()
        if envelope is not None:
            self._ledger.drop([envelope], reason, why)

    # -- reading ----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def queue_depth(self) -> int:
        """Messages waiting in the queue (not counting the batch being built or sent)."""
        return self._worker.depth()

    def enqueued(self) -> int:
        """Messages accepted into the queue so far, less those that turned out invalid or
        were dropped on the way (counted without a lock on the calling thread: those taken
        off it, plus those waiting)."""
        return self._worker.taken() + self._worker.depth() - self._ledger.withdrawn()

    def snapshot(self) -> dict[str, Any]:
        """The counts of :meth:`HtEvents.stats`."""
        return self._ledger.snapshot(enqueued=self.enqueued(), queue_depth=self.queue_depth())

    def pending(self) -> int:
        """Messages accepted but not yet delivered or failed."""
        return self.enqueued() - self._ledger.settled()

    def kept_in_spool(self) -> int:
        """Messages the spool holds (from every process that shares it)."""
        return self._exporter.kept()

    def failed_at_deadline(self) -> int:
        """Messages that failed because a close deadline came first."""
        return self._ledger.failed_by(Reason.SHUTDOWN_TIMEOUT)

    @property
    def finishing(self) -> bool:
        """Closed without waiting (under the logging lock) and the thread is still at work."""
        return self._closed and self._started and self._worker.is_alive() and not self._abandoned

    # -- flush and close --------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Send everything queued before the call; True when all of it is settled in time.

        Under the logging module's lock (``dictConfig`` flushing the old handlers) it asks for
        the flush and returns False at once: waiting there could deadlock. On the transport
        thread itself (a callback or ``on_error`` calling it) it returns False at once too:
        the thread cannot wait for itself.
        """
        deadline = self._clock.now() + max(0.0, timeout)
        worker = self._worker
        if not self._started or not worker.is_alive():
            return self.pending() <= 0 and not self.kept_in_spool()
        if is_transport_thread() or self._abandoned:
            return False  # (given up at a close deadline: the thread is stuck, not flushing)
        if self._closed:  # closed without waiting: the thread finishes what it has
            if holds_logging_lock() or not worker.join(deadline - self._clock.now()):
                return False
            return self.pending() <= 0 and not self.kept_in_spool()
        request = worker.request_flush()
        if holds_logging_lock():
            return False
        return request.done.wait(max(0.0, deadline - self._clock.now())) and request.ok

    def close(self, timeout: float) -> bool:
        """Flush within ``timeout``, then stop the thread; later messages are dropped.

        No request starts and no backoff wait ends past the deadline (see the sender); what
        is not delivered by then fails with reason ``shutdown_timeout`` and is reported (or is
        kept in the spool). Returns True when everything was delivered or failed for good in
        time; False when the deadline cut anything off (whether the transport thread or this
        one failed it: which of them gets there first is a race, the answer must not be), and
        when some is only kept in the spool. Under the logging module's lock, or on the
        transport thread itself, it does not wait (see :meth:`flush`): the thread finishes on
        its own, and the exit hook waits for it.
        """
        deadline = self._clock.now() + max(0.0, timeout)
        cut_off_before = self.failed_at_deadline()
        worker = self._worker
        if not self._closed:
            self._closed = True
            self._closing.begin(deadline)
            if self._started:
                worker.enqueue_sentinel()
        if not self._started:
            return True
        if holds_logging_lock() or is_transport_thread() or self._abandoned:
            return False  # (abandoned: an earlier close gave up at its deadline; don't wait again)
        if not worker.join(deadline - self._clock.now()):
            self._abandon()
            return False
        self._exporter.shutdown()
        clean = self._settle_after_crash() if worker.crashed else self._drop_late()
        return clean and not self.kept_in_spool() and self.failed_at_deadline() == cut_off_before

    def _abandon(self) -> None:
        """At the close deadline, with the thread still stuck in a request: everything it
        holds is given up (failed, or kept in the spool), from the closing thread."""
        self._abandoned = True
        left: list[Queueable] = [*self._exporter.take_in_flight(), *self._worker.take_everything()]
        self._exporter.give_up(left)

    def _settle_after_crash(self) -> bool:
        """After the thread died of a bug of ours: fail all it left (reason
        ``internal_error``); True when it left nothing."""
        left: list[Queueable] = [*self._exporter.take_in_flight(), *self._worker.take_everything()]
        if left:
            error = DeliveryError.internal(len(left), RuntimeError("thread died"))
            self._ledger.settle_unbuilt(left, error)
        return not left

    def _drop_late(self) -> bool:
        """Drop (``after_close``) what was queued after the thread took its last message: a
        call that raced ``close()``. True when there was none."""
        late = self._worker.take_late()
        for item in late:
            self.drop(item, Reason.AFTER_CLOSE, AFTER_CLOSE_WHY)
        return not late

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh ledger, queue, thread and connection pool; the parent's
        queue stays the parent's to send (a shared spool file is shared, under its leases)."""
        self._setup()


class InlineTransport(OutletBase):
    """A transport with no queue and no thread, for a disabled client: each message is built
    and checked on the calling thread and then discarded (or captured, while
    ``capture_events()`` is active)."""

    closed = False
    finishing = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ledger = Ledger()

    def _accept(self, item: Queueable) -> bool:
        """Build the message (an invalid one is counted and reported); send nothing, and tell
        its callback there was no error, as the Node SDK does (code that waits on a callback
        must not hang in a test run with ``disable=True``)."""
        envelope = item.prepare()
        if envelope is not None and envelope.callback is not None:
            self._ledger.report([envelope], None)
        return True

    def drop(self, item: Queueable, reason: Reason, why: str) -> None:
        """Nothing is sent, so nothing is dropped either."""

    def snapshot(self) -> dict[str, Any]:
        """The counts of :meth:`HtEvents.stats` (only ``rejected`` can be above zero)."""
        return self._ledger.snapshot(enqueued=0, queue_depth=0)

    def pending(self) -> int:
        """Nothing is ever pending."""
        return 0

    def failed_at_deadline(self) -> int:
        """Nothing is ever sent."""
        return 0

    def kept_in_spool(self) -> int:
        """Nothing is ever kept."""
        return 0

    def flush(self, timeout: float) -> bool:
        """Nothing to wait for."""
        return True

    def close(self, timeout: float) -> bool:
        """Nothing to wait for."""
        return True


class KeylessTransport(InlineTransport):
    """What a front-end configured without a write key sends through: nothing.

    A missing key must not stop an application from starting (a Django ``manage.py migrate``,
    a test run), so the handler or processor is made, one ERROR says what is missing, and each
    event is built (mistakes are still reported), then counted as dropped with the reason
    ``no_write_key`` and told to its callback and ``on_error``. Exit says how many.
    """

    def _accept(self, item: Queueable) -> bool:
        """Build the message, then drop it (``no_write_key``) without a warning each time."""
        envelope = item.prepare()
        if envelope is not None:
            told = [envelope] if envelope.callback or envelope.on_error else []
            self._ledger.drop(told, Reason.NO_WRITE_KEY, _NO_KEY_WHY, warn=False)
        return False

    def dropped(self) -> int:
        """Events dropped so far for want of a key."""
        return int(self._ledger.snapshot(enqueued=0, queue_depth=0)["dropped"])


_NO_KEY_WHY = "no write key was set (write_key=..., or the HT_WRITE_KEY environment variable)"
