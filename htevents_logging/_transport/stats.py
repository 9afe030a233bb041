"""Counters of every outcome, so nothing the transport does is invisible."""

from __future__ import annotations

import threading
from typing import Any, Optional

__all__ = ["Stats"]

COUNTERS = ("enqueued", "sent", "failed", "dropped", "rejected", "retries", "batches")
#: The counters that are also split by reason in ``stats()``.
BY_REASON = ("failed", "dropped", "rejected")


class Stats:
    """Thread-safe counts since the transport started (see :meth:`HtEvents.stats`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTERS, 0)
        self._reasons: dict[str, dict[str, int]] = {name: {} for name in BY_REASON}

    def add(self, name: str, n: int = 1, reason: Optional[str] = None) -> None:
        """Count ``n`` more of ``name``; the failures and drops also under a ``reason``."""
        with self._lock:
            self._counts[name] += n
            if reason is not None:
                reasons = self._reasons[name]
                reasons[reason] = reasons.get(reason, 0) + n

    def get(self, name: str) -> int:
        """One count."""
        return self._counts[name]

    def snapshot(self, queue_depth: int) -> dict[str, Any]:
        """All counts, the ``*_by_reason`` splits, and the current ``queue_depth``."""
        with self._lock:
            out: dict[str, Any] = dict(self._counts)
            for name in BY_REASON:
                out[f"{name}_by_reason"] = dict(self._reasons[name])
        out["queue_depth"] = queue_depth
        return out
