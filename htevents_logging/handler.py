"""``HtEventsHandler``: turn the log records that carry an event into Hightouch Events.

A record is an event only when it carries the payload attribute (``htevent`` by default), which
``extra={"htevent": {...}}`` puts there. Every other record is dismissed by one ``getattr``
before any filter, lock or formatting work, so the handler can sit on the root logger of a busy
service::

    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "htevents": {
                "class": "htevents_logging.HtEventsHandler",
                "write_key": "HT_WRITE_KEY",   # any HtEvents setting...
                # "client": "ext://app.events.htevents",   # ...or a client you already have
            },
        },
        "root": {"handlers": ["htevents"], "level": "INFO"},
    }
    logging.config.dictConfig(LOGGING)

    logging.getLogger("app").info(
        "Order completed",
        extra={"htevent": {"userId": "123", "properties": {"total": 29.99}}},
    )
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

from typing_extensions import Unpack

from ._log import warn_limited
from .client import ClientSettings, HtEvents
from .message import Message, Timestamp
from .transport.listener import is_transport_thread

__all__ = ["DEFAULT_PAYLOAD_KEY", "HtEventsHandler"]

#: The record attribute (stdlib) or event-dict key (structlog) that carries an event.
DEFAULT_PAYLOAD_KEY = "htevent"

_OWN_LOGGER = "htevents_logging"
_OWN_LOGGER_PREFIX = _OWN_LOGGER + "."

# logging.shutdown() on Python < 3.12 calls flush() and then close(): a close() this soon after a
# flush() that ran out of time is that pair, and does not wait a second shutdown_timeout.
_SHUTDOWN_PAIR_WINDOW = 1.0


def _make_client(
    front_end: str,
    client: Optional[HtEvents],
    write_key: Optional[str],
    settings: ClientSettings,
) -> tuple[HtEvents, bool]:
    """The client a front-end sends through, and whether the front-end owns (closes) it."""
    if client is None:
        return HtEvents(write_key, **settings), True
    if write_key is not None or settings:
        given = sorted([*settings, *(["write_key"] if write_key is not None else [])])
        raise TypeError(
            f"{front_end}: pass either client=... or client settings, not both "
            f"(got client and {', '.join(given)}); the settings of a client you pass are the "
            "ones it was created with"
        )
    if not isinstance(client, HtEvents):
        raise TypeError(
            f"{front_end}: client must be an htevents_logging.HtEvents, "
            f'not {type(client).__name__} (in dictConfig: "client": "ext://module.attribute")'
        )
    return client, False


def _error_kind(error: BaseException) -> str:
    """The part of an error message before any value it quotes: warnings are rate-limited per
    kind of mistake, so two different mistakes each get their warning."""
    return re.split(r"['\"(\d]", str(error), maxsplit=1)[0][:80]


def _payload_type(payload: Mapping[Any, Any]) -> Any:
    """The payload's ``type`` (default ``"track"``), in a form ``emit`` reports clearly."""
    type_ = payload.get("type", "track")
    if isinstance(type_, str):
        return type_
    try:
        hash(type_)
    except TypeError:
        return repr(type_)  # unhashable: let emit say "unknown message type '[...]'"
    return type_


def _emit_payload(
    client: HtEvents,
    payload: Any,
    *,
    payload_key: str,
    origin: str,
    limit_key: str,
    event_default: Union[str, Callable[[], str], None] = None,
    timestamp_default: Optional[Timestamp] = None,
    fields: Optional[dict[str, Any]] = None,
) -> Optional[Message]:
    """Send one logged payload through ``client``; never raises.

    ``event_default`` is either the default ``event`` itself or a callable computing it, which
    is only called for a ``track`` that names no ``event``. An invalid payload is counted as
    ``rejected`` (by ``emit`` itself: a non-mapping payload is handed to it as is, so it refuses
    and counts it) and reported with one rate-limited WARNING that says where it was logged
    (``origin``) and what is wrong with it. Returns the message, or None when it was dropped.
    """
    try:
        if isinstance(payload, Mapping):
            type_ = _payload_type(payload)
            default: Optional[str]
            if callable(event_default):
                wants_default = type_ == "track" and not payload.get("event")
                default = event_default() if wants_default else None
            else:
                default = event_default
            return client.emit(
                type_,
                payload,
                event_default=default,
                timestamp_default=timestamp_default,
                **(fields or {}),
            )
        # Not a mapping: emit refuses it with a TypeError and counts it as rejected.
        return client.emit("track", payload)
    except (TypeError, ValueError) as error:
        warn_limited(
            f"invalid-payload:{limit_key}:{_error_kind(error)}",
            "htevents-logging: dropped an invalid %r payload logged %s: %s",
            payload_key,
            origin,
            error,
        )
    except Exception as error:  # never let the application's logging call fail
        warn_limited(
            f"emit-error:{limit_key}",
            "htevents-logging: could not send the %r payload logged %s: %s: %s",
            payload_key,
            origin,
            type(error).__name__,
            error,
        )
    return None


