"""What travels through the queue: one message and who to tell about its fate."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

from typing_extensions import Protocol

from ..typing import Callback, ErrorHandler, Message

__all__ = ["Envelope", "Queueable", "messages_of"]


class Queueable(Protocol):
    """A message as a front-end hands it over: built already (an :class:`Envelope`), or still
    to be built (a logged event, built on the transport thread).

    The calling thread only captures what it must (the payload, the time, the log message, the
    bound identity); building, checking and encoding happen in :meth:`prepare`, which returns
    ``None`` for a message it rejected (and reported).
    """

    @property
    def on_error(self) -> Optional[ErrorHandler]:
        """Who is told when the message fails (the client's ``on_error``)."""
        ...

    @property
    def callback(self) -> Optional[Callback]:
        """Who is told of the message's outcome (a direct call's callback)."""
        ...

    def prepare(self) -> Optional[Envelope]:
        """The message built and encoded; ``None`` when it is invalid (counted and reported)."""
        ...


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
        message: Optional[Message] = None,
        callback: Optional[Callback] = None,
        on_error: Optional[ErrorHandler] = None,
    ) -> None:
        self.data = data
        self.message = message
        self.callback = callback
        self.on_error = on_error

    def prepare(self) -> Envelope:
        """Itself: it is built already."""
        return self

    def as_message(self) -> Message:
        """The message as sent (decoded from the wire bytes when the dict was not kept)."""
        if self.message is not None:
            return self.message
        decoded: Message = json.loads(self.data)
        return decoded


def messages_of(batch: Sequence[Envelope]) -> list[Message]:
    """The messages of a batch, for ``on_error``."""
    return [envelope.as_message() for envelope in batch]
