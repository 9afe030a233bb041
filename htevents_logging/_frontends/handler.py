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
import time
from typing import Any, Optional, Union

from typing_extensions import Unpack

from .._client import ClientSettings, HtEvents
from .._diagnostics import holds_logging_lock
from .._identity import calling_identity
from .shared import (
    DEFAULT_PAYLOAD_KEY,
    LoggerOrigins,
    ids_beside,
    make_client,
    send_payload,
)

__all__ = ["DEFAULT_PAYLOAD_KEY", "HtEventsHandler"]


def _message_of(record: logging.LogRecord) -> str:
    """The record's message, formatted now (its ``%`` args may change after the call): the
    ``event`` of a track that names none. Made for every event record: that costs less than
    deciding first whether it is needed. (``emit`` takes a plain ``str`` message without
    args as it is, without this call: that is what ``getMessage()`` returns for it.)"""
    try:
        return record.getMessage()
    except Exception:  # bad %-args: the unformatted message is still a useful name
        return str(record.msg)


# logging.shutdown() on Python < 3.12 calls flush() and then close(): a close() this soon after a
# flush() that ran out of time is that pair, and does not wait a second shutdown_timeout.
_SHUTDOWN_PAIR_WINDOW = 1.0


#: Where :class:`CaptureIdentity` keeps the logging thread's identity on a record.
_CAPTURED = "_htevents_identity"
_NOT_CAPTURED: Any = object()


def _loguru_extra(record: logging.LogRecord) -> Optional[dict[str, Any]]:
    """loguru's ``extra`` of a record it handed to this handler (``logger.add(handler)``
    makes records with an ``extra`` attribute holding it), or ``None``."""
    extra = record.__dict__.get("extra")
    return extra if type(extra) is dict else None


class CaptureIdentity(logging.Filter):
    """A filter for a ``QueueHandler`` in front of :class:`HtEventsHandler`: it keeps on each
    record the identity of the thread that logged it (``bind()``, and structlog's bound
    ``user_id``/``anonymous_id``).

    Why: the identity lives in ``contextvars``, and behind a ``QueueHandler`` the handler runs
    on the listener's thread, where nothing is bound, so events would get random
    ``anonymousId``s instead of the user's id. A filter runs on the logging thread, before the
    record is queued. In dictConfig::

        "filters": {"identity": {"()": "htevents_logging.CaptureIdentity"}},
        "handlers": {
            "htevents": {"class": "htevents_logging.HtEventsHandler", ...},
            "queued": {"class": "logging.handlers.QueueHandler",
                       "handlers": ["htevents"], "filters": ["identity"]},
        },

    It only adds an attribute (to records that carry a payload) and lets every record through.
    """

    def __init__(self, payload_key: str = DEFAULT_PAYLOAD_KEY) -> None:
        super().__init__()
        self.payload_key = payload_key

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the logging thread's identity on a record that carries a payload."""
        if record.__dict__.get(self.payload_key) is not None:
            record.__dict__[_CAPTURED] = calling_identity()
        return True


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

    #: This handler never shows the package's own warnings (it ignores its own package), so
    #: when it is the only handler they would reach, they go to stderr instead.
    shows_package_warnings = False

    def __init__(
        self,
        level: Union[int, str] = logging.NOTSET,
        *,
        client: Optional[HtEvents] = None,
        payload_key: str = DEFAULT_PAYLOAD_KEY,
        write_key: Optional[str] = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self.client, self._owns_client = make_client(
            "HtEventsHandler", client, write_key, settings, payload_key
        )
        super().__init__(level)
        #: The record attribute that makes a record an event.
        self.payload_key = payload_key
        # close() flushes by itself: logging.shutdown() (3.12+) need not call flush() first.
        self.flushOnClose = False
        self._flush_timed_out_at: Optional[float] = None
        self._origins = LoggerOrigins()

    def __repr__(self) -> str:
        level = logging.getLevelName(self.level)
        return f"<{type(self).__name__} ({level}) payload_key={self.payload_key!r} {self.client!r}>"

    def handle(self, record: logging.LogRecord) -> bool:
        """Send the record when it carries a payload and passes the filters; else do nothing.

        A record without the payload attribute returns False at once, before the filters run.
        Returns what ``Handler.handle`` returns: whether the filters let the record through.
        """
        attributes = record.__dict__
        if attributes.get(self.payload_key) is None and type(attributes.get("extra")) is not dict:
            return False  # (an "extra" dict: a record loguru made, see emit)
        if self.filters:
            rv = self.filter(record)
            if not rv:
                return False
            if isinstance(rv, logging.LogRecord):  # Python 3.12+: a filter may return a new record
                record = rv
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record's event (see the class docstring). Never raises, never blocks."""
        attributes = record.__dict__
        payload = attributes.get(self.payload_key)
        fields = None
        if payload is None:
            extra = _loguru_extra(record)  # logger.add(HtEventsHandler(...)) under loguru
            if extra is None or extra.get(self.payload_key) is None:
                return
            payload = extra[self.payload_key]
            fields = ids_beside(payload, extra)  # logger.contextualize(user_id=...)
        origin = self._origins[record.name]
        if origin is None:  # the package's own logger
            return
        identity = attributes.get(_CAPTURED, _NOT_CAPTURED)
        if identity is _NOT_CAPTURED:  # the common case: no QueueHandler in front
            identity = calling_identity()
        message = record.msg  # the event a track names by default
        if type(message) is not str or record.args:
            message = _message_of(record)
        send_payload(
            self.client,
            payload,
            self.payload_key,
            origin,
            message,
            record.created,  # the timestamp
            fields,
            identity,
        )

    def flush(self) -> None:
        """Wait until what is queued is delivered or failed for good (at most
        ``shutdown_timeout``).

        Under the logging module's lock (``dictConfig`` replacing this handler) the flush is
        only asked for, and returns at once: that is not a wait that timed out, so the
        ``close()`` that follows still gives the thread its full ``shutdown_timeout`` (on 3.9
        to 3.11 it closed with a deadline of 0, and a second ``dictConfig`` lost the events
        still queued).
        """
        if not self.client.flush() and not holds_logging_lock():
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
