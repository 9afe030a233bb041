"""Who a request is about: ``bind()`` and the ``contextvars`` behind it.

A web app knows the user once, in middleware, and logs events in many places below it. ``bind``
lets the middleware say it once; every message built inside the block (by any front-end) that
names neither ``userId`` nor ``anonymousId`` takes the bound ones, and the bound ``context`` is
merged under the message's own. Because it is a ``ContextVar``, the binding follows the code
across ``await`` and stays out of other threads and asyncio tasks.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Optional, Union

__all__ = ["Id", "Identity", "bind", "calling_identity", "current_identity", "id_text"]


@dataclass(frozen=True)
class Identity:
    """A snapshot of the bound identity, taken on the calling thread when a message is built."""

    user_id: Optional[str] = None
    anonymous_id: Optional[str] = None
    context: Mapping[str, Any] = field(default_factory=dict)


_current: ContextVar[Optional[Identity]] = ContextVar("htevents_identity", default=None)


def current_identity() -> Optional[Identity]:
    """Return the identity bound in the current context, or ``None``."""
    return _current.get()


#: What an id may be given as; each is sent as its ``str()`` (a UUID as its canonical form).
Id = Union[str, int, float, uuid.UUID]


def id_text(value: Any, what: str) -> Optional[str]:
    """An id (``userId``, ``anonymousId``, ``groupId``, ``previousId``) as the wire carries it:
    a non-empty string, or ``None``. Accepts a str, a number or a ``uuid.UUID`` (ids are often
    UUIDs: a middleware binding ``request.user.pk`` must not fail the request); ``what`` names
    the field in the ``TypeError`` for anything else."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or not isinstance(value, (int, float, uuid.UUID)):
        raise TypeError(f"{what} must be a str, a number or a UUID, not {type(value).__name__}")
    return str(value)


@contextlib.contextmanager
def bind(
    *,
    user_id: Optional[Id] = None,
    anonymous_id: Optional[Id] = None,
    context: Optional[Mapping[str, Any]] = None,
) -> Iterator[Identity]:
    """Bind an identity for the messages built inside the ``with`` block.

    Binds nest: an inner ``bind`` keeps the outer ids it does not replace, and its ``context``
    is merged over the outer one. Leaving the block restores exactly what was bound before.

    >>> with bind(user_id="123", context={"ip": "203.0.113.5"}):
    ...     htevents.track(event="Order completed")   # userId "123", context.ip set
    """
    if context is not None and not isinstance(context, Mapping):
        raise TypeError(f"bind(context=...) must be a mapping, not {type(context).__name__}")
    outer = _current.get() or Identity()
    merged = Identity(
        user_id=id_text(user_id, "bind(user_id=...)") or outer.user_id,
        anonymous_id=id_text(anonymous_id, "bind(anonymous_id=...)") or outer.anonymous_id,
        context={**outer.context, **(context or {})},
    )
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _current.reset(token)


def calling_identity() -> Optional[Identity]:
    """The identity of the calling thread as a logged event sees it: what ``bind()`` bound,
    under the ``user_id``/``anonymous_id`` bound with structlog's ``bind_contextvars`` (when
    structlog is in use), as the structlog processor reads them.

    Taken on the logging thread, because both live in ``contextvars``: a handler behind a
    ``QueueHandler`` runs on the listener's thread, where neither is set (see
    ``CaptureIdentity``).
    """
    bound = _current.get()
    structlog_vars = sys.modules.get("structlog.contextvars")
    if structlog_vars is None:
        return bound
    try:
        values = structlog_vars.get_contextvars()
        user_id = id_text(values.get("user_id"), "user_id")
        anonymous_id = id_text(values.get("anonymous_id"), "anonymous_id")
    except Exception:  # a value no id can be made of: bind()'s stand
        return bound
    if user_id is None and anonymous_id is None:
        return bound
    base = bound or Identity()
    return Identity(
        user_id=user_id or base.user_id,
        anonymous_id=anonymous_id or base.anonymous_id,
        context=base.context,
    )
