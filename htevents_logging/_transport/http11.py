"""One HTTP/1.1 exchange on a kept-alive connection: the bytes of a POST and of its answer.

Why not ``http.client``: at the default batch of 15 events a request is sent every 15 events,
and ``http.client`` spends 140-200 µs of CPU on each (checking every header it writes, parsing
the answer's headers with the ``email`` package), about 10 µs per event, held with the GIL
and so taken from the application's threads. The request this package sends is always the
same: a POST of a known length with a fixed set of headers. So its head is written once, and
the answer is read with a buffered reader and a few splits: about 35 µs per request
(``benchmarks/README.md``, "Where the time goes").

What is read of an answer is what the sender needs: the status, the headers (``Retry-After``,
``Location``), and a bounded part of the body. Bodies framed by ``Content-Length``, by
chunks, or by the end of the connection are all read; a connection is reused only when its
answer was read to its end and neither side asked to close it. Anything malformed raises
:class:`http.client.HTTPException` (or ``OSError`` from the socket), which the sender counts
as one failed attempt, as it did for ``http.client``.
"""

from __future__ import annotations

import http.client
import io
import select
import socket
import ssl
from collections.abc import Iterator, Mapping
from typing import Optional

__all__ = ["Connection", "Exchange", "Headers", "IdleConnections"]

# The limits http.client keeps: a line, and the number of header lines of one answer.
_MAX_LINE = 65536
_MAX_HEADERS = 100
_NO_BODY = frozenset({204, 304})


class Connection:
    """A socket (TLS when ``context`` is given) to one host, with the fixed head of the POST.

    ``head`` is the request's head without its ``Content-Length`` (which ends it), encoded
    once per path. One thread at a time uses a connection.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        context: Optional[ssl.SSLContext],
    ) -> None:
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self._reader: io.BufferedReader = sock.makefile("rb")

    def settimeout(self, timeout: float) -> None:
        """Bound each socket operation of the next exchange."""
        self.sock.settimeout(timeout)

    def send_request(self, head: bytes, body: bytes) -> None:
        """Send the request (its answer is read by :meth:`answer`, now or a little later)."""
        self.sock.sendall(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))

    def answer(self, idle: IdleConnections) -> Exchange:
        """Read the answer's status line and headers. Closing the answer gives the connection
        back to ``idle`` when it can carry another request."""
        return Exchange(self, self._reader, idle)

    def dropped(self) -> bool:
        """Whether the server closed this idle connection (or sent what no answer should
        leave): it is then readable. The check urllib3 makes too."""
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return bool(poller.poll(0))
            return bool(select.select([self.sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        """Close the socket (and its reader)."""
        try:
            self._reader.close()
        finally:
            self.sock.close()


class IdleConnections:
    """The kept-alive connections no request is using. Threads sending side by side
    (``sync_mode``) each take one of their own, or open one."""

    def __init__(self) -> None:
        self._connections: list[Connection] = []

    def take(self) -> Optional[Connection]:
        """An idle connection the server has not closed (those are closed and passed over)."""
        while True:
            try:
                connection = self._connections.pop()  # atomic: no two threads get the same one
            except IndexError:
                return None
            if not connection.dropped():
                return connection
            connection.close()

    def give_back(self, connection: Connection) -> None:
        """Keep ``connection`` for the next request."""
        self._connections.append(connection)

    def close(self) -> None:
        """Close every idle connection."""
        while True:
            try:
                self._connections.pop().close()
            except IndexError:
                return


class Headers(Mapping[str, str]):
    """An answer's headers, looked up without regard to case (as ``requests`` gives them),
    each under the name the server sent; a header sent twice reads as its values joined by
    ", ". Our own, so the direct channel does not import ``requests``."""

    def __init__(self) -> None:
        self._by_lower_name: dict[str, tuple[str, str]] = {}

    def add(self, name: str, value: str) -> None:
        """Take one header line's name and value."""
        key = name.lower()
        before = self._by_lower_name.get(key)
        self._by_lower_name[key] = (
            (name, value) if before is None else (before[0], f"{before[1]}, {value}")
        )

    def __getitem__(self, name: str) -> str:
        return self._by_lower_name[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._by_lower_name.values())

    def __len__(self) -> int:
        return len(self._by_lower_name)

    def __repr__(self) -> str:
        return repr(dict(self.items()))


