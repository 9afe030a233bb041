"""The HTTP channel: how one request body reaches the endpoint.

Three implementations behind one :class:`Channel` protocol. :class:`DirectChannel` (here) is
the common case (no proxy applies, no session of the user's): a plain HTTP/1.1 exchange of our
own (``http11.py``) on kept-alive connections, about a twentieth of the CPU per request of
going through ``requests`` (which, at the default batch of 15 events, was more than half of the
transport thread's work). ``PooledChannel`` (ours through a proxy) and ``SessionChannel`` (the
user's ``session=``) go through ``requests``: they live in ``session_channels.py``, imported
only when one is needed, so a process that sends directly never loads ``requests`` (about
9 MiB of memory, and a third of the package's import time).

All resolve the network settings once, when they are made, as ``requests`` does per request:
``proxies``, ``verify`` and ``cert``, merged with the environment (``HTTP(S)_PROXY``,
``ALL_PROXY``, ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) unless
``trust_env=False``. None follows redirects: the sender decides (see ``docs/wire.md``).
"""

from __future__ import annotations

import os
import re
import ssl
import sys
from collections.abc import Mapping
from typing import Any, Callable, Optional, Union
from urllib.parse import urlsplit

from typing_extensions import Protocol

from .._settings import Settings
from .http11 import Connection, IdleConnections

__all__ = [
    "Answer",
    "Channel",
    "DirectChannel",
    "Later",
    "Request",
    "open_channel",
    "tls_context",
]


class Answer(Protocol):
    """What the sender reads of an answer (a ``requests.Response`` is one)."""

    status_code: int
    encoding: Optional[str]

    @property
    def headers(self) -> Mapping[str, str]:
        """The answer's headers, looked up without regard to case."""
        ...

    @property
    def raw(self) -> Any:
        """The body, as a stream with ``read(amount)``."""
        ...

    def close(self) -> None:
        """Release the connection (back to the pool once the body was read to its end)."""
        ...


class Request(Protocol):
    """A POST on its way: its answer is read when asked for."""

    def answer(self) -> Answer:
        """The answer, its body unread (raises what the exchange raised)."""
        ...


class Later:
    """A request sent only when its answer is asked for: how the channels that cannot send
    now and read later (those through ``requests``) begin one."""

    def __init__(self, send: Callable[[], Answer]) -> None:
        self._send = send

    def answer(self) -> Answer:
        """Send the request and return its answer."""
        return self._send()


class Channel(Protocol):
    """Sends one POST body and returns the answer, unread."""

    def begin(self, body: bytes, timeout: float, url: Optional[str] = None) -> Request:
        """POST ``body`` to the endpoint (or to ``url``, a redirect's target); the answer is
        read from what this returns. In between the caller may do other work (build the next
        batch) while the server reads this one."""
        ...

    def send(self, body: bytes, timeout: float, url: Optional[str] = None) -> Answer:
        """POST ``body`` and return the answer: ``begin(...).answer()``."""
        ...

    def close(self) -> None:
        """Release what the channel owns."""
        ...


def _ca_bundle() -> str:
    """The CA bundle ``requests`` verifies with: ``certifi``'s (installed with ``requests``,
    which depends on it), found without importing ``requests``."""
    try:
        import certifi
    except ImportError:  # a requests that does without certifi: ask it
        from requests.utils import DEFAULT_CA_BUNDLE_PATH

        return str(DEFAULT_CA_BUNDLE_PATH)
    return str(certifi.where())


