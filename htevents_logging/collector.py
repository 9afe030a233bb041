"""A local stand-in for Hightouch's ``/v1/batch`` endpoint.

Point a client at a :class:`Collector` to see exactly what it would send, with no account, no
network and no write key to leak. The same class runs behind ``htevents-logging collect`` (a
development server that prints one line per event), behind ``htevents-logging demo``, and in
this package's own tests, where :meth:`Collector.script` makes it fail on command (a 500, a 429
with ``Retry-After``, a request that never gets an answer, a dropped connection) so retry and
shutdown behaviour can be checked against a real socket.

Without a script it behaves like the real endpoint as measured in WIRE.md: it checks the path,
the method, the write key (HTTP Basic auth or a ``writeKey`` body field), gunzips
``Content-Encoding: gzip`` bodies, enforces the request and per-message size limits and the
message ``type``/``messageId`` rules, and answers ``200 {}`` or a JSON ``{"error": "..."}`` that
says what was wrong.

Standard library only, so it can run anywhere the package is installed::

    from htevents_logging.collector import Collector

    with Collector(write_key="any-key") as collector:
        client = HtEvents(write_key="any-key", host=collector.url)
        client.track(user_id="1", event="Signed up")
        client.flush()
        assert collector.wait_for_events(1, timeout=5)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any, Optional, TextIO, Union
from urllib.parse import urlsplit

from ._redact import redact_write_key
from ._version import __version__

__all__ = [
    "MESSAGE_TYPES",
    "Action",
    "Collector",
    "Cut",
    "Drop",
    "Hang",
    "ReceivedRequest",
    "Reply",
    "format_event",
]

#: The message types the endpoint accepts; anything else in ``type`` is answered with a 400.
MESSAGE_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})

# Whatever the limits, a request body larger than this is not even read: the connection is
# answered 413 and closed, so a runaway client cannot make the collector buffer gigabytes.
_MIN_READ_LIMIT = 16 * 1024 * 1024

# How often the accept loop checks for stop(): the bound on how long stop() waits for it.
_POLL_INTERVAL = 0.01


# --------------------------------------------------------------------------------------------
# Scripted actions


def _check_status(action: Union[Reply, Cut]) -> None:
    if not isinstance(action.status, int) or not 100 <= action.status <= 599:
        raise ValueError(
            f"{type(action).__name__} status must be an HTTP status from 100 to 599, "
            f"got {action.status!r}"
        )


@dataclass(frozen=True)
class Reply:
    """Answer the next request with this status, body and headers instead of the normal answer.

    Use it to see how a client handles what the real endpoint can answer: ``Reply(500)`` for an
    outage, ``Reply(429, headers={"Retry-After": "1"})`` for rate limiting, ``Reply(400)`` for a
    rejection that must not be retried. A 2xx reply still validates the request and, when it is
    valid, records its events (a client that treats ``201`` as success has delivered them); any
    other status records the request but none of its events. ``Content-Length`` is always set
    by the collector; a ``Content-Type`` in ``headers`` overrides ``content_type``.
    """

    status: int = 200
    body: Union[bytes, str] = b"{}"
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        _check_status(self)


@dataclass(frozen=True)
class Hang:
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


@dataclass(frozen=True)
class Drop:
    """Read the next request, then close the connection without any answer.

    The client sees a connection error (with ``requests``: ``requests.ConnectionError``), as
    when a load balancer or proxy drops a connection mid-request. Such requests are retryable.
    """


@dataclass(frozen=True)
class Cut:
    """Start an answer, then close the connection before its body is complete.

    The status line and headers arrive (with a ``Content-Length`` the body never reaches), as
    when a proxy or a restarting server cuts a connection mid-answer. A client must still
    decide by the status, and must not lose the batch while reading what is left of the body.
    """

    status: int = 503
    body: bytes = b'{"error":"service unavailable"}'

    def __post_init__(self) -> None:
        _check_status(self)


#: One scripted answer: see :meth:`Collector.script`.
Action = Union[Reply, Hang, Drop, Cut]


# --------------------------------------------------------------------------------------------
# What was received


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
    #: The status answered; 0 when the request was scripted to :class:`Hang` or :class:`Drop`.
    status: int
    #: Why the request was rejected (or that a scripted action refused it), or None.
    error: Optional[str]
    #: ``time.monotonic()`` when the request had been read, to measure retry backoff.
    received_at: float
    #: The client's port: requests with the same one came over one kept-alive connection.
    client_port: int = 0

    def header(self, name: str) -> Optional[str]:
        """The value of header ``name``, matched case-insensitively, or None if it was not sent."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def __repr__(self) -> str:
        return (
            f"ReceivedRequest(method={self.method!r}, path={self.path!r}, status={self.status}, "
            f"error={self.error!r}, body_bytes={len(self.body)}, received_at={self.received_at})"
        )


