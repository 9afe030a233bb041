"""Cutting batches: by count, by real encoded bytes, and by time since a batch's first event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from .clock import MONOTONIC, Clock
from .envelope import Envelope

__all__ = ["Batcher"]

# What add() returns when no batch is complete (most of the time): no list made for it.
_NONE_READY: Sequence[list[Envelope]] = ()


class Batcher:
    """Collects envelopes into the next batch and says when it must go.

    A batch goes when it holds ``max_events`` messages, when one more message would take the
    request body (``envelope_bytes`` of ``{"batch":[...],"sentAt":...}`` plus the messages and
    their commas) to ``max_bytes`` or more, or ``interval`` seconds after its first message
    arrived: a quiet service still delivers within ``flush_interval``. Time is read from
    ``clock``, so tests can step it.
    """

    def __init__(
        self,
        max_events: int,
        max_bytes: int,
        interval: float,
        envelope_bytes: int,
        clock: Clock = MONOTONIC,
    ) -> None:
        self._clock = clock
        self.max_events = max_events
        self.interval = interval
        self._max_bytes = max_bytes
        self._envelope_bytes = envelope_bytes
        self._items: list[Envelope] = []
        self._bytes = envelope_bytes
        self._deadline: Optional[float] = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, envelope: Envelope) -> Sequence[list[Envelope]]:
        """Add one envelope; return the batches that are now complete (usually none)."""
        ready: Sequence[list[Envelope]] = _NONE_READY
        size = len(envelope.data)
        if self._items:
            size += 1  # the comma
            if self._bytes + size >= self._max_bytes:
                ready = [self.take()]
                size -= 1
        if self._deadline is None:
            self.start_clock()
        self._items.append(envelope)
        self._bytes += size
        if len(self._items) >= self.max_events:
            ready = [*ready, self.take()]
        return ready

    def start_clock(self) -> None:
        """Start the current batch's ``interval``, unless it is running: called as its first
        message is taken off the queue, so time spent before it is added counts too."""
        if self._deadline is None:
            self._deadline = self._clock.now() + self.interval

    def time_left(self) -> Optional[float]:
        """Seconds until the current batch is due, or ``None`` when there is none."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._clock.now())

    def take(self) -> list[Envelope]:
        """Hand over the current batch (possibly empty) and start a new one."""
        items, self._items = self._items, []
        self._bytes = self._envelope_bytes
        self._deadline = None
        return items