def _line(reader: io.BufferedReader) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise http.client.LineTooLong("answer line")
    return line


class Exchange:
    """An answer being read: its status and headers at once, its body on demand.

    It reads as ``requests.Response`` and its raw stream do for the sender: ``status_code``,
    ``headers`` (case-insensitive), ``encoding``, ``raw.read(amount)`` and ``close()``.
    """

    encoding: Optional[str] = None

    def __init__(
        self, connection: Connection, reader: io.BufferedReader, idle: IdleConnections
    ) -> None:
        self._connection = connection
        self._reader = reader
        self._idle = idle
        while True:
            status_code, version = self._status_line()
            headers = self._headers()
            if not 100 <= status_code < 200:
                break  # 1xx: an interim answer; the final one follows
        self.status_code = status_code
        self.headers = headers
        tokens = headers.get("Connection", "").lower()
        self._keep = version == b"HTTP/1.1" and "close" not in tokens
        self._chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self._chunk_left = 0
        self._left: Optional[int] = None  # body bytes still to read; None: to the end
        if status_code in _NO_BODY:
            self._left = 0
        elif not self._chunked:
            length = headers.get("Content-Length")
            if length is not None:
                if not length.strip().isdigit():
                    raise http.client.HTTPException(f"bad Content-Length {length!r}")
                self._left = int(length)
            else:
                self._keep = False  # the body ends with the connection
        self._done = self._left == 0

    @property
    def raw(self) -> Exchange:
        """Itself: the body reads as a raw stream does."""
        return self

    def _status_line(self) -> tuple[int, bytes]:
        line = _line(self._reader)
        if not line:
            raise http.client.RemoteDisconnected("the server closed the connection unanswered")
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise http.client.BadStatusLine(line.decode("latin-1", "replace").strip())
        return int(parts[1]), parts[0]

    def _headers(self) -> Headers:
        headers = Headers()
        for _ in range(_MAX_HEADERS + 1):
            line = _line(self._reader)
            if line in (b"\r\n", b"\n", b""):
                return headers
            name, _, value = line.decode("latin-1").partition(":")
            headers.add(name.strip(), value.strip())
        raise http.client.HTTPException(f"more than {_MAX_HEADERS} headers")

    def read(self, amount: int, decode_content: bool = True) -> bytes:
        """Up to ``amount`` bytes of the body (sent unencoded: no Accept-Encoding is asked).

        Raises ``IncompleteRead`` when the connection ends before the body does, as urllib3
        does too (the sender then leaves the body out of its error).
        """
        if self._done:
            return b""
        if self._chunked:
            return self._read_chunks(amount)
        reader = self._reader
        if self._left is None:
            data = reader.read(amount)
            if len(data) < amount:
                self._done = True
            return data
        want = min(amount, self._left)
        data = reader.read(want)
        self._left -= len(data)
        if len(data) < want:
            raise http.client.IncompleteRead(data, self._left)
        self._done = self._left == 0
        return data

    def _read_chunks(self, amount: int) -> bytes:
        reader = self._reader
        parts: list[bytes] = []
        while amount > 0:
            if self._chunk_left == 0:
                size = _line(reader).split(b";", 1)[0].strip()
                try:
                    self._chunk_left = int(size, 16)
                except ValueError:
                    raise http.client.IncompleteRead(b"".join(parts)) from None
                if self._chunk_left == 0:  # the last chunk: trailers, then the end
                    while _line(reader) not in (b"\r\n", b"\n", b""):
                        pass
                    self._done = True
                    break
            want = min(amount, self._chunk_left)
            data = reader.read(want)
            if len(data) < want:
                raise http.client.IncompleteRead(b"".join(parts) + data)
            parts.append(data)
            amount -= want
            self._chunk_left -= want
            if self._chunk_left == 0:
                _line(reader)  # the CRLF after a chunk
        return b"".join(parts)

    def close(self) -> None:
        """Give the connection back when the answer was read to its end and neither side asked
        to close it; else close it (a long answer is cut off, and its connection cannot carry
        another request)."""
        if self._done and self._keep:
            self._idle.give_back(self._connection)
        else:
            self._connection.close()
