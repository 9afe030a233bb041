"""A local stand-in for Hightouch's ``/v1/batch`` endpoint.

Point a client at a :class:`Collector` to see exactly what it would send, with no account, no
network and no write key to leak. The same class runs behind ``htevents-logging collect`` (a
development server that prints one line per event), behind ``htevents-logging demo``, and in
this package's own tests, where :meth:`Collector.script` makes it fail on command (a 500, a 429
with ``Retry-After``, a request that never gets an answer, a dropped connection) so retry and
shutdown behaviour can be checked against a real socket.

Without a script it behaves like the real endpoint as ``docs/wire.md`` describes it: it checks
the path, the method, the write key (HTTP Basic auth or a ``writeKey`` body field), gunzips
``Content-Encoding: gzip`` bodies, enforces the request and per-message size limits and the
message ``type``/``messageId`` rules, and answers ``200 {}`` or a JSON ``{"error": "..."}`` that
says what was wrong. The rules are a pure function, :func:`judge`, testable without sockets.

Standard library only, so it can run anywhere the package is installed::

    from htevents_logging.collector import Collector

    with Collector(write_key="any-key") as collector:
        client = HtEvents(write_key="any-key", host=collector.url)
        client.track(user_id="1", event="Signed up")
        client.flush()
        assert collector.wait_for_events(1, timeout=5)
"""

from __future__ import annotations

import os
import threading
from typing import IO, Any, Optional, TextIO, Union

from .._encoding import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from .._message import MESSAGE_TYPES
from .._redact import redact_write_key
from ._contract import Request, Rules, Verdict, judge
from ._endpoint import Endpoint, ReceivedRequest
from ._format import format_event
from ._script import Action, Cut, Drop, Hang, Reply
from ._server import MAX_CONNECTIONS, READ_TIMEOUT, Server, tls_context

__all__ = [
    "MESSAGE_TYPES",
    "Action",
    "Collector",
    "Cut",
    "Drop",
    "Hang",
    "ReceivedRequest",
    "Reply",
    "Request",
    "Rules",
    "Verdict",
    "format_event",
    "judge",
]

# How often the accept loop checks for stop(): the bound on how long stop() waits for it.
_POLL_INTERVAL = 0.01


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
    compact UTF-8 JSON) are the real endpoint's limits by default. ``tls_cert`` (and
    ``tls_key``, when the key is in its own file) serve HTTPS, to try a CA setup locally;
    ``tls_client_ca`` also requires a client certificate signed by that CA. It holds against
    hostile clients: a connection silent for ``read_timeout`` seconds is closed, at most
    ``max_connections`` are served at once, a malformed chunk size is refused at once, and
    every printed line shows control characters as escapes.
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
        max_body_bytes: int = MAX_BATCH_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        tls_cert: Optional[Union[str, os.PathLike[str]]] = None,
        tls_key: Optional[Union[str, os.PathLike[str]]] = None,
        tls_client_ca: Optional[Union[str, os.PathLike[str]]] = None,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if tls_cert is None and (tls_key is not None or tls_client_ca is not None):
            raise ValueError("tls_key and tls_client_ca need tls_cert (the server certificate)")
        self._tls = (
            tls_context(
                os.fspath(tls_cert),
                os.fspath(tls_key) if tls_key is not None else None,
                os.fspath(tls_client_ca) if tls_client_ca is not None else None,
            )
            if tls_cert is not None
            else None
        )
        self._host = host
        self._requested_port = port
        self._out_path = os.fspath(out) if out is not None else None
        self._stopping = threading.Event()
        self._endpoint = Endpoint(
            Rules(path, write_key, max_body_bytes, max_message_bytes), self._stopping, echo
        )
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._lifecycle = threading.Lock()
        self._server: Optional[Server] = None
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
            out: Optional[IO[str]] = None
            if self._out_path is not None:
                try:
                    out = open(self._out_path, "a", encoding="utf-8")  # noqa: SIM115
                except OSError as exc:
                    raise OSError(
                        exc.errno,
                        f"cannot open {self._out_path!r} to append events: {exc.strerror}",
                    ) from exc
            try:
                server = Server(
                    (self._host, self._requested_port),
                    self._endpoint,
                    self._stopping,
                    self._tls,
                    read_timeout=self._read_timeout,
                    max_connections=self._max_connections,
                )
            except OSError as exc:
                if out is not None:
                    out.close()
                raise OSError(
                    exc.errno,
                    f"cannot listen on {self._host}:{self._requested_port}: {exc.strerror}"
                    " (is another collector running there? pick another port, or 0 for any)",
                ) from exc
            if out is not None:
                self._endpoint.write_to(out)
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
                server.close_connections()
                server.server_close()
            if thread is not None:
                thread.join(timeout=5.0)
            self._endpoint.close_outputs()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        requests, events = self._endpoint.counts()
        rules = self._endpoint.rules
        return (
            f"Collector({where}, path={rules.path!r}, "
            f"write_key={redact_write_key(rules.write_key)!r}, "
            f"requests={requests}, events={events})"
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
        """``http://HOST:PORT`` (``https://`` with TLS), to pass as a client's ``host``; valid
        once started."""
        if self._server is None:
            raise RuntimeError("the Collector has no URL yet: call start() (or use `with`) first")
        host = f"[{self._host}]" if ":" in self._host else self._host
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def open_connections(self) -> int:
        """How many client connections are open now (kept-alive ones included)."""
        return self._server.open_connections() if self._server is not None else 0

    @property
    def path(self) -> str:
        """The batch endpoint's path, ``/v1/batch`` by default."""
        return self._endpoint.rules.path

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
        self._endpoint.script(actions)

    # -- what was received -----------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        return self._endpoint.requests()

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every accepted event so far, in arrival order (a copy of the list)."""
        return self._endpoint.events()

    def wait_for_events(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` events were accepted; False if ``timeout`` passed first."""
        return self._endpoint.wait(lambda requests, events: events >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` requests arrived (hung ones too); False on timeout."""
        return self._endpoint.wait(lambda requests, events: requests >= n, timeout)

    def clear(self) -> None:
        """Forget the recorded requests and events (pending scripted actions are kept)."""
        self._endpoint.clear()
