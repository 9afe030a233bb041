"""Sending through the spool (``spool_path``): store each batch, send, then delete.

The transport hands every batch it cuts to :class:`SpooledDelivery`. A batch is stored first
(durable from then on), then the spool is drained oldest first: rows are claimed, sent, and
deleted once delivered or refused for good. A failure that may pass (the server is down, or a
close deadline came first) releases the rows instead: they stay for the next try, one
``flush_interval`` later, or for the next process with the same ``spool_path``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Callable, Optional

from .._diagnostics import warn_limited
from .._encoding import MAX_BATCH_BYTES
from .._settings import Settings
from ..errors import DeliveryError
from .envelope import Envelope
from .sender import Sender
from .spool import Spool
from .stats import Stats

__all__ = ["KEPT_REASONS", "SpooledDelivery"]

#: Failures after which the spool keeps a batch rather than failing it.
KEPT_REASONS = frozenset({"retries_exhausted", "shutdown_timeout"})


def _spool_failed(error: sqlite3.Error, what: str = "") -> None:
    warn_limited("spool-error", "htevents-logging: the spool failed (%s)%s", error, what)


class SpooledDelivery:
    """Stores batches in the spool and drains it through the sender (on the transport thread)."""

    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        sender: Sender,
        stats: Stats,
        settle: Callable[[Sequence[Envelope], Optional[DeliveryError]], None],
        report: Callable[[Sequence[Envelope], DeliveryError], None],
    ) -> None:
        self._settings = settings
        self._spool = spool
        self._sender = sender
        self._stats = stats
        self._settle = settle
        self._report = report
        # Stored envelopes someone is to be told about, by row id (rows carry only the bytes).
        self._awaiting: dict[int, Envelope] = {}
        # A first drain is due as soon as the thread runs: what an earlier process kept goes
        # first. (Not looked up here: in a forked child this runs in the fork hook, no I/O.)
        self._retry_at: Optional[float] = time.monotonic()

    def keep(self, batch: Sequence[Envelope]) -> bool:
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
            self._stats.add("dropped", len(appended.evicted), reason="spool_full")
            warn_limited("dropped:spool_full", "htevents-logging: %s", why)
            awaiting = self._awaiting
            told = [awaiting.pop(i) for i in appended.evicted if i in awaiting]
            if told:
                self._report(told, DeliveryError(f"message dropped: {why}", reason="spool_full"))
        return True

    def _remember(self, row_ids: Sequence[int], batch: Sequence[Envelope]) -> None:
        for row_id, envelope in zip(row_ids, batch):
            if envelope.callback is not None or envelope.on_error is not None:
                self._awaiting[row_id] = envelope

    def time_left(self) -> Optional[float]:
        """Seconds until the next drain is due, or ``None`` when none is scheduled."""
        if self._retry_at is None:
            return None
        return max(0.0, self._retry_at - time.monotonic())

    def drain(self, now: bool) -> bool:
        """Send what the spool holds, oldest first, if a drain is due (or ``now``); True when
        nothing is left."""
        if not now and self._retry_at is not None and time.monotonic() < self._retry_at:
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
                    self._retry_at = time.monotonic() + settings.flush_interval
                    return False
            except sqlite3.Error as spool_error:
                _spool_failed(spool_error)
                self._retry_at = time.monotonic() + settings.flush_interval
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
                self._remember(ids, batch)
                self._retry_at = time.monotonic() + settings.flush_interval
                warn_limited(
                    "spool-kept",
                    "htevents-logging: %s; the messages are kept in the spool and retried "
                    "every flush_interval (%gs)",
                    error,
                    settings.flush_interval,
                )
                return False
            self._settle(batch, error)

    def kept(self) -> int:
        """Messages the spool holds (from every process that shares it)."""
        try:
            return self._spool.count()
        except sqlite3.Error:
            return 0