# --------------------------------------------------------------------------------------------
# Event lines for humans


def _plain(value: Any) -> str:
    """An id as is when it prints cleanly on one line, else JSON-quoted."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if text and text.isprintable() and " " not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _compact(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_event(message: Mapping[str, Any]) -> str:
    """One readable line for a message, as ``htevents-logging collect`` prints it.

    For example ``track     user-1  "Order completed"  {"total": 29.99}  (messageId 1234abcd…)``:
    the type, who (``userId``, else ``anon:<anonymousId>``), what (track ``event``, page/screen
    ``name``, group ``groupId``, alias ``previousId``), then the properties or traits as compact
    JSON, then the start of the ``messageId``. Handy to print what a :class:`Collector` received.
    """
    kind = message.get("type")
    kind_text = kind if isinstance(kind, str) else repr(kind)
    parts = [f"{kind_text:<8}"]

    user_id, anonymous_id = message.get("userId"), message.get("anonymousId")
    if user_id not in (None, ""):
        parts.append(_plain(user_id))
    elif anonymous_id not in (None, ""):
        parts.append("anon:" + _plain(anonymous_id))
    else:
        parts.append("-")

    payload: Any = None
    if kind == "track":
        parts.append(json.dumps(message.get("event"), ensure_ascii=False))
        payload = message.get("properties")
    elif kind in ("page", "screen"):
        if message.get("name") is not None:
            parts.append(json.dumps(message.get("name"), ensure_ascii=False))
        payload = message.get("properties")
    elif kind == "identify":
        payload = message.get("traits")
    elif kind == "group":
        parts.append("group " + _plain(message.get("groupId")))
        payload = message.get("traits")
    elif kind == "alias":
        parts.append("previousId " + _plain(message.get("previousId")))
    if payload:
        parts.append(_compact(payload))

    message_id = str(message.get("messageId"))
    shown_id = message_id if len(message_id) <= 9 else message_id[:8] + "…"
    parts.append(f"(messageId {shown_id})")
    return "  ".join(parts)


# --------------------------------------------------------------------------------------------
# Judging a request


@dataclass
class _Verdict:
    status: int
    error: Optional[str] = None
    document: Optional[Any] = None
    events: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)


class _TooLarge(Exception):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one or more gzip members, refusing to produce more than ``limit`` bytes."""
    out = bytearray()
    rest = data
    while True:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out += decompressor.decompress(rest, limit + 1 - len(out))
        if len(out) > limit:
            raise _TooLarge
        if not decompressor.eof:
            raise ValueError("the gzip stream is truncated")
        rest = decompressor.unused_data
        if not rest:
            return bytes(out)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (encode non-finite numbers as null or a string)")


def _basic_auth_user(header: str) -> tuple[Optional[str], Optional[str]]:
    """The user name in an ``Authorization: Basic`` header, or None and why not."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "basic":
        # Never echo the scheme: a client that sends the bare key would have it printed.
        return None, "the Authorization header is not HTTP Basic auth"
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, "the Authorization header's Basic credentials are not valid base64 UTF-8"
    return decoded.partition(":")[0], None


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], collector: Collector) -> None:
        self.collector = collector
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take
        # seconds on a misconfigured machine; a loopback collector has no use for it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError) or (
            isinstance(error, (OSError, ValueError)) and self.collector._stopping.is_set()
        ):
            return  # a client that went away, or a connection closed by stop(): not news
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"htevents-logging-collector/{__version__}"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        # The answer goes out in two writes (headers, then body): with Nagle's algorithm on,
        # the second waits for the client's delayed ACK, ~40 ms per keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.collector._track_connection(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.collector._track_connection(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log on stderr; ``echo`` is the collector's output."""

    def handle(self) -> None:
        try:
            super().handle()
        except (ConnectionError, socket.timeout):
            self.close_connection = True

    def _dispatch(self) -> None:
        self.server.collector._serve(self)

    do_POST = do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    # -- reading ---------------------------------------------------------------------------

    def read_body(self, limit: int) -> tuple[bytes, Optional[_Verdict]]:
        """The raw body (Content-Length or chunked), or a verdict when it cannot be read."""
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
            return b"", _Verdict(400, f"Content-Length {length_header!r} is not a byte count")
        if length > limit:
            self.close_connection = True
            return b"", _Verdict(413, f"request body is {length:,} bytes: far over the limit")
        return self.rfile.read(length), None

    def _read_chunked(self, limit: int) -> tuple[bytes, Optional[_Verdict]]:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                return b"", _Verdict(400, "malformed chunked Transfer-Encoding")
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts), None
            total += size
            if total > limit:
                self.close_connection = True
                return b"", _Verdict(
                    413, f"request body is over {total:,} bytes: far over the limit"
                )
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    # -- answering -------------------------------------------------------------------------

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


