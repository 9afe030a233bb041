"""The endpoint: judges each request, answers it as scripted, and records what it received.

It owns the record (requests, accepted events), the queue of scripted answers, and the two
outputs (the JSONL file and the echo stream). The server hands it each connection; the
:class:`~htevents_logging.collector.Collector` facade reads the record.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional, TextIO

from ._contract import Rules, error_body, find_header, judge
from ._format import format_event
from ._script import NORMAL, Action, Answer
from ._server import Connection

__all__ = ["Endpoint", "ReceivedRequest", "printable"]


def printable(line: str) -> str:
    """``line`` safe for a terminal: every control, format or separator character (ESC, C1
    controls, U+202E and the like, which a client can put in any id or property) becomes a
    visible ``\\uXXXX`` escape."""
    if line.isprintable():
        return line
    return "".join(
        char
        if char.isprintable() or char == " "
        else f"\\u{ord(char):04x}"
        if ord(char) <= 0xFFFF
        else f"\\U{ord(char):08x}"
        for char in line
    )


# Whatever the limits, a request body larger than this is not even read: the connection is
# answered 413 and closed, so a runaway client cannot make the collector buffer gigabytes.
_MIN_READ_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, repr=False)
class ReceivedRequest:
    """One HTTP request as the collector received it, and what it answered.

    Tests use these to check the wire itself (headers, gzip, ``sentAt`` refreshed on retries,
    the same ``messageId`` on every attempt); ``collect`` uses ``error`` to report malformed
    requests. ``error is None`` exactly when the request's events were accepted and recorded.
    The repr leaves out headers and body, because they carry the write key.
    """

    method: str
    #: The request target as sent, query string included.
    path: str
    #: Headers in the order received, names as the client spelled them.
    headers: list[tuple[str, str]]
    #: The body as received: still gzipped when it was sent gzipped.
    body: bytes
    #: The decoded (gunzipped, parsed) JSON body, or None when it could not be decoded.
    json: Optional[Any]
    #: The status answered; 0 when the request was scripted to ``Hang`` or ``Drop``.
    status: int
    #: Why the request was rejected (or that a scripted action refused it), or None.
    error: Optional[str]
    #: ``time.monotonic()`` when the request had been read, to measure retry backoff.
    received_at: float
    #: The client's port: requests with the same one came over one kept-alive connection.
    client_port: int = 0

    def header(self, name: str) -> Optional[str]:
        """The value of header ``name``, matched case-insensitively, or None if it was not sent."""
        return find_header(self.headers, name)

    def __repr__(self) -> str:
        return (
            f"ReceivedRequest(method={self.method!r}, path={self.path!r}, status={self.status}, "
            f"error={self.error!r}, body_bytes={len(self.body)}, received_at={self.received_at})"
        )


class Endpoint:
    """Judges, answers and records; thread-safe (one server thread per connection)."""

    def __init__(
        self, rules: Rules, stopping: threading.Event, echo: Optional[TextIO] = None
    ) -> None:
        self.rules = rules
        self._stopping = stopping
        self._out: Optional[IO[str]] = None
        self._echo = echo
        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._events: list[dict[str, Any]] = []
        self._script: deque[Action] = deque()

    # -- the server's side ----------------------------------------------------------------

    def serve(self, connection: Connection) -> None:
        """Handle one request on a server thread: read, judge, record, then answer."""
        read_limit = max(_MIN_READ_LIMIT, 4 * self.rules.max_body_bytes)
        request, unreadable = connection.read_request(read_limit)
        received_at = time.monotonic()
        verdict = unreadable or judge(request, self.rules)
        with self._cond:
            answer: Answer = self._script.popleft() if self._script else NORMAL
        accepted, status, error = answer.outcome(verdict)
        problem = self._record(
            ReceivedRequest(
                method=request.method,
                path=request.target,
                headers=list(request.headers),
                body=request.body,
                json=verdict.document,
                status=status,
                error=error,
                received_at=received_at,
                client_port=connection.client_port,
            ),
            verdict.events if accepted else [],
        )
        if problem is not None:
            connection.answer(500, error_body(problem))
            return
        answer.answer(connection, verdict, self._stopping)

    def _record(self, request: ReceivedRequest, events: list[dict[str, Any]]) -> Optional[str]:
        """Record a request and its accepted events; the reason when the events could not be
        written to ``out`` (then none is accepted, and the client is told with a 500)."""
        with self._cond:
            problem = self._write_out(events)
            if problem is not None:
                request = dataclasses.replace(request, status=500, error=problem)
                events = []
            self._requests.append(request)
            self._events.extend(events)
            if self._echo is not None:
                if request.error is None:
                    lines = [format_event(event) for event in events]
                else:
                    lines = [f"rejected request: {request.error}"]
                self._write_echo(lines)
            self._cond.notify_all()
        return problem

    def _write_out(self, events: list[dict[str, Any]]) -> Optional[str]:
        out = self._out
        if out is None or not events:
            return None
        try:
            for event in events:
                out.write(json.dumps(event, ensure_ascii=False) + "\n")
            out.flush()
        except (OSError, ValueError) as error:
            return f"the collector cannot write its --out file: {error}"
        return None

    def _write_echo(self, lines: list[str]) -> None:
        echo = self._echo
        if echo is None or not lines:
            return
        text = "".join(printable(line) + "\n" for line in lines)
        try:
            try:
                echo.write(text)
            except UnicodeEncodeError:  # e.g. an ASCII-only terminal
                echo.write(text.encode("ascii", "backslashreplace").decode("ascii"))
            echo.flush()
        except (OSError, ValueError):
            self._echo = None  # the stream is gone (closed pipe); keep serving without it

    # -- the facade's side ----------------------------------------------------------------

    def script(self, actions: tuple[Action, ...]) -> None:
        """Queue answers for the next requests, first in first out."""
        with self._cond:
            self._script.extend(actions)

    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far (a copy)."""
        with self._cond:
            return list(self._requests)

    def events(self) -> list[dict[str, Any]]:
        """Every accepted event so far (a copy)."""
        with self._cond:
            return list(self._events)

    def counts(self) -> tuple[int, int]:
        """How many requests and events were recorded."""
        with self._cond:
            return len(self._requests), len(self._events)

    def wait(self, enough: Callable[[int, int], bool], timeout: float) -> bool:
        """Wait until ``enough(requests, events)``; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(
                lambda: enough(len(self._requests), len(self._events)), timeout
            )

    def clear(self) -> None:
        """Forget the recorded requests and events (pending scripted actions are kept)."""
        with self._cond:
            self._requests.clear()
            self._events.clear()

    def write_to(self, out: IO[str]) -> None:
        """Append every accepted event to ``out`` from now on, one JSON object per line."""
        with self._cond:
            self._out = out

    def close_outputs(self) -> None:
        """Close the JSONL file; nothing more is written to it (a file that cannot be
        written, a full disk, is closed all the same)."""
        with self._cond:
            out, self._out = self._out, None
        if out is not None:
            try:
                out.close()
            except OSError:
                pass
