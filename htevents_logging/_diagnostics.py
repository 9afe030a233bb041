"""The package's own logger, and warnings that a hot loop of bad input cannot turn into a flood."""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from typing import Any, Optional

__all__ = [
    "DebugOutput",
    "disable_debug_output",
    "enable_debug_output",
    "holds_logging_lock",
    "log",
    "logger",
    "warn_limited",
]

#: Everything the package says goes through this logger (and its children), which the logging
#: front-ends never turn into events.
logger = logging.getLogger("htevents_logging")

# The logging module's lock: dictConfig holds it while it flushes and closes the old handlers,
# and a logger takes it to refill its level cache (cleared by that same reconfiguration).
_logging_lock: Any = getattr(logging, "_lock", None)
_deferred: collections.deque[tuple[int, str, tuple[Any, ...], Any]] = collections.deque(maxlen=100)


def log(level: int, msg: str, *args: Any, exc_info: bool = False, exc: Any = None) -> None:
    """Log on the package logger without ever waiting for the logging module's lock.

    ``dictConfig`` holds that lock while it flushes our handler, and the flush waits for the
    transport thread; if that thread then logged normally it could block on the same lock, and
    reconfiguring logging would stall until the flush timed out. So while the lock is held by
    someone else, records are kept (up to 100) and logged on the next call that finds it free.
    ``exc_info=True`` attaches the exception being handled; ``exc`` one taken earlier.
    """
    if exc_info:
        exc = sys.exc_info()
    lock = _logging_lock
    if lock is not None:
        if not lock.acquire(blocking=False):
            _deferred.append((level, msg, args, exc))
            return
        lock.release()
    while _deferred:
        try:
            old_level, old_msg, old_args, old_exc = _deferred.popleft()
        except IndexError:
            break
        _emit(old_level, old_msg, old_args, old_exc)
    _emit(level, msg, args, exc)


def _emit(level: int, msg: str, args: tuple[Any, ...], exc: Any) -> None:
    """Log on the package logger, or on stderr when no one would see it there."""
    if logger.disabled:  # dictConfig's disable_existing_loggers, almost always by accident
        if level >= logging.WARNING or any(isinstance(h, DebugOutput) for h in logger.handlers):
            _to_stderr(level, msg, args, exc)
        return
    logger.log(level, msg, *args, exc_info=exc)
    if level >= logging.WARNING and logger.isEnabledFor(level) and not _heard():
        _to_stderr(level, msg, args, exc)


def _heard() -> bool:
    """Whether a record of the package logger reaches a handler that shows it: False when
    every handler on the way has ``shows_package_warnings = False`` (the root logger's only
    handler being ``HtEventsHandler``, which ignores its own package). With no handler at
    all, ``logging.lastResort`` prints it; a ``NullHandler`` or a handler's level is someone's
    choice, and counts as heard."""
    current: Optional[logging.Logger] = logger
    found = False
    while current is not None:
        for handler in current.handlers:
            if getattr(handler, "shows_package_warnings", True):
                return True
            found = True
        current = current.parent if current.propagate else None
    return not found


_FALLBACK_LINES = 10  # per WARNING_INTERVAL
_fallback_window: list[float] = [0.0, 0.0]  # [window start, lines in it]


def _to_stderr(level: int, msg: str, args: tuple[Any, ...], exc: Any) -> None:
    """Print one record on stderr, as ``logging.lastResort`` would, at most ``_FALLBACK_LINES``
    per ``WARNING_INTERVAL``: the package's warnings must reach a person whatever the logging
    configuration, but never flood a terminal."""
    now = time.monotonic()
    with _lock:
        if now - _fallback_window[0] >= WARNING_INTERVAL:
            _fallback_window[:] = [now, 0.0]
        _fallback_window[1] += 1
        if _fallback_window[1] > _FALLBACK_LINES:
            return
    record = logger.makeRecord(logger.name, level, "(htevents-logging)", 0, msg, args, exc)
    try:
        sys.stderr.write(_FALLBACK_FORMAT.format(record) + "\n")
    except Exception:  # a closed or broken stderr: there is nowhere left to say it
        pass


def holds_logging_lock() -> bool:
    """True when this thread holds the logging module's lock (inside ``dictConfig``, say).

    Waiting there for the transport thread could deadlock: any library that logs on that
    thread (urllib3 does, at DEBUG) needs the same lock to look up its level.
    """
    is_owned = getattr(_logging_lock, "_is_owned", None)
    return bool(is_owned is not None and is_owned())


WARNING_INTERVAL = 10.0
#: Keys remembered at most; past it, keys whose interval is over are forgotten, and while all
#: are recent, new ones share one key (a flood of distinct mistakes still gets one line).
MAX_WARNING_KEYS = 1024
_lock = threading.RLock()  # re-entrant: a signal handler may warn mid-update
_last: dict[str, tuple[float, int]] = {}  # key -> (time of the last warning, suppressed since)


def warn_limited(key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
    """Log a WARNING at most once per ``WARNING_INTERVAL`` seconds for each ``key``.

    Repeats in between are counted and the next warning says how many were left out, so a
    service that logs the same bad payload in a loop gets one line every ten seconds, not
    thousands, and still learns the size of the problem. With ``exc_info``, the warning carries
    the traceback of the exception being handled.
    """
    exc = sys.exc_info() if exc_info else None
    now = time.monotonic()
    with _lock:
        if key not in _last and len(_last) >= MAX_WARNING_KEYS:
            for old in [k for k, (at, _) in _last.items() if now - at >= WARNING_INTERVAL]:
                del _last[old]
            if len(_last) >= MAX_WARNING_KEYS:
                key = "too-many-kinds"
        last, suppressed = _last.get(key, (-WARNING_INTERVAL, 0))
        if now - last < WARNING_INTERVAL:
            _last[key] = (last, suppressed + 1)
            return
        _last[key] = (now, 0)
    if suppressed:
        msg += f" ({suppressed} similar warning(s) suppressed in the last {WARNING_INTERVAL:g}s)"
    log(logging.WARNING, msg, *args, exc=exc)


def reset_warning_limits() -> None:
    """Forget past warnings (for tests, and for a child after fork)."""
    with _lock:
        _last.clear()


def after_fork_in_child() -> None:
    """In a forked child: a new lock (a thread of the parent may have held the old one at the
    fork, and it does not exist here), and no memory of the parent's warnings."""
    global _lock
    _lock = threading.RLock()
    _last.clear()


class DebugOutput(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record, not the one it was
    created with (test runners and daemons replace it, and may close the old one)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("htevents-logging %(levelname)s %(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stderr


_FALLBACK_FORMAT = logging.Formatter("htevents-logging %(levelname)s %(message)s")


def enable_debug_output() -> None:
    """Send the package's DEBUG output to stderr: what ``debug=True`` turns on."""
    if not any(isinstance(h, DebugOutput) for h in logger.handlers):
        logger.addHandler(DebugOutput())
    logger.setLevel(logging.DEBUG)


def disable_debug_output() -> None:
    """Undo :func:`enable_debug_output`."""
    for handler in [h for h in logger.handlers if isinstance(h, DebugOutput)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
