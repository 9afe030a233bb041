"""``HtEventsSink``: a loguru sink that sends the log calls carrying an event.

loguru keeps what is bound to a call in ``record["extra"]``: both
``logger.bind(htevent={...}).info("Order completed")`` and
``logger.info("Order completed", htevent={...})`` put the payload there, and
``logger.contextualize(user_id=...)`` the identity. The sink reads them on the calling thread
and hands a draft to the shared transport, as the other front-ends do.

loguru is never imported here: a sink is any object with ``write``, so the package imports whole
without loguru installed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Mapping
from typing import Any, Callable, Optional

from typing_extensions import Unpack

from .._client import ClientSettings, HtEvents
from .._flushing import off_the_loop
from .._identity import current_identity
from .shared import (
    DEFAULT_PAYLOAD_KEY,
    LoggerOrigins,
    ids_beside,
    make_client,
    send_payload,
)

__all__ = ["HtEventsSink"]


class _Done:
    """An awaitable that is already finished: what ``complete()`` returns once it flushed."""

    def __await__(self) -> Generator[Any, None, bool]:
        return True
        yield  # pragma: no cover - makes this a generator


async def _template() -> None:  # pragma: no cover - never called: its code object is borrowed
    pass


class _Completion:
    """The sink's ``complete``: loguru awaits it in ``await logger.complete()``, and calls it
    (without awaiting) in a plain ``logger.complete()``.

    loguru asks for it only when ``inspect.iscoroutinefunction`` says it is one, so this object
    looks like a coroutine function: it carries the attributes ``inspect`` reads of a function,
    with the code object of a coroutine function. Called on a thread with a running event loop
    it returns an awaitable that flushes in a worker thread (the loop goes on); called
    elsewhere it flushes at once, so a plain ``logger.complete()`` delivers too. (Python 3.9's
    ``inspect`` accepts only real functions, so there loguru never calls it: call
    ``sink.client.flush()``.)
    """

    def __init__(self, flush: Callable[[], bool]) -> None:
        self._flush = flush
        # What inspect._signature_is_functionlike reads (Python 3.10+).
        self.__name__ = "complete"
        self.__code__ = _template.__code__
        self.__defaults__ = None
        self.__kwdefaults__ = None
        self.__annotations__: dict[str, Any] = {}

    def __call__(self) -> Awaitable[bool]:
        try:
            import asyncio

            asyncio.get_running_loop()
        except RuntimeError:  # no loop here: flush now
            self._flush()
            return _Done()
        return off_the_loop(self._flush)


class HtEventsSink:
    """A loguru sink that turns log calls with an ``htevent`` payload into events.

    >>> from loguru import logger
    >>> logger.add(HtEventsSink(write_key="..."))   # or HtEventsSink(client=htevents)
    >>> logger.bind(htevent={"userId": "123"}).info("Order completed")
    >>> logger.info("Order completed", htevent={"properties": {"total": 29.99}})

    Give it any :class:`~htevents_logging.HtEvents` setting as a keyword, or an existing
    client as ``client=``, not both. The payload (``payload_key``, ``"htevent"`` by default) is
    read from the record's ``extra``: a mapping as for :meth:`HtEvents.track` plus an optional
    ``type``. ``event`` defaults to the log message, ``timestamp`` to the record's time. When
    the payload names no id, ``user_id`` / ``anonymous_id`` from ``extra``
    (``logger.contextualize(user_id=...)``, ``logger.bind(user_id=...)``) identify the user,
    and failing those :func:`htevents_logging.bind` does. Records without a payload cost one
    dictionary lookup.

    ``logger.remove()`` closes the client the sink made (flushing it), and
    ``logger.complete()`` (or ``await logger.complete()``) flushes it. The sink has no
    ``flush`` method on purpose: loguru calls a sink's ``flush`` after every record, which
    would wait on the network in each logging call (``sink.client.flush()`` is there).

    It never raises into loguru: an invalid payload is counted as ``rejected`` and reported by
    one rate-limited WARNING on the ``htevents_logging`` logger. With
    ``logger.add(..., enqueue=True)`` the sink runs on loguru's thread, where ``bind()`` is not
    set: use ``contextualize``.
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
            "HtEventsSink", client, write_key, settings, payload_key
        )
        #: The key of ``extra`` that carries an event.
        self.payload_key = payload_key
        self._origins = LoggerOrigins()
        #: loguru's ``complete`` hook (see :class:`_Completion`).
        self.complete = _Completion(self.client.flush)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} payload_key={self.payload_key!r} {self.client!r}>"

    def write(self, message: Any) -> None:
        """Send the record's event, if it carries one (loguru calls this for each record)."""
        try:
            record = message.record
            extra: Mapping[str, Any] = record["extra"]
            payload = extra.get(self.payload_key)
        except Exception:  # not a loguru message: nothing to send
            return
        if payload is None:
            return
        origin = self._origins[record["name"] or ""]
        if origin is None:  # the package's own modules
            return
        send_payload(
            self.client,
            payload,
            self.payload_key,
            origin,
            record["message"],  # the event a track names by default
            record["time"],  # the timestamp (formatted on the transport thread)
            ids_beside(payload, extra),
            current_identity(),
        )

    def stop(self) -> None:
        """What ``logger.remove()`` calls: close the client this sink made (flushing it
        first, within ``shutdown_timeout``), or flush the one it was given."""
        self.close()

    def close(self, timeout: Optional[float] = None) -> bool:
        """Close the client this sink made (flushing it first), or only flush the one it was
        given; True when everything queued was delivered or failed for good in time."""
        if self._owns_client:
            return self.client.close(timeout)
        return self.client.flush(timeout)
