"""Who a request is about: ``bind()`` and the ``contextvars`` behind it.

A web app knows the user once, in middleware, and logs events in many places below it. ``bind``
lets the middleware say it once; every message built inside the block (by any front-end) that
names neither ``userId`` nor ``anonymousId`` takes the bound ones, and the bound ``context`` is
merged under the message's own. Because it is a ``ContextVar``, the binding follows the code
across ``await`` and stays out of other threads and asyncio tasks.

Some identities are known only later than the middleware runs: Django REST framework
authenticates a token inside the view, after every middleware. ``bind_resolver`` binds a
function instead of ids; it is called each time a message is built (on the thread that logs),
so it sees the user as they are at that moment.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from ._diagnostics import warn_limited

__all__ = [
    "Id",
    "Identity",
    "Resolver",
    "bind",
    "bind_resolver",
    "calling_identity",
    "current_identity",
    "id_text",
]


@dataclass(frozen=True)
class Identity:
    """A snapshot of the bound identity, taken on the calling thread when a message is built."""

    user_id: Optional[str] = None
    anonymous_id: Optional[str] = None
    context: Mapping[str, Any] = field(default_factory=dict)


#: What a resolver (see :func:`bind_resolver`) returns: a mapping with ``user_id`` and/or
#: ``anonymous_id`` (and optionally ``context``), or ``None`` when it knows nobody.
Resolver = Callable[[], Optional[Mapping[str, Any]]]


@dataclass(frozen=True)
class _Deferred(Identity):
    """An identity completed only when a message is built (see :func:`bind_resolver`).

    It is what was bound around it (``outer``), under what ``resolver`` returns then, under
    this layer's own ids and ``context`` (those of a ``bind()`` inside the resolver's block).
    Kept in the same context variable as a plain :class:`Identity`, so that a process that
    never binds a resolver pays nothing more per message than before.
    """

    outer: Optional[Identity] = None
    resolver: Optional[Resolver] = None

    def resolve(self) -> Identity:
        """The identity as of now: call the resolvers, on this thread."""
        return Identity(*self._parts())

    def _parts(self) -> tuple[Optional[str], Optional[str], Mapping[str, Any]]:
        """The ids and context, layer over layer (one ``Identity`` is made, at the end)."""
        outer = self.outer
        if type(outer) is _Deferred:
            user_id, anonymous_id, context = outer._parts()
        elif outer is None:
            user_id, anonymous_id, context = None, None, _NO_CONTEXT
        else:
            user_id, anonymous_id, context = outer.user_id, outer.anonymous_id, outer.context
        if self.resolver is not None and not getattr(_resolving, "active", False):
            found = _resolved(self.resolver)
            if found is not None:
                user_id = found[0] or user_id
                anonymous_id = found[1] or anonymous_id
                if found[2]:
                    context = {**context, **found[2]}
        if self.context:
            context = {**context, **self.context}
        return self.user_id or user_id, self.anonymous_id or anonymous_id, context


_current: ContextVar[Optional[Identity]] = ContextVar("htevents_identity", default=None)
# Set once a resolver was ever bound in this process: until then, reading the identity costs
# what it always did (one global read more).
_resolvers_bound = False
# A resolver that logs an event must not call itself again for it.
_resolving = threading.local()


def current_identity() -> Optional[Identity]:
    """Return the identity bound in the current context, or ``None``; resolvers bound with
    :func:`bind_resolver` are called now, on this thread."""
    bound = _current.get()
    if _resolvers_bound and type(bound) is _Deferred:
        return bound.resolve()
    return bound


_NOBODY = Identity()
_NO_CONTEXT: Mapping[str, Any] = {}
_RESOLVER_KEYS = ("user_id", "anonymous_id", "context")


def _name_of(resolver: Resolver) -> str:
    """A resolver's name for a warning (never its arguments' reprs: a request's shows its
    query string)."""
    function = getattr(resolver, "func", resolver)  # a functools.partial: what it calls
    return str(getattr(function, "__qualname__", type(function).__name__))


def _resolved(
    resolver: Resolver,
) -> Optional[tuple[Optional[str], Optional[str], Optional[Mapping[str, Any]]]]:
    """Call a resolver and check what it returned: its ids and context, or ``None``. A
    resolver that fails (or returns what no identity can be made of) is reported, at most
    once per ten seconds, and counts as knowing nobody: logging an event never raises
    because of it."""
    _resolving.active = True
    try:
        found = resolver()
        if found is None:
            return None
        if type(found) is not dict and not isinstance(found, Mapping):
            raise TypeError(f"it must return a mapping or None, not {type(found).__name__}")
        for key in found:
            if key not in _RESOLVER_KEYS:
                raise ValueError(f"it returned {key!r}; it may return {', '.join(_RESOLVER_KEYS)}")
        context = found.get("context")
        if context is not None and not isinstance(context, Mapping):
            raise TypeError(f"its context must be a mapping, not {type(context).__name__}")
        return (
            id_text(found.get("user_id"), "user_id"),
            id_text(found.get("anonymous_id"), "anonymous_id"),
            context,
        )
    except Exception as error:
        warn_limited(
            "identity_resolver",
            "htevents-logging: the identity resolver %s failed (%s: %s); the event takes "
            "the identity bound around it",
            _name_of(resolver),
            type(error).__name__,
            error,
            exc_info=True,
        )
        return None
    finally:
        _resolving.active = False


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
    Yields the identity bound (inside a :func:`bind_resolver` block, whose part is known
    only when a message is built, the ids shown are this block's own).

    >>> with bind(user_id="123", context={"ip": "203.0.113.5"}):
    ...     htevents.track(event="Order completed")   # userId "123", context.ip set
    """
    if context is not None and not isinstance(context, Mapping):
        raise TypeError(f"bind(context=...) must be a mapping, not {type(context).__name__}")
    user_text = id_text(user_id, "bind(user_id=...)")
    anonymous_text = id_text(anonymous_id, "bind(anonymous_id=...)")
    outer = _current.get()
    merged: Identity
    if type(outer) is _Deferred:  # the outer ids are not known yet: a layer over them
        merged = _Deferred(user_text, anonymous_text, dict(context or {}), outer=outer)
    else:
        outer = outer or _NOBODY
        merged = Identity(
            user_id=user_text or outer.user_id,
            anonymous_id=anonymous_text or outer.anonymous_id,
            context={**outer.context, **(context or {})},
        )
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _current.reset(token)


