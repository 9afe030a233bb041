"""The exceptions users see, and the reasons a message is not delivered.

Every outcome other than "delivered" has a :class:`Reason`. It is what ``stats()`` counts under
``failed_by_reason``, ``dropped_by_reason`` and ``rejected_by_reason``, and what
``DeliveryError.reason`` holds, so handling code can branch on it.
"""

from __future__ import annotations

import enum
from typing import Optional

__all__ = ["DeliveryError", "HtEventsError", "MessageTooLargeError", "Reason"]


class Reason(str, enum.Enum):
    """Why a message was not delivered; a ``str``, so ``error.reason == "queue_full"`` holds.

    Each reason belongs to one counter of ``stats()`` (:attr:`counter`): ``failed`` (a send
    was tried and will not succeed), ``dropped`` (it was never sent) or ``rejected`` (it was
    invalid). This table is the one list of reasons: the README's and ``DeliveryError``'s are
    checked against it by the test suite.
    """

    counter: str

    def __new__(cls, value: str, counter: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.counter = counter
        return member

    def __str__(self) -> str:
        return str(self.value)

    #: The server answered 3xx (a redirect is never followed): check ``host`` and ``path``.
    HTTP_3XX = ("http_3xx", "failed")
    #: The server answered 4xx: the request itself is wrong (write key, host or path).
    HTTP_4XX = ("http_4xx", "failed")
    #: The server answered 501 or 505, which a retry cannot change.
    HTTP_5XX = ("http_5xx", "failed")
    #: Every attempt failed (network errors, timeouts, 408, 429, 5xx).
    RETRIES_EXHAUSTED = ("retries_exhausted", "failed")
    #: ``close()`` or exit came before the server answered.
    SHUTDOWN_TIMEOUT = ("shutdown_timeout", "failed")
    #: A bug in htevents-logging (logged with its traceback).
    INTERNAL_ERROR = ("internal_error", "failed")
    #: The spool file was damaged: it was moved aside (``<spool_path>.damaged-<time>``) and
    #: the messages it held for this process could not be read back.
    SPOOL_DAMAGED = ("spool_damaged", "failed")
    #: The bounded queue was full: the server is slow or down.
    QUEUE_FULL = ("queue_full", "dropped")
    #: Sent after ``close()``.
    AFTER_CLOSE = ("after_close", "dropped")
    #: The spool reached ``spool_max_bytes`` and dropped its oldest messages.
    SPOOL_FULL = ("spool_full", "dropped")
    #: The background thread could not be started (out of threads, or a uWSGI master that
    #: forks without Python's fork hooks).
    NO_THREAD = ("no_thread", "dropped")
    #: An event was logged on the transport thread (in a callback or ``on_error``): it stays a
    #: log line, so a failure can never feed itself with new events.
    TRANSPORT_THREAD = ("transport_thread", "dropped")
    #: A handler or processor was configured without a write key (``HT_WRITE_KEY`` unset): it
    #: sends nothing, so the application still starts (one ERROR says so).
    NO_WRITE_KEY = ("no_write_key", "dropped")
    #: The ``before_send`` hook returned ``None``: the message was filtered out on purpose.
    BEFORE_SEND = ("before_send", "dropped")
    #: The ``before_send`` hook raised (logged with its traceback): the message is not sent,
    #: since a hook that redacts must not let an unredacted message through.
    BEFORE_SEND_ERROR = ("before_send_error", "dropped")
    #: The message was invalid (the warning or exception names the field).
    INVALID = ("invalid", "rejected")
    #: The message was over 32 KB as JSON.
    OVERSIZE = ("oversize", "rejected")


class HtEventsError(Exception):
    """Base class of the errors this package reports, so one ``except`` catches them all."""


class MessageTooLargeError(HtEventsError, ValueError):
    """A message is over the API's 32 KB limit as JSON; it is rejected before it is queued."""


class DeliveryError(HtEventsError):
    """A message could not be delivered, and never will be by this process.

    It is what ``callback(error, message)`` and ``on_error(error, messages)`` receive.
    ``reason`` is a :class:`Reason`, the key :meth:`HtEvents.stats` counts it under:
    ``http_3xx``, ``http_4xx``, ``http_5xx``, ``retries_exhausted``, ``shutdown_timeout``,
    ``internal_error``, ``spool_damaged``, ``queue_full``, ``after_close``, ``spool_full``,
    ``no_thread``, ``transport_thread``, ``no_write_key``, ``before_send`` or
    ``before_send_error``.
    ``status`` is the last HTTP status when there was one, and ``attempts`` how many
    requests were made.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: Reason,
        status: Optional[int] = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.attempts = attempts

    @classmethod
    def internal(cls, count: int, error: BaseException) -> DeliveryError:
        """The failure of ``count`` messages to a bug of ours (reason ``internal_error``):
        reported like any failure, so that a bug never loses messages silently."""
        return cls(
            f"{count} message(s) not delivered: internal error in htevents-logging "
            f"({type(error).__name__}); please report it",
            reason=Reason.INTERNAL_ERROR,
        )
