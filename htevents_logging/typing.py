"""The types of the public API, for annotating code that calls or is called by the package.

``Message`` is what every call returns and every callback receives; ``Callback`` and
``ErrorHandler`` are the shapes of ``callback=`` and ``on_error=``. Import them from here
rather than from the implementation modules, which may move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

from ._message import Message, MessageFields
from ._time import Timestamp

__all__ = ["BeforeSend", "Callback", "ErrorHandler", "Message", "MessageFields", "Timestamp"]

#: ``callback(error, message)``: called once per message; ``error`` is ``None`` once it is
#: delivered, else a :class:`~htevents_logging.DeliveryError`.
Callback = Callable[[Optional[BaseException], Message], Any]

#: ``on_error(error, messages)``: called on the transport thread for every batch of messages
#: that failed for good (or was dropped), with the messages as they were sent.
ErrorHandler = Callable[[BaseException, Sequence[Message]], Any]

#: ``before_send(message) -> message or None``: runs once per message before it is queued (a
#: logged event: on the transport thread); return the message (changed or not) to send it, or
#: ``None`` to drop it.
BeforeSend = Callable[[Message], Optional[Mapping[str, Any]]]
