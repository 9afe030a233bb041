"""Every at-fork and at-exit hook of the package, in order, in one place.

A process that forks (gunicorn, Celery, multiprocessing) must not carry its parent's threads,
locks or SQLite connections into the child, and a process that exits must deliver what it
queued. Each module says *what* to do (a function); this module alone says *when*, with one
ordered list per moment, each hook registered once.
"""

from __future__ import annotations

import atexit
import mmap
import os
import signal
import sys
import threading
from typing import Callable, Optional, Union

from . import _diagnostics, _message
from ._transport import registry, spool, worker

__all__ = [
    "at_exit",
    "no_thread_here",
    "notice_fork",
    "unforked",
    "watch_exit",
    "watch_sigterm",
]

#: Just before a fork: no SQLite connection may cross it.
BEFORE_FORK: tuple[Callable[[], None], ...] = (spool.hold_for_fork,)
#: In the parent, after a fork.
AFTER_FORK_IN_PARENT: tuple[Callable[[], None], ...] = (spool.release_after_fork,)
#: In the child, after a fork, in this order: fresh locks first (the others may warn), then
#: what the parent's threads held, then the spools, then the transports that use them.
AFTER_FORK_IN_CHILD: tuple[Callable[[], None], ...] = (
    _diagnostics.after_fork_in_child,
    _message.forget_random_pool,
    worker.forget_threads,
    spool.reopen_after_fork,
    registry.after_fork_in_child,
)


def _run(hooks: tuple[Callable[[], None], ...]) -> None:
    for hook in hooks:
        hook()


# The process the hooks last ran for: a fork that ran no hooks shows as another pid.
_pid = os.getpid()

# madvise(2)'s MADV_WIPEONFORK (Linux 4.14+; the mmap module names it from Python 3.12).
_MADV_WIPEONFORK: Optional[int] = getattr(
    mmap, "MADV_WIPEONFORK", 18 if sys.platform.startswith("linux") else None
)


def _fork_marker() -> tuple[Union[mmap.mmap, bytearray], bool]:
    """A byte that reads 1 in this process and 0 in every child forked from it, however the
    fork was made, and whether it works that way.

    It lives in a private page marked ``MADV_WIPEONFORK``: the kernel gives a child a zeroed
    copy of it, so the child sees the fork by reading memory (about 15 ns) instead of asking
    ``getpid()`` (a system call, about 150 ns) in every logging call. Where the kernel or
    platform cannot do that, the byte always reads 0, and every check asks ``getpid()``.
    """
    if _MADV_WIPEONFORK is None:
        return bytearray(1), False
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        page.madvise(_MADV_WIPEONFORK)
    except (AttributeError, OSError, TypeError, ValueError):  # no madvise, an older kernel
        return bytearray(1), False
    page[0] = 1
    return page, True


#: The fork marker: its byte reads 1 while this is the process the hooks last ran for. The
#: per-event path checks it in place, ``if not unforked[0]: notice_fork()``, sparing every
#: logged event a call (about 40 ns); everything else calls :func:`notice_fork`.
unforked, _marker_works = _fork_marker()


def notice_fork() -> None:
    """Run the after-fork hooks in a child that was forked without them.

    ``os.register_at_fork`` hooks run only for a fork made by Python. uWSGI forks its workers
    from C (without ``--py-call-uwsgi-fork-hooks``), and so does a ``fork()`` called through
    ``ctypes``: the child then holds the parent's transports, whose threads do not exist in
    it, and nothing it logs is sent. So every call that hands over a message (and ``flush``,
    ``close``, ``stats``) first checks whether this is still the process the hooks last ran
    for, as OpenTelemetry's and sentry-sdk's processors do with ``getpid()``. Here it reads
    one byte the kernel zeroes in a child (see ``_fork_marker``), and asks ``getpid()`` only
    when it reads 0.
    """
    if unforked[0]:
        return
    global _pid
    pid = os.getpid()
    if pid != _pid:
        _pid = pid
        _run(AFTER_FORK_IN_CHILD)
    _mark_unforked()


def _mark_unforked() -> None:
    if _marker_works:
        unforked[0] = 1


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()
    _mark_unforked()
    _run(AFTER_FORK_IN_CHILD)


