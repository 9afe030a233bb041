"""The HTTP channel: how one request body reaches the endpoint.

Three implementations behind one :class:`Channel` protocol. :class:`DirectChannel` is the
common case (no proxy applies, no session of the user's): a plain HTTP/1.1 exchange of our own
(``http11.py``) on kept-alive connections, about a twentieth of the CPU per request of going
through ``requests`` (which, at the default batch of 15 events, was more than half of the
transport thread's work).
:class:`PooledChannel` is ours through a proxy: one ``requests.Session`` with one pooled,
kept-alive connection, and one reused ``PreparedRequest`` sent straight to its adapter
(``Session.post`` would rebuild and merge settings per request). :class:`SessionChannel` is the
user's ``session=``, used as it is (its adapters, auth and hooks) and never closed. All resolve
the network settings once, when they are made, as ``requests`` does per request: ``proxies``,
``verify`` and ``cert``, merged with the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``,
``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) unless ``trust_env=False``. None
follows redirects: the sender decides (see ``docs/wire.md``).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any, Optional, Union
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, requote_uri, select_proxy
from typing_extensions import Protocol

from .._settings import Settings
from .http11 import Connection, IdleConnections

__all__ = [
    "Answer",
    "Channel",
    "DirectChannel",
    "PooledChannel",
    "SessionChannel",
    "open_channel",
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


class Channel(Protocol):
    """Sends one POST body and returns the answer, unread."""

    def send(self, body: bytes, timeout: float, url: Optional[str] = None) -> Answer:
        """POST ``body`` to the endpoint (or to ``url``, a redirect's target)."""
        ...

    def close(self) -> None:
        """Release what the channel owns."""
        ...


def _network_options(session: requests.Session, url: str, settings: Settings) -> dict[str, Any]:
    """``proxies``, ``verify`` and ``cert`` for ``url``, as ``requests`` would merge them."""
    proxies = dict(settings.proxies or ())
    merged: Mapping[str, Any]
    if settings.trust_env and session.trust_env:
        merged = session.merge_environment_settings(
            url, proxies, None, settings.verify, settings.cert
        )
    else:
        merged = {  # what requests merges without the environment: ours win
            "proxies": {**session.proxies, **proxies},
            "verify": settings.verify,
            "cert": settings.cert if settings.cert is not None else session.cert,
        }
    return {key: merged[key] for key in ("proxies", "verify", "cert")}


class PooledChannel:
    """Our own pooled session: one kept-alive connection, one reused prepared request."""

    def __init__(self, url: str, headers: Mapping[str, str], settings: Settings) -> None:
        self._session = requests.Session()
        self._adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)
        self._headers = dict(headers)
        self._request = requests.Request("POST", url, headers=self._headers).prepare()
        self._options = _network_options(self._session, url, settings)

    def send(self, body: bytes, timeout: float, url: Optional[str] = None) -> Answer:
        """Send straight to the adapter (no redirects followed)."""
        if url is None:
            request = self._request
        else:
            request = requests.Request("POST", url, headers=self._headers).prepare()
        request.body = body
        request.headers["Content-Length"] = str(len(body))
        return self._adapter.send(request, timeout=timeout, **self._options)

    def close(self) -> None:
        """Close the connection pool."""
        self._session.close()


class SessionChannel:
    """The user's session, as it is: its headers and auth applied when the request is
    prepared, its adapters and hooks when it is sent. The package never closes it."""

    def __init__(
        self, session: requests.Session, url: str, headers: Mapping[str, str], settings: Settings
    ) -> None:
        self._session = session
        self._headers = dict(headers)
        self._request = session.prepare_request(
            requests.Request("POST", url, headers=self._headers)
        )
        self._options = _network_options(session, url, settings)

    def send(self, body: bytes, timeout: float, url: Optional[str] = None) -> Answer:
        """``session.send``, with redirects off and the body left unread (the sender reads a
        bounded part of it)."""
        if url is None:
            request = self._request
        else:
            request = self._session.prepare_request(
                requests.Request("POST", url, headers=self._headers)
            )
        request.body = body
        request.headers["Content-Length"] = str(len(body))
        return self._session.send(
            request, timeout=timeout, allow_redirects=False, stream=True, **self._options
        )

    def close(self) -> None:
        """Nothing: the session is the user's."""


def _tls_context(verify: Union[bool, str], cert: Any) -> ssl.SSLContext:
    """The TLS settings ``requests`` would use: its CA bundle (``certifi``'s) for
    ``verify=True``, a bundle file or directory for a path, none for False; a client
    certificate from a path or a (cert, key) pair."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        bundle = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
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
        self._context = _tls_context(verify, cert) if parts.scheme == "https" else None
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
        # path setting cannot break the request line.
        target = requote_uri(path).encode("ascii", "replace").replace(b" ", b"%20")
        return b"POST " + target + b" HTTP/1.1\r\n" + self._fixed

    def send(self, body: bytes, timeout: float, url: Optional[str] = None) -> Answer:
        """POST ``body`` (to ``url``'s path, a same-origin redirect's, when given)."""
        if url is None:
            head = self._head
        else:
            parts = urlsplit(url)
            head = self._head_for(_path_of(parts.path, parts.query))
        connection = self._idle.take() or Connection(self._host, self._port, timeout, self._context)
        try:
            connection.settimeout(timeout)
            return connection.post(head, body, self._idle)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        """Close every idle connection."""
        self._idle.close()


def _path_of(path: str, query: str) -> str:
    return (path or "/") + (f"?{query}" if query else "")


def open_channel(url: str, headers: Mapping[str, str], settings: Settings) -> Channel:
    """The user's ``session`` when there is one; else ``http.client`` directly when no proxy
    applies to ``url`` (from the settings or, with ``trust_env``, the environment); else a
    pooled ``requests`` session of our own."""
    if settings.session is not None:
        return SessionChannel(settings.session, url, headers, settings)
    with requests.Session() as probe:
        options = _network_options(probe, url, settings)
    if select_proxy(url, options["proxies"]) is None:
        return DirectChannel(url, headers, options["verify"], options["cert"])
    return PooledChannel(url, headers, settings)