def _error_body(error: str) -> bytes:
    return json.dumps({"error": error}, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------------
# The collector


class Collector:
    """A ``/v1/batch`` endpoint on a loopback port, recording what it receives.

    Start it (``with Collector() as c:`` or ``c = Collector().start()``), point a client at
    :attr:`url`, and read :attr:`events` / :attr:`requests`, waiting with
    :meth:`wait_for_events` rather than sleeping. :meth:`script` queues failures for the next
    requests. Each request is recorded (and echoed and written to ``out``) *before* it is
    answered, so once a client has its answer the collector already shows the request.

    ``write_key``: when set, requests must carry it (``Authorization: Basic base64(key + ":")``
    or a ``"writeKey"`` body field) or get a 401; when None any key is accepted. ``out``: a
    file to append each accepted event to, one JSON object per line. ``echo``: a text stream
    that gets one readable line per accepted event (see :func:`format_event`) and one
    ``rejected request: <reason>`` line per rejected request. ``max_body_bytes`` (a body must be
    under it, as sent and again after gunzipping) and ``max_message_bytes`` (each message as
    compact UTF-8 JSON) are the real endpoint's limits by default.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/v1/batch",
        write_key: Optional[str] = None,
        out: Optional[Union[str, os.PathLike[str]]] = None,
        echo: Optional[TextIO] = None,
        max_body_bytes: int = 500_000,
        max_message_bytes: int = 32_768,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        self._host = host
        self._requested_port = port
        self._path = path
        self._write_key = write_key
        self._out_path = os.fspath(out) if out is not None else None
        self._echo = echo
        self._max_body_bytes = max_body_bytes
        self._max_message_bytes = max_message_bytes

        self._cond = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._events: list[dict[str, Any]] = []
        self._script: deque[Action] = deque()
        self._connections: set[socket.socket] = set()
        self._out_file: Optional[IO[str]] = None

        self._lifecycle = threading.Lock()
        self._stopping = threading.Event()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> Collector:
        """Bind the port and serve on a background daemon thread; returns ``self``.

        Raises ``OSError`` with a readable reason when the port is taken or ``out`` cannot be
        opened. Calling it again while running does nothing; a stopped collector cannot be
        restarted (make a new one).
        """
        with self._lifecycle:
            if self._server is not None:
                return self
            if self._stopping.is_set():
                raise RuntimeError("this Collector was stopped; create a new one to serve again")
            if self._out_path is not None:
                try:
                    self._out_file = open(self._out_path, "a", encoding="utf-8")  # noqa: SIM115
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"cannot open {self._out_path!r} to append events: {exc.strerror}",
                    ) from exc
            try:
                server = _Server((self._host, self._requested_port), self)
            except OSError as exc:
                self._close_out_file()
                raise OSError(
                    exc.errno,
                    f"cannot listen on {self._host}:{self._requested_port}: {exc.strerror}"
                    " (is another collector running there? pick another port, or 0 for any)",
                ) from exc
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=f"htevents-collector-{server.server_port}",
                daemon=True,
            )
            thread.start()
            self._server, self._thread = server, thread
            return self

    def stop(self) -> None:
        """Stop serving: release hung requests, close every connection and the port.

        Safe to call more than once, and before :meth:`start`. Recorded requests and events stay
        readable afterwards.
        """
        with self._lifecycle:
            self._stopping.set()  # wakes every Hang at once
            server, thread = self._server, self._thread
            if server is not None:
                server.shutdown()
                with self._cond:
                    connections = list(self._connections)
                for connection in connections:
                    with contextlib.suppress(OSError):
                        connection.shutdown(socket.SHUT_RDWR)
                server.server_close()
            if thread is not None:
                thread.join(timeout=5.0)
            with self._cond:
                self._close_out_file()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        with self._cond:
            counts = f"requests={len(self._requests)}, events={len(self._events)}"
        return (
            f"Collector({where}, path={self._path!r}, "
            f"write_key={redact_write_key(self._write_key)!r}, {counts})"
        )

    # -- where ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port served on (the one the OS picked when created with ``port=0``)."""
        if self._server is not None:
            return self._server.server_port
        return self._requested_port

    @property
    def url(self) -> str:
        """``http://HOST:PORT``, to pass as a client's ``host``; valid once started."""
        if self._server is None:
            raise RuntimeError("the Collector has no URL yet: call start() (or use `with`) first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def path(self) -> str:
        """The batch endpoint's path, ``/v1/batch`` by default."""
        return self._path

    # -- scripting -----------------------------------------------------------------------------

    def script(self, *actions: Action) -> None:
        """Queue how the next requests are answered, one action per request, first in first out.

        Once the queue is empty requests get the normal answer again. For example
        ``collector.script(Reply(503), Hang(5), Drop(), Cut())`` makes the next four requests
        fail four different ways, and the fifth succeed.
        """
        for action in actions:
            if not isinstance(action, (Reply, Hang, Drop, Cut)):
                raise TypeError(
                    "script() takes Reply(...), Hang(...), Drop() or Cut() instances, got "
                    f"{action!r}"
                )
        with self._cond:
            self._script.extend(actions)

    # -- what was received -----------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted event so far, in arrival order (a copy of the list)."""
        with self._cond:
            return list(self._events)

    def wait_for_events(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` events were accepted; False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._events) >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` requests arrived (hung ones too); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= n, timeout)

    def clear(self) -> None:
        """Forget the recorded requests and events (pending scripted actions are kept)."""
        with self._cond:
            self._requests.clear()
            self._events.clear()

    # -- internals -------------------------------------------------------------------------

    def _track_connection(self, connection: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _close_out_file(self) -> None:
        if self._out_file is not None:
            try:
                self._out_file.close()
            finally:
                self._out_file = None

    def _serve(self, handler: _Handler) -> None:
        """Handle one request on a handler thread: read, judge, record, then answer."""
        read_limit = max(_MIN_READ_LIMIT, 4 * self._max_body_bytes)
        body, unreadable = handler.read_body(read_limit)
        received_at = time.monotonic()
        verdict = unreadable or self._judge(handler, body)

        with self._cond:
            action = self._script.popleft() if self._script else None

        accepted = verdict.error is None
        error = verdict.error
        if isinstance(action, Reply) and not 200 <= action.status < 300:
            accepted = False
            error = error or f"scripted Reply({action.status})"
        elif isinstance(action, Hang):
            accepted = False
            error = error or f"scripted Hang({action.seconds}): no answer"
        elif isinstance(action, Drop):
            accepted = False
            error = error or "scripted Drop(): connection closed without an answer"
        elif isinstance(action, Cut):
            accepted = False
            error = error or f"scripted Cut({action.status}): answer cut off mid-body"

        if action is None:
            status = verdict.status
        elif isinstance(action, (Reply, Cut)):
            status = action.status
        else:
            status = 0

        self._record(
            ReceivedRequest(
                method=handler.command,
                path=handler.path,
                headers=list(handler.headers.items()),
                body=body,
                json=verdict.document,
                status=status,
                error=error,
                received_at=received_at,
                client_port=handler.client_address[1],
            ),
            verdict.events if accepted else [],
        )

        if isinstance(action, Reply):
            reply_body = (
                action.body.encode("utf-8") if isinstance(action.body, str) else action.body
            )
            handler.answer(
                action.status,
                reply_body,
                content_type=action.content_type,
                headers=action.headers,
            )
        elif isinstance(action, Hang):
            self._stopping.wait(action.seconds)
            handler.close_connection = True
        elif isinstance(action, Drop):
            handler.close_connection = True
        elif isinstance(action, Cut):
            handler.send_response(action.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(action.body)))
            handler.end_headers()
            handler.wfile.write(action.body[: len(action.body) // 2])
            handler.close_connection = True
        elif verdict.error is None:
            handler.answer(verdict.status, b"{}", headers=verdict.headers)
        else:
            handler.answer(verdict.status, _error_body(verdict.error), headers=verdict.headers)

    def _judge(self, handler: _Handler, body: bytes) -> _Verdict:
        """Decide what the real endpoint would answer, and which events it would accept."""
        path = urlsplit(handler.path).path
        if path != self._path:
            return _Verdict(404, f"no endpoint at {path!r}: send batches to POST {self._path}")
        if handler.command != "POST":
            return _Verdict(
                405,
                f"{handler.command} is not allowed on {self._path}: send batches with POST",
                headers={"Allow": "POST"},
            )

        limit = self._max_body_bytes
        too_large = (
            "request body is {size} bytes; it must be under the {limit:,}-byte limit per"
            " request: send fewer events per batch"
        )
        if len(body) >= limit:
            return _Verdict(413, too_large.format(size=f"{len(body):,}", limit=limit))

        encoding = (handler.headers.get("Content-Encoding") or "").strip().lower()
        if encoding == "gzip":
            try:
                data = _gunzip(body, limit - 1)
            except _TooLarge:
                size = f"over {limit:,} (gunzipped)"
                return _Verdict(413, too_large.format(size=size, limit=limit))
            except (zlib.error, ValueError) as exc:
                return _Verdict(
                    400, f"body is not valid gzip despite Content-Encoding: gzip ({exc})"
                )
        elif encoding in ("", "identity"):
            data = body
        else:
            return _Verdict(
                415, f"Content-Encoding {encoding!r} is not supported: send gzip or none"
            )

        try:
            document = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            return _Verdict(400, f"body is not UTF-8 text: {exc}")
        except ValueError as exc:
            return _Verdict(400, f"body is not valid JSON: {exc}")
        if not isinstance(document, dict):
            return _Verdict(
                400,
                f'body must be a JSON object like {{"batch": [...]}}, got a {_json_type(document)}',
                document=document,
            )

        auth_error = self._check_write_key(handler, document)
        if auth_error is not None:
            return _Verdict(401, auth_error, document=document)

        if "batch" not in document:
            return _Verdict(
                400, 'the body has no "batch": send {"batch": [message, ...]}', document=document
            )
        batch = document["batch"]
        if not isinstance(batch, list):
            return _Verdict(
                400,
                f'"batch" must be a list of messages, got a {_json_type(batch)}',
                document=document,
            )
        for index, message in enumerate(batch):
            problem = self._check_message(message)
            if problem is not None:
                return _Verdict(400, f"batch[{index}]: {problem}", document=document)
        return _Verdict(200, document=document, events=list(batch))

    def _check_write_key(self, handler: _Handler, document: dict[str, Any]) -> Optional[str]:
        expected = self._write_key
        if expected is None:
            return None
        problems: list[str] = []
        header = handler.headers.get("Authorization")
        if header is not None:
            user, problem = _basic_auth_user(header)
            if user == expected:
                return None
            problems.append(
                problem or f"the Authorization header carries write key {redact_write_key(user)!r}"
            )
        if "writeKey" in document:
            body_key = document["writeKey"]
            if body_key == expected:
                return None
            shown = redact_write_key(body_key if isinstance(body_key, str) else str(body_key))
            problems.append(f'the body\'s "writeKey" is {shown!r}')
        wanted = f"this collector expects write key {redact_write_key(expected)!r}"
        if not problems:
            return (
                "no write key: send Authorization: Basic base64(<write key> + ':') or a"
                f' "writeKey" body field ({wanted})'
            )
        return f"wrong write key: {'; '.join(problems)}, but {wanted}"

    def _check_message(self, message: Any) -> Optional[str]:
        if not isinstance(message, dict):
            return f"a message must be a JSON object, got a {_json_type(message)}"
        try:
            size = len(
                json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            )
        except UnicodeEncodeError:
            return "the message contains an unpaired UTF-16 surrogate, which is not valid UTF-8"
        if size > self._max_message_bytes:
            return (
                f"message is {size:,} bytes as compact UTF-8 JSON, over the "
                f"{self._max_message_bytes:,}-byte limit per message: trim its properties, traits"
                " or context"
            )
        kind = message.get("type")
        if not isinstance(kind, str) or kind not in MESSAGE_TYPES:
            return f"type {kind!r} is not one of {', '.join(sorted(MESSAGE_TYPES))}"
        message_id = message.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            return (
                f"{kind} message has no messageId: every message needs a unique string messageId,"
                " the same on every retry"
            )
        return None

    def _record(self, request: ReceivedRequest, events: list[dict[str, Any]]) -> None:
        with self._cond:
            self._requests.append(request)
            self._events.extend(events)
            if self._out_file is not None and events:
                for event in events:
                    self._out_file.write(json.dumps(event, ensure_ascii=False) + "\n")
                self._out_file.flush()
            if self._echo is not None:
                if request.error is None:
                    lines = [format_event(event) for event in events]
                else:
                    lines = [f"rejected request: {request.error}"]
                self._write_echo(lines)
            self._cond.notify_all()

    def _write_echo(self, lines: list[str]) -> None:
        echo = self._echo
        if echo is None or not lines:
            return
        text = "".join(line + "\n" for line in lines)
        try:
            try:
                echo.write(text)
            except UnicodeEncodeError:  # e.g. an ASCII-only terminal
                echo.write(text.encode("ascii", "backslashreplace").decode("ascii"))
            echo.flush()
        except (OSError, ValueError):
            self._echo = None  # the stream is gone (closed pipe); keep serving without it


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "number" if isinstance(value, (int, float)) else type(value).__name__
