"""One transport per set of transport settings per process, closed at exit, renewed after fork.

Every front-end asks here for its transport, so a handler, a structlog processor and a client
built with the same settings share one queue, one thread and one connection pool.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import weakref

from .._settings import Settings, TransportKey
from .transport import Transport

__all__ = ["acquire_transport", "close_all", "release_transport"]

_lock = threading.Lock()
_transports: dict[TransportKey, Transport] = {}
# Closed, but their thread is still finishing (closed under the logging lock): exit waits.
_finishing: set[Transport] = set()
# Every transport ever made in this process, weakly: the fork hook renews the live ones.
_everyone: weakref.WeakSet[Transport] = weakref.WeakSet()


def acquire_transport(settings: Settings) -> Transport:
    """The shared transport for these settings (made on first use); pair with ``release``."""
    key = settings.transport_key()
    with _lock:
        transport = _transports.get(key)
        if transport is None:
            transport = _transports[key] = Transport(settings, on_start=_hook_worker_exit)
            _everyone.add(transport)
        transport.users += 1
        return transport


def release_transport(transport: Transport, timeout: float) -> bool:
    """Let go of a transport: the last user closes it, the others just flush."""
    with _lock:
        transport.users -= 1
        last = transport.users <= 0
        if last:
            key = transport.settings.transport_key()
            if _transports.get(key) is transport:
                del _transports[key]
    if not last:
        return transport.flush(timeout)
    done = transport.close(timeout)
    if transport.finishing:
        with _lock:
            _finishing.add(transport)
    return done


def close_all(timeout: float | None = None) -> int:
    """Close every transport, together bounded by ``timeout`` (default: the largest
    ``shutdown_timeout``); return how many messages were left undelivered."""
    with _lock:
        transports = [*_transports.values(), *_finishing]
        _transports.clear()
        _finishing.clear()
    if not transports:
        return 0
    if timeout is None:
        timeout = max(t.settings.shutdown_timeout for t in transports)
    deadline = time.monotonic() + timeout
    left = 0
    for transport in transports:
        failed_before = transport.failed_at_deadline()
        remaining = max(0.0, deadline - time.monotonic())
        transport.close(min(remaining, transport.settings.shutdown_timeout))
        if transport.settings.spool_path is None:
            left += max(0, transport.pending()) + transport.failed_at_deadline() - failed_before
    return left


def kept_in_spools() -> dict[str, int]:
    """How many messages each spool file holds (for the exit report)."""
    with _lock:
        transports = list(_everyone)
    kept: dict[str, int] = {}
    for transport in transports:
        if transport.settings.spool_path is not None:
            kept[str(transport.settings.spool_path)] = transport.kept_in_spool()
    return {path: count for path, count in kept.items() if count}


def _at_exit() -> None:
    left = close_all()
    if left:
        print(
            f"htevents-logging: {left} message(s) were not delivered before exit "
            "(the server was slow or down); raise shutdown_timeout, call close() earlier, "
            "or configure spool_path to keep them",
            file=sys.stderr,
        )
    for path, count in kept_in_spools().items():
        print(
            f"htevents-logging: {count} message(s) are kept in the spool {path}; the next "
            "process with the same spool_path sends them",
            file=sys.stderr,
        )


_hooked_pid = 0


def _hook_worker_exit() -> None:
    """Make a multiprocessing worker deliver its queue at exit, as the main process does.

    A ``multiprocessing`` child (fork or spawn) ends with ``os._exit`` after running its
    finalizers, so ``atexit`` never runs there; the same shutdown is registered as one of its
    finalizers. Called when a transport starts its thread, by then the child knows it is one.
    """
    global _hooked_pid
    if _hooked_pid == os.getpid():
        return
    _hooked_pid = os.getpid()
    process = sys.modules.get("multiprocessing.process")
    util = sys.modules.get("multiprocessing.util")
    if process is not None and util is not None and process.parent_process() is not None:
        util.Finalize(None, _at_exit, exitpriority=100)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    for transport in list(_everyone):
        if not transport.closed:
            transport.reset_after_fork()


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
