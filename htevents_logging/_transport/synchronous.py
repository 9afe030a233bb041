"""``sync_mode``: each message is sent on the calling thread before the call returns.

For serverless platforms (AWS Lambda, Cloud Run, Cloud Functions), which freeze or kill the
process as soon as the handler returns: a background thread's queue would be frozen with it.
:class:`SyncTransport` is the same :class:`~.pipeline.Outlet` contract as the threaded
transport, with no queue and no thread: a call builds its message, sends it (within
``http_request_timeout`` and the retries), settles it in the ledger (so its callback and
``on_error`` have run), and only then returns.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Optional

from .._settings import Settings
from ..errors import Reason
from .clock import MONOTONIC, Clock, Closing
from .envelope import Queueable
from .ledger import Ledger
from .pipeline import AFTER_CLOSE_WHY, OutletBase
from .sender import Sender

__all__ = ["SyncTransport"]


class SyncTransport(OutletBase):
    """Send each message at once, on the thread that hands it over; no queue, no thread.

    Threads send side by side, over one connection pool. A message handed over while this
    thread is already sending (a callback or ``on_error`` that logs an event) is sent right
    after the current one, not inside it, so a callback can never recurse without end.
    """

    finishing = False

    def __init__(self, settings: Settings, clock: Clock = MONOTONIC) -> None:
        self.settings = settings
        self._clock = clock
        self._setup()

    def _setup(self) -> None:
        self._ledger = Ledger()
        self._closing = Closing(self._clock)
        self._sender = Sender(self.settings, self._ledger, self._closing, self._clock)
        self._closed = False
        self._sending = threading.local()  # this thread's messages still to send, while sending
        self._idle = threading.Condition()  # guards the two counts; told when none is in hand
        self._enqueued = 0
        self._in_hand = 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def _accept(self, item: Queueable) -> bool:
        """Build and send ``item`` now; True when it was sent or failed for good."""
        if self._closed:
            self.drop(item, Reason.AFTER_CLOSE, AFTER_CLOSE_WHY)
            return False
        waiting: Optional[deque[Queueable]] = getattr(self._sending, "waiting", None)
        if waiting is not None:  # handed over from a callback of this thread's send
            waiting.append(item)
            return True
        self._sending.waiting = waiting = deque([item])
        try:
            while waiting:
                self._send(waiting.popleft())
        finally:
            self._sending.waiting = None
        return True

    def _send(self, item: Queueable) -> None:
        envelope = item.prepare()  # an invalid one was counted and reported
        if envelope is None:
            return
        with self._idle:
            self._enqueued += 1
            self._in_hand += 1
        try:
            error = self._sender.send([envelope])  # never raises
            self._ledger.settle([envelope], error)
        finally:
            with self._idle:
                self._in_hand -= 1
                last = not self._in_hand
                if last:
                    self._idle.notify_all()
            if last and self._closed:
                self._sender.close()  # close() did not wait this long

    def _wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the sends of other threads to end; never for this
        thread's own (a callback calling ``flush()``)."""
        if getattr(self._sending, "waiting", None) is not None:
            return False
        with self._idle:
            return self._idle.wait_for(lambda: not self._in_hand, max(0.0, timeout))

    def drop(self, item: Queueable, reason: Reason, why: str) -> None:
        """Drop a message (the client was closed): counted, warned about, and told to its
        callback and ``on_error``."""
        envelope = item.prepare() if item.callback or item.on_error else None
        self._ledger.drop([envelope] if envelope is not None else [], reason, why)

    def snapshot(self) -> dict[str, Any]:
        """The counts of :meth:`HtEvents.stats` (``queue_depth`` is always 0)."""
        return self._ledger.snapshot(enqueued=self._enqueued, queue_depth=0)

    def pending(self) -> int:
        """Messages being sent right now, by any thread."""
        return self._in_hand

    def failed_at_deadline(self) -> int:
        """Messages that failed because a close deadline came first."""
        return self._ledger.failed_by(Reason.SHUTDOWN_TIMEOUT)

    def kept_in_spool(self) -> int:
        """Nothing is kept: ``sync_mode`` has no spool."""
        return 0

    def flush(self, timeout: float) -> bool:
        """Nothing is queued: every call was sent before it returned. Waits (up to
        ``timeout``) only for sends still running on other threads."""
        return self._wait_idle(timeout)

    def close(self, timeout: float) -> bool:
        """Refuse later messages, let sends still running on other threads end by
        ``timeout`` (no attempt starts and no backoff ends past it), then close the pool."""
        deadline = self._clock.now() + max(0.0, timeout)
        if not self._closed:
            self._closed = True
            self._closing.begin(deadline)
        idle = self._wait_idle(deadline - self._clock.now())
        if idle:
            self._sender.close()
        return idle

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh ledger and connection pool (the parent's sockets are the
        parent's)."""
        self._setup()
