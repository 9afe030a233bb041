"""The channels that go through ``requests``: a pooled session of our own (through a proxy),
and the user's ``session=``. Imported only when one is needed (see ``channel.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Optional

import requests
from requests.adapters import HTTPAdapter
from requests.utils import select_proxy

from .._settings import Settings
from .channel import Answer, Channel, DirectChannel, Later, Request

__all__ = ["PooledChannel", "SessionChannel", "open_through_requests"]


class _SentWhenAsked:
    """``requests`` sends a request and reads its answer as one: a request through it begins
    when its answer is asked for."""

    def send(self, body: bytes, timeout: float, url: Optional[str] = None) -> Answer:
        raise NotImplementedError

    def begin(self, body: bytes, timeout: float, url: Optional[str] = None) -> Request:
        """The request, sent when its answer is asked for."""
        return Later(partial(self.send, body, timeout, url))


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


class PooledChannel(_SentWhenAsked):
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


class SessionChannel(_SentWhenAsked):
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


def open_through_requests(url: str, headers: Mapping[str, str], settings: Settings) -> Channel:
    """The user's ``session`` when there is one; else, when ``requests`` finds that no proxy
    applies to ``url``, our own HTTP/1.1 exchange; else a pooled session of our own."""
    if settings.session is not None:
        return SessionChannel(settings.session, url, headers, settings)
    with requests.Session() as probe:
        options = _network_options(probe, url, settings)
    if select_proxy(url, options["proxies"]) is None:
        return DirectChannel(url, headers, options["verify"], options["cert"])
    return PooledChannel(url, headers, settings)
