"""``HtEventsProcessor``: a structlog processor that sends the log calls carrying an event.

Put it after ``merge_contextvars`` and before the renderer::

    structlog.configure(processors=[
        structlog.contextvars.merge_contextvars,
        HtEventsProcessor(write_key="HT_WRITE_KEY"),   # or HtEventsProcessor(client=htevents)
        structlog.processors.JSONRenderer(),
    ])
    structlog.get_logger().info(
        "Order completed", htevent={"userId": "123", "properties": {"total": 29.99}}
    )

This module does not import structlog: a processor is any callable, so the stdlib-only install
can import the package whole.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Optional

from typing_extensions import Unpack

from .._client import ClientSettings, HtEvents
from .._diagnostics import log
from .._identity import current_identity
from .shared import (
    DEFAULT_PAYLOAD_KEY,
    Origin,
    ids_beside,
    make_client,
    reject,
    send_payload,
)

__all__ = ["HtEventsProcessor"]


class HtEventsProcessor:
    """A structlog processor that turns log calls with an ``htevent=`` payload into events.

    Give it any :class:`~htevents_logging.HtEvents` setting as a keyword, or an existing
    client as ``client=``, not both. Front-ends built with equal settings share one
    background thread.

    For each call it pops ``payload_key`` from the event dict (so renderers never print it)
    and, when it was there, builds and queues the message; the event dict is returned either
    way. The payload is a mapping as for :meth:`HtEvents.track` plus an optional ``type``
    (``"track"`` by default). ``event`` defaults to the log event string, ``timestamp`` to the
    time of the call. When the payload names neither ``userId`` nor ``anonymousId``, the event
    dict's ``user_id`` / ``anonymous_id`` are used (left in the event dict), so
    ``structlog.contextvars.bind_contextvars(user_id=...)`` with ``merge_contextvars`` before
    this processor identifies the user; failing those, :func:`htevents_logging.bind` does.

    >>> structlog.configure(processors=[
    ...     structlog.contextvars.merge_contextvars,
    ...     HtEventsProcessor(write_key="..."),
    ...     structlog.processors.JSONRenderer(),
    ... ])
    >>> structlog.contextvars.bind_contextvars(user_id="123")
    >>> structlog.get_logger().info("Order completed", htevent={"properties": {"total": 9}})

    It never raises: an invalid payload is dropped, counted as ``rejected`` in
    ``client.stats()`` and reported with one (rate-limited) WARNING on the ``htevents_logging``
    logger. When structlog also renders through a stdlib :class:`HtEventsHandler`, the payload
    was popped here, so each event is sent once.
    """

    def __init__(
        self,
        *,
        client: Optional[HtEvents] = None,
        payload_key: str = DEFAULT_PAYLOAD_KEY,
        write_key: Optional[str] = None,
        **settings: Unpack[ClientSettings],
    ) -> None:
        self.client, self._owns_client = make_client(
            "HtEventsProcessor", client, write_key, settings, payload_key
        )
        #: The event-dict key that carries an event.
        self.payload_key = payload_key
        self._warned_misplaced = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} payload_key={self.payload_key!r} {self.client!r}>"

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Pop the payload and send it (see the class docstring); return ``event_dict``."""
        if not isinstance(event_dict, MutableMapping):
            self._warn_misplaced(event_dict)
            return event_dict
        payload = event_dict.pop(self.payload_key, None)
        if payload is None:
            return event_dict
        origin: Origin = ("structlog", "", "")
        try:
            event = event_dict.get("event")
            name = event_dict.get("logger") or getattr(logger, "name", None) or ""
            origin = ("structlog", str(name), str(event))
            fields = ids_beside(payload, event_dict)
        except Exception as error:  # an event or payload that cannot even be read
            reject(self.client, error, self.payload_key, origin)
            return event_dict
        send_payload(
            self.client,
            payload,
            self.payload_key,
            origin,
            None if event is None else origin[2],  # the event a track names by default
            None,  # the timestamp: now
            fields,
            current_identity(),
        )
        return event_dict

    def _warn_misplaced(self, rendered: object) -> None:
        """Placed after a renderer, the processor gets a string: say so once, and let the log
        line through untouched rather than fail the logging call."""
        if not self._warned_misplaced:
            self._warned_misplaced = True
            log(
                logging.WARNING,
                "htevents-logging: HtEventsProcessor received a %s instead of an event dict: it "
                "sits after a renderer (such as JSONRenderer) in the processor chain; put it "
                "before the renderer, or no event is sent",
                type(rendered).__name__,
            )

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until what is queued is delivered or failed for good, at most ``timeout``
        seconds (default: ``shutdown_timeout``); True when it all was."""
        return self.client.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> bool:
        """Close the client this processor made (flushing it first), or only flush the one it
        was given; True when everything queued was delivered or failed for good in time."""
        if self._owns_client:
            return self.client.close(timeout)
        return self.client.flush(timeout)