def tls_context(verify: Union[bool, str], cert: Any) -> ssl.SSLContext:
    """The TLS settings ``requests`` would use: its CA bundle (``certifi``'s) for
    ``verify=True``, a bundle file or directory for a path, none for False; a client
    certificate from a path or a (cert, key) pair."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        bundle = _ca_bundle() if verify is True else verify
        if os.path.isdir(bundle):
            context = ssl.create_default_context(capath=bundle)
        else:
            context = ssl.create_default_context(cafile=bundle)
    if cert is not None:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        context.load_cert_chain(certfile, keyfile)
    return context


class DirectChannel:
    """Our own HTTP/1.1 exchange (``http11.py``) on kept-alive connections, for an endpoint
    no proxy applies to.

    One connection is all the transport thread uses; threads sending side by side
    (``sync_mode``) each take one of their own from the idle ones, or open one. A connection the
    server closed while it was idle is noticed before it is used, and replaced.
    """

    def __init__(
        self, url: str, headers: Mapping[str, str], verify: Union[bool, str], cert: Any
    ) -> None:
        parts = urlsplit(url)
        self._context = tls_context(verify, cert) if parts.scheme == "https" else None
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._context is not None else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        # Accept-Encoding: identity, as http.client sends it: the answer is read unencoded.
        lines = [f"Host: {host}" + (f":{parts.port}" if parts.port else "")]
        lines.append("Accept-Encoding: identity")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._fixed = "".join(f"{line}\r\n" for line in lines).encode("latin-1")
        self._head = self._head_for(_path_of(parts.path, parts.query))
        self._idle = IdleConnections()

    def _head_for(self, path: str) -> bytes:
        # Percent-encoded as requests would send it: a space or a non-ASCII letter in the
        # path setting cannot break the request line. A path of the characters requests
        # leaves as they are (no "%" to look at) needs no requests to tell.
        if _AS_REQUESTS_SENDS_IT.fullmatch(path) is None:
            from requests.utils import requote_uri

            path = requote_uri(path)
        target = path.encode("ascii", "replace").replace(b" ", b"%20")
        return b"POST " + target + b" HTTP/1.1\r\n" + self._fixed

    def begin(self, body: bytes, timeout: float, url: Optional[str] = None) -> Request:
        """Send the POST of ``body`` (to ``url``'s path, a same-origin redirect's, when
        given) now, on a connection of its own until its answer is read."""
        if url is None:
            head = self._head
        else:
            parts = urlsplit(url)
            head = self._head_for(_path_of(parts.path, parts.query))
        connection = self._idle.take() or Connection(self._host, self._port, timeout, self._context)
        try:
            connection.settimeout(timeout)
            connection.send_request(head, body)
        except BaseException:
            connection.close()
            raise
        return _Posted(connection, self._idle)

    def send(self, body: bytes, timeout: float, url: Optional[str] = None) -> Answer:
        """POST ``body`` and return the answer (its body unread)."""
        return self.begin(body, timeout, url).answer()

    def close(self) -> None:
        """Close every idle connection."""
        self._idle.close()


class _Posted:
    """A request the direct channel sent, its answer still to read."""

    def __init__(self, connection: Connection, idle: IdleConnections) -> None:
        self._connection = connection
        self._idle = idle

    def answer(self) -> Answer:
        """Read the answer's status line and headers (the connection is closed if that
        fails)."""
        try:
            return self._connection.answer(self._idle)
        except BaseException:
            self._connection.close()
            raise


def _path_of(path: str, query: str) -> str:
    return (path or "/") + (f"?{query}" if query else "")


# The characters requests' requote_uri leaves as they are (unreserved, and its safe ones but "%").
_AS_REQUESTS_SENDS_IT = re.compile(r"[A-Za-z0-9\-._~!#$&'()*+,/:;=?@\[\]]*")


def _direct_without_requests(settings: Settings) -> Optional[tuple[Union[bool, str], Any]]:
    """``verify`` and ``cert`` for a :class:`DirectChannel` when it is plain, without asking
    ``requests``, that no proxy applies; else ``None`` (``requests`` decides).

    Plain: no ``proxies`` setting and, trusting the environment, no ``*_proxy`` variable but
    ``NO_PROXY`` (the only source ``urllib`` reads for proxies on Linux; elsewhere it reads
    the system's settings too, so elsewhere ``requests`` decides). ``verify`` and ``cert``
    then merge as ``requests.Session.merge_environment_settings`` merges them.
    """
    if settings.proxies:
        return None
    verify = settings.verify
    if settings.trust_env:
        if not sys.platform.startswith("linux"):
            return None
        for name, value in os.environ.items():
            if value and name.lower().endswith("_proxy") and name.lower() != "no_proxy":
                return None
        if verify is True:
            verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
    return verify, settings.cert


def open_channel(url: str, headers: Mapping[str, str], settings: Settings) -> Channel:
    """The user's ``session`` when there is one; else our own HTTP/1.1 exchange when no proxy
    applies to ``url`` (from the settings or, with ``trust_env``, the environment); else a
    pooled ``requests`` session of our own. ``requests`` is imported only when it is used or
    must decide whether a proxy applies."""
    if settings.session is None:
        plain = _direct_without_requests(settings)
        if plain is not None:
            return DirectChannel(url, headers, *plain)
    from .session_channels import open_through_requests

    return open_through_requests(url, headers, settings)
