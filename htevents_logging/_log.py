"""The package's own logger, and warnings that a hot loop of bad input cannot turn into a flood."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

__all__ = ["enable_debug_output", "logger", "warn_limited"]

#: Everything the package says goes through this logger (and its children), which the logging
#: front-ends never turn into events.
logger = logging.getLogger("htevents_logging")

WARNING_INTERVAL = 10.0
_lock = threading.Lock()
_last: dict[str, tuple[float, int]] = {}  # key -> (time of the last warning, suppressed since)


def warn_limited(key: str, msg: str, *args: Any) -> None:
    """Log a WARNING at most once per ``WARNING_INTERVAL`` seconds for each ``key``.

    Repeats in between are counted and the next warning says how many were left out, so a
    service that logs the same bad payload in a loop gets one line every ten seconds, not
    thousands, and still learns the size of the problem.
    """
    now = time.monotonic()
    with _lock:
        last, suppressed = _last.get(key, (-WARNING_INTERVAL, 0))
        if now - last < WARNING_INTERVAL:
            _last[key] = (last, suppressed + 1)
            return
        _last[key] = (now, 0)
    if suppressed:
        msg += f" ({suppressed} similar warning(s) suppressed in the last {WARNING_INTERVAL:g}s)"
    logger.warning(msg, *args)


def reset_warning_limits() -> None:
    """Forget past warnings (for tests, and for a child after fork)."""
    with _lock:
        _last.clear()


def enable_debug_output() -> None:
    """Send the package's DEBUG output to stderr: what ``debug=True`` turns on."""
    if not any(getattr(h, "_htevents_debug", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("htevents-logging %(levelname)s %(message)s"))
        handler._htevents_debug = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
