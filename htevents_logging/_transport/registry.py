"""One transport per settings per process.

Every front-end asks here for its transport, so a handler, a structlog processor and a client
built with equal settings share one queue, one thread and one connection pool. The registry
owns the sharing: which transports exist and how many clients use each.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Optional, Union

from .._settings import Settings
from .pipeline import InlineTransport, KeylessTransport, Outlet, Transport
from .synchronous import SyncTransport

#: What the registry shares: a queue and its thread, or (``sync_mode``) a connection pool.
Shared = Union[Transport, SyncTransport]

__all__ = [
    "acquire",
    "after_fork_in_child",
    "close_all",
    "dropped_without_key",
    "flush_all",
    "kept_in_spools",
    "release",
    "snapshots",
]

_lock = threading.RLock()  # re-entrant: a signal handler may warn mid-update
_transports: dict[Settings, Shared] = {}
_users: dict[int, int] = {}  # clients using each shared transport, by its id()
# Closed, but their thread is still finishing (closed under the logging lock): exit waits.
_finishing: set[Outlet] = set()
# Every transport ever made in this process, weakly: the fork hook renews the live ones.
_everyone: weakref.WeakSet[Shared] = weakref.WeakSet()
# Those of front-ends configured without a write key, for the exit report (kept: a replaced
# handler's drops count too; each is a few hundred bytes, made once per configuration).
_keyless: list[KeylessTransport] = []


def acquire(settings: Settings) -> Outlet:
    """The shared transport for these settings (made on first use); pair with :func:`release`.
    A disabled client gets a transport of its own that sends nothing, and so does one without
    a write key (which counts what it drops). With ``sync_mode`` the shared transport sends on
    the calling thread (:class:`~.synchronous.SyncTransport`)."""
    if settings.disable:
        return InlineTransport(settings)
    if settings.write_key is None:
        keyless = KeylessTransport(settings)
        with _lock:
            _keyless.append(keyless)
        return keyless
    with _lock:
        transport = _transports.get(settings)
        if transport is None:
            made = SyncTransport if settings.sync_mode else Transport
            transport = _transports[settings] = made(settings)
            _everyone.add(transport)
        _users[id(transport)] = _users.get(id(transport), 0) + 1
        return transport


def release(outlet: Outlet, timeout: float) -> bool:
    """Let go of a transport: the last user closes it, the others just flush."""
    with _lock:
        shared = _transports.get(outlet.settings) is outlet
        users = _users.get(id(outlet), 0) - 1
        if shared and users > 0:
            _users[id(outlet)] = users
        elif shared:
            del _users[id(outlet)]
            del _transports[outlet.settings]
    if shared and users > 0:
        return outlet.flush(timeout)
    done = outlet.close(timeout)
    with _lock:
        # Keep (for the exit hook to wait on) only those still at work: a finished one has
        # given its connections back, and must not be held on to.
        for finished in [t for t in _finishing if not t.finishing]:
            _finishing.discard(finished)
        if outlet.finishing:
            _finishing.add(outlet)
    return done


def _deadline(transports: list[Outlet], timeout: Optional[float]) -> float:
    """One deadline for work on all ``transports``: ``timeout`` from now, or the largest
    ``shutdown_timeout`` among them."""
    if timeout is None:
        timeout = max(t.settings.shutdown_timeout for t in transports)
    return time.monotonic() + timeout


def flush_all(timeout: Optional[float] = None) -> bool:
    """Flush every transport in use, together bounded by ``timeout`` (default: the largest
    ``shutdown_timeout``); True when everything queued was settled in time."""
    with _lock:
        transports: list[Outlet] = [*_transports.values(), *_finishing]
    if not transports:
        return True
    deadline = _deadline(transports, timeout)
    flushed = True
    for transport in transports:
        flushed = transport.flush(max(0.0, deadline - time.monotonic())) and flushed
    return flushed


def close_all(timeout: Optional[float] = None) -> int:
    """Close every transport, together bounded by ``timeout`` (default: the largest
    ``shutdown_timeout``); return how many messages were left undelivered."""
    with _lock:
        transports = [*_transports.values(), *_finishing]
        _transports.clear()
        _users.clear()
        _finishing.clear()
    if not transports:
        return 0
    deadline = _deadline(transports, timeout)
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


def dropped_without_key() -> int:
    """Events dropped because a front-end had no write key (for the exit report)."""
    with _lock:
        keyless = list(_keyless)
    return sum(outlet.dropped() for outlet in keyless)


def snapshots() -> list[dict[str, Any]]:
    """The ``stats()`` of every transport this process made (for the metrics)."""
    with _lock:
        transports = list(_everyone)
    return [transport.snapshot() for transport in transports]


def after_fork_in_child() -> None:
    """In a forked child: a new lock, and every open transport renewed (the parent's threads
    do not exist here)."""
    global _lock
    _lock = threading.RLock()
    for transport in list(_everyone):
        if not transport.closed:
            transport.reset_after_fork()
