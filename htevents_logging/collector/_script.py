"""Scripted answers: how a test makes the collector fail on command.

Each action both answers a request (:meth:`answer`) and describes what it did
(:meth:`outcome`, :meth:`describe`), so the server needs no list of kinds: a new way of failing
is a new class here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

from typing_extensions import Protocol

from ._contract import Verdict, error_body

__all__ = ["NORMAL", "Action", "Answer", "Cut", "Drop", "Exchange", "Hang", "Reply"]


class Exchange(Protocol):
    """What an answer can do to the connection of the request it answers."""

    def answer(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Send a complete answer."""
        ...

    def answer_cut(self, status: int, body: bytes) -> None:
        """Send the status, the headers and half of ``body``, then close the connection."""
        ...

    def hang_up(self) -> None:
        """Close the connection without an answer."""
        ...


#: What is recorded of a request: whether its events were accepted, the status answered
#: (0 for none), and why it was refused (None when accepted).
Outcome = tuple[bool, int, Optional[str]]


class _Scripted:
    """What the scripted actions share: a refusal that names the action."""

    def describe(self) -> str:
        """What the action does, as recorded in a request's ``error``."""
        raise NotImplementedError

    def outcome(self, verdict: Verdict) -> Outcome:
        """Refused, with this action's description (or the request's own error)."""
        return False, 0, verdict.error or self.describe()


def _check_status(kind: str, status: object) -> None:
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError(f"{kind} status must be an HTTP status from 100 to 599, got {status!r}")


@dataclass(frozen=True)
class Reply(_Scripted):
    """Answer the next request with this status, body and headers instead of the normal answer.

    Use it to see how a client handles what the real endpoint can answer: ``Reply(500)`` for an
    outage, ``Reply(429, headers={"Retry-After": "1"})`` for rate limiting, ``Reply(400)`` for a
    rejection that must not be retried. A 2xx reply still validates the request and, when it is
    valid, records its events (a client that treats ``201`` as success has delivered them); any
    other status records the request but none of its events. ``Content-Length`` is always set
    by the collector; a ``Content-Type`` in ``headers`` overrides ``content_type``. ``delay``
    (seconds) answers that much later, like a slow server.
    """

    status: int = 200
    body: Union[bytes, str] = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0

    def __post_init__(self) -> None:
        _check_status("Reply", self.status)
        if self.delay < 0:
            raise ValueError(f"Reply delay must be >= 0, got {self.delay!r}")

    def describe(self) -> str:
        """``scripted Reply(<status>)``."""
        return f"scripted Reply({self.status})"

    def outcome(self, verdict: Verdict) -> Outcome:
        """Accepted when 2xx and the request is valid; the scripted status either way."""
        if 200 <= self.status < 300:
            return verdict.error is None, self.status, verdict.error
        return False, self.status, verdict.error or self.describe()

    def answer(self, exchange: Exchange, verdict: Verdict, stopping: threading.Event) -> None:
        """Send the scripted answer (after ``delay``, or at once when the collector stops)."""
        if self.delay:
            stopping.wait(self.delay)
        body = self.body.encode("utf-8") if isinstance(self.body, str) else self.body
        exchange.answer(self.status, body, content_type=self.content_type, headers=self.headers)


@dataclass(frozen=True)
class Hang(_Scripted):
    """Read the next request and never answer it, like a server that stopped responding.

    The client sees its own read timeout. The connection is closed without an answer after
    ``seconds``, or as soon as the collector stops, so a test that scripts a long hang still
    finishes quickly. This is how a client's ``flush(timeout)``/``close(timeout)`` deadlines are
    checked.
    """

    seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"Hang seconds must be >= 0, got {self.seconds!r}")

    def describe(self) -> str:
        """``scripted Hang(<seconds>): no answer``."""
        return f"scripted Hang({self.seconds}): no answer"

    def answer(self, exchange: Exchange, verdict: Verdict, stopping: threading.Event) -> None:
        """Wait ``seconds`` (or until the collector stops), then hang up."""
        stopping.wait(self.seconds)
        exchange.hang_up()


@dataclass(frozen=True)
class Drop(_Scripted):
    """Read the next request, then close the connection without any answer.

    The client sees a connection error (with ``requests``: ``requests.ConnectionError``), as
    when a load balancer or proxy drops a connection mid-request. Such requests are retryable.
    """

    def describe(self) -> str:
        """``scripted Drop(): connection closed without an answer``."""
        return "scripted Drop(): connection closed without an answer"

    def answer(self, exchange: Exchange, verdict: Verdict, stopping: threading.Event) -> None:
        """Hang up at once."""
        exchange.hang_up()


@dataclass(frozen=True)
class Cut(_Scripted):
    """Start an answer, then close the connection before its body is complete.

    The status line and headers arrive (with a ``Content-Length`` the body never reaches), as
    when a proxy or a restarting server cuts a connection mid-answer. A client must still
    decide by the status, and must not lose the batch while reading what is left of the body.
    """

    status: int = 503
    body: bytes = b'{"error":"service unavailable"}'

    def __post_init__(self) -> None:
        _check_status("Cut", self.status)

    def describe(self) -> str:
        """``scripted Cut(<status>): answer cut off mid-body``."""
        return f"scripted Cut({self.status}): answer cut off mid-body"

    def outcome(self, verdict: Verdict) -> Outcome:
        """Refused, with the scripted status."""
        return False, self.status, verdict.error or self.describe()

    def answer(self, exchange: Exchange, verdict: Verdict, stopping: threading.Event) -> None:
        """Send the status and headers, half the body, and hang up."""
        exchange.answer_cut(self.status, self.body)


class _Normal:
    """The answer when nothing is scripted: the endpoint's own (see ``judge``)."""

    def outcome(self, verdict: Verdict) -> Outcome:
        """Accepted exactly when the request is valid."""
        return verdict.error is None, verdict.status, verdict.error

    def answer(self, exchange: Exchange, verdict: Verdict, stopping: threading.Event) -> None:
        """``{}`` when valid, else ``{"error": "..."}``, with the verdict's status."""
        body = b"{}" if verdict.error is None else error_body(verdict.error)
        exchange.answer(verdict.status, body, headers=verdict.headers)


#: The normal answer.
NORMAL = _Normal()

#: One scripted answer: see :meth:`Collector.script`.
Action = Union[Reply, Hang, Drop, Cut]
#: Any answer: a scripted one, or :data:`NORMAL`.
Answer = Union[Reply, Hang, Drop, Cut, _Normal]
