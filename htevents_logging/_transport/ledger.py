"""The outcome ledger: the one place where what became of each message is recorded.

Every outcome (delivered, failed, dropped, rejected, kept in the spool for later) goes through
one :class:`Ledger`: it counts it, warns about it, and tells the message's callback and its
``on_error``. ``stats()`` is built here, from these counts, and nowhere else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

from .._diagnostics import log, warn_limited
from ..errors import DeliveryError, Reason
from .envelope import Envelope, Queueable, messages_of

__all__ = ["COUNTERS", "Ledger"]

#: The counters of ``stats()``, in order; ``enqueued`` is the worker's, the others the ledger's.
COUNTERS = ("enqueued", "sent", "failed", "dropped", "rejected", "retries", "batches")
#: The counters that are also split by reason (see :class:`~htevents_logging.errors.Reason`).
BY_REASON = tuple(dict.fromkeys(reason.counter for reason in Reason))


class Ledger:
    """Counts, warnings and reports for one transport. Thread-safe; never raises for a
    callback or ``on_error`` that does (not even ``SystemExit``, which would end the thread)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a signal handler may log mid-update
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._reasons: dict[str, dict[str, int]] = {name: {} for name in BY_REASON}
        # Messages counted as enqueued whose outcome turned out to be rejected or dropped
        # (invalid when built, filtered by before_send, evicted from the spool): they leave the
        # enqueued count, so that each call is counted exactly once.
        self._withdrawn = 0
        # Health: wall-clock times of the last delivered and the last failed request, and the
        # failed requests since the last delivery.
        self._last_success_at: Optional[float] = None
        self._last_failure_at: Optional[float] = None
        self._consecutive_failures = 0
        self._started_at = time.time()

    def _add(self, name: str, n: int = 1, reason: Optional[Reason] = None) -> None:
        with self._lock:
            self._counts[name] += n
            if reason is not None:
                reasons = self._reasons[name]
                reasons[reason.value] = reasons.get(reason.value, 0) + n

    # -- outcomes ---------------------------------------------------------------------------

    def settle(self, batch: Sequence[Envelope], error: Optional[DeliveryError]) -> None:
        """A batch was delivered (``error`` is ``None``) or failed for good."""
        if error is None:
            with self._lock:
                self._counts["sent"] += len(batch)
                self._counts["batches"] += 1
                self._last_success_at = time.time()
                self._consecutive_failures = 0
        else:
            self._add("failed", len(batch), error.reason)
            self._failed_once()
            log(logging.WARNING, "htevents-logging: %s", error)
        self.report(batch, error)

    def settle_unbuilt(self, items: Sequence[Queueable], error: DeliveryError) -> None:
        """Fail messages taken over at a deadline (or after a crash) as they are: only those
        someone is to be told about are built, the others are just counted, so giving up on
        100,000 queued logged events takes milliseconds, not seconds past the deadline."""
        told: list[Envelope] = []
        untold = 0
        for item in items:
            if item.callback is None and item.on_error is None:
                untold += 1
                continue
            envelope = item.prepare()
            if envelope is None:
                self.discarded()  # invalid: counted as rejected when it was built
            else:
                told.append(envelope)
        self.settle_untold(told, untold, error)

    def settle_untold(self, told: Sequence[Envelope], untold: int, error: DeliveryError) -> None:
        """Fail ``told`` (reported to their callbacks and ``on_error``) and ``untold`` more that
        no one is to be told about, or that can no longer be read: those are only counted."""
        if untold:
            self._add("failed", untold, error.reason)
        self.settle(told, error)

    def drop(
        self,
        told: Sequence[Envelope],
        reason: Reason,
        why: str,
        count: int = 1,
        *,
        warn: bool = True,
        queued: bool = False,
    ) -> None:
        """``count`` messages were dropped before they could be sent; ``told`` are those of
        them that someone is to be told about (a callback or an ``on_error``). ``warn=False``
        when the caller has warned already, or the drop was asked for; ``queued=True`` when
        they had been counted as enqueued (evicted from the spool)."""
        self._add("dropped", count, reason)
        if queued:
            with self._lock:
                self._withdrawn += count
        if warn:
            warn_limited(f"dropped:{reason.value}", "htevents-logging dropped a message: %s", why)
        if told:
            self.report(told, DeliveryError(f"message dropped: {why}", reason=reason))

    def reject(self, reason: Reason) -> None:
        """A message was invalid or too large (the caller was told by an exception or a
        warning)."""
        self._add("rejected", 1, reason)

    def discarded(self) -> None:
        """A queued message built to nothing: it was invalid (counted as rejected) or
        filtered by ``before_send`` (counted as dropped) on the transport thread. It leaves
        the enqueued count (see :meth:`withdrawn`)."""
        with self._lock:
            self._withdrawn += 1

    def retried(self) -> None:
        """An attempt at a batch failed, and another follows."""
        self._add("retries")
        self._failed_once()

    def _failed_once(self) -> None:
        with self._lock:
            self._last_failure_at = time.time()
            self._consecutive_failures += 1

    def kept(self, error: DeliveryError, retry_every: float) -> None:
        """A batch that could not be delivered yet is kept in the spool for a later try."""
        self._failed_once()
        warn_limited(
            "spool-kept",
            "htevents-logging: %s; the messages are kept in the spool and retried every "
            "flush_interval (%gs)",
            error,
            retry_every,
        )

    def report(self, batch: Sequence[Envelope], error: Optional[DeliveryError]) -> None:
        """Tell each message's callback, and on failure each distinct ``on_error``, once
        (nothing is counted: the outcome methods above count, then report)."""
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

    # -- reading ----------------------------------------------------------------------------

    def settled(self) -> int:
        """Enqueued messages that have their outcome: sent or failed."""
        with self._lock:
            return self._counts["sent"] + self._counts["failed"]

    def withdrawn(self) -> int:
        """Messages taken into the queue that were then rejected or dropped instead: not
        enqueued after all, so that ``enqueued + rejected + dropped`` is the number of calls."""
        with self._lock:
            return self._withdrawn

    def healthy(self, waiting: bool, max_age: Optional[float]) -> bool:
        """True unless the last request failed, or (with ``max_age``) messages are ``waiting``
        and nothing was delivered for ``max_age`` seconds."""
        with self._lock:
            if self._consecutive_failures:
                return False
            since = self._last_success_at or self._started_at
        return max_age is None or not waiting or time.time() - since <= max_age

    def failed_by(self, reason: Reason) -> int:
        """How many messages failed for ``reason``."""
        with self._lock:
            return self._reasons["failed"].get(reason.value, 0)

    def snapshot(self, *, enqueued: int, queue_depth: int) -> dict[str, Any]:
        """The counts of :meth:`HtEvents.stats`: every counter, the ``*_by_reason`` splits,
        ``queue_depth``, and the health figures (``last_success_at``, ``last_failure_at``:
        wall-clock seconds or ``None``; ``consecutive_failures``: failed requests since the last
        delivery)."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            for name in BY_REASON:
                out[f"{name}_by_reason"] = dict(self._reasons[name])
            out["last_success_at"] = self._last_success_at
            out["last_failure_at"] = self._last_failure_at
            out["consecutive_failures"] = self._consecutive_failures
        out["enqueued"] = enqueued
        out["queue_depth"] = queue_depth
        return out