class HtEventsHandler(logging.Handler):
    """A logging handler that sends the records carrying an event payload to Hightouch Events.

    Give it any :class:`~htevents_logging.HtEvents` setting as a keyword (``write_key``,
    ``host``, ``flush_interval``...), which is what ``logging.config.dictConfig`` does with the
    keys of a handler's dict, or an existing client as ``client=`` (``"client":
    "ext://app.events.htevents"`` in dictConfig), not both. Front-ends built with equal
    settings share one background thread.

    A record is an event when ``getattr(record, payload_key)`` is set; the payload is a
    mapping as for :meth:`HtEvents.track` (either spelling of the keys) plus an optional
    ``type`` (``"track"`` by default: ``identify``, ``page``, ``screen``, ``group``, ``alias``).
    For ``track``, ``event`` defaults to the record's message (``%`` args applied), and every
    message's ``timestamp`` defaults to ``record.created``.

    >>> handler = HtEventsHandler(write_key="...")
    >>> logging.getLogger("app").addHandler(handler)
    >>> logging.getLogger("app").warning(
    ...     "Order completed", extra={"htevent": {"userId": "123", "properties": {"total": 9}}}
    ... )

    ``emit`` never raises and never waits on the network: an invalid payload is dropped,
    counted as ``rejected`` in ``client.stats()``, and reported by one (rate-limited) WARNING
    on the ``htevents_logging`` logger. Records from the ``htevents_logging`` loggers and
    records logged on the transport thread are never events, so there is no feedback loop.

    Events are handled without taking the handler's lock (the client is thread-safe), so
    threads logging events never wait for one another. ``flush()`` waits until what is queued
    is delivered (at most ``shutdown_timeout``); ``close()`` closes a client the handler made
    itself and only flushes one it was given.
    """

    def __init__(
        self,
        level: Union[int, str] = logging.NOTSET,
        *,
        client: Optional[HtEvents] = None,
        payload_key: str = DEFAULT_PAYLOAD_KEY,
        write_key: Optional[str] = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        if not isinstance(payload_key, str) or not payload_key:
            raise TypeError(
                f"HtEventsHandler: payload_key must be a non-empty str, got {payload_key!r}"
            )
        self.client, self._owns_client = _make_client(
            "HtEventsHandler", client, write_key, settings
        )
        super().__init__(level)
        #: The record attribute that makes a record an event.
        self.payload_key = payload_key
        # close() flushes by itself: logging.shutdown() (3.12+) need not call flush() first.
        self.flushOnClose = False
        self._flush_timed_out_at: Optional[float] = None

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} ({level}) payload_key={self.payload_key!r} {self.client!r}>"

    def handle(self, record: logging.LogRecord) -> bool:
        """Send the record when it carries a payload and passes the filters; else do nothing.

        A record without the payload attribute returns False at once, before the filters run.
        Returns what ``Handler.handle`` returns: whether the filters let the record through.
        """
        if getattr(record, self.payload_key, None) is None:
            return False
        rv = self.filter(record)
        if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a new record
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record's event (see the class docstring). Never raises, never blocks."""
        payload = getattr(record, self.payload_key, None)
        if payload is None:
            return
        name = record.name
        if name == _OWN_LOGGER or name.startswith(_OWN_LOGGER_PREFIX) or is_transport_thread():
            return

        def message() -> str:
            try:
                return record.getMessage()
            except Exception:  # bad %-args: the unformatted message is still a useful name
                return str(record.msg)

        _emit_payload(
            self.client,
            payload,
            payload_key=self.payload_key,
            origin=f"on logger {name!r}",
            limit_key=f"handler:{name}",
            event_default=message,
            timestamp_default=record.created,
        )

    def flush(self) -> None:
        """Wait until what is queued is delivered or failed for good (at most
        ``shutdown_timeout``)."""
        if not self.client.flush():
            self._flush_timed_out_at = time.monotonic()

    def close(self) -> None:
        """Close the client this handler made (flushing it first), or flush the one it was
        given, then close the handler.

        ``logging.shutdown()`` calls it at exit; together they wait at most
        ``shutdown_timeout`` for the queued events to be delivered.
        """
        timeout: Optional[float] = None  # the client's shutdown_timeout
        gave_up = self._flush_timed_out_at
        if gave_up is not None and time.monotonic() - gave_up < _SHUTDOWN_PAIR_WINDOW:
            timeout = 0.0  # the flush() just before already waited shutdown_timeout
        try:
            if self._owns_client:
                self.client.close(timeout)
            else:
                self.client.flush(timeout)
        finally:
            super().close()
