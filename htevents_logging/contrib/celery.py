"""Celery: delivery when a worker process ends, and the producer's identity in its tasks.

::

    from celery import Celery
    from htevents_logging.contrib.celery import instrument

    app = Celery("shop")
    instrument(app)                       # in the module both the producer and the worker import

Three things happen:

- **Worker shutdown.** A prefork child (billiard) ends with ``os._exit``: no ``atexit`` hook
  runs there, so what its transport still holds would be lost. On ``worker_process_shutdown``
  (each child, at a warm shutdown and when ``max_tasks_per_child`` recycles it) and
  ``worker_shutdown`` (the main process: the solo and threads pools) what every client,
  handler and processor of the process queued is delivered, within ``shutdown_timeout``.
- **Identity.** The identity bound where a task is sent (``htevents_logging.bind()``, a
  middleware's) travels in the task message's headers (``htevents_identity``), and is bound
  around the task in the worker: its events carry the user who caused them. Ids a payload
  names itself still win, as everywhere.
- **Optionally** (``flush_after_task=True``) what a task logged is delivered when it ends, for
  workers that may be killed without a shutdown (spot instances, a container killed at its
  deadline).

Nothing here ever raises into Celery: a failure is reported (at most once per ten seconds) on
the ``htevents_logging`` logger, and the task goes on. Celery is not imported by this module:
its signals are looked up when ``instrument`` is called.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import Any, Callable, Optional

from .._diagnostics import warn_limited
from .._encoding import to_jsonable
from .._flushing import flush_all
from .._identity import bind, current_identity
from .._lifecycle import at_exit

__all__ = ["IDENTITY_HEADER", "instrument"]

#: The task message header that carries the producer's identity.
IDENTITY_HEADER = "htevents_identity"

# Celery's signals are process-wide. The hooks that concern the process (publishing, the
# shutdowns) are connected once; those that concern an app's tasks, once per app. Both carry
# a dispatch_uid, so Celery itself refuses a second connection.
_DISPATCH_UID = "htevents_logging.contrib.celery"
_lock = threading.Lock()
_process_hooks = False
_instrumented: set[int] = set()  # id() of the apps instrumented (each is kept alive by its hooks)
_bound: dict[str, contextlib.ExitStack] = {}  # task id -> the bind() around it


def _guarded(what: str, handler: Callable[..., None]) -> Callable[..., None]:
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


def _publishing(headers: Optional[dict[str, Any]] = None, **_: Any) -> None:
    """``before_task_publish``: put the bound identity in the message's headers."""
    if headers is None or IDENTITY_HEADER in headers:
        return
    value = _identity_header()
    if value is not None:
        headers[IDENTITY_HEADER] = value


def _shutting_down(**_: Any) -> None:
    """``worker_process_shutdown`` / ``worker_shutdown``: deliver what the process queued."""
    at_exit()


def _header_of(request: Any) -> Optional[Mapping[str, Any]]:
    """The identity header of a task's request: an attribute of it for a message from a
    broker; in ``request.headers`` for ``task.apply(headers=...)``."""
    value = getattr(request, IDENTITY_HEADER, None)
    if value is None:
        headers = getattr(request, "headers", None)
        if isinstance(headers, Mapping):
            value = headers.get(IDENTITY_HEADER)
    return value if isinstance(value, Mapping) else None


def _connect(signal: Any, what: str, handler: Callable[..., None], uid: str) -> None:
    # weak=False: the receivers are closures, referenced only by the signal.
    signal.connect(_guarded(what, handler), weak=False, dispatch_uid=uid)


def instrument(
    app: Any, *, flush_after_task: bool = False, flush_timeout: Optional[float] = None
) -> None:
    """Make a Celery app's workers deliver every event, each with the user who caused it.

    Connects to Celery's signals: the identity bound with :func:`htevents_logging.bind`
    where a task is sent travels in its message and is bound around it in the worker, and
    what a worker process queued is delivered when it shuts down (a prefork child exits
    without ``atexit``: without this its last events are lost). With ``flush_after_task``,
    what each task logged is also delivered when it ends, within ``flush_timeout`` seconds
    (default: ``shutdown_timeout``). Call it where the app is made, in the module both the
    producer and the worker import; calling it again for the same app does nothing.
    """
    global _process_hooks
    from celery import signals  # type: ignore[import-untyped,import-not-found,unused-ignore]

    with _lock:
        if id(app) in _instrumented:
            return
        _instrumented.add(id(app))
        connect_process_hooks = not _process_hooks
        _process_hooks = True

    def starting(task_id: Optional[str] = None, task: Any = None, **_: Any) -> None:
        if task is None or task_id is None or getattr(task, "app", app) is not app:
            return
        value = _header_of(task.request)
        if value is None:
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
        # task_postrun is sent whether the task returned or raised.
        if task is not None and getattr(task, "app", app) is not app:
            return
        stack = _bound.pop(task_id or "", None)
        if stack is not None:
            stack.close()
        if flush_after_task:
            flush_all(flush_timeout)

    if connect_process_hooks:
        _connect(
            signals.before_task_publish,
            "before_task_publish",
            _publishing,
            f"{_DISPATCH_UID}.before_task_publish",
        )
        for name in ("worker_process_shutdown", "worker_shutdown"):
            _connect(getattr(signals, name), name, _shutting_down, f"{_DISPATCH_UID}.{name}")
    _connect(signals.task_prerun, "task_prerun", starting, f"{_DISPATCH_UID}.prerun.{id(app)}")
    _connect(signals.task_postrun, "task_postrun", ending, f"{_DISPATCH_UID}.postrun.{id(app)}")
    logging.getLogger("htevents_logging").debug("instrumented the Celery app %r", app)
