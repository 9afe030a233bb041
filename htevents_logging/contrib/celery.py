"""Celery: delivery when a worker process ends, and the producer's identity in its tasks.

::

    from celery import Celery
    from htevents_logging.contrib.celery import instrument

    app = Celery("shop")
    instrument(app)                       # in the module both the producer and the worker import

Three things happen:

- **Worker shutdown.** A prefork child (billiard) ends with ``os._exit``: no ``atexit`` hook
  runs there, so what its transport still holds would be lost. On ``worker_process_shutdown``
  (each child) and ``worker_shutdown`` (the main process, the solo and threads pools) what every
  client, handler and processor queued is delivered, within ``shutdown_timeout``.
- **Identity.** The identity bound where a task is sent (``htevents_logging.bind()``, a
  middleware's) travels in the task message's headers (``htevents_identity``), and is bound
  around the task in the worker: its events carry the user who caused them.
- **Optionally** (``flush_after_task=True``) what a task logged is delivered when it ends, for
  workers that may be killed without a shutdown (autoscaled, spot instances).

Nothing here ever raises into Celery: a failure is reported once on the ``htevents_logging``
logger, and the task goes on. Celery is not imported by this module: the signals are looked
up on the app's Celery when ``instrument`` is called.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import Any, Optional

from .._diagnostics import warn_limited
from .._encoding import to_jsonable
from .._flushing import flush_all
from .._identity import bind, current_identity
from .._lifecycle import at_exit

__all__ = ["IDENTITY_HEADER", "instrument"]

#: The task message header that carries the producer's identity.
IDENTITY_HEADER = "htevents_identity"

_instrumented: set[int] = set()  # id() of the apps instrumented (signals are process-wide)
_bound: dict[str, contextlib.ExitStack] = {}  # task id -> the bind() around it
_lock = threading.Lock()


def _guarded(what: str, handler: Any) -> Any:
    """``handler`` as a signal receiver that never raises into Celery."""

    def receiver(*args: Any, **kwargs: Any) -> None:
        try:
            handler(*args, **kwargs)
        except Exception as error:
            warn_limited(
                f"celery:{what}",
                "htevents-logging: the Celery %s hook failed (%s: %s); the task goes on",
                what,
                type(error).__name__,
                error,
                exc_info=True,
            )

    receiver.__name__ = f"htevents_{what}"
    return receiver


def _identity_header() -> Optional[dict[str, Any]]:
    """The identity bound here, as a JSON-safe header value; ``None`` when none is."""
    identity = current_identity()
    if identity is None:
        return None
    header: dict[str, Any] = {}
    if identity.user_id is not None:
        header["user_id"] = identity.user_id
    if identity.anonymous_id is not None:
        header["anonymous_id"] = identity.anonymous_id
    if identity.context:
        header["context"] = to_jsonable(dict(identity.context))
    return header or None


def instrument(
    app: Any, *, flush_after_task: bool = False, flush_timeout: Optional[float] = None
) -> None:
    """Deliver at worker shutdown, carry the producer's identity into its tasks, and with
    ``flush_after_task`` flush when each task ends (within ``flush_timeout`` seconds; default:
    ``shutdown_timeout``). Call it once where the app is made; calling it again does nothing.
    """
    with _lock:
        if id(app) in _instrumented:
            return
        _instrumented.add(id(app))
    from celery import signals  # type: ignore[import-untyped,import-not-found,unused-ignore]

    def publishing(headers: Optional[dict[str, Any]] = None, **_: Any) -> None:
        value = _identity_header()
        if value is not None and headers is not None:
            headers.setdefault(IDENTITY_HEADER, value)

    def starting(task_id: Optional[str] = None, task: Any = None, **_: Any) -> None:
        if task is None or task_id is None or getattr(task, "app", app) is not app:
            return
        value = getattr(task.request, IDENTITY_HEADER, None)
        if not isinstance(value, Mapping):
            return
        context = value.get("context")
        stack = contextlib.ExitStack()
        stack.enter_context(
            bind(
                user_id=value.get("user_id"),
                anonymous_id=value.get("anonymous_id"),
                context=context if isinstance(context, Mapping) else None,
            )
        )
        _bound[task_id] = stack

    def ending(task_id: Optional[str] = None, task: Any = None, **_: Any) -> None:
        if task is not None and getattr(task, "app", app) is not app:
            return
        stack = _bound.pop(task_id or "", None)
        if stack is not None:
            stack.close()
        if flush_after_task:
            flush_all(flush_timeout)

    def shutting_down(**_: Any) -> None:
        at_exit()

    receivers = {
        "before_task_publish": publishing,
        "task_prerun": starting,
        "task_postrun": ending,
        "worker_process_shutdown": shutting_down,
        "worker_shutdown": shutting_down,
    }
    for name, handler in receivers.items():
        receiver = _guarded(name, handler)
        # weak=False: the receivers are closures, referenced only by the signal.
        getattr(signals, name).connect(receiver, weak=False)
    logging.getLogger("htevents_logging").debug("instrumented the Celery app %r", app)