@contextlib.contextmanager
def bind_resolver(resolver: Resolver) -> Iterator[None]:
    """Bind a function that says who the messages built inside the block are about.

    ``resolver()`` is called each time a message is built in the block (by any front-end, on
    the thread that logs or calls), and returns a mapping with ``user_id`` and/or
    ``anonymous_id`` (and ``context``), or ``None``. What it returns takes the place of what
    was bound around the block, as an inner :func:`bind` would; a ``bind()`` inside the block
    wins over it. Use it when the identity is settled after the block starts: a middleware
    whose request is authenticated further in (Django REST framework's token authentication
    runs inside the view). A resolver that raises is reported (rate-limited) and the message
    takes the identity bound around the block.
    """
    if not callable(resolver):
        raise TypeError(f"bind_resolver() takes a callable, not {type(resolver).__name__}")
    global _resolvers_bound
    _resolvers_bound = True
    token = _current.set(_Deferred(outer=_current.get(), resolver=resolver))
    try:
        yield
    finally:
        _current.reset(token)


# structlog's table of context variables, looked up once per module object (a test may
# reload structlog); ``None`` when its layout is not the one expected.
_structlog_layout: tuple[Any, Optional[dict[str, Any]]] = (None, None)


def _structlog_ids(structlog_vars: Any) -> tuple[Optional[str], Optional[str]]:
    """The ``user_id`` and ``anonymous_id`` bound with structlog's ``bind_contextvars``.

    Reads just those two context variables where structlog keeps them (``_CONTEXT_VARS``,
    keyed ``structlog_<key>``, unset as ``...``): ``get_contextvars()`` copies every variable
    structlog ever bound, which costs a logged event about 1 µs more per few keys a service
    binds (request ids, paths...). Falls back on it if structlog changes its layout.
    """
    global _structlog_layout
    module, variables = _structlog_layout
    if module is not structlog_vars:
        variables = getattr(structlog_vars, "_CONTEXT_VARS", None)
        if type(variables) is not dict or (
            getattr(structlog_vars, "STRUCTLOG_KEY_PREFIX", None) != "structlog_"
        ):
            variables = None
        _structlog_layout = (structlog_vars, variables)
    if variables is None:
        values = structlog_vars.get_contextvars()
        user, anonymous = values.get("user_id"), values.get("anonymous_id")
    else:
        user_var = variables.get("structlog_user_id")
        anonymous_var = variables.get("structlog_anonymous_id")
        user = None if user_var is None else user_var.get(None)
        anonymous = None if anonymous_var is None else anonymous_var.get(None)
    if user is None and anonymous is None:
        return None, None
    return (
        None if user is ... else id_text(user, "user_id"),
        None if anonymous is ... else id_text(anonymous, "anonymous_id"),
    )


# The last identity made from structlog's ids: a request logs several events with one user.
_last_merged: tuple[Any, Any, Any, Optional[Identity]] = (None, None, None, None)


def calling_identity() -> Optional[Identity]:
    """The identity of the calling thread as a logged event sees it: what ``bind()`` bound,
    under the ``user_id``/``anonymous_id`` bound with structlog's ``bind_contextvars`` (when
    structlog is in use), as the structlog processor reads them.

    Taken on the logging thread, because both live in ``contextvars``: a handler behind a
    ``QueueHandler`` runs on the listener's thread, where neither is set (see
    ``CaptureIdentity``).
    """
    bound = _current.get()
    if _resolvers_bound and type(bound) is _Deferred:
        bound = bound.resolve()
    structlog_vars = sys.modules.get("structlog.contextvars")
    if structlog_vars is None:
        return bound
    try:
        user_id, anonymous_id = _structlog_ids(structlog_vars)
    except Exception:  # a value no id can be made of: bind()'s stand
        return bound
    if user_id is None and anonymous_id is None:
        return bound
    global _last_merged
    last_user, last_anonymous, last_bound, merged = _last_merged
    if last_user == user_id and last_anonymous == anonymous_id and last_bound is bound:
        return merged
    base = bound or _NOBODY
    merged = Identity(
        user_id=user_id or base.user_id,
        anonymous_id=anonymous_id or base.anonymous_id,
        context=base.context,
    )
    _last_merged = (user_id, anonymous_id, bound, merged)
    return merged
