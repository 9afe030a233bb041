"""The exceptions users see, each saying what went wrong and what to do about it."""

from __future__ import annotations

from typing import Optional

__all__ = ["DeliveryError", "HtEventsError", "MessageTooLargeError"]


class HtEventsError(Exception):
    """Base class of the errors this package reports, so one ``except`` catches them all."""


class MessageTooLargeError(HtEventsError, ValueError):
    """A message is over the API's 32 KB limit as JSON; it is rejected before it is queued."""


class DeliveryError(HtEventsError):
    """A message could not be delivered, and never will be by this process.

    It is what ``callback(error, message)`` and ``on_error(error, messages)`` receive. ``reason``
    is the key :meth:`HtEvents.stats` counts it under in ``failed_by_reason`` or
    ``dropped_by_reason`` (``"http_4xx"``, ``"retries_exhausted"``, ``"shutdown_timeout"``,
    ``"queue_full"``, ``"after_close"``, ``"spool_full"``, ``"internal_error"``; the README
    lists them all), so handling code can branch on it; ``status`` is the last HTTP status when
    there was one, and ``attempts`` how many requests were made.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
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
            reason="internal_error",
        )
