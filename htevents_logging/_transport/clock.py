"""Time as the batcher and the sender see it, and the close signal they both read.

Both take a :class:`Clock`, so tests can drive them with a fake one and check their timing
exactly, instead of bounding wall-clock time on both sides.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

from typing_extensions import Protocol

__all__ = ["MONOTONIC", "Clock", "Closing", "MonotonicClock"]


class Clock(Protocol):
    """A monotonic clock and the two ways of waiting on it."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` or until ``event`` is set; True when it is set."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic``, and waits that release the GIL."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """``time.sleep``."""
        time.sleep(max(0.0, seconds))

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """``event.wait``."""
        return event.wait(max(0.0, seconds))


#: The clock every transport uses unless a test gives another.
MONOTONIC: Clock = MonotonicClock()


class Closing:
    """The close signal of one transport: set once, by its ``close()``, with a deadline.

    The worker, the sender and the exporters read it; only the transport sets it. A wait on
    it (a backoff between attempts) ends early when it is set, so the waiter can look at the
    deadline.
    """

    def __init__(self, clock: Clock = MONOTONIC) -> None:
        self._clock = clock
        self._event = threading.Event()
        self._deadline: Optional[float] = None

    def begin(self, deadline: float) -> None:
        """Start closing: nothing may start or wait past ``deadline`` (a clock time)."""
        self._deadline = deadline
        self._event.set()

    @property
    def deadline(self) -> Optional[float]:
        """The close deadline, or ``None`` while not closing."""
        return self._deadline

    def is_set(self) -> bool:
        """True once closing."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds`` or until closing begins; True when it has."""
        return self._clock.wait(self._event, seconds)
