"""What travels through the queue: one encoded message and who to tell about its fate."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

from typing_extensions import Protocol

from .._settings import ErrorHandler

__all__ = ["Callback", "Draft", "Envelope", "FlushRequest", "Queueable", "messages_of"]

#: ``callback(error, message)``: ``error`` is ``None`` once the message is delivered.
Callback = Callable[[Optional[BaseException], dict[str, Any]], Any]


class Envelope:
    """One message, already encoded, as the queue carries it.

    The message dict is kept only when someone will be told about it (a callback or an
    ``on_error``); otherwise the encoded bytes are all the transport needs, which keeps a full
    queue small.
    """

    __slots__ = ("callback", "data", "message", "on_error")

    def __init__(
        self,
        data: bytes,
        message: Optional[dict[str, Any]] = None,
        callback: Optional[Callback] = None,
        on_error: Optional[ErrorHandler] = None,
    ) -> None:
        self.data = data
        self.message = message
        self.callback = callback
        self.on_error = on_error

    def as_message(self) -> dict[str, Any]:
        """The message as sent (decoded from the wire bytes when the dict was not kept)."""
        if self.message is not None:
            return self.message
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded


class Draft(Protocol):
    """A message still to be built, as the logging front-ends queue it.

    The calling thread only captures what it must (the payload, the time, the log message, the
    bound identity); building, checking and encoding happen on the transport thread, in
    :meth:`prepare`, which returns ``None`` for a message it rejected (and reported).
    """

    on_error: Optional[ErrorHandler]

    def prepare(self) -> Optional[Envelope]:
        """Build and encode the message; ``None`` when it is invalid (counted and reported)."""
        ...


#: What the transport's queue carries besides its own markers.
Queueable = Union[Envelope, Draft]


def messages_of(batch: Sequence[Envelope]) -> list[dict[str, Any]]:
    """The messages of a batch, for ``on_error``."""
    return [envelope.as_message() for envelope in batch]


class FlushRequest:
    """A marker put on the queue by ``flush()``: ``done`` is set once everything before it was
    sent, and ``ok`` says whether all of it was delivered or failed for good (False when some
    is kept in the spool for a later try)."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = True