def at_exit() -> None:
    """Deliver what every transport holds, within ``shutdown_timeout``, and say on stderr
    what could not be delivered or is kept in a spool."""
    left = registry.close_all()
    if left:
        print(
            f"htevents-logging: {left} message(s) were not delivered before exit "
            "(the server was slow or down); raise shutdown_timeout, call close() earlier, "
            "or configure spool_path to keep them",
            file=sys.stderr,
        )
    dropped = registry.dropped_without_key()
    if dropped:
        print(
            f"htevents-logging: {dropped} event(s) were dropped: no write key was set "
            "(HT_WRITE_KEY); pass disable=True where nothing is to be sent",
            file=sys.stderr,
        )
    for path, count in registry.kept_in_spools().items():
        print(
            f"htevents-logging: {count} message(s) are kept in the spool {path}; the next "
            "process with the same spool_path, write key and host sends them",
            file=sys.stderr,
        )


_watched_pid = 0


def watch_exit() -> None:
    """Make a multiprocessing worker deliver its queue at exit, as the main process does.

    A ``multiprocessing`` child (fork or spawn) ends with ``os._exit`` after running its
    finalizers, so ``atexit`` never runs there; :func:`at_exit` is registered as one of its
    finalizers instead. Called when a transport starts its thread: by then a child knows it
    is one.
    """
    global _watched_pid
    if _watched_pid == os.getpid():
        return
    _watched_pid = os.getpid()
    process = sys.modules.get("multiprocessing.process")
    util = sys.modules.get("multiprocessing.util")
    if process is not None and util is not None and process.parent_process() is not None:
        util.Finalize(None, at_exit, exitpriority=100)


def no_thread_here() -> Optional[str]:
    """Why no transport thread may start in this process, or ``None`` (almost always).

    A uWSGI master that loads the app before forking its workers (no ``--lazy-apps``) forks
    from C, without Python's fork hooks (no ``--py-call-uwsgi-fork-hooks``). A thread running
    in the master at that moment can hold the GIL or a lock, which then stays taken forever in
    every worker: seen here, the workers hung on their first request in most runs. So no thread
    starts there; what the master logs itself is dropped (``no_thread``) and reported.
    """
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return None
    try:
        in_master = uwsgi.worker_id() == 0 and bool(uwsgi.opt.get("master"))
        options = uwsgi.opt
    except Exception:  # not the real uwsgi module
        return None
    if not in_master or any(options.get(o) for o in ("lazy-apps", "lazy")):
        return None
    if options.get("py-call-uwsgi-fork-hooks"):
        return None
    return (
        "this is a uWSGI master that forks its workers without Python's fork hooks, and a "
        "thread running there at the fork hangs the workers: add --py-call-uwsgi-fork-hooks "
        "(or --lazy-apps) to send what the master logs itself; the workers need nothing"
    )


_sigterm_pid = 0


def watch_sigterm() -> None:
    """Deliver what is queued when the process gets SIGTERM and nobody handles it.

    A process killed by SIGTERM's default action (a container stop, systemd, Kubernetes, a
    server that re-raises it) never runs ``atexit``, so the last partial batch, waiting out
    ``flush_interval``, was lost. When SIGTERM still has its default action, this installs a
    handler that does what exit does (deliver within ``shutdown_timeout``, or keep in the
    spool, and report the rest), then restores the default and raises SIGTERM again: the
    process still dies by SIGTERM, with the same exit status.

    A handler someone else installed (the application, gunicorn, uvicorn, Celery) is never
    replaced: those servers exit through ``atexit``, or (uvicorn) run the ASGI lifespan
    shutdown first (see ``contrib.asgi``). Only the main thread can set a handler: this is
    tried when a client is made and when its thread starts.
    """
    global _sigterm_pid
    if _sigterm_pid == os.getpid() or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):  # no SIGTERM here, or an embedded interpreter
        return
    _sigterm_pid = os.getpid()


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM with no other handler: deliver, then die by SIGTERM as the default would."""
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        at_exit()
    finally:
        signal.raise_signal(signal.SIGTERM)


def _install() -> None:
    atexit.register(at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=lambda: _run(BEFORE_FORK),
            after_in_parent=lambda: _run(AFTER_FORK_IN_PARENT),
            after_in_child=lambda: _after_fork_in_child(),  # looked up at each fork
        )


_install()
