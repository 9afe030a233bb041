"""HTTP plumbing: a threading HTTP server whose every request goes to one endpoint.

It knows how to read a body (``Content-Length`` or chunked, bounded) and how to answer,
cut an answer short, or hang up; what to answer is the endpoint's business.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from typing_extensions import Protocol

from .._version import __version__
from ._contract import Request, Verdict

__all__ = ["Connection", "Endpoint", "Server", "tls_context"]

#: How long a client may take to complete the TLS handshake.
_HANDSHAKE_TIMEOUT = 10.0
#: How long a connection may stay silent (idle, or in the middle of a request) before it is
#: closed: a client that opens connections and sends nothing cannot hold them forever.
READ_TIMEOUT = 10.0
#: How many connections are served at once; more are closed as soon as they are accepted, so
#: idle connections cannot exhaust the threads or the descriptors.
MAX_CONNECTIONS = 64


def tls_context(
    cert: str, key: Optional[str] = None, client_ca: Optional[str] = None
) -> ssl.SSLContext:
    """A server-side TLS context from a certificate (and key) file; with ``client_ca``,
    clients must present a certificate that CA signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


class Endpoint(Protocol):
    """Serves each request the server reads."""

    def serve(self, connection: Connection) -> None:
        """Read, judge, record and answer one request."""
        ...


class Server(ThreadingHTTPServer):
    """Serves an :class:`Endpoint` on ``address``, one thread per connection, and can close
    every open connection at once (``stopping`` is set by then)."""

    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        address: tuple[str, int],
        endpoint: Endpoint,
        stopping: threading.Event,
        tls: Optional[ssl.SSLContext] = None,
        *,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.endpoint = endpoint
        self.read_timeout = read_timeout
        self._max_connections = max_connections
        self._stopping = stopping
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Connection)
        if tls is not None:
            # The handshake happens on each connection's own thread (Connection.setup), so a
            # slow or failing client never holds up the accept loop.
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )

    def server_bind(self) -> None:
        """Bind without the reverse DNS lookup ``HTTPServer.server_bind`` makes
        (``socket.getfqdn()`` can take seconds; a loopback collector has no use for it)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet for a client that went away or failed the TLS handshake, or a connection closed
        by stopping."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, ssl.SSLError, socket.timeout)) or (
            isinstance(error, (OSError, ValueError)) and self._stopping.is_set()
        ):
            return
        super().handle_error(request, client_address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse (close at once) a connection beyond ``max_connections``."""
        with self._connections_lock:
            return len(self._connections) < self._max_connections

    def track(self, connection: socket.socket, *, add: bool) -> None:
        """Note an open (or closed) connection, so :meth:`close_connections` can reach it."""
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def open_connections(self) -> int:
        """How many connections are open now."""
        with self._connections_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        """Shut down every open connection (hung ones included)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class Connection(BaseHTTPRequestHandler):
    """One client connection: reads each request and answers as the endpoint decides."""

    protocol_version = "HTTP/1.1"
    server_version = f"htevents-logging-collector/{__version__}"
    sys_version = ""
    server: Server

    def setup(self) -> None:
        """Bound every read, turn Nagle off, and register the connection with the server."""
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.settimeout(_HANDSHAKE_TIMEOUT)
            self.connection.do_handshake()
        self.connection.settimeout(self.server.read_timeout)
        # The answer goes out in two writes (headers, then body): with Nagle's algorithm on,
        # the second waits for the client's delayed ACK, ~40 ms per keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        """Unregister the connection."""
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log on stderr; ``echo`` is the collector's output."""

    def handle(self) -> None:
        """Serve requests until the client (or an answer) closes the connection."""
        try:
            super().handle()
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def _dispatch(self) -> None:
        self.server.endpoint.serve(self)

    do_POST = do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    @property
    def client_port(self) -> int:
        """The client's port: requests with the same one came over one connection."""
        return int(self.client_address[1])

    # -- reading ---------------------------------------------------------------------------

    def read_request(self, limit: int) -> tuple[Request, Optional[Verdict]]:
        """The request, and a verdict when its body cannot be read (bounded by ``limit``)."""
        body, unreadable = self._read_body(limit)
        request = Request(self.command, self.path, tuple(self.headers.items()), body)
        return request, unreadable

    def _read_body(self, limit: int) -> tuple[bytes, Optional[Verdict]]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b"", None
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            return b"", Verdict(400, f"Content-Length {length_header!r} is not a byte count")
        if length > limit:
            self.close_connection = True
            return b"", Verdict(413, f"request body is {length:,} bytes: far over the limit")
        return self.rfile.read(length), None

    def _read_chunked(self, limit: int) -> tuple[bytes, Optional[Verdict]]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size < 0:
                    raise ValueError
            except ValueError:
                self.close_connection = True
                return b"", Verdict(400, "malformed chunked Transfer-Encoding")
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts), None
            total += size
            if total > limit:
                self.close_connection = True
                return b"", Verdict(
                    413, f"request body is over {total:,} bytes: far over the limit"
                )
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    # -- answering (the Exchange of the scripted answers) -----------------------------------

    def answer(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        """Send a complete answer; ``Content-Length`` always, so keep-alive keeps working."""
        extra = dict(headers or {})
        self.send_response(status)
        if not any(k.lower() == "content-type" for k in extra):
            extra["Content-Type"] = content_type
        no_body = status in (204, 304) or 100 <= status < 200
        for key, value in extra.items():
            if key.lower() != "content-length":
                self.send_header(key, value)
        if not no_body:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def answer_cut(self, status: int, body: bytes) -> None:
        """Send the status and headers promising ``body``, half of it, and hang up."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True

    def hang_up(self) -> None:
        """Close the connection without (the rest of) an answer."""
        self.close_connection = True
