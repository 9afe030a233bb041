"""Flushing every client at once: for the end of a serverless invocation, a task, or a server's
shutdown, where the code that must wait does not hold the clients."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Optional, TypeVar

from ._lifecycle import notice_fork
from ._transport import registry

__all__ = ["flush_after", "flush_all", "off_the_loop"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


async def off_the_loop(function: Callable[..., T], *args: Any) -> T:
    """Run a blocking ``function(*args)`` (a flush, a close) in a worker thread and await it:
    the event loop goes on serving other tasks while it waits on the network."""
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def flush_all(timeout: Optional[float] = None) -> bool:
    """Send what every client, handler and processor of this process has queued, within
    ``timeout`` seconds in all (default: the largest ``shutdown_timeout``).

    Returns True when everything was delivered or failed for good in time. Call it where the
    process may be frozen or killed next without running ``atexit``: at the end of an AWS
    Lambda handler, a Celery task in a short-lived worker, or an ASGI lifespan shutdown.
    """
    notice_fork()
    return registry.flush_all(timeout)


def flush_after(function: F) -> F:
    """Decorate a function (sync or async) so that :func:`flush_all` runs after each call,
    whether it returned or raised: ``@flush_after`` on a serverless handler.

    The async form flushes in a worker thread, so the event loop never waits on the network.
    """
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def flushing_coroutine(*args: Any, **kwargs: Any) -> Any:
            try:
                return await function(*args, **kwargs)
            finally:
                await off_the_loop(flush_all)

        return flushing_coroutine  # type: ignore[return-value]

    @functools.wraps(function)
    def flushing(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        finally:
            flush_all()

    return flushing  # type: ignore[return-value]
